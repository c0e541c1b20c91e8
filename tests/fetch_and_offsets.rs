//! Fetch long-polling, ListOffsets (watermarks and by timestamp), size-based retention and
//! DeleteRecords, all through librdkafka.

mod common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};

// ---------------------------------------------------------------------------------------------
// (a) Long-poll Fetch wakes up as soon as data arrives
// ---------------------------------------------------------------------------------------------

#[test]
fn long_poll_fetch_returns_new_data_promptly() {
    let mut broker = Broker::start(&[], 1);
    let bootstrap = broker.bootstrap();
    let topic = "long-poll";
    create_topic(&bootstrap, topic, 1, &[]);

    // Consumer parked at the end of the empty partition with a 5 s long-poll.
    let mut ccfg = consumer_config(&bootstrap);
    ccfg.set("fetch.wait.max.ms", "5000")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = ccfg.create().expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&tpl).expect("assign");

    // Producer with its connection and metadata warmed up, so the measurement is not
    // dominated by connection setup.
    let mut pcfg = producer_config(&bootstrap);
    pcfg.set("acks", "1").set("linger.ms", "0");
    let (producer, log) = tracking_producer(&pcfg, true);
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("producer metadata warm-up");

    // Let the consumer reach its steady state (a Fetch waiting on the broker).
    let warm_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < warm_until {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => panic!(
                "unexpected message at offset {} in an empty topic",
                m.offset()
            ),
            Some(Err(e)) => eprintln!("consumer warm-up: {e}"),
            None => {}
        }
    }

    const ROUNDS: usize = 3;
    let mut latencies = Vec::new();
    for round in 0..ROUNDS {
        thread::sleep(Duration::from_millis(500));
        let value = format!("wake-up-{round}");
        let sent_at = Instant::now();
        send_base(
            &producer,
            BaseRecord::to(topic).partition(0).key("k").payload(&value),
        );
        flush_or_panic(&producer, "long-poll produce", &log);
        let acked_after = sent_at.elapsed();

        let deadline = sent_at + Duration::from_secs(10);
        let received_after = loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: message not received within 10 s of producing it"
            );
            match consumer.poll(Duration::from_millis(10)) {
                Some(Ok(m)) => {
                    assert_eq!(m.offset(), round as i64, "round {round}: wrong offset");
                    assert_eq!(
                        m.payload(),
                        Some(value.as_bytes()),
                        "round {round}: wrong payload"
                    );
                    break sent_at.elapsed();
                }
                Some(Err(e)) => eprintln!("consumer error: {e}"),
                None => {}
            }
        };
        eprintln!("round {round}: acked after {acked_after:?}, consumed after {received_after:?}");
        latencies.push(received_after);
    }
    assert_delivered(&log, ROUNDS, "long-poll produce");
    for (round, lat) in latencies.iter().enumerate() {
        assert!(
            *lat < Duration::from_secs(2),
            "round {round}: a consumer waiting in a 5 s long-poll Fetch got the new message only after {lat:?}; \
             the broker must complete pending Fetches when data is appended (all rounds: {latencies:?})"
        );
    }
    drop(consumer);
    drop(producer);
    broker.terminate();
}

// ---------------------------------------------------------------------------------------------
// (b) ListOffsets: watermarks and lookup by timestamp
// ---------------------------------------------------------------------------------------------

