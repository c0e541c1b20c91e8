#!/usr/bin/env bash
# Does compaction stall its shard? Open-loop produce latency on one topic while the cleaner
# compacts another on the same (single) shard, against the same workload before and after.
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
latency() {
    "$bin" perf produce --bootstrap-server "$addr" --topic latency --cpus 1 --json \
        --num-records 500000 --throughput 50000 --producer-props acks=1 linger.ms=1
}
sleep 5
before=$(latency)
# CLEANER=false: the same restart without compaction, to tell the cleaner's cost from the
# restart's.
KEEP_DATA=1 start_broker --set log.cleaner.backoff.ms=200 --set "log.cleaner.enable=${CLEANER:-true}" \
    --set "log.cleaner.io.max.bytes.per.second=${CLEANER_IO:-1.7976931348623157E308}"
during=$(latency)
for _ in $(seq 600); do grep -q "compacted" "$work/broker.log" && break; [ "${CLEANER:-true}" = true ] || break; sleep 0.1; done
sleep 5
after=$(latency)
# The broker's start and the cleaner's report, with their times.
grep -E "serving|compacted" "$work/broker.log" | cut -c1-27,60-
for name in before during after; do
    out="${!name}"
    echo "$name: p50 $(field p50 <<<"$out") ms, p99 $(field p99 <<<"$out") ms," \
        "p99.9 $(field p99.9 <<<"$out") ms, max $(field max <<<"$out") ms, $(field mb_per_sec <<<"$out") MB/s"
done
