//! Storage behaviour seen through librdkafka: indexes rebuilt when missing or damaged, segments
//! rolled by `segment.ms`, `message.timestamp.type=LogAppendTime`, and bad topic configs refused
//! with INVALID_CONFIG.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Timestamp;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    const N: usize = 30_000;
    let topic = "index-rebuild";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 1);
    create_topic(&broker.bootstrap(), topic, 1, &[("segment.bytes", "65536")]);
    let mut cfg = producer_config(&broker.bootstrap());
    // Small batches, so the data spans many 64 KiB segments however the timing falls.
    cfg.set("acks", "-1")
        .set("max.in.flight.requests.per.connection", "1")
        .set("batch.size", "16384");
    let value_of = |i: usize| format!("index-{i}-{}", "x".repeat(40));
    produce_keyed(&cfg, topic, N, Some(1), value_of);
    broker.terminate();

    let dir = partition_dir_of(root.path(), topic, 0);
    let indexes = files_with(&dir, "index");
    let times = files_with(&dir, "timeindex");
    assert!(
        indexes.len() >= 4,
        "expected several segments, got {}",
        indexes.len()
    );
    fs::remove_file(&indexes[0]).expect("remove an index");
    fs::write(&indexes[1], b"garbage").expect("damage an index");
    fs::write(&times[2], vec![0xffu8; 24]).expect("damage a time index");
    let len = fs::metadata(&indexes[3]).expect("index").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&indexes[3])
        .expect("open")
        .set_len(len / 2 + 3)
        .expect("truncate");

    broker = Broker::start_in(root.path(), &[], 1);
    let bootstrap = broker.bootstrap();
    wait_for_topic(&bootstrap, topic, 1, Duration::from_secs(30));
    let records = consume_all(&bootstrap, topic, 1, N, Duration::from_secs(60));
    check_sequenced(&records, N, 1, "after index damage", value_of);
    // Reads from the middle of each damaged segment land on the right record.
    let consumer: BaseConsumer = consumer_config(&bootstrap).create().expect("consumer");
    for start in [1i64, 777, 5_001, 12_345, (N - 1) as i64] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start))
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let m = match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => panic!("consume from {start}: {e}"),
            None => panic!("nothing from offset {start}"),
        };
        assert_eq!(m.offset(), start, "seek to {start}");
        assert_eq!(
            m.key(),
            Some(format!("k{start}").as_bytes()),
            "record at {start}"
        );
    }
    for p in indexes.iter().take(4) {
        assert!(p.exists(), "{} was not rewritten", p.display());
    }
    broker.terminate();
}

#[test]
fn segments_roll_on_segment_ms() {
    let topic = "roll-by-time";
    let mut broker = Broker::start(&[], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, topic, 1, &[("segment.ms", "300")]);
    let mut cfg = producer_config(&bootstrap);
    cfg.set("acks", "1");
    for round in 0..3 {
        produce_keyed(&cfg, topic, 10, Some(1), |i| format!("roll-{round}-{i}"));
        std::thread::sleep(Duration::from_millis(450));
    }
    let logs = files_with(&broker.partition_dir(topic, 0), "log");
    assert!(
        logs.len() >= 3,
        "segment.ms=300 should have rolled between rounds: {logs:?}"
    );
    let records = consume_all(&bootstrap, topic, 1, 30, Duration::from_secs(30));
    let offsets: Vec<i64> = records.iter().map(|r| r.1).collect();
    assert_eq!(offsets, (0..30).collect::<Vec<i64>>());
    broker.terminate();
}

