#!/bin/bash
# detached (setsid): the full quality table on the GPU (issues 14/15) with the committed shapes-flux checkpoint
# (step 8300), every row and every --method baseline in four worker processes, stopped by DEADLINE (epoch
# seconds, the second argument). Resumable: copy a partial $R/quality_full.json back to
# benchmarks/results/quality_full.json and the next run keeps its rows. Start as chain_next.sh says.
source "$(dirname "$0")/chain_lib.sh" "$@"
[ -f benchmarks/results/quality_full.json ] && cp benchmarks/results/quality_full.json $R/quality_full.json
timeout $(( $(left) - 20 )) python3 benchmarks/quality.py --device cuda --jobs 4 --out $R/quality_full.json > $R/quality_full_log.txt 2>&1; log "quality rc=$?"
log "done"
touch $R/DONE
