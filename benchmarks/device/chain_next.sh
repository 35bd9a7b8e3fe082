#!/bin/bash
# detached (setsid): the next device plan (benchmarks/NOTES.md "Pending GPU runs"), results in /tmp/res; every
# item checks the time left to DEADLINE (epoch seconds, the second argument: the session's device time left at
# the call's start, less ~3 min for the machine's start and the last transfer).
# Start (first call, timeout_s 600): T0=$(date +%s); source benchmarks/device/setup.sh &&
#   (setsid nohup bash benchmarks/device/chain_next.sh $T0 $(( T0 + LEFT - 180 )) > /tmp/chain.out 2>&1 < /dev/null &);
#   bash benchmarks/device/wait.sh $(( T0 + 560 ))
# then `bash benchmarks/device/wait.sh 560` in each call, at once (the machine is released after 30 s idle).
source "$(dirname "$0")/chain_lib.sh" "$@"
# 1. the activation kernels' A/B in one process: the CTA kernel first (the digests' reference), then the
#    default warp kernel and the opt-in warps-per-token kernels' options (plugins/csrc/rotate_quant_warps.cu)
timeout 300 python3 benchmarks/bench_act.py --out $R --tag ab --widths 1536,3072,12288 --variants cta,,warps,warps+w2,warps+occ3,warps+w2+occ3 > $R/bench_act_ab_log.txt 2>&1; log "bench_act A/B rc=$?"
# 2. the activation kernels' GPU tests (against the reference, and bit-identity with the CTA kernel)
timeout 400 python3 -m pytest tests/gpu/test_qlinear_kernels.py -q -p no:cacheprovider -k "rotate_quant or bit_identical" > $R/tests_act_log.txt 2>&1; log "tests act rc=$?"
# 3. the best bit-identical options for the end-to-end runs
export ADATSQ_RQ_KERNEL=$(python3 benchmarks/device/pick_rq_options.py $R/bench_act_ab.json 2>> $R/chain.log)
log "ADATSQ_RQ_KERNEL=$ADATSQ_RQ_KERNEL"
# 4. Flux-dev's fused step against both baselines in one process (issue 13)
if [ $(left) -ge 300 ]; then
  timeout $(( $(left) - 20 )) python3 benchmarks/bench_e2e.py --models flux-dev --variants bf16-compile,fp8-compile,ours-a3-fused-compile --time-budget $(( $(left) - 120 )) --out $R/bench_e2e_fluxdev.json > $R/bench_e2e_fluxdev_log.txt 2>&1; log "bench_e2e flux-dev rc=$?"
fi
# 5. the GPU tests (kernels, runner, methods), with the options above
if [ $(left) -ge 420 ]; then
  timeout $(( $(left) - 20 )) python3 -m pytest tests/gpu -q -p no:cacheprovider > $R/tests_gpu_log.txt 2>&1; log "tests/gpu rc=$?"
fi
# 6. the weight-scale granularity rows at FULL settings (the quick CPU rows are in BENCHMARKS.md, 2026-12-08)
if [ $(left) -ge 300 ]; then
  timeout $(( $(left) - 20 )) python3 benchmarks/quality.py --device cuda --jobs 8 --rows adatsq,adatsq+channel,adatsq+pow2 --methods "" --out $R/quality_weight_group.json --work /tmp/qwork > $R/quality_weight_group_log.txt 2>&1; log "quality weight-group rc=$?"
fi
# 7. Wan2.1's row, if the time is there
if [ $(left) -ge 420 ]; then
  timeout $(( $(left) - 20 )) python3 benchmarks/bench_e2e.py --models wan2.1-1.3b --variants bf16-compile,ours-a3-fused-compile --time-budget $(( $(left) - 200 )) --out $R/bench_e2e_wan.json > $R/bench_e2e_wan_log.txt 2>&1; log "bench_e2e wan rc=$?"
fi
wait
log "done"
touch $R/DONE
