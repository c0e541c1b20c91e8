# Shared by the perf scripts: build once, start a broker pinned to CPU 0 on a free port with
# its data in a temporary directory, stop it and remove the data on exit.
#   start_broker [--set key=value ...]   sets $addr and $broker_pid (KEEP_DATA=1: same data;
#                                        bin_broker=PATH: another broker binary)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q
bin="$PWD/target/release/shardlog"
work="$(mktemp -d "${TMPDIR:-/tmp}/shardlog-perf.XXXXXX")"
broker_pid=""
stop_broker() {
    if [ -n "$broker_pid" ]; then
        kill -TERM "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=""
}
trap 'stop_broker; rm -rf "$work"' EXIT
start_broker() {
    stop_broker
    [ -n "${KEEP_DATA:-}" ] || rm -rf "$work/data"
    rm -f "$work/out"
    taskset -c 0 "${bin_broker:-$bin}" broker --cores 1 --set listeners=PLAINTEXT://127.0.0.1:0 \
        --set "log.dirs=$work/data" "$@" >"$work/out" 2>"$work/broker.log" &
    broker_pid=$!
    for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
    addr="$(sed -n 's/.*listening on //p' "$work/out")"
    [ -n "$addr" ] || { echo "broker did not start:"; cat "$work/broker.log"; exit 1; }
}
# The value of a numeric field of the tool's JSON output.
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
