#!/usr/bin/env bash
# Consume throughput at the clients' default fetch sizes, the matrix of issue 10: librdkafka's
# own `rdkafka_performance -C` (built here from the librdkafka source that the rdkafka crate
# vendors) at its defaults (1 MiB per partition per Fetch) and at 10 MiB partition fetches,
# beside the project's own consumer at the same two sizes; hot data (all in the broker's hot tail), cold
# data (written, synced, left $SETTLE s for the device to finish writing back, page cache
# dropped before each read) and data read straight after it was written (still being written
# back); 1 and 8 partitions. 1 KiB records written in 16 KiB batches (the producers' default).
# Broker on CPU 0 with one shard, consumer on CPU 1. Medians of $ROUNDS reads; the loopback
# TCP bandwidth (iperf3) and the device's O_DIRECT sequential read (fio) of the same run are
# printed so that other days compare as ratios.
#
#   perf/fetch_matrix.sh            env: RECORDS (1000000), ROUNDS (3), SETTLE (30),
#                                   DATA ("hot cold writeback"), PARTS ("1 8"),
#                                   CLIENTS ("rdkafka rdkafka-10m shardlog shardlog-10m"),
#                                   BROKER_BIN (a broker binary to measure instead of the build),
#                                   BROKER_SET ("key=value ..." broker settings, e.g.
#                                   "shardlog.fetch.zero.copy=true")
source "$(dirname "$0")/lib.sh"
records="${RECORDS:-1000000}"
rounds="${ROUNDS:-3}"
settle="${SETTLE:-30}"
extra=()
for kv in ${BROKER_SET:-}; do extra+=(--set "$kv"); done
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# librdkafka's own perf tool, linked against the librdkafka the rdkafka crate built.
rdperf="$PWD/target/rdkafka_performance"
if [ ! -x "$rdperf" ]; then
  lib=$(find target/release/build -path '*rdkafka-sys-*/out/src/librdkafka.a' | head -1)
  zstd=$(find target/release/build -path '*zstd-sys-*/out/libzstd.a' | head -1)
  src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*rdkafka-sys-*/librdkafka/examples/rdkafka_performance.c' | head -1)
  [ -n "$lib" ] && [ -n "$src" ] || { echo "cannot find librdkafka.a or rdkafka_performance.c"; exit 1; }
  gcc -O2 -w -o "$rdperf" "$src" -I"$(dirname "$lib")" "$lib" ${zstd:+"$zstd"} -lpthread -lz -lm -ldl -lrt
fi

device="n/a"
if command -v fio >/dev/null; then
  device=$(fio --name=seqread --directory="$work" --rw=read --bs=1M --size=1G --direct=1 \
      --ioengine=io_uring --iodepth=8 --output-format=terse 2>/dev/null | cut -d';' -f7 \
      | awk '{printf "%.0f", $1 * 1024 / 1e6}')
  rm -f "$work"/seqread*
fi
loopback="n/a"
if command -v iperf3 >/dev/null; then
  taskset -c 0 iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
  sleep 0.5
  loopback=$(taskset -c 1 iperf3 -c 127.0.0.1 -p 5299 -t 3 -J 2>/dev/null \
    | sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -1 \
    | awk '{printf "%.0f", $1 / 8e6}')
  wait || true
fi
echo "loopback TCP (iperf3, CPU 0 <- CPU 1): $loopback MB/s; device O_DIRECT sequential read (fio, 1 MiB, QD 8): $device MB/s; broker: ${BROKER_BIN:-$bin} ${BROKER_SET:-}"
echo
echo "| data | partitions | client | fetch per partition | MB/s (median) | runs | ratio to loopback |"
echo "|---|---|---|---|---|---|---|"

produce() {
  "$bin" perf produce --bootstrap-server "$addr" --topic fm --partitions "$1" --cpus 1 \
      --num-records "$records" --json --producer-props acks=1 batch.size=16384 linger.ms=5 \
      >/dev/null
}
consume() { # client partitions
  case "$1" in
    rdkafka*)
      local args=(-C -t fm -o beginning -c "$records" -b "$addr" -q)
      for p in $(seq 0 $(($2 - 1))); do args+=(-p "$p"); done
      case "$1" in *-10m) args+=(-X fetch.message.max.bytes=10485760) ;; esac
      taskset -c 1 "$rdperf" "${args[@]}" 2>&1 | sed -n 's/.*consumed in.*(\([0-9.]*\) MB\/s).*/\1/p'
      ;;
    *)
      local props=()
      case "$1" in *-10m) props=(--consumer-props max.partition.fetch.bytes=10485760) ;; esac
      "$bin" perf consume --bootstrap-server "$addr" --topic fm --cpus 1 --json \
          "${props[@]}" 2>/dev/null | field mb_per_sec
      ;;
  esac
}
for data in ${DATA:-hot cold writeback}; do
  for parts in ${PARTS:-1 8}; do
    hot=8388608; [ "$data" = hot ] && hot=$((2 << 30))
    for client in ${CLIENTS:-rdkafka rdkafka-10m shardlog shardlog-10m}; do
      runs=()
      if [ "$data" != writeback ]; then
        bin_broker="${BROKER_BIN:-$bin}" start_broker --set "shardlog.hot.tail.bytes=$hot" "${extra[@]}"
        produce "$parts"
        [ "$data" = cold ] && { sync; sleep "$settle"; }
      fi
      for _ in $(seq "$rounds"); do
        if [ "$data" = writeback ]; then
          bin_broker="${BROKER_BIN:-$bin}" start_broker "${extra[@]}"
          produce "$parts"
          sync
        fi
        [ "$data" = cold ] && drop_caches
        runs+=("$(consume "$client" "$parts")")
      done
      m=$(median "${runs[@]}")
      size="1 MiB (default)"; case "$client" in *-10m) size="10 MiB" ;; esac
      name="rdkafka_performance -C"; case "$client" in shardlog*) name="shardlog perf consume" ;; esac
      ratio=$(awk -v m="$m" -v l="$loopback" 'BEGIN {if (l + 0 > 0) printf "%.2f", m / l; else print "n/a"}')
      echo "| $data | $parts | $name | $size | $m | ${runs[*]} | $ratio |"
    done
  done
done
