# Sourced by a device chain (benchmarks/device/chain_*.sh) with the chain's arguments: T0 (epoch seconds, the
# call's start) and DEADLINE (epoch seconds by which the chain must be done). Enters the repo root, sets the
# device environment, results go to R=/tmp/res; log MSG appends to its chain.log, left prints the seconds left.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benchmarks/device/env.sh
T0=${1:-$(date +%s)}; DEADLINE=${2:-$(( T0 + 1600 ))}
R=/tmp/res; mkdir -p $R
log() { echo "$(date -u +%T) $*" >> $R/chain.log; }
left() { echo $(( DEADLINE - $(date +%s) )); }
log "start, $(left) s to the deadline"
