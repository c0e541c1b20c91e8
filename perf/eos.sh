#!/usr/bin/env bash
# Exactly-once costs, librdkafka at its defaults with Java-sized batches (batch.size=16384,
# linger.ms=5, acks=all), 100 B records, 8 partitions, broker on CPU 0 (one shard), load on
# CPU 1, each measurement alternated and repeated ROUNDS times (median printed):
#   - produce with enable.idempotence=false against =true;
#   - transactions of 1,000 records against the same idempotent producer without them;
#   - consume read_uncommitted against read_committed, of plain and of transactional data;
#   - with OLD_BIN=path/to/an/older/shardlog: idempotence off against that broker binary
#     (the same load generator, alternating brokers), the A/B for the produce path.
#
#   [OLD_BIN=...] [ROUNDS=5] perf/eos.sh [records-per-run]        (default 1000000)
source "$(dirname "$0")/lib.sh"
records="${1:-1000000}"
rounds="${ROUNDS:-5}"
new="$bin"
props=(acks=all batch.size=16384 linger.ms=5)

produce() { # topic, extra args...
    local topic=$1
    shift
    "$new" perf produce --bootstrap-server "$addr" --topic "$topic" --partitions 8 \
        --num-records "$records" --record-size 100 --cpus 1 --json --client rdkafka "$@"
}
consume() { # topic, isolation level
    "$new" perf consume --bootstrap-server "$addr" --topic "$1" --cpus 1 --json --client rdkafka \
        --isolation-level "$2"
}

# The broker's CPU time so far, in clock ticks (user + system).
ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }
declare -A mbs p99 cpu
run() { # label, produce args...
    local label=$1 out before
    shift
    before=$(ticks)
    out=$(produce "$@")
    mbs[$label]+=" $(field mb_per_sec <<<"$out")"
    p99[$label]+=" $(field p99 <<<"$out")"
    cpu[$label]+=" $(awk -v t=$(($(ticks) - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')"
}

start_broker
for r in $(seq "$rounds"); do
    run "idempotence off" "off-$r" --producer-props "${props[@]}" enable.idempotence=false
    run "idempotence on" "on-$r" --producer-props "${props[@]}" enable.idempotence=true
    run "transactions of 1000" "txn-$r" --producer-props "${props[@]}" --transaction-records 1000
done
for r in $(seq "$rounds"); do
    for topic in "off-$r" "txn-$r"; do
        for level in read_uncommitted read_committed; do
            out=$(consume "$topic" "$level")
            mbs["consume ${topic%-*} $level"]+=" $(field mb_per_sec <<<"$out")"
        done
    done
done
if [ -n "${OLD_BIN:-}" ]; then
    for r in $(seq "$rounds"); do
        bin="$OLD_BIN" start_broker
        run "old broker, idempotence off" "ab-old-$r" --producer-props "${props[@]}"
        bin="$new" start_broker
        run "this broker, idempotence off" "ab-new-$r" --producer-props "${props[@]}"
    done
fi

echo "### Exactly-once costs ($records records of 100 B per run, median of $rounds)"
echo
echo "| workload | MB/s (median) | runs, MB/s | p99 ms (median) | broker CPU s per run (median) |"
echo "|---|---|---|---|---|"
for label in "idempotence off" "idempotence on" "transactions of 1000" \
    "consume off read_uncommitted" "consume off read_committed" \
    "consume txn read_uncommitted" "consume txn read_committed" \
    "old broker, idempotence off" "this broker, idempotence off"; do
    [ -n "${mbs[$label]:-}" ] || continue
    # shellcheck disable=SC2086
    echo "| $label | $(median ${mbs[$label]}) | ${mbs[$label]# } | $( [ -n "${p99[$label]:-}" ] && median ${p99[$label]} || echo -) | $( [ -n "${cpu[$label]:-}" ] && median ${cpu[$label]} || echo -) |"
done
