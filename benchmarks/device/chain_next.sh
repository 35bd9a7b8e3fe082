#!/bin/bash
# detached (setsid): the next device plan (benchmarks/NOTES.md "Pending GPU runs"), results in /tmp/res; every
# item checks the time left to DEADLINE (epoch seconds, the second argument: the session's device time left at
# the call's start, less ~3 min for the machine's start and the last transfer).
# Start (first call, timeout_s 600): T0=$(date +%s); source benchmarks/device/setup.sh &&
#   (setsid nohup bash benchmarks/device/chain_next.sh $T0 $(( T0 + LEFT - 180 )) > /tmp/chain.out 2>&1 < /dev/null &);
#   bash benchmarks/device/wait.sh $(( T0 + 560 ))
# then `bash benchmarks/device/wait.sh 560` in each call, at once (the machine is released after 30 s idle).
source "$(dirname "$0")/chain_lib.sh" "$@"
# 1. Z-Image at default sizes (1024², 9 steps, 4 calibration samples; costs on 1), ~5 min (issue 12's last run)
timeout $(( $(left) - 20 )) python3 benchmarks/bench_compile_gpu.py --out /tmp/run/zi --run-steps -- z-image --target 3.1 --search-samples 1 --resolution 1024 1024 > $R/zimage_default_log.txt 2>&1; log "z-image default rc=$?"
cp /tmp/run/zi.json $R/ 2>/dev/null; for f in report.md manifest.json; do cp /tmp/run/zi/$f $R/zi_$f 2>/dev/null; done
ls -la /tmp/run/zi /tmp/run/zi/onnx > $R/zi_ls.txt 2>&1; rm -rf /tmp/run/zi
# 2. the full quality table (issues 14/15) until the deadline, resumable: copy a partial $R/quality_full.json
#    back to benchmarks/results/quality_full.json and the next run keeps its rows
if [ $(left) -ge 240 ]; then
  [ -f benchmarks/results/quality_full.json ] && cp benchmarks/results/quality_full.json $R/quality_full.json
  timeout $(( $(left) - 20 )) python3 benchmarks/quality.py --device cuda --jobs 6 --out $R/quality_full.json > $R/quality_full_log.txt 2>&1; rc=$?; log "quality rc=$rc"
  # the six spawned CUDA workers have not run on a GPU before: on a failure, one process (the rows done are kept)
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $(left) -ge 120 ]; then
    timeout $(( $(left) - 20 )) python3 benchmarks/quality.py --device cuda --jobs 1 --out $R/quality_full.json > $R/quality_full_j1_log.txt 2>&1; log "quality --jobs 1 rc=$?"
  fi
fi
log "done"
touch $R/DONE
