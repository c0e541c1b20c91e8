#!/usr/bin/env bash
# Consumer-group timings (issue 4): a lone consumer's first assignment against
# group.initial.rebalance.delay.ms, and the rebalance time of a 10-member group, with
# librdkafka consumers (`shardlog perf rebalance`). Broker on CPU 0, consumers on CPU 1.
#   perf/rebalance.sh [rounds]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rounds="${1:-5}"
for delay in 3000 0; do
    start_broker --set "group.initial.rebalance.delay.ms=$delay"
    for hb in 3000 500; do
        echo "== group.initial.rebalance.delay.ms=$delay heartbeat.interval.ms=$hb"
        taskset -c 1 "$bin" perf rebalance --bootstrap "$addr" --partitions 20 --members 10 \
            --rounds "$rounds" --heartbeat-ms "$hb"
    done
done
