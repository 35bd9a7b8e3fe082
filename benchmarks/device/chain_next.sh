#!/bin/bash
# detached (setsid): the next device plan (benchmarks/NOTES.md "Pending GPU runs"), results in /tmp/res.
# Start (first call, timeout_s 600): T0=$(date +%s); source benchmarks/device/setup.sh &&
#   (setsid nohup bash benchmarks/device/chain_next.sh > /tmp/chain.out 2>&1 < /dev/null &); bash benchmarks/device/wait.sh $(( T0 + 560 ))
# then `bash benchmarks/device/wait.sh 560` in each call (call again within 30 s; the machine is released when
# idle). ~25 min in all for items 1-3 (a machine is held 30 min at most); item 4 needs the time left after them.
cd "$(dirname "$0")/../.."
source benchmarks/device/env.sh
R=/tmp/res; mkdir -p $R
log() { echo "$(date -u +%T) $*" >> $R/chain.log; }
log "start"
# 1. Wan2.1-1.3B at full size through export, package and the runner (issue 12), ~5.5 min; the fixture meanwhile
( nice -n 10 make gpu-fixture > $R/fixture.log 2>&1; log "fixture rc=$?" ) &
python3 benchmarks/bench_compile_gpu.py --out /tmp/run/wan --run-steps -- wan2.1-1.3b --target 3.1 --steps 4 --calib-samples 2 --search-samples 1 --heldout-samples 2 > $R/wan.log 2>&1; log "wan rc=$?"
cp /tmp/run/wan.json $R/ 2>/dev/null; for f in report.md schedule.json manifest.json; do cp /tmp/run/wan/$f $R/wan_$f 2>/dev/null; done
ls -la /tmp/run/wan /tmp/run/wan/onnx > $R/wan_ls.txt 2>&1; rm -rf /tmp/run/wan
wait
# 2. the fused projections and the runner on the GPU (issue 13), ~1.5 min
timeout 240 python3 -m pytest -p no:cacheprovider -q tests/gpu/test_fuse_projections_gpu.py tests/gpu/test_runner_gpu.py tests/gpu/test_runner_graphs.py > $R/test_gpu.log 2>&1; log "gpu tests rc=$?"
# 3. Flux-dev at default sizes (1024², 50 steps, 4 calibration samples; candidate costs on 1), ~17 min (issue 12)
python3 benchmarks/bench_compile_gpu.py --out /tmp/run/fd --run-steps -- flux-dev --target 3.1 --search-samples 1 --resolution 1024 1024 > $R/flux_default.log 2>&1; log "flux default rc=$?"
cp /tmp/run/fd.json $R/ 2>/dev/null; for f in report.md schedule.json manifest.json; do cp /tmp/run/fd/$f $R/fd_$f 2>/dev/null; done
ls -la /tmp/run/fd /tmp/run/fd/onnx > $R/fd_ls.txt 2>&1; rm -rf /tmp/run/fd
# 4. bench_e2e with the fused projections (issue 13), ~7 min
python3 benchmarks/bench_e2e.py --models flux-dev --variants bf16-compile,fp8-compile,ours-a3,ours-a3-fused,ours-a3-compile,ours-a3-fused-compile --out $R/bench_e2e.json --time-budget 420 > $R/bench_e2e.log 2>&1; log "bench_e2e rc=$?"
# 5. Z-Image's fused groups (q/k/v, w1/w3; none before this session), ~3 min
python3 benchmarks/bench_e2e.py --models z-image --variants bf16-compile,ours-a3,ours-a3-fused --out $R/bench_e2e_zimage.json --time-budget 180 > $R/bench_e2e_zimage.log 2>&1; log "bench_e2e z-image rc=$?"
log "done"
touch $R/DONE
