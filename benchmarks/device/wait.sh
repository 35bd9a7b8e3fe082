# wait.sh DEADLINE: wait for /tmp/res/DONE until DEADLINE, then print the chain's log and leave /tmp/res in
# $OUT/res.tgz. DEADLINE is seconds from now, or an absolute time (epoch seconds, e.g. $(( T0 + 560 )) with
# T0=$(date +%s) taken first thing in the call, so the setup's minutes count against the call's 600 s).
# A snapshot is packed every minute as well: a call cut off at its limit still returns the latest one.
now=$(date +%s)
if [ "$1" -gt 1000000000 ]; then end=$1; else end=$(( now + $1 )); fi
pack() { tar czf $OUT/res.tgz.part -C /tmp res 2>/dev/null && mv $OUT/res.tgz.part $OUT/res.tgz; }
last=0
while [ ! -f /tmp/res/DONE ] && [ $(date +%s) -lt $end ]; do
  if [ $(( $(date +%s) - last )) -ge 60 ]; then pack; last=$(date +%s); fi
  sleep 5
done
cat /tmp/res/chain.log; tail -n 3 /tmp/res/*.log | tail -40; nvidia-smi --query-gpu=memory.used --format=csv
pack
