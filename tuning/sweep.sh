#!/usr/bin/env bash
# The sweeps behind tuning/README.md: `shardlog tune` over batch.size x linger.ms, 1 KiB
# records, one partition, at 100 MB/s offered (100,000 records/s for 3 s) and at maximum rate
# (500,000 records), for acks=1 and acks=-1. Broker on CPU 0, load on CPU 1. Writes
# tuning/acks1/ and tuning/acks-all/ (tune.csv, tune.svg).
source "$(dirname "$0")/../perf/lib.sh"
for acks in 1 all; do
  start_broker
  dir="tuning/acks${acks/all/-all}"
  "$bin" tune --bootstrap-server "$addr" --topic "tune-$acks" --cpus 1 \
      --batch-sizes 16384,65536,262144,1048576 --linger-ms 0,1,5,20 \
      --rate 100000 --seconds 3 --max-records 500000 --latency-budget-ms 1 \
      --producer-props "acks=$acks" --out "$dir"
done
