//! `shardlog perf produce | consume | e2e` against a real broker: counts add up, keyed and sticky
//! partitioning both spread records, the open-loop schedule holds the requested rate, and the
//! JSON report carries the figures.

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
    assert!(field(&keyed, "p99") > 0.0, "{keyed}");
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
