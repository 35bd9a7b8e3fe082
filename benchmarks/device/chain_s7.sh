#!/bin/bash
# detached (setsid): the seventh session's device plan, results in /tmp/res. Everything stops by DEADLINE
# (epoch seconds, the second argument): the session's device time left when the chain starts, less a margin.
# Start (first call, timeout_s 600): T0=$(date +%s); source benchmarks/device/setup.sh &&
#   (setsid nohup bash benchmarks/device/chain_s7.sh $T0 $(( T0 + LEFT )) > /tmp/chain.out 2>&1 < /dev/null &);
#   bash benchmarks/device/wait.sh $(( T0 + 560 ))
# then `bash benchmarks/device/wait.sh 560` in each call.
source "$(dirname "$0")/chain_lib.sh" "$@"  # ran with these lines inline (chain_lib.sh came from them)
# 1. GPTQ's peak memory against gptq_peak_bytes at Flux-dev's widest layers (the quantize stage's reserve), ~1 min
timeout 150 python3 -m pytest -p no:cacheprovider -q -s tests/gpu/test_gptq_gpu.py > $R/test_gptq_log.txt 2>&1; log "gptq tests rc=$?"
# 2. the runner's torch backend with the fused projections, now its default (CUDA graphs, certification), ~1 min
timeout 200 python3 -m pytest -p no:cacheprovider -q -s tests/gpu/test_runner_gpu.py tests/gpu/test_runner_graphs.py tests/gpu/test_fuse_projections_gpu.py > $R/test_runner_gpu_log.txt 2>&1; log "runner gpu tests rc=$?"
# 3. shapes-flux's second training run (issue 14), 9.5 min at most, first call on the time left
mins=$(python3 -c "print(round(min(9.5, ($(left) - 120) / 60), 1))")
log "shapes training for $mins min"
python3 -m adatsq.core.models.shapes.train --out /tmp/shapes2 --device cuda --init-from adatsq/core/models/shapes/checkpoint --steps 8900 --minutes $mins --log-every 250 --export $R/shapes_checkpoint > $R/shapes_train_log.txt 2>&1; log "shapes rc=$?"
cp /tmp/shapes2/train_record.json $R/ 2>/dev/null
# 4. the full quality table's key rows with the new checkpoint (issues 14/15): FP, AdaTSQ, the best static schedule
#    and QuaRot (uniform bits) at 4.0 and 3.1, four groups in four workers; resumable (rows in the JSON are kept)
t=$(( $(left) - 15 ))
if [ $t -ge 240 ] && [ -f $R/shapes_checkpoint/model_index.json -o -d $R/shapes_checkpoint/transformer ]; then
  log "quality-full for $t s"
  timeout $t python3 benchmarks/quality.py --device cuda --jobs 4 --rows adatsq,static --methods quarot --checkpoint $R/shapes_checkpoint --out $R/quality_full.json > $R/quality_full_log.txt 2>&1; log "quality rc=$?"
else
  log "quality skipped ($t s left)"; ls -la $R/shapes_checkpoint >> $R/chain.log 2>&1
fi
log "done"
touch $R/DONE
