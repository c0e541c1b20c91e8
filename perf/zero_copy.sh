#!/usr/bin/env bash
# Zero-copy fetch (sendfile from the segment file) against the copy path (O_DIRECT read into
# memory, then send), on cold data (hot tail off, page cache dropped before each read where
# permitted) and on hot data (everything in the in-memory hot tail). Consume throughput with
# the project's tool and with librdkafka; medians of 3 reads. Broker on CPU 0, load on CPU 1.
#
#   perf/zero_copy.sh [records]     (default 1000000 records of 1 KiB over $PARTS partitions, default 4)
source "$(dirname "$0")/lib.sh"
records="${1:-1000000}"
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
echo "| data | path | shardlog consume MB/s | librdkafka consume MB/s |"
echo "|---|---|---|---|"
for data in ${DATA:-cold hot}; do
  for path in ${PATHS:-copy zero-copy}; do
    hot=0; [ "$data" = hot ] && hot=$((2 << 30))
    zc=false; [ "$path" = zero-copy ] && zc=true
    start_broker --set "shardlog.hot.tail.bytes=$hot" --set "shardlog.fetch.zero.copy=$zc"
    "$bin" perf produce --bootstrap-server "$addr" --topic zc --partitions "${PARTS:-4}" --keyed --cpus 1 \
        --num-records "$records" --json --producer-props acks=1 batch.size=1000000 linger.ms=5 >/dev/null
    for client in shardlog rdkafka; do
      runs=()
      for _ in 1 2 3; do
        [ "$data" = cold ] && drop_caches
        out=$("$bin" perf consume --bootstrap-server "$addr" --topic zc --cpus 1 --json --client "$client")
        runs+=("$(field mb_per_sec <<<"$out")")
      done
      eval "m_$client=$(median "${runs[@]}")"
    done
    echo "| $data | $path | $m_shardlog | $m_rdkafka |"
  done
done
