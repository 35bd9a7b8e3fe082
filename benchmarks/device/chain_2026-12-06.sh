#!/bin/bash
# detached (setsid): the whole device plan of this session, results in /tmp/res
cd "$(dirname "$0")/../.."
source benchmarks/device/env.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
R=/tmp/res; mkdir -p $R
log() { echo "$(date -u +%T) $*" >> $R/chain.log; }
log "start"
( make cpp-gpu > $R/cpp_gpu.log 2>&1; log "cpp-gpu rc=$?" ) &
( make gpu-fixture > $R/fixture.log 2>&1; log "fixture rc=$?" ) &
wait
python3 -m pytest -p no:cacheprovider -q tests/gpu/test_trt_bindings_gpu.py tests/gpu/test_rotation_blocks_gpu.py tests/gpu/test_runner_graphs.py > $R/test_gpu_first.log 2>&1; log "first gpu tests rc=$?"
python3 benchmarks/bench_e2e.py --models flux-dev --variants bf16-compile,ours-a3,ours-a3-compile --out $R/bench_e2e.json --time-budget 150 > $R/bench_e2e.log 2>&1; log "bench_e2e rc=$?"
python3 benchmarks/bench_compile_gpu.py --out /tmp/run/wan --run-steps -- wan2.1-1.3b --target 3.1 --steps 4 --calib-samples 2 --search-samples 1 --heldout-samples 2 > $R/wan.log 2>&1; log "wan rc=$?"
cp /tmp/run/wan.json $R/ 2>/dev/null; for f in report.md schedule.json manifest.json; do cp /tmp/run/wan/$f $R/wan_$f 2>/dev/null; done
A="flux-dev --random-weights --target 3.1 --steps 4 --calib-samples 2 --resolution 512 512 --until calibrate"
( time adatsq-compile $A -o /tmp/run/dp1 ) > $R/dp_plain.log 2>&1; log "dp plain rc=$?"
( time python3 -m torch.distributed.run --nproc-per-node 1 /tmp/adq/bin/adatsq-compile $A -o /tmp/run/dpt ) > $R/dp_torchrun.log 2>&1; log "dp torchrun rc=$?"
python3 benchmarks/device/cmp_calib.py /tmp/run/dp1/cache/calibration.pt /tmp/run/dpt/cache/calibration.pt > $R/dp_cmp.json 2>&1; log "dp cmp rc=$?"
log "done"
touch $R/DONE
