#!/usr/bin/env python3
"""The device's floor for the `durable` stage: how long a record written at a random instant
waits until an fdatasync covers it, when the writer flushes back to back as the broker does
under load (group commit under the default flush rule).

It appends 16 KiB O_DIRECT writes into space already written with zeros (as the broker's
zeros ahead of the log end), each followed by an fdatasync, for SECS seconds, and prints the
write and fdatasync percentiles. A device with a write-back cache and no FUA (see
/sys/block/*/queue/write_cache and fua) turns every fdatasync into a cache flush, and the block
layer keeps one flush in flight per queue, so a record that lands while flush i runs is made
durable only by flush i+1: its wait is the rest of flush i plus all of flush i+1. Weighing each
instant of the run equally (an open-loop percentile does), P(wait > x) is
sum_i clamp(d_i + d_{i+1} - x, 0, d_i) / total, printed as "durable wait at a random instant".
No concurrency can beat that floor on such a device, since flushes do not overlap.

  taskset -c 0 perf/flush_floor.py DIR [SECS]
"""
import mmap
import os
import sys
import time

BLOCK = 16 * 1024
SPACE = 64 * 1024 * 1024


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def durable_wait(flushes, q):
    """The q-quantile of the wait of a record due at a random instant (see the module doc)."""
    pairs = [(d, d + n) for d, n in zip(flushes, flushes[1:])]
    total = sum(d for d, _ in pairs)
    lo, hi = 0.0, max((s for _, s in pairs), default=0.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        tail = sum(min(d, max(0.0, s - mid)) for d, s in pairs) / total
        if tail > 1 - q:
            lo = mid
        else:
            hi = mid
    return hi


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: flush_floor.py DIR [SECS]")
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    path = os.path.join(sys.argv[1], "flush-floor.bin")
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    buf.write(b"\x5a" * BLOCK)
    with open(path, "wb") as f:  # the space, written (not merely allocated) and durable
        f.write(b"\0" * SPACE)
        f.flush()
        os.fdatasync(f.fileno())
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    writes, flushes = [], []
    offset = 0
    deadline = time.monotonic() + secs
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            os.pwrite(fd, buf, offset)
            t1 = time.perf_counter_ns()
            os.fdatasync(fd)
            t2 = time.perf_counter_ns()
            writes.append((t1 - t0) / 1e6)
            flushes.append((t2 - t1) / 1e6)
            offset = (offset + BLOCK) % SPACE
    finally:
        os.close(fd)
        os.unlink(path)
    ws, fs = sorted(writes), sorted(flushes)
    qs = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)]

    def show(values):
        return " ".join(f"{n} {percentile(values, q):.3f}" for n, q in qs)

    print(f"flush floor: {len(flushes)} cycles of a 16 KiB O_DIRECT write then fdatasync in {secs:.0f} s; "
          f"write {show(ws)} ms; fdatasync {show(fs)} ms")
    print("flush floor, durable wait at a random instant (rest of the flush in flight plus the next): "
          + " ".join(f"{n} {durable_wait(flushes, q):.3f}" for n, q in qs)
          + " ms")


if __name__ == "__main__":
    main()
