//! Read-ahead (the default fetch path for data behind the hot tail) through the real binary
//! with librdkafka at its default fetch sizes: reads across many segment rolls by two readers
//! at once; DeleteRecords unlinking the segments a reader's read-ahead covers; the cleaner
//! replacing segments under a reader; a consumer that goes away mid-read, whose read-ahead is
//! released; and a segment that cannot be read, answered with KAFKA_STORAGE_ERROR. Every
//! record's value names its offset, so any byte served from freed, stale or rewritten memory
//! shows up as a mismatch (and librdkafka checks CRCs).

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use shardlog::client::Client;

const RECORDS: usize = 30_000;

/// About 1 KiB that names `i` and differs from every other record's bytes.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!("record-{i:08}-").into_bytes();
    let fill = b'a' + (i % 26) as u8;
    v.resize(900 + i % 200, fill);
    v
}

/// The offset a value names.
fn offset_in(value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value.get(7..15)?).ok()?;
    s.parse().ok()
}

fn broker(extra: &[(&str, &str)]) -> Broker {
    let mut args = vec![
        // Everything is read from the segment files.
        ("shardlog.hot.tail.bytes", "0"),
        ("shardlog.read.ahead.idle.ms", "300"),
        ("log.cleaner.backoff.ms", "100"),
    ];
    args.extend_from_slice(extra);
    Broker::start(&args, 1)
}

/// Writes `RECORDS` records to partition 0 (16 KiB batches), record i at offset i; `key` gives
/// each record's key.
fn produce(bootstrap: &str, topic: &str, key: impl Fn(usize) -> String) {
    let mut cfg = producer_config(bootstrap);
    cfg.set("acks", "1")
        .set("batch.size", "16384")
        .set("max.in.flight.requests.per.connection", "1");
    let (producer, log) = tracking_producer(&cfg, false);
    for i in 0..RECORDS {
        let (k, v) = (key(i), value(i));
        send_base(
            &producer,
            BaseRecord::to(topic).partition(0).key(&k).payload(&v),
        );
        if i % 1000 == 999 {
            producer.poll(Duration::ZERO);
        }
    }
    flush_or_panic(&producer, topic, &log);
    assert_delivered(&log, RECORDS, topic);
}

/// A consumer at librdkafka's default fetch sizes with a small local queue, so that it does
/// not prefetch far ahead of what it has handed out.
fn consumer(bootstrap: &str, topic: &str, from: i64) -> BaseConsumer {
    let mut cfg = consumer_config(bootstrap);
    cfg.set("queued.max.messages.kbytes", "2048")
        .set("queued.min.messages", "100");
    let consumer: BaseConsumer = cfg.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Reads until `n` records came or the partition's end, checking each value against its
/// offset and the order; returns the offsets read.
fn read(consumer: &BaseConsumer, n: usize, what: &str) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut offsets: Vec<i64> = Vec::new();
    let mut eofs = 0;
    while offsets.len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: read {} of {n} in 90 s ({eofs} times at the end, position {:?})",
            offsets.len(),
            consumer.position().ok().map(|p| p
                .elements()
                .iter()
                .map(|e| e.offset())
                .collect::<Vec<_>>())
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let v = m.payload().unwrap_or_default();
                assert_eq!(
                    offset_in(v),
                    Some(m.offset()),
                    "{what}: the record at offset {} names another",
                    m.offset()
                );
                assert_eq!(v, &value(m.offset() as usize)[..], "{what}: bytes differ");
                if let Some(&last) = offsets.last() {
                    assert!(m.offset() > last, "{what}: {} after {last}", m.offset());
                }
                offsets.push(m.offset());
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                eofs += 1;
                if offsets.last() == Some(&(RECORDS as i64 - 1)) {
                    break;
                }
            }
            Some(Err(e)) => panic!("{what}: consumer error {e}"),
        }
    }
    offsets
}