#[test]
fn log_append_time_replaces_producer_timestamps() {
    let topic = "append-time";
    let mut broker = Broker::start(&[], 1);
    let bootstrap = broker.bootstrap();
    create_topic(
        &bootstrap,
        topic,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let producer: rdkafka::producer::BaseProducer =
        producer_config(&bootstrap).create().expect("producer");
    let before = now_ms();
    for i in 0..5 {
        let key = format!("k{i}");
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload("v")
                    .partition(0)
                    .timestamp(1_000 + i),
            )
            .expect("enqueue");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");
    let after = now_ms();
    let consumed = consume_messages(
        &bootstrap,
        topic,
        &[(0, Offset::Beginning)],
        5,
        Duration::from_secs(30),
    );
    assert_eq!(consumed.len(), 5);
    for m in consumed {
        match m.timestamp {
            Timestamp::LogAppendTime(t) => {
                assert!(
                    t >= before - 1000 && t <= after + 1000,
                    "append time {t} not in [{before}, {after}]"
                )
            }
            other => panic!("expected LogAppendTime, got {other:?}"),
        }
    }
    broker.terminate();
}

#[test]
fn bad_topic_configs_are_refused() {
    let mut broker = Broker::start(&[], 1);
    let admin = admin(&broker.bootstrap());
    for (key, value) in [
        ("retention.ms", "soon"),
        ("no.such.config", "1"),
        ("cleanup.policy", "shred"),
        ("segment.bytes", "5"),
    ] {
        let topic = NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set(key, value);
        let results = block_on(
            admin.create_topics([&topic], &admin_opts()),
            Duration::from_secs(10),
            "create",
        )
        .expect("admin request");
        match &results[0] {
            Err((_, code)) => assert_eq!(*code, RDKafkaErrorCode::InvalidConfig, "{key}={value}"),
            Ok(t) => panic!("{key}={value} was accepted for {t}"),
        }
    }
    let bad_partitions = NewTopic::new("bad-partitions", 0, TopicReplication::Fixed(1));
    let results = block_on(
        admin.create_topics([&bad_partitions], &admin_opts()),
        Duration::from_secs(10),
        "create",
    )
    .expect("admin request");
    assert!(
        matches!(&results[0], Err((_, RDKafkaErrorCode::InvalidPartitions))),
        "{:?}",
        results[0]
    );
    broker.terminate();
}

fn produce_with_timestamps(bootstrap: &str, topic: &str, first: usize, timestamps: &[i64]) {
    let producer: rdkafka::producer::BaseProducer =
        producer_config(bootstrap).create().expect("producer");
    for (i, &ts) in timestamps.iter().enumerate() {
        let key = format!("k{}", first + i);
        let value = format!("{}-{}", "x".repeat(200), first + i);
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .partition(0)
                    .timestamp(ts),
            )
            .expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
}

#[test]
fn retention_by_time_deletes_only_expired_segments() {
    let topic = "retention-time";
    let mut broker = Broker::start(&[("log.retention.check.interval.ms", "300")], 1);
    let bootstrap = broker.bootstrap();
    create_topic(
        &bootstrap,
        topic,
        1,
        &[("segment.bytes", "16384"), ("retention.ms", "3600000")],
    );
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    produce_with_timestamps(&bootstrap, topic, 0, &vec![two_hours_ago; 1000]);
    produce_with_timestamps(&bootstrap, topic, 1000, &vec![now_ms(); 1000]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut low = 0;
    while std::time::Instant::now() < deadline {
        low = watermarks(&bootstrap, topic, 0).0;
        if low > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        low > 0 && low <= 1000,
        "expired segments go, fresh ones stay: low watermark {low}"
    );
    let fresh = consume_messages(
        &bootstrap,
        topic,
        &[(0, Offset::Beginning)],
        (2000 - low) as usize,
        Duration::from_secs(30),
    );
    assert_eq!(
        fresh.first().map(|m| m.offset),
        Some(low),
        "reading from the beginning starts at the new log start"
    );
    assert_eq!(fresh.len() as i64, 2000 - low);
    broker.terminate();
}

/// ListOffsets MAX_TIMESTAMP (-3): (error, offset, timestamp).
fn max_timestamp_offset(bootstrap: &str, topic: &str) -> (i16, i64, i64) {
    let mut client = shardlog::client::Client::connect(bootstrap).expect("connect");
    let mut p = kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
    p.timestamp = -3;
    let mut t = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
    t.name = kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        topic.into(),
    ));
    t.partitions = vec![p];
    let mut r = kafka_protocol::messages::ListOffsetsRequest::default();
    r.replica_id = kafka_protocol::messages::BrokerId(-1);
    r.topics = vec![t];
    let resp = client.send(&r, 7).expect("ListOffsets v7");
    let part = &resp.topics[0].partitions[0];
    (part.error_code, part.offset, part.timestamp)
}

