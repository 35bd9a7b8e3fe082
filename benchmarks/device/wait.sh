# wait.sh SECONDS: wait for /tmp/res/DONE at most SECONDS, then pack /tmp/res into $OUT
end=$(( $(date +%s) + $1 ))
while [ ! -f /tmp/res/DONE ] && [ $(date +%s) -lt $end ]; do sleep 5; done
cat /tmp/res/chain.log; tail -3 /tmp/res/*.log | tail -40; nvidia-smi --query-gpu=memory.used --format=csv
tar czf $OUT/res.tgz -C /tmp res
