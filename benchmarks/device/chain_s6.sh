#!/bin/bash
# detached (setsid): the sixth session's device plan (benchmarks/NOTES.md "Pending GPU runs"), results in /tmp/res.
# Start as chain_next.sh says. Order: the short correctness runs first (Wan end to end with the GPU tests beside
# it: neither is timed against a goal), then the timed runs alone on the GPU: bench_e2e (issue 13), then the
# Flux-dev default-size compile (issue 12), which may be cut off by the 30-minute hold; its log has stage times.
cd "$(dirname "$0")/../.."
source benchmarks/device/env.sh
R=/tmp/res; mkdir -p $R
log() { echo "$(date -u +%T) $*" >> $R/chain.log; }
log "start"
( nice -n 10 make gpu-fixture > $R/fixture.log 2>&1; log "fixture rc=$?"
  timeout 300 python3 -m pytest -p no:cacheprovider -q tests/gpu/test_fuse_projections_gpu.py tests/gpu/test_runner_gpu.py tests/gpu/test_runner_graphs.py > $R/test_gpu.log 2>&1; log "gpu tests rc=$?" ) &
python3 benchmarks/bench_compile_gpu.py --out /tmp/run/wan --run-steps -- wan2.1-1.3b --target 3.1 --steps 4 --calib-samples 2 --search-samples 1 --heldout-samples 2 > $R/wan.log 2>&1; log "wan rc=$?"
cp /tmp/run/wan.json $R/ 2>/dev/null; for f in report.md schedule.json manifest.json; do cp /tmp/run/wan/$f $R/wan_$f 2>/dev/null; done
ls -la /tmp/run/wan /tmp/run/wan/onnx > $R/wan_ls.txt 2>&1; rm -rf /tmp/run/wan
wait
python3 benchmarks/bench_e2e.py --models flux-dev --variants bf16-compile,ours-a3-compile,ours-a3-fused-compile,ours-a3-fused --out $R/bench_e2e.json --time-budget 300 > $R/bench_e2e.log 2>&1; log "bench_e2e rc=$?"
python3 benchmarks/bench_compile_gpu.py --out /tmp/run/fd --run-steps -- flux-dev --target 3.1 --search-samples 1 --resolution 1024 1024 > $R/flux_default.log 2>&1; log "flux default rc=$?"
cp /tmp/run/fd.json $R/ 2>/dev/null; for f in report.md schedule.json manifest.json; do cp /tmp/run/fd/$f $R/fd_$f 2>/dev/null; done
log "done"
touch $R/DONE