fn log_files(broker: &Broker, topic: &str) -> usize {
    std::fs::read_dir(broker.partition_dir(topic, 0))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn two_readers_read_ahead_across_segment_rolls() {
    let broker = broker(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "rolls", 1, &[("segment.bytes", "1048576")]);
    produce(&bootstrap, "rolls", |i| format!("k{i}"));
    assert!(
        log_files(&broker, "rolls") >= 20,
        "{}",
        broker.stderr_tail()
    );
    let b = bootstrap.clone();
    let second = std::thread::spawn(move || {
        let c = consumer(&b, "rolls", 12_345);
        read(&c, RECORDS - 12_345, "reader from 12345")
    });
    let c = consumer(&bootstrap, "rolls", 0);
    let first = read(&c, RECORDS, "reader from 0");
    let second = second.join().expect("second reader");
    assert_eq!(first, (0..RECORDS as i64).collect::<Vec<_>>());
    assert_eq!(second, (12_345..RECORDS as i64).collect::<Vec<_>>());
}

#[test]
fn deleting_the_segments_under_a_reader_serves_no_freed_data() {
    let broker = broker(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "gone", 1, &[("segment.bytes", "1048576")]);
    produce(&bootstrap, "gone", |i| format!("k{i}"));
    let c = consumer(&bootstrap, "gone", 0);
    let before = read(&c, 3_000, "before the delete");
    // The reader's read-ahead now covers segments past offset 3000; delete below 20000.
    let files = log_files(&broker, "gone");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("gone", 0, Offset::Offset(20_000))
        .expect("partition");
    let admin = admin(&bootstrap);
    let result = block_on(
        admin.delete_records(&tpl, &admin_opts()),
        Duration::from_secs(30),
        "DeleteRecords",
    )
    .expect("DeleteRecords");
    assert!(result.elements().iter().all(|e| e.error().is_ok()));
    assert!(log_files(&broker, "gone") < files, "segments were unlinked");
    // The reader goes on: what it had fetched, then (auto.offset.reset=earliest) the new
    // start; every record it gets is the one its offset names.
    let after = read(&c, RECORDS, "after the delete");
    assert_eq!(after.last(), Some(&(RECORDS as i64 - 1)));
    let resumed = after
        .iter()
        .position(|&o| o >= 20_000)
        .expect("reached 20000");
    assert_eq!(
        &after[resumed..],
        &(20_000..RECORDS as i64).collect::<Vec<_>>()[..]
    );
    assert!(before.len() == 3_000);
}

#[test]
fn compaction_replacing_segments_under_a_reader_serves_no_stale_data() {
    let broker = broker(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(
        &bootstrap,
        "squeezed",
        1,
        &[
            ("segment.bytes", "1048576"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            // Nothing is compacted until the reader is well on its way.
            ("min.compaction.lag.ms", "12000"),
        ],
    );
    // 300 keys: after compaction only the last 300 records (and the active segment) remain.
    produce(&bootstrap, "squeezed", |i| format!("k{}", i % 300));
    let files_before = log_files(&broker, "squeezed");
    let c = consumer(&bootstrap, "squeezed", 0);
    let before = read(&c, 2_000, "before compaction");
    assert_eq!(
        before,
        (0..2_000).collect::<Vec<_>>(),
        "read before the cleaner ran"
    );
    // Wait for the cleaner to replace the segments the reader is in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_files(&broker, "squeezed") >= files_before {
        assert!(
            Instant::now() < deadline,
            "the cleaner did not run in 60 s{}",
            broker.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = read(&c, RECORDS, "after compaction");
    // The newest record of every key survives compaction and is read.
    let last: Vec<i64> = ((RECORDS - 300) as i64..RECORDS as i64).collect();
    let tail: Vec<i64> = after.iter().copied().filter(|&o| o >= last[0]).collect();
    assert_eq!(tail, last);
}

#[test]
fn a_consumer_that_goes_away_mid_read_has_its_read_ahead_released() {
    let broker = broker(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "left", 1, &[("segment.bytes", "4194304")]);
    produce(&bootstrap, "left", |i| format!("k{i}"));
    {
        let c = consumer(&bootstrap, "left", 0);
        let _ = read(&c, 5_000, "the reader that leaves");
        // Dropped here, in the middle of the partition, without a word to the broker.
    }
    assert!(
        broker
            .wait_for_stderr_line(
                "bytes of read-ahead of idle readers",
                Duration::from_secs(10)
            )
            .is_some(),
        "the read-ahead of the reader that left was not released in 10 s{}",
        broker.stderr_tail()
    );
    // A new reader reads everything.
    let c = consumer(&bootstrap, "left", 0);
    assert_eq!(
        read(&c, RECORDS, "a new reader"),
        (0..RECORDS as i64).collect::<Vec<_>>()
    );
}

#[test]
fn a_segment_that_cannot_be_read_is_answered_with_kafka_storage_error() {
    let mut broker = broker(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "damaged", 1, &[]);
    produce(&bootstrap, "damaged", |i| format!("k{i}"));
    // Cut the segment file under the running broker, which still counts its bytes as
    // written: reads past 64 KiB come back short.
    let log = broker
        .partition_dir("damaged", 0)
        .join("00000000000000000000.log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(64 << 10))
        .expect("truncate the segment");
    // Fetch from the start, a new connection each time. The first answer may be cut off (its
    // read fails while the response is on its way, so the connection closes); after that the
    // partition's reads are checked before they are framed.
    let mut tries = Vec::new();
    let code = loop {
        assert!(
            tries.len() < 4,
            "no error code for an unreadable segment: {tries:?}{}",
            broker.stderr_tail()
        );
        let mut client = Client::connect(&bootstrap).expect("connect");
        match client.send(&fetch_request("damaged", 0, 1 << 20), 12) {
            Ok(r) => {
                let part = &r.responses[0].partitions[0];
                if part.error_code != 0 {
                    break part.error_code;
                }
                tries.push(format!(
                    "answered with {} bytes",
                    part.records.as_ref().map_or(0, |b| b.len())
                ));
            }
            Err(e) => tries.push(format!("{e}")),
        }
    };
    assert_eq!(code, 56, "KAFKA_STORAGE_ERROR after {tries:?}");
    assert!(
        broker
            .wait_for_stderr_line(
                "00000000000000000000.log: cannot read it",
                Duration::from_secs(10)
            )
            .is_some(),
        "the broker names the file{}",
        broker.stderr_tail()
    );
    // The broker goes on serving: the partition's offsets, and a read of another topic.
    assert_eq!(watermarks(&bootstrap, "damaged", 0).1, RECORDS as i64);
    create_topic(&bootstrap, "healthy", 1, &[]);
    produce(&bootstrap, "healthy", |i| format!("k{i}"));
    let c = consumer(&bootstrap, "healthy", 0);
    assert_eq!(read(&c, 100, "another topic").len(), 100);
    assert!(broker.is_running());
}
