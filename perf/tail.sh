#!/usr/bin/env bash
# Produce tail latency at the issue-10 operating point: open loop, 100,000 records/s of 1 KiB
# (100 MB/s), acks=1, batch.size=16384, linger.ms=1, broker on CPU 0 with one shard, the load
# generator on CPU 1; $ROUNDS runs of $SECONDS_PER_RUN s, each writing its percentile plot
# ($OUT/<config>-<run>.svg and .hgrm; `shardlog perf plot` lays them together). Then an e2e run
# (a consumer tailing the producer).
#
# First the machine's floors: the scheduling floor (`shardlog perf jitter` spinning on both
# CPUs: the time the vCPUs did not run, and the delay that causes) and the device's (fio's
# total latency of 16 KiB O_DIRECT appends at QD 1 and the operating point's write rate, as
# the broker writes them). After each run the broker's own account of where its Produce
# requests waited (`shardlog.latency.report.ms`: request, round queue, device write,
# fdatasync, response send) and the stalls its shard saw (`shardlog.stall.detection.ms=5`).
#
#   perf/tail.sh     env: ROUNDS (3), SECONDS_PER_RUN (10), OUT (target/perf-tail),
#                    CONFIGS ("default"; each a name, or name:key=value,key=value of broker
#                    settings), BROKER_BIN (another broker binary), RATE (records/s, 100000),
#                    CLIENT_FLAGS (more `perf produce` flags, e.g. --sleep)
source "$(dirname "$0")/lib.sh"
rounds="${ROUNDS:-3}"
secs="${SECONDS_PER_RUN:-10}"
out="${OUT:-$PWD/target/perf-tail}"
mkdir -p "$out"
rate="${RATE:-100000}"

"$bin" perf jitter --cpus 0,1 --seconds "$secs" | sed 's/^/scheduling floor: /'
if command -v fio >/dev/null; then
  fio --name=floor --directory="$work" --rw=write --bs=16k --size=1G --direct=1 \
      --ioengine=io_uring --iodepth=1 --rate_iops=$((rate / 16)) --runtime="$secs" \
      --time_based --fallocate=none --lat_percentiles=1 \
      --output-format=json 2>/dev/null >"$work/fio.json" || true
  python3 - "$work/fio.json" "$((rate / 16))" <<'EOF' || echo "fio: no result"
import json, sys
p = json.load(open(sys.argv[1]))["jobs"][0]["write"]["lat_ns"]["percentile"]
ms = lambda k: p[k] / 1e6
print(f"device floor (fio, 16 KiB O_DIRECT appends, QD 1, {sys.argv[2]}/s, submit to completion): "
      f"p50 {ms('50.000000'):.3f} p99 {ms('99.000000'):.3f} p99.9 {ms('99.900000'):.3f} "
      f"p99.99 {ms('99.990000'):.3f} ms")
EOF
  rm -f "$work"/floor*
else
  echo "device floor: fio not installed (apt-get install fio)"
fi
# One report at shutdown covers the whole run.
timing=(--set shardlog.latency.report.ms=3600000 --set shardlog.stall.detection.ms=5)
broker_lines=()
echo
echo "| config | run | MB/s | p50 ms | p99 ms | p99.9 ms | p99.99 ms | max ms |"
echo "|---|---|---|---|---|---|---|---|"
for config in ${CONFIGS:-default}; do
  name="${config%%:*}"
  sets=()
  if [ "$name" != "$config" ]; then
    IFS=, read -ra kvs <<<"${config#*:}"
    for kv in "${kvs[@]}"; do sets+=(--set "$kv"); done
  fi
  for run in $(seq "$rounds"); do
    bin_broker="${BROKER_BIN:-$bin}" start_broker "${sets[@]}" "${timing[@]}"
    j=$("$bin" perf produce --bootstrap-server "$addr" --topic tail --cpus 1 --json \
        --num-records $((rate * secs)) --throughput "$rate" ${CLIENT_FLAGS:-} \
        --producer-props acks=1 batch.size=16384 linger.ms=1 \
        --latency-plot "$out/$name-$run")
    stop_broker
    broker_lines+=("$name $run: $(sed -n 's/.*produce path (ms): //p' "$work/broker.log" | tail -1);"\
" stalls over 5 ms: $(grep -c 'went over-budget' "$work/broker.log" || true)")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$run" \
      "$(field mb_per_sec <<<"$j")" "$(field p50 <<<"$j")" "$(field p99 <<<"$j")" \
      "$(field p99.9 <<<"$j")" "$(field p99.99 <<<"$j")" "$(field max <<<"$j")"
  done
  bin_broker="${BROKER_BIN:-$bin}" start_broker "${sets[@]}"
  e=$("$bin" perf e2e --bootstrap-server "$addr" --topic e2e --cpus 1 --json \
      --num-records $((rate * secs)) --throughput "$rate" \
      --producer-props acks=1 batch.size=16384 linger.ms=1 --latency-plot "$out/$name-e2e" \
      | tail -1)
  printf '| %s | e2e (producer to consumer) | %s | %s | %s | %s | %s | %s |\n' "$name" \
    "$(field mb_per_sec <<<"$e")" "$(field p50 <<<"$e")" "$(field p99 <<<"$e")" \
    "$(field p99.9 <<<"$e")" "$(field p99.99 <<<"$e")" "$(field max <<<"$e")"
done
echo
echo "where the broker's Produce requests waited (ms):"
printf '  %s\n' "${broker_lines[@]}"
echo
echo "plots: $out (shardlog perf plot --out all.svg $out/*.produce.hgrm)"
