#!/bin/bash
# detached (setsid): the seventh session's last minutes (the GPU fixture built first, `make gpu-fixture`): the runner's torch backend with the fused projections, its new default, and GPTQ's peak
# against the corrected estimate. Results in /tmp/res.
cd "$(dirname "$0")/../.."
source benchmarks/device/env.sh
R=/tmp/res; mkdir -p $R
log() { echo "$(date -u +%T) $*" >> $R/chain.log; }
log "start"
timeout 60 python3 -m pytest -p no:cacheprovider -q -s tests/gpu/test_gptq_gpu.py -k peak > $R/test_gptq_log.txt 2>&1; log "gptq peak rc=$?"
make gpu-fixture > $R/fixture_log.txt 2>&1; log "fixture rc=$?"
timeout 150 python3 -m pytest -p no:cacheprovider -q -s tests/gpu/test_runner_gpu.py tests/gpu/test_runner_graphs.py tests/gpu/test_fuse_projections_gpu.py > $R/test_runner_gpu_log.txt 2>&1; log "runner gpu tests rc=$?"
log "done"
touch $R/DONE
