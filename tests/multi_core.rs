//! A broker with `--cores 2`: an 8-partition topic spreads its partitions over both shards,
//! while a librdkafka producer uses a single connection (which lands on one shard) with
//! pipelined requests. Everything must come back complete and in order per partition.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;

const PARTITIONS: i32 = 8;

fn check_metadata(broker: &Broker, topic: &str) {
    let client = metadata_client(&broker.bootstrap());
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("Metadata({topic}) failed: {e}"));
    let brokers: Vec<(i32, String, i32)> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    assert_eq!(
        brokers.len(),
        1,
        "a single broker must be advertised once (not once per shard): {brokers:?}"
    );
    let (id, _host, port) = brokers[0].clone();
    assert_eq!(
        port,
        broker.port() as i32,
        "Metadata advertises port {port} but the broker listens on {}",
        broker.port()
    );
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("{topic} missing from Metadata"));
    assert!(
        t.error().is_none(),
        "{topic}: metadata error {:?}",
        t.error()
    );
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort();
    assert_eq!(
        ids,
        (0..PARTITIONS).collect::<Vec<_>>(),
        "{topic}: partition ids in Metadata"
    );
    for p in t.partitions() {
        assert!(
            p.error().is_none(),
            "{topic}/{}: metadata error {:?}",
            p.id(),
            p.error()
        );
        assert_eq!(
            p.leader(),
            id,
            "{topic}/{}: leader must be broker {id}",
            p.id()
        );
    }
}

fn pipelined_config(bootstrap: &str, acks: &str) -> rdkafka::ClientConfig {
    let mut cfg = producer_config(bootstrap);
    cfg.set("acks", acks)
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "5")
        // No retries: a retried request could legitimately reorder with 5 in flight, so any
        // broker error must surface as a delivery failure instead of a confusing order error.
        .set("message.send.max.retries", "0")
        .set("linger.ms", "5")
        .set("batch.num.messages", "2000");
    cfg
}

fn produce_and_verify(bootstrap: &str, topic: &str, acks: &str, n: usize) {
    let what = format!("{topic} (acks={acks})");
    let value_of = |i: usize| format!("mc-{i}-{topic}");
    let t0 = Instant::now();
    produce_keyed(
        &pipelined_config(bootstrap, acks),
        topic,
        n,
        Some(PARTITIONS),
        value_of,
    );
    let produced_in = t0.elapsed();
    let records = consume_all(bootstrap, topic, PARTITIONS, n, Duration::from_secs(120));
    for (p, off, key, _) in &records {
        let i = parse_seq(key).unwrap_or_else(|| panic!("{what}: malformed key {:?}", show(key)));
        assert_eq!(
            *p as usize,
            i % PARTITIONS as usize,
            "{what}: k{i} was produced to partition {} but found at {p}@{off}",
            i % PARTITIONS as usize
        );
    }
    let counts = check_sequenced(&records, n, PARTITIONS, &what, value_of);
    eprintln!("[{what}] {n} messages produced in {produced_in:?}; per partition {counts:?}");
    for (p, &c) in counts.iter().enumerate() {
        let expected = n / PARTITIONS as usize + usize::from(p < n % PARTITIONS as usize);
        assert_eq!(c, expected, "{what}: partition {p} count");
        assert_eq!(
            watermarks(bootstrap, topic, p as i32),
            (0, c as i64),
            "{what}: partition {p} watermarks"
        );
    }
}

#[test]
fn two_shards_single_connection_pipelined() {
    let n = env_usize("SHARDLOG_TEST_MSGS_MC", 100_000);
    let mut broker = Broker::start(&[], 2);
    let bootstrap = broker.bootstrap();
    for (topic, acks) in [("mc-acks-one", "1"), ("mc-acks-all", "-1")] {
        create_topic(&bootstrap, topic, PARTITIONS, &[]);
        check_metadata(&broker, topic);
        produce_and_verify(&bootstrap, topic, acks, n);
    }
    broker.terminate();
}

#[test]
fn two_shards_concurrent_producers() {
    let n = env_usize("SHARDLOG_TEST_MSGS_MC", 100_000) / 2;
    let mut broker = Broker::start(&[], 2);
    let bootstrap = broker.bootstrap();
    let topics = ["mc-conc-a", "mc-conc-b"];
    for topic in topics {
        create_topic(&bootstrap, topic, PARTITIONS, &[]);
    }
    // Two producers = two connections, possibly accepted by different shards, each writing
    // to partitions owned by both shards at the same time.
    thread::scope(|s| {
        let handles: Vec<_> = topics
            .iter()
            .map(|&topic| {
                let bootstrap = bootstrap.as_str();
                s.spawn(move || produce_and_verify(bootstrap, topic, "-1", n))
            })
            .collect();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    broker.terminate();
}
