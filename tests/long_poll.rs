//! A long-poll Fetch waiting for more than is there (some data, fewer than `min_bytes`) must
//! not hold up its shard: produce requests on the same shard are answered promptly meanwhile,
//! and the fetch returns as soon as `min_bytes` is reached, well before `max_wait_ms`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use shardlog::client::{encode_batch, Client};

fn tn(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce(c: &mut Client, topic: &str, value_bytes: usize) {
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(
        encode_batch(
            &[(None, Bytes::from(vec![b'p'; value_bytes]))],
            Compression::None,
        )
        .expect("batch"),
    );
    let mut t = produce_request::TopicProduceData::default();
    t.name = tn(topic);
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = 1;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    let resp = c.send(&r, 9).expect("produce");
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}

#[test]
fn waiting_fetch_does_not_stall_its_shard() {
    let mut broker = Broker::start(&[], 1);
    let addr = broker.bootstrap();
    create_topic(&addr, "lp", 1, &[]);
    let mut producer = Client::connect(&addr).expect("connect");
    produce(&mut producer, "lp", 100); // some data, far below min_bytes

    let fetcher = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut c = Client::connect(&addr).expect("connect");
            let mut p = fetch_request::FetchPartition::default();
            p.partition_max_bytes = 8 << 20;
            let mut t = fetch_request::FetchTopic::default();
            t.topic = tn("lp");
            t.partitions = vec![p];
            let mut r = FetchRequest::default();
            r.max_wait_ms = 5000;
            r.min_bytes = 1 << 20;
            r.max_bytes = 8 << 20;
            r.topics = vec![t];
            let start = Instant::now();
            let resp = c.send(&r, 12).expect("fetch");
            let bytes = resp.responses[0].partitions[0]
                .records
                .as_ref()
                .map(|r| r.len())
                .unwrap_or(0);
            (start.elapsed(), bytes)
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    for _ in 0..6 {
        produce(&mut producer, "lp", 200_000);
    }
    let produce_time = start.elapsed();
    let (fetch_time, bytes) = fetcher.join().expect("fetcher");
    assert!(
        produce_time < Duration::from_secs(2),
        "produces took {produce_time:?} while a fetch waited"
    );
    assert!(
        bytes >= 1 << 20,
        "fetch returned {bytes} bytes, below min_bytes"
    );
    assert!(
        fetch_time < Duration::from_secs(3),
        "fetch took {fetch_time:?}: it should end when min_bytes is reached"
    );
    broker.terminate();
}
