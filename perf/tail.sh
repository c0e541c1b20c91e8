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
# the broker writes them: per write, and as the wait it imposes on work due at a random
# instant, which is what an open-loop percentile sees; then with an fdatasync after each
# write; and the flush floor of perf/flush_floor.py, below which no `durable` stage and so no
# end-to-end latency under the default flush rule can go). Each run's row shows the record
# latency and the requests' round trips: the difference is time records queued in the producer.
# After each run the broker's own account of where its Produce requests waited
# (`shardlog.latency.report.ms`: request, round queue, device write, fdatasync, response send)
# and the stalls its shard saw (`shardlog.stall.detection.ms=5`).
#
# Nothing else may run on CPU 0 or 1 meanwhile: a process sampling /proc on CPU 0 once a
# second was enough to put the client's p99 at 10-40 ms (RESULTS.md, issue 10).
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
# Steal time of CPUs 0 and 1 in ms (/proc/stat's eighth field, in clock ticks): the time the
# hypervisor ran something else while these vCPUs had work.
steal_ms() {
  awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu0" || $1 == "cpu1" {printf "%d ", $9 * 1000 / hz}' /proc/stat
}
steal_delta() {
  read -ra a <<<"$1"; read -ra b <<<"$2"
  echo "$((b[0] - a[0])), $((b[1] - a[1]))"
}

"$bin" perf jitter --cpus 0,1 --seconds "$secs" | sed 's/^/scheduling floor: /'
if command -v fio >/dev/null; then
  # Appends as the broker writes them (--fallocate=none), paced at the operating point's
  # write rate, every write's latency logged; then the same with an fdatasync after each
  # write, the path the high watermark (and so a tailing consumer) waits for under the
  # default flush rule.
  fio --name=floor --directory="$work" --rw=write --bs=16k --size=1G --direct=1 \
      --ioengine=io_uring --iodepth=1 --rate_iops=$((rate / 16)) --runtime="$secs" \
      --time_based --fallocate=none --lat_percentiles=1 --write_lat_log="$work/floor" \
      --output-format=json 2>/dev/null >"$work/fio.json" || true
  rm -f "$work"/floor.*.0
  fio --name=floor --directory="$work" --rw=write --bs=16k --size=1G --direct=1 \
      --ioengine=io_uring --iodepth=1 --rate_iops=$((rate / 16)) --runtime="$secs" \
      --time_based --fallocate=none --lat_percentiles=1 --fdatasync=1 \
      --output-format=json 2>/dev/null >"$work/fio-sync.json" || true
  python3 - "$work" "$((rate / 16))" "$secs" <<'EOF' || echo "fio: no result"
import json, sys
work, rate, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
def pcts(p):
    return " ".join(f"{n} {p[k] / 1e6:.3f}" for n, k in
                    [("p50", "50.000000"), ("p99", "99.000000"), ("p99.9", "99.900000"),
                     ("p99.99", "99.990000")])
job = json.load(open(f"{work}/fio.json"))["jobs"][0]["write"]
print(f"device floor (fio, 16 KiB O_DIRECT appends, QD 1, {rate}/s, submit to completion): "
      f"{pcts(job['lat_ns']['percentile'])} ms")
