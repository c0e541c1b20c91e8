#!/usr/bin/env bash
# Standard workloads against a fresh broker: 1 KiB and 100 B records; 1 and 16 partitions;
# acks=1 and acks=-1; 1 and 4 producers; each through the project's tool and through
# librdkafka (`--client rdkafka`). The broker runs on CPU 0 (one shard), the load on CPU 1.
# First it records the machine's own limits (fio O_DIRECT sequential write and read, iperf3 on
# loopback) where those tools are installed. Prints markdown tables for perf/RESULTS.md.
#
#   perf/run.sh [records-per-run]        (default 500000)
source "$(dirname "$0")/lib.sh"
records="${1:-500000}"

echo "### Machine limits"
echo
if command -v fio >/dev/null; then
  for rw in write read; do
    out=$(fio --name=limit --directory="$work" --rw="$rw" --bs=1M --size=2G --direct=1 \
          --ioengine=io_uring --iodepth=8 --numjobs=1 --group_reporting --output-format=terse \
          --terse-version=3 2>/dev/null)
    # terse v3: field 7 is read bandwidth (KiB/s), field 48 write bandwidth.
    bw=$(awk -F';' -v rw="$rw" '{print (rw == "read") ? $7 : $48}' <<<"$out")
    echo "- fio O_DIRECT sequential $rw, 1 MiB blocks, iodepth 8: $((bw / 1024)) MiB/s"
  done
else
  echo "- fio not installed (apt-get install fio)"
fi
if command -v iperf3 >/dev/null; then
  taskset -c 0 iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
  sleep 0.5
  gbps=$(taskset -c 1 iperf3 -c 127.0.0.1 -p 5299 -t 5 -J 2>/dev/null \
         | sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -1)
  echo "- iperf3 loopback TCP, server CPU 0, client CPU 1: $(awk -v b="$gbps" 'BEGIN {printf "%.0f", b / 8e6}') MB/s"
else
  echo "- iperf3 not installed (apt-get install iperf3)"
fi
echo

start_broker
echo "### Standard workloads ($records records per run)"
echo
echo "| record | partitions | acks | producers | client | produce MB/s | msg/s | p50 ms | p99 ms | p99.9 ms | consume MB/s | consume msg/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
n=0
for size in 1024 100; do
  for parts in 1 16; do
    for acks in 1 -1; do
      for producers in 1 4; do
        for client in shardlog rdkafka; do
          n=$((n + 1))
          topic="std-$n"
          p=$("$bin" perf produce --bootstrap-server "$addr" --topic "$topic" --partitions "$parts" \
              --num-records "$records" --record-size "$size" --producers "$producers" --cpus 1 --json \
              --client "$client" --producer-props "acks=$acks" batch.size=1000000 linger.ms=5)
          c=$("$bin" perf consume --bootstrap-server "$addr" --topic "$topic" --cpus 1 --json \
              --client "$client")
          echo "| $size B | $parts | $acks | $producers | $client | $(field mb_per_sec <<<"$p") | $(field msgs_per_sec <<<"$p") | $(field p50 <<<"$p") | $(field p99 <<<"$p") | $(field p99.9 <<<"$p") | $(field mb_per_sec <<<"$c") | $(field msgs_per_sec <<<"$c") |"
        done
      done
    done
  done
done
