//! Fetch of data on disk both ways — zero-copy (sendfile from the segment file, the default)
//! and the copy path (`shardlog.fetch.zero.copy=false`) — with the hot tail off so every read
//! goes to the segment files. librdkafka reads everything back across segment boundaries with
//! partition fetch limits smaller than the data, so responses end inside batches (as Kafka's
//! do) and the client must drop the partial batch and fetch again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const RECORDS: usize = 20_000;

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(v.len() + i % 700, b'a' + (i % 26) as u8);
    v
}

fn read_back(zero_copy: &str) {
    let mut broker = Broker::start(
        &[
            ("shardlog.hot.tail.bytes", "0"),
            ("shardlog.fetch.zero.copy", zero_copy),
        ],
        1,
    );
    let bootstrap = broker.bootstrap();
    let topic = "cold";
    create_topic(&bootstrap, topic, 1, &[("segment.bytes", "1048576")]);
    let mut pcfg = producer_config(&bootstrap);
    pcfg.set("acks", "1").set("batch.size", "16384");
    let (producer, log) = tracking_producer(&pcfg, false);
    let values: Vec<Vec<u8>> = (0..RECORDS).map(value).collect();
    for v in &values {
        send_base(
            &producer,
            BaseRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(&v[..]),
        );
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert_eq!(log.ok(), RECORDS as u64, "{:?}", log.first_error());
    let segments = std::fs::read_dir(broker.partition_dir(topic, 0))
        .expect("partition dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments >= 3, "expected several segments, found {segments}");

    let mut ccfg = consumer_config(&bootstrap);
    ccfg.set("max.partition.fetch.bytes", "50000")
        .set("fetch.max.bytes", "120000")
        .set("message.max.bytes", "100000")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = ccfg.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0usize;
    while next < RECORDS {
        assert!(Instant::now() < deadline, "stalled at {next} of {RECORDS}");
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                assert_eq!(m.offset(), next as i64, "zero.copy={zero_copy}");
                assert_eq!(m.payload(), Some(&values[next][..]), "record {next}");
                next += 1;
            }
            Some(Err(e)) => panic!("consume (zero.copy={zero_copy}): {e}"),
            None => {}
        }
    }
    broker.terminate();
}

#[test]
fn zero_copy_fetch_returns_every_record_from_disk() {
    read_back("true");
}

#[test]
fn copy_path_fetch_returns_every_record_from_disk() {
    read_back("false");
}
