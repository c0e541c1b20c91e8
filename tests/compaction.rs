//! Log compaction against the real broker, read back with librdkafka: 100,000 records over
//! 1,000 keys plus tombstones; once the cleaner has run, a reader from offset 0 sees exactly the
//! newest value of each live key, at the offset it was written at (increasing, with gaps), and
//! the same after a broker crash and restart.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "compacted";
const RECORDS: usize = 100_000;
const KEYS: usize = 1_000;

/// (offset, key, value or None for a tombstone) of every record from offset 0 to the end.
fn read_from_start(bootstrap: &str) -> Vec<(i64, String, Option<String>)> {
    let consumer: BaseConsumer = consumer_config(bootstrap).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("reading the compacted topic: {e}"),
            None => {}
        }
    }
    panic!(
        "no end of partition within 60 s ({} records read)",
        out.len()
    );
}

#[test]
fn compaction_keeps_the_newest_value_of_each_live_key() {
    let dir = test_tempdir();
    let args = [("log.cleaner.backoff.ms", "200")];
    let mut broker = Broker::start_in(dir.path(), &args, 1);
    let b = broker.bootstrap();
    create_topic(
        &b,
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "200000"),
            ("segment.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    );

    let mut cfg = producer_config(&b);
    cfg.set("acks", "all").set("compression.type", "lz4");
    let (producer, log) = tracking_producer(&cfg, true);
    let key_of = |i: usize| format!("key-{}", (i * 7919) % KEYS);
    for i in 0..RECORDS {
        let (key, value) = (key_of(i), format!("value-{i}"));
        send_base(&producer, BaseRecord::to(TOPIC).key(&key).payload(&value));
        if i % 1000 == 999 {
            producer.poll(Duration::ZERO);
        }
    }
    flush_or_panic(&producer, TOPIC, &log);
    // Tombstones for every tenth key.
    for k in (0..KEYS).step_by(10) {
        let key = format!("key-{k}");
        send_base(&producer, BaseRecord::<String, [u8]>::to(TOPIC).key(&key));
    }
    flush_or_panic(&producer, TOPIC, &log);
    // Past segment.ms, one more record rolls the segment holding the tombstones.
    std::thread::sleep(Duration::from_millis(1100));
    send_base(
        &producer,
        BaseRecord::to(TOPIC).key("sentinel").payload("end"),
    );
    flush_or_panic(&producer, TOPIC, &log);
    assert_delivered(&log, RECORDS + KEYS / 10 + 1, TOPIC);

    // The newest write of each key, by offset; tombstoned keys are not live.
    let mut newest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    let mut acked = log.acked();
    acked.sort_by_key(|a| a.offset);
    for a in &acked {
        let value = (!a.value.is_empty()).then(|| String::from_utf8_lossy(&a.value).into_owned());
        newest.insert(
            String::from_utf8_lossy(&a.key).into_owned(),
            (a.offset, value),
        );
    }
    let expected: Vec<(i64, String, Option<String>)> = {
        let mut live: Vec<_> = newest
            .into_iter()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(k, (o, v))| (o, k, v))
            .collect();
        live.sort();
        live
    };
    assert_eq!(expected.len(), KEYS - KEYS / 10 + 1);

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = read_from_start(&b);
    while seen != expected {
        assert!(
            Instant::now() < deadline,
            "not compacted within 90 s: {} records from offset 0 ({} tombstones), expected {}",
            seen.len(),
            seen.iter().filter(|r| r.2.is_none()).count(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(500));
        seen = read_from_start(&b);
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    let last = seen.last().map(|r| r.0).unwrap_or(0);
    assert!(
        last + 1 > seen.len() as i64,
        "offsets kept their gaps: {} records up to offset {last}",
        seen.len()
    );

    // A record without a key has no place in a compacted topic: Kafka refuses it.
    let (keyless, keyless_log) = tracking_producer(&cfg, false);
    send_base(
        &keyless,
        BaseRecord::<str, str>::to(TOPIC).payload("no key"),
    );
    keyless.flush(Duration::from_secs(30)).ok();
    assert_eq!(keyless_log.failed(), 1, "a keyless record was accepted");
    let why = keyless_log.first_error().unwrap_or_default();
    assert!(why.contains("InvalidRecord"), "{why}");

    // The compacted segments survive a crash and restart as they are.
    broker.kill();
    let mut broker = Broker::start_in(dir.path(), &args, 1);
    assert_eq!(read_from_start(&broker.bootstrap()), expected);
    broker.terminate();
}
