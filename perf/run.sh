#!/usr/bin/env bash
# Standard workloads against a fresh broker: 1 KiB and 100 B records; 1 and 16 partitions;
# acks=1 and acks=-1; 1 and 4 producers. The broker runs on CPU 0 (one shard), the load on
# CPU 1. Prints a markdown table (paste it into perf/RESULTS.md with the date and machine).
#
#   perf/run.sh [records-per-run]        (default 500000)
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-500000}"
cargo build --release -q
bin="$PWD/target/release/shardlog"
work="$(mktemp -d "${TMPDIR:-/tmp}/shardlog-perf.XXXXXX")"
broker_pid=""
cleanup() {
    [ -n "$broker_pid" ] && kill -TERM "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

taskset -c 0 "$bin" broker --cores 1 --set listeners=PLAINTEXT://127.0.0.1:0 \
    --set "log.dirs=$work/data" >"$work/out" 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
addr="$(sed -n 's/.*listening on //p' "$work/out")"
[ -n "$addr" ] || { echo "broker did not start:"; cat "$work/broker.log"; exit 1; }

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
echo "| record | partitions | acks | producers | produce MB/s | msg/s | p50 ms | p99 ms | p99.9 ms | consume MB/s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
n=0
for size in 1024 100; do
  for parts in 1 16; do
    for acks in 1 -1; do
      for producers in 1 4; do
        n=$((n + 1))
        topic="std-$n"
        p=$("$bin" perf produce --bootstrap-server "$addr" --topic "$topic" --partitions "$parts" \
            --num-records "$records" --record-size "$size" --producers "$producers" --cpus 1 --json \
            --producer-props "acks=$acks" batch.size=1000000 linger.ms=5)
        c=$("$bin" perf consume --bootstrap-server "$addr" --topic "$topic" --cpus 1 --json)
        echo "| $size B | $parts | $acks | $producers | $(field mb_per_sec <<<"$p") | $(field msgs_per_sec <<<"$p") | $(field p50 <<<"$p") | $(field p99 <<<"$p") | $(field p99.9 <<<"$p") | $(field mb_per_sec <<<"$c") |"
      done
    done
  done
done
