#!/bin/bash
# detached (setsid): the eighth session's device plan (what ran: BENCHMARKS.md's 2026-12-07 eighth-session entry), results in /tmp/res; every
# item after the first checks the time left to DEADLINE (epoch seconds, the second argument: the session's
# device time left at the call's start, less ~3 min for the machine's start and the last transfer).
# Start (first call, timeout_s 600): T0=$(date +%s); source benchmarks/device/setup.sh &&
#   (setsid nohup bash benchmarks/device/chain_next.sh $T0 $(( T0 + LEFT - 180 )) > /tmp/chain.out 2>&1 < /dev/null &);
#   bash benchmarks/device/wait.sh $(( T0 + 560 ))
# then `bash benchmarks/device/wait.sh 560` in each call, at once (the machine is released after 30 s idle).
source "$(dirname "$0")/chain_lib.sh" "$@"
# 1. GPTQ's allocator peak at Flux-dev's widest layers against gptq_peak_bytes (with the workspace term), ~15 s
timeout 60 python3 -m pytest -p no:cacheprovider -q -s tests/gpu/test_gptq_gpu.py -k peak > $R/test_gptq_log.txt 2>&1; log "gptq peak rc=$?"
# 2. Flux-dev at default sizes (1024², 50 steps, 4 calibration samples; candidate costs on 1), ~20 min (issue 12)
timeout $(( $(left) - 15 )) python3 benchmarks/bench_compile_gpu.py --out /tmp/run/fd --run-steps -- flux-dev --target 3.1 --search-samples 1 --resolution 1024 1024 > $R/flux_default_log.txt 2>&1; log "flux default rc=$?"
cp /tmp/run/fd.json $R/ 2>/dev/null; for f in report.md schedule.json manifest.json; do cp /tmp/run/fd/$f $R/fd_$f 2>/dev/null; done
ls -la /tmp/run/fd /tmp/run/fd/onnx > $R/fd_ls.txt 2>&1; rm -rf /tmp/run/fd
# 3. the runner's torch backend on the GPU with the fused projections, its default now (the fixture is built on
#    the CPU here, ~1 min), ~2 min
if [ $(left) -ge 200 ]; then
  make gpu-fixture > $R/fixture_log.txt 2>&1; log "fixture rc=$?"
  timeout 150 python3 -m pytest -p no:cacheprovider -q -s tests/gpu/test_runner_gpu.py tests/gpu/test_runner_graphs.py tests/gpu/test_fuse_projections_gpu.py > $R/test_runner_gpu_log.txt 2>&1; log "runner gpu tests rc=$?"
fi
# 4. Z-Image at default sizes (1024², 9 steps, 4 calibration samples), ~5 min (issue 12)
if [ $(left) -ge 330 ]; then
  timeout $(( $(left) - 20 )) python3 benchmarks/bench_compile_gpu.py --out /tmp/run/zi --run-steps -- z-image --target 3.1 --search-samples 1 --resolution 1024 1024 > $R/zimage_default_log.txt 2>&1; log "z-image default rc=$?"
  cp /tmp/run/zi.json $R/ 2>/dev/null; for f in report.md schedule.json; do cp /tmp/run/zi/$f $R/zi_$f 2>/dev/null; done
  ls -la /tmp/run/zi /tmp/run/zi/onnx > $R/zi_ls.txt 2>&1
else
  log "z-image skipped: $(left) s left"
fi
log "done"
touch $R/DONE
