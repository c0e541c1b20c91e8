//! `shardlog perf produce | consume | e2e` against a real broker: counts add up, keyed and sticky
//! partitioning both spread records, the open-loop schedule holds the requested rate, and the
//! JSON report carries the figures. The broker's own account of where Produce requests waited
//! (`shardlog.latency.report.ms`) and `perf jitter`, the machine's scheduling floor.

mod common;

use std::process::Command;

use common::*;

fn perf(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .arg("perf")
        .args(args)
        .output()
        .expect("run perf");
    assert!(
        out.status.success(),
        "perf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(json: &str, name: &str) -> f64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {json}"));
    let rest = &json[at + name.len() + 3..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
}

/// A percentile of one of the report's distributions (`latency_ms`, `round_trip_ms`).
fn percentile(json: &str, of: &str, name: &str) -> f64 {
    let at = json
        .find(&format!("\"{of}\":{{"))
        .unwrap_or_else(|| panic!("no {of} in {json}"));
    let inner = &json[at..];
    field(&inner[..=inner.find('}').unwrap_or(inner.len() - 1)], name)
}

#[test]
fn produce_then_consume_reports_what_happened() {
    let mut broker = Broker::start(&[], 1);
    let b = broker.bootstrap();
    let keyed = perf(&[
        "produce",
        "--bootstrap-server",
        &b,
        "--topic",
        "perf-keyed",
        "--partitions",
        "4",
        "--num-records",
        "20000",
        "--record-size",
        "100",
        "--keyed",
        "--json",
        "--producer-props",
        "acks=-1",
        "compression.type=lz4",
    ]);
    assert_eq!(field(&keyed, "messages"), 20000.0, "{keyed}");
    assert_eq!(field(&keyed, "errors"), 0.0);
    assert_eq!(field(&keyed, "bytes"), 2_000_000.0);
    assert!(percentile(&keyed, "latency_ms", "p99") > 0.0, "{keyed}");
    let mut total = 0;
    for p in 0..4 {
        let (low, high) = watermarks(&b, "perf-keyed", p);
        assert!(
            high - low > 3000,
            "murmur2 spreads 20000 keys over 4 partitions: partition {p} got {}",
            high - low
        );
        total += high - low;
    }
    assert_eq!(total, 20000);
    let consumed = perf(&[
        "consume",
        "--bootstrap-server",
        &b,
        "--topic",
        "perf-keyed",
        "--json",
        "--consumers",
        "2",
    ]);
    assert_eq!(field(&consumed, "messages"), 20000.0, "{consumed}");

    // Unkeyed, two producers, a fixed rate: 4000 records at 4000/s take about a second.
    let paced = perf(&[
        "produce",
        "--bootstrap-server",
        &b,
        "--topic",
        "perf-sticky",
        "--partitions",
        "3",
        "--num-records",
        "4000",
        "--record-size",
        "200",
        "--throughput",
        "4000",
        "--producers",
        "2",
        "--json",
        "--producer-props",
        "acks=1",
        "batch.size=2000",
        "linger.ms=1",
    ]);
    assert_eq!(field(&paced, "messages"), 4000.0, "{paced}");
    let seconds = field(&paced, "seconds");
    assert!(
        (0.95..3.0).contains(&seconds),
        "4000 records at 4000/s took {seconds} s"
    );
    let spread = (0..3)
        .filter(|&p| watermarks(&b, "perf-sticky", p).1 > 0)
        .count();
    assert!(
        spread >= 2,
        "sticky partitioning moves on after batch.size bytes"
    );
    broker.terminate();
}

#[test]
fn the_broker_reports_where_produce_requests_waited() {
    let mut broker = Broker::start(
        &[
            ("shardlog.latency.report.ms", "200"),
            ("shardlog.stall.detection.ms", "50"),
        ],
        1,
    );
    let b = broker.bootstrap();
    // As fast as it goes, sleeping between sends: every record is due when it is made, so
    // the median latency is a request's, not a share of the run.
    let fast = perf(&[
        "produce",
        "--bootstrap-server",
        &b,
        "--topic",
        "perf-timing",
        "--num-records",
        "20000",
        "--record-size",
        "500",
        "--sleep",
        "--json",
        "--producer-props",
        "acks=1",
    ]);
    assert_eq!(field(&fast, "messages"), 20000.0, "{fast}");
    let run_ms = field(&fast, "seconds") * 1000.0;
    assert!(
        percentile(&fast, "latency_ms", "p50") < run_ms / 4.0,
        "at the maximum rate a record's latency is not a share of the run: {fast}"
    );
    // A request's round trip is part of its records' latency.
    let round_trip = percentile(&fast, "round_trip_ms", "p50");
    assert!(
        round_trip > 0.0 && round_trip <= percentile(&fast, "latency_ms", "p99"),
        "{fast}"
    );
    let Some(line) = broker.wait_for_stderr_line(
        "produce path (ms): read n=",
        std::time::Duration::from_secs(20),
    ) else {
        panic!("no produce-path report in: {}", broker.stderr_tail());
    };
    // Every stage of an acks=1 append under the default flush rule (fdatasync) shows up.
    for stage in [
        "read n=",
        "request n=",
        "queue n=",
        "write n=",
        "sync n=",
        "send n=",
    ] {
        assert!(line.contains(stage), "no {stage} in {line}");
    }
    assert!(line.contains("p99.9="), "{line}");
    broker.terminate();
}

#[test]
fn jitter_reports_each_cpu_and_refuses_a_bad_duration() {
    let out = perf(&["jitter", "--cpus", "0", "--seconds", "0.2", "--json"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let lost = field(&out, "lost_pct");
    assert!((0.0..100.0).contains(&lost), "{out}");
    assert!(field(&out, "max_ms") >= 0.0, "{out}");
    let bad = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["perf", "jitter", "--seconds", "0"])
        .output()
        .expect("run perf jitter");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--seconds must be"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
