#!/usr/bin/env bash
# Does compaction stall its shard? Open-loop produce latency on one topic while the cleaner
# compacts another on the same (single) shard, against the same workload once it is done.
# A compacted topic gets `records` 1 KiB keyed records twice (the second copy supersedes the
# first) with the cleaner off; the broker restarts with the cleaner on (backoff 200 ms) and
# the latency run starts at once. Broker (shard and its blocking pool) on CPU 0, load on CPU 1.
#   perf/compaction.sh [records]      (default 1000000: 2 GB written, 1 GB kept)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
records="${1:-1000000}"
start_broker --set log.cleaner.enable=false
"$bin" topic create table --bootstrap "$addr" --config cleanup.policy=compact \
    --config segment.bytes=67108864 >/dev/null
for _ in 1 2; do
    "$bin" perf produce --bootstrap-server "$addr" --topic table --keyed --cpus 1 --json \
        --num-records "$records" --producer-props acks=1 batch.size=1000000 linger.ms=5 >/dev/null
done
"$bin" perf produce --bootstrap-server "$addr" --topic latency --cpus 1 --num-records 1000 >/dev/null
KEEP_DATA=1 start_broker --set log.cleaner.backoff.ms=200
latency() {
    "$bin" perf produce --bootstrap-server "$addr" --topic latency --cpus 1 --json \
        --num-records 500000 --throughput 50000 --producer-props acks=1 linger.ms=1
}
during=$(latency)
for _ in $(seq 600); do grep -q "compacted" "$work/broker.log" && break; sleep 0.1; done
sleep 1
after=$(latency)
echo "cleaner: $(grep -o 'compacted .*' "$work/broker.log" | head -3 | tr '\n' ' ')"
grep -o '^[^ ]*' "$work/broker.log" | sed -n '1p;$p' | tr '\n' ' '; echo "(first/last broker log line)"
grep "compacted" "$work/broker.log" | head -3
for name in during after; do
    out="${!name}"
    echo "$name cleaning: p50 $(field p50 <<<"$out") ms, p99 $(field p99 <<<"$out") ms," \
        "p99.9 $(field p99.9 <<<"$out") ms, max $(field max <<<"$out") ms, $(field mb_per_sec <<<"$out") MB/s"
done