#[test]
fn list_offsets_by_timestamp_and_watermarks() {
    let mut broker = Broker::start(&[], 1);
    let bootstrap = broker.bootstrap();
    let topic = "timestamps";
    // retention.ms=-1 so time-based retention never touches these old-ish timestamps.
    create_topic(
        &bootstrap,
        topic,
        1,
        &[
            ("message.timestamp.type", "CreateTime"),
            ("retention.ms", "-1"),
        ],
    );

    // ts(i) = T0 + 1000 * (i + 1): "1000, 2000, 3000, ..." relative to an hour ago.
    const N: usize = 10;
    let t0 = (now_ms() / 1000) * 1000 - 3_600_000;
    let ts = |i: usize| t0 + 1000 * (i as i64 + 1);

    let mut pcfg = producer_config(&bootstrap);
    pcfg.set("acks", "-1")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "20");
    let (producer, log) = tracking_producer(&pcfg, true);
    // Messages 0..5 in one batch (lookups must search inside a batch), 5..10 one batch each.
    for i in 0..N {
        let key = format!("k{i}");
        let value = format!("ts-{i}");
        send_base(
            &producer,
            BaseRecord::to(topic)
                .partition(0)
                .key(&key)
                .payload(&value)
                .timestamp(ts(i)),
        );
        if i >= 4 {
            flush_or_panic(&producer, "timestamp produce", &log);
        }
    }
    flush_or_panic(&producer, "timestamp produce", &log);
    assert_delivered(&log, N, "timestamp produce");
    let mut offsets: Vec<i64> = log.acked().iter().map(|a| a.offset).collect();
    offsets.sort();
    assert_eq!(
        offsets,
        (0..N as i64).collect::<Vec<_>>(),
        "acknowledged offsets"
    );
    drop(producer);

    assert_eq!(
        watermarks(&bootstrap, topic, 0),
        (0, N as i64),
        "watermarks after {N} messages"
    );

    // Stored timestamps are the CreateTime values we sent.
    let msgs = consume_messages(
        &bootstrap,
        topic,
        &[(0, Offset::Beginning)],
        N,
        Duration::from_secs(30),
    );
    assert_eq!(msgs.len(), N, "consumed count");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.offset, i as i64, "offset of message {i}");
        assert_eq!(
            m.timestamp,
            Timestamp::CreateTime(ts(i)),
            "timestamp of message at offset {i}"
        );
    }

    let consumer: BaseConsumer = consumer_config(&bootstrap)
        .create()
        .expect("create consumer");
    let cases: [(i64, Offset); 9] = [
        (t0, Offset::Offset(0)),                   // before everything
        (ts(0), Offset::Offset(0)),                // exact first
        (t0 + 2500, Offset::Offset(2)),            // between 2000 and 3000 (inside the first batch)
        (ts(2), Offset::Offset(2)),                // exact, inside the first batch
        (ts(4) + 1, Offset::Offset(5)),            // just after the end of the first batch
        (t0 + 6500, Offset::Offset(6)),            // between single-message batches
        (ts(N - 1), Offset::Offset(N as i64 - 1)), // exact last
        (ts(N - 1) + 1, Offset::End),              // past the end -> -1
        (t0 + 1_000_000, Offset::End),             // far past the end -> -1
    ];
    for (query, expected) in cases {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(query))
            .unwrap();
        let result = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("offsets_for_times(T0+{}) failed: {e}", query - t0));
        let elem = result
            .find_partition(topic, 0)
            .expect("partition 0 in offsets_for_times result");
        if let Err(e) = elem.error() {
            panic!("offsets_for_times(T0+{}): partition error {e}", query - t0);
        }
        assert_eq!(
            elem.offset(),
            expected,
            "ListOffsets for timestamp T0+{} (messages have T0+1000..T0+{})",
            query - t0,
            1000 * N
        );
    }
    drop(consumer);
    broker.terminate();
}

// ---------------------------------------------------------------------------------------------
// (c) Size-based retention deletes old segments and moves the log start offset
// ---------------------------------------------------------------------------------------------

fn count_log_segments(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count()
}

#[test]
fn retention_by_size_deletes_old_segments() {
    const SEGMENT_BYTES: usize = 65_536;
    const RETENTION_BYTES: usize = 262_144;
    const N: usize = 4_000;
    const VALUE_LEN: usize = 1024;
    let mut broker = Broker::start(&[("log.retention.check.interval.ms", "500")], 1);
    let bootstrap = broker.bootstrap();
    let topic = "retention";
    let seg = SEGMENT_BYTES.to_string();
    let ret = RETENTION_BYTES.to_string();
    create_topic(
        &bootstrap,
        topic,
        1,
        &[
            ("segment.bytes", seg.as_str()),
            ("retention.bytes", ret.as_str()),
        ],
    );

    // ~4 MiB in ~16 KiB batches: ~64 segments without retention.
    let mut pcfg = producer_config(&bootstrap);
    pcfg.set("acks", "1")
        .set("compression.type", "none")
        .set("batch.size", "16384")
        .set("max.in.flight.requests.per.connection", "1");
    let value_of = |i: usize| format!("{i:010}-{}", "r".repeat(VALUE_LEN - 11));
    produce_keyed(&pcfg, topic, N, Some(1), value_of);
    let (_, high) = watermarks(&bootstrap, topic, 0);
    assert_eq!(high, N as i64, "high watermark after producing");

    // Retention must kick in: low watermark moves past 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (low, _) = watermarks(&bootstrap, topic, 0);
        if low > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "low watermark still 0 after 20 s; {} .log segments in {} (retention.bytes={RETENTION_BYTES}, segment.bytes={SEGMENT_BYTES})",
            count_log_segments(&broker.partition_dir(topic, 0)),
            broker.partition_dir(topic, 0).display()
        );
        thread::sleep(Duration::from_millis(200));
    }

    // Wait until it settles (two consecutive identical readings > 2 check intervals apart).
    let mut low = watermarks(&bootstrap, topic, 0).0;
    loop {
        thread::sleep(Duration::from_millis(1200));
        let now = watermarks(&bootstrap, topic, 0).0;
        if now == low {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "low watermark keeps moving"
        );
        low = now;
    }

    let segments = count_log_segments(&broker.partition_dir(topic, 0));
    let total_bytes = N * VALUE_LEN;
    eprintln!(
        "retention: low watermark {low}, {segments} .log segments left (~{} without retention)",
        total_bytes / SEGMENT_BYTES
    );
    assert!(
        segments <= 16,
        "{segments} .log segments remain; with retention.bytes={RETENTION_BYTES} and segment.bytes={SEGMENT_BYTES} \
         only a handful should be left (~{} were written)",
        total_bytes / SEGMENT_BYTES
    );
    assert!(
        low < N as i64,
        "retention deleted everything (low {low}); the active segment must stay"
    );

    // Consuming from the beginning starts at the new low watermark.
    let records = consume_all(
        &bootstrap,
        topic,
        1,
        N - low as usize,
        Duration::from_secs(60),
    );
    assert_eq!(
        records.len(),
        N - low as usize,
        "messages left after retention"
    );
    assert_eq!(
        records[0].1, low,
        "consumer assigned at Offset::Beginning must start at the low watermark"
    );
    for (idx, (_, off, key, value)) in records.iter().enumerate() {
        let i = low as usize + idx;
        assert_eq!(*off, i as i64, "offsets after retention must be contiguous");
        assert_eq!(parse_seq(key), Some(i), "key at offset {off}");
        assert!(
            value.as_slice() == value_of(i).as_bytes(),
            "value at offset {off} is wrong"
        );
    }
    broker.terminate();
}