# A record due at a random instant waits at least for the write the device is busy with:
# P(wait > x) = sum over writes of max(0, latency - x) / run time. This weighs a slow write
# by how long it blocks everything behind it, as an open-loop percentile does.
lat = [int(line.split(",")[1]) / 1e6 for line in open(f"{work}/floor_lat.1.log")]
def wait_at(q):
    lo, hi = 0.0, max(lat, default=0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if sum(max(0.0, l - mid) for l in lat) / (secs * 1000) > 1 - q:
            lo = mid
        else:
            hi = mid
    return hi
print("device floor, wait of work due at a random instant: "
      + " ".join(f"{n} {wait_at(q):.3f}" for n, q in [("p99", .99), ("p99.9", .999), ("p99.99", .9999)])
      + " ms")
job = json.load(open(f"{work}/fio-sync.json"))["jobs"][0]
print(f"device floor with an fdatasync after each append: write {pcts(job['write']['lat_ns']['percentile'])}"
      f" ms; fdatasync {pcts(job['sync']['lat_ns']['percentile'])} ms")
EOF
  rm -f "$work"/floor*
else
  echo "device floor: fio not installed (apt-get install fio)"
fi
# The floor of the `durable` stage: flushes back to back, each record waiting for the rest of
# the flush in flight plus the next one (perf/flush_floor.py says why).
taskset -c 0 python3 "$(dirname "$0")/flush_floor.py" "$work" "$secs" || echo "flush floor: no result"
# One report at shutdown covers the whole run.
timing=(--set shardlog.latency.report.ms=3600000 --set shardlog.stall.detection.ms=5)
broker_lines=()
echo
echo "| config | run | MB/s | p50 ms | p99 ms | p99.9 ms | p99.99 ms | max ms | request round trip p50 / p99 / p99.9 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for config in ${CONFIGS:-default}; do
  name="${config%%:*}"
  sets=()
  if [ "$name" != "$config" ]; then
    IFS=, read -ra kvs <<<"${config#*:}"
    for kv in "${kvs[@]}"; do sets+=(--set "$kv"); done
  fi
  for run in $(seq "$rounds"); do
    bin_broker="${BROKER_BIN:-$bin}" start_broker "${sets[@]}" "${timing[@]}"
    steal_before=$(steal_ms)
    j=$("$bin" perf produce --bootstrap-server "$addr" --topic tail --cpus 1 --json \
        --num-records $((rate * secs)) --throughput "$rate" ${CLIENT_FLAGS:-} \
        --producer-props acks=1 batch.size=16384 linger.ms=1 \
        --latency-plot "$out/$name-$run")
    steal_after=$(steal_ms)
    stop_broker
    broker_lines+=("$name $run: $(sed -n 's/.*produce path (ms): //p' "$work/broker.log" | tail -1);"\
" stalls over 5 ms: $(grep -c 'went over-budget' "$work/broker.log" || true);"\
" time the hypervisor took (steal) from CPU 0, CPU 1: $(steal_delta "$steal_before" "$steal_after") ms")
    rt=$(sed -n 's/.*"round_trip_ms":{\([^}]*\)}.*/\1/p' <<<"$j")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s |\n' "$name" "$run" \
      "$(field mb_per_sec <<<"$j")" "$(field p50 <<<"$j")" "$(field p99 <<<"$j")" \
      "$(field p99.9 <<<"$j")" "$(field p99.99 <<<"$j")" "$(field max <<<"$j")" \
      "$(field p50 <<<"$rt")" "$(field p99 <<<"$rt")" "$(field p99.9 <<<"$rt")"
  done
  bin_broker="${BROKER_BIN:-$bin}" start_broker "${sets[@]}"
  e=$("$bin" perf e2e --bootstrap-server "$addr" --topic e2e --cpus 1 --json \
      --num-records $((rate * secs)) --throughput "$rate" \
      --producer-props acks=1 batch.size=16384 linger.ms=1 --latency-plot "$out/$name-e2e" \
      | tail -1)
  printf '| %s | e2e (producer to consumer) | %s | %s | %s | %s | %s | %s | |\n' "$name" \
    "$(field mb_per_sec <<<"$e")" "$(field p50 <<<"$e")" "$(field p99 <<<"$e")" \
    "$(field p99.9 <<<"$e")" "$(field p99.99 <<<"$e")" "$(field max <<<"$e")"
done
echo
echo "where the broker's Produce requests waited (ms):"
printf '  %s\n' "${broker_lines[@]}"
echo
echo "plots: $out (shardlog perf plot --out all.svg $out/*.produce.hgrm)"
