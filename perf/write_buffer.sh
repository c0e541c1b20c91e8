#!/usr/bin/env bash
# Produce throughput against the size of the DMA write buffer (`shardlog.write.buffer.bytes`,
# the most one write round puts in a single O_DIRECT write): 1 KiB records, one partition,
# acks=1 and acks=-1, sizes interleaved over 3 rounds, medians. Broker on CPU 0, load on CPU 1.
#
#   perf/write_buffer.sh [records]     (default 2000000)
source "$(dirname "$0")/lib.sh"
records="${1:-2000000}"
sizes=(262144 1048576 4194304)
declare -A runs
for round in 1 2 3; do
  for size in "${sizes[@]}"; do
    start_broker --set "shardlog.write.buffer.bytes=$size"
    for acks in 1 -1; do
      out=$("$bin" perf produce --bootstrap-server "$addr" --topic "wb$acks" --cpus 1 --json \
            --num-records "$records" --producer-props "acks=$acks" batch.size=1000000 linger.ms=5)
      runs[$size,$acks]+="$(field mb_per_sec <<<"$out") "
    done
  done
done
echo "| shardlog.write.buffer.bytes | acks=1 MB/s (median; runs) | acks=-1 MB/s (median; runs) |"
echo "|---|---|---|"
for size in "${sizes[@]}"; do
  # shellcheck disable=SC2086
  echo "| $size | $(median ${runs[$size,1]}) (${runs[$size,1]% }) | $(median ${runs[$size,-1]}) (${runs[$size,-1]% }) |"
done