#[test]
fn list_offsets_max_timestamp_finds_the_newest_record() {
    let topic = "max-timestamp";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, topic, 1, &[]);
    // One batch per record (separate flushes); the newest timestamp is in the middle.
    let base = now_ms() - 60_000;
    for (i, dt) in [1_000i64, 9_000, 3_000, 2_000].iter().enumerate() {
        produce_with_timestamps(&bootstrap, topic, i, &[base + dt]);
    }
    let expected = (0, 1, base + 9_000);
    assert_eq!(max_timestamp_offset(&bootstrap, topic), expected);
    // The same answer after a clean restart and after a crash.
    let root = broker.root().to_path_buf();
    broker.terminate();
    let mut broker = Broker::start_in(&root, &[], 1);
    assert_eq!(
        max_timestamp_offset(&broker.bootstrap(), topic),
        expected,
        "after a clean restart"
    );
    broker.kill();
    let mut broker = Broker::start_in(&root, &[], 1);
    assert_eq!(
        max_timestamp_offset(&broker.bootstrap(), topic),
        expected,
        "after a crash"
    );
    broker.terminate();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn recreated_topic_starts_empty_even_over_leftovers() {
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 1);
    let b = broker.bootstrap();
    create_topic(&b, "reborn", 1, &[]);
    let mut cfg = producer_config(&b);
    cfg.set("acks", "-1");
    produce_keyed(&cfg, "reborn", 10, Some(1), |i| format!("old-{i}"));
    let dir = partition_dir_of(root.path(), "reborn", 0);
    let saved = root.path().join("saved-partition");
    copy_dir(&dir, &saved);
    block_on(
        admin(&b).delete_topics(&["reborn"], &admin_opts()),
        Duration::from_secs(10),
        "delete",
    )
    .expect("delete");
    create_topic(&b, "reborn", 1, &[]);
    assert_eq!(
        watermarks(&b, "reborn", 0),
        (0, 0),
        "a recreated topic starts empty"
    );
    broker.terminate();

    // A crash between recording a deletion and removing the directory leaves it behind: the
    // broker removes it at start and a topic created later under that name starts empty.
    let mut broker = Broker::start_in(root.path(), &[], 1);
    let b = broker.bootstrap();
    block_on(
        admin(&b).delete_topics(&["reborn"], &admin_opts()),
        Duration::from_secs(10),
        "delete",
    )
    .expect("delete");
    broker.terminate();
    copy_dir(&saved, &dir);
    let mut broker = Broker::start_in(root.path(), &[], 1);
    let b = broker.bootstrap();
    assert!(!dir.exists(), "the leftover directory is removed at start");
    create_topic(&b, "reborn", 1, &[]);
    assert_eq!(
        watermarks(&b, "reborn", 0),
        (0, 0),
        "nothing of the deleted topic is served"
    );
    broker.terminate();
}

#[test]
fn timestamp_lookup_inside_compressed_batches() {
    let mut broker = Broker::start(&[], 1);
    let b = broker.bootstrap();
    let consumer: BaseConsumer = consumer_config(&b).create().expect("consumer");
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("ts-{codec}");
        create_topic(&b, &topic, 1, &[]);
        let mut cfg = producer_config(&b);
        cfg.set("compression.type", codec)
            .set("linger.ms", "200")
            .set("batch.num.messages", "100");
        let producer: rdkafka::producer::BaseProducer = cfg.create().expect("producer");
        let base = now_ms() - 600_000;
        // Compressible values: librdkafka sends a batch uncompressed when compressing would
        // not make it smaller.
        let value = "v".repeat(2000);
        for i in 0..10i64 {
            let key = format!("k{i}");
            producer
                .send(
                    BaseRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .partition(0)
                        .timestamp(base + i * 1000),
                )
                .expect("enqueue");
        }
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");
        let segment = files_with(&broker.partition_dir(&topic, 0), "log").remove(0);
        let bytes = fs::read(&segment).expect("read segment");
        let (batches, _) = shardlog::record::valid_prefix(&bytes);
        assert_eq!(
            batches.len(),
            1,
            "{codec}: the ten records travel in one batch"
        );
        assert_ne!(batches[0].compression(), 0, "{codec}: and it is compressed");
        for (query, expected) in [(base + 4500, 5i64), (base, 0), (base + 9000, 9)] {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(query))
                .expect("tpl");
            let found = consumer
                .offsets_for_times(tpl, Duration::from_secs(10))
                .expect("offsets_for_times");
            let offset = found.find_partition(&topic, 0).expect("partition").offset();
            assert_eq!(
                offset,
                Offset::Offset(expected),
                "{codec}: first record at or after {}",
                query - base
            );
        }
    }
    broker.terminate();
}
