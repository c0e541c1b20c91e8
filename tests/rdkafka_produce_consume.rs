//! End-to-end produce/consume through librdkafka for every compression codec and for
//! acks=-1 and acks=1: 200,000 keyed messages per run (override with SHARDLOG_TEST_MSGS),
//! one fresh 8-partition topic per run, default (key-hash) partitioner, then everything is
//! consumed back with assign() and checked for exactly-once presence, contiguous offsets and
//! per-partition produce order.

mod common;

use std::time::{Duration, Instant};

use common::*;

const PARTITIONS: i32 = 8;

fn run(broker: &Broker, codec: &str, acks: &str) {
    let n = env_usize("SHARDLOG_TEST_MSGS", 200_000);
    let acks_name = if acks == "-1" { "all" } else { "one" };
    let run = format!("{codec}-acks-{acks_name}");
    let topic = format!("pc-{run}");
    let bootstrap = broker.bootstrap();

    create_topic(&bootstrap, &topic, PARTITIONS, &[]);

    let mut cfg = producer_config(&bootstrap);
    cfg.set("compression.type", codec)
        .set("acks", acks)
        // Ordering guarantee without idempotence (the broker has no InitProducerId):
        // one request in flight at a time, so retries cannot reorder.
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "10");

    let value_of = |i: usize| format!("v{i}-{run}");

    let t0 = Instant::now();
    produce_keyed(&cfg, &topic, n, None, value_of);
    let produced_in = t0.elapsed();

    let t1 = Instant::now();
    let records = consume_all(&bootstrap, &topic, PARTITIONS, n, Duration::from_secs(120));
    let consumed_in = t1.elapsed();

    let counts = check_sequenced(&records, n, PARTITIONS, &run, value_of);
    eprintln!(
        "[{run}] {n} messages: produced+acked in {produced_in:?}, consumed in {consumed_in:?}, per partition {counts:?}"
    );

    // The data really travelled under this codec (librdkafka silently falls back to none
    // when it believes a broker lacks a codec).
    let expected_codec = ["none", "gzip", "snappy", "lz4", "zstd"]
        .iter()
        .position(|c| *c == codec)
        .expect("known codec") as i16;
    let segment = std::fs::read_dir(broker.partition_dir(&topic, 0))
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment");
    let bytes = std::fs::read(&segment).expect("read segment");
    let (batches, _) = shardlog::record::valid_prefix(&bytes);
    assert!(
        !batches.is_empty(),
        "[{run}] no batches in {}",
        segment.display()
    );
    let codecs: std::collections::BTreeSet<i16> = batches.iter().map(|b| b.compression()).collect();
    assert!(
        codecs.contains(&expected_codec),
        "[{run}] stored batches use codecs {codecs:?}, none is {codec}"
    );
    assert!(
        codecs.iter().all(|&c| c == 0 || c == expected_codec),
        "[{run}] unexpected codecs {codecs:?}"
    );

    for (p, &count) in counts.iter().enumerate() {
        assert!(
            count > 0,
            "[{run}] partition {p} received no messages; the key-hash partitioner should spread {n} keys over all {PARTITIONS} partitions"
        );
        let (low, high) = watermarks(&bootstrap, &topic, p as i32);
        assert_eq!(
            (low, high),
            (0, count as i64),
            "[{run}] partition {p}: ListOffsets watermarks disagree with the {count} consumed messages"
        );
    }
}

fn codec_test(codec: &str) {
    let mut broker = Broker::start(&[], 1);
    for acks in ["-1", "1"] {
        run(&broker, codec, acks);
    }
    broker.terminate();
}

#[test]
fn produce_consume_none() {
    codec_test("none");
}

#[test]
fn produce_consume_gzip() {
    codec_test("gzip");
}

#[test]
fn produce_consume_snappy() {
    codec_test("snappy");
}

#[test]
fn produce_consume_lz4() {
    codec_test("lz4");
}

#[test]
fn produce_consume_zstd() {
    codec_test("zstd");
}
