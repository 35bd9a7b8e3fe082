#!/bin/bash
# detached (setsid): the next device plan (benchmarks/NOTES.md "Pending GPU runs"), results in /tmp/res; every
# item checks the time left to DEADLINE (epoch seconds, the second argument: the session's device time left at
# the call's start, less ~3 min for the machine's start and the last transfer).
# Start (first call, timeout_s 600): T0=$(date +%s); source benchmarks/device/setup.sh &&
#   (setsid nohup bash benchmarks/device/chain_next.sh $T0 $(( T0 + LEFT - 180 )) > /tmp/chain.out 2>&1 < /dev/null &);
#   bash benchmarks/device/wait.sh $(( T0 + 560 ))
# then `bash benchmarks/device/wait.sh 560` in each call, at once (the machine is released after 30 s idle).
source "$(dirname "$0")/chain_lib.sh" "$@"
# 0. every method and ablation compiled on the GPU (tiny-flux, W8A8 within 2 % of FP) and the two helpers
#    fixed after q-dit failed on cuda in the ninth session, beside the table (it uses little of the GPU): a
#    method that fails on cuda shows in the first call's output
( timeout $(( $(left) - 20 )) python3 -m pytest tests/gpu/test_methods_gpu.py -q -p no:cacheprovider > $R/test_methods_gpu_log.txt 2>&1; log "test_methods_gpu rc=$?" ) &
# 1. the full quality table (issues 14/15) until the deadline, resumable: benchmarks/results/quality_full.json
#    (the rows of earlier runs) is copied in first, and a partial $R/quality_full.json is copied back after
#    the call. On the H100 a row takes ~50 s in one of 6 workers (ninth session); a failing row is recorded in
#    the JSON's "failed" with its traceback and the others go on (rc 1 at the end).
if [ $(left) -ge 150 ]; then
  [ -f benchmarks/results/quality_full.json ] && cp benchmarks/results/quality_full.json $R/quality_full.json
  timeout $(( $(left) - 20 )) python3 benchmarks/quality.py --device cuda --jobs 8 --out $R/quality_full.json > $R/quality_full_log.txt 2>&1; log "quality rc=$?"
fi
# 2. Z-Image's fused projections end to end (issue 13's Z-Image row with the fusion), if the time is there
if [ $(left) -ge 420 ]; then
  timeout $(( $(left) - 20 )) python3 benchmarks/bench_e2e.py --models z-image --variants bf16-compile,ours-a3-fused-compile --time-budget $(( $(left) - 200 )) --out $R/bench_e2e_zimage.json > $R/bench_e2e_zimage_log.txt 2>&1; log "bench_e2e z-image rc=$?"
fi
wait
log "done"
touch $R/DONE