// ---------------------------------------------------------------------------------------------
// (d) DeleteRecords
// ---------------------------------------------------------------------------------------------

fn delete_records(bootstrap: &str, topic: &str, offset: Offset) -> Result<Offset, KafkaError> {
    let admin = admin(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, offset).unwrap();
    let result = block_on(
        admin.delete_records(&tpl, &admin_opts()),
        Duration::from_secs(45),
        "DeleteRecords",
    )?;
    let elem = result
        .find_partition(topic, 0)
        .expect("partition 0 in DeleteRecords result");
    elem.error()?;
    Ok(elem.offset())
}

#[test]
fn delete_records_moves_low_watermark() {
    const N: usize = 100;
    let mut broker = Broker::start(&[], 1);
    let bootstrap = broker.bootstrap();
    let topic = "delete-records";
    create_topic(&bootstrap, topic, 1, &[]);
    let mut pcfg = producer_config(&bootstrap);
    pcfg.set("acks", "-1")
        .set("max.in.flight.requests.per.connection", "1");
    let value_of = |i: usize| format!("dr-{i}");
    produce_keyed(&pcfg, topic, N, Some(1), value_of);
    assert_eq!(watermarks(&bootstrap, topic, 0), (0, N as i64));

    // Delete everything before offset 40.
    let low = delete_records(&bootstrap, topic, Offset::Offset(40))
        .unwrap_or_else(|e| panic!("DeleteRecords(before 40) failed: {e}"));
    assert_eq!(
        low,
        Offset::Offset(40),
        "DeleteRecords must report the new low watermark"
    );
    assert_eq!(
        watermarks(&bootstrap, topic, 0),
        (40, N as i64),
        "watermarks after DeleteRecords(40)"
    );
    let records = consume_all(&bootstrap, topic, 1, N - 40, Duration::from_secs(30));
    assert_eq!(
        records.len(),
        N - 40,
        "messages left after DeleteRecords(40)"
    );
    assert_eq!(
        records[0].1, 40,
        "consumption from Offset::Beginning must start at 40"
    );
    for (idx, (_, off, key, value)) in records.iter().enumerate() {
        let i = 40 + idx;
        assert_eq!(*off, i as i64, "contiguous offsets after DeleteRecords");
        assert_eq!(parse_seq(key), Some(i), "key at {off}");
        assert_eq!(value.as_slice(), value_of(i).as_bytes(), "value at {off}");
    }

    // Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing changes.
    let beyond = delete_records(&bootstrap, topic, Offset::Offset(1000));
    assert!(
        beyond.is_err(),
        "DeleteRecords beyond the high watermark must fail (OFFSET_OUT_OF_RANGE), got {beyond:?}"
    );
    assert_eq!(
        watermarks(&bootstrap, topic, 0),
        (40, N as i64),
        "watermarks after rejected DeleteRecords"
    );

    // Offset::End (-1) = delete up to the high watermark.
    let low = delete_records(&bootstrap, topic, Offset::End)
        .unwrap_or_else(|e| panic!("DeleteRecords(all) failed: {e}"));
    assert_eq!(
        low,
        Offset::Offset(N as i64),
        "DeleteRecords(-1) must move the low watermark to the high watermark"
    );
    assert_eq!(watermarks(&bootstrap, topic, 0), (N as i64, N as i64));

    // The partition keeps accepting data at the old end.
    let (producer, log) = tracking_producer(&pcfg, true);
    send_base(
        &producer,
        BaseRecord::to(topic)
            .partition(0)
            .key("k-new")
            .payload("after-delete"),
    );
    flush_or_panic(&producer, "produce after DeleteRecords", &log);
    assert_delivered(&log, 1, "produce after DeleteRecords");
    assert_eq!(
        log.acked()[0].offset,
        N as i64,
        "offset of the first message after deleting everything"
    );
    drop(producer);
    let records = consume_all(&bootstrap, topic, 1, 1, Duration::from_secs(30));
    assert_eq!(records.len(), 1, "only the new message remains");
    assert_eq!(records[0].1, N as i64);
    assert_eq!(records[0].3.as_slice(), b"after-delete");
    broker.terminate();
}
