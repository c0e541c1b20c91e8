//! Fetch of data on disk both ways — zero-copy (sendfile from the segment file,
//! `shardlog.fetch.zero.copy=true`) and the default path (read-ahead into the shard's buffers,
//! sent from them) — with the hot tail off so every read
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

/// One Fetch over two partitions, each holding one 100 KiB batch, with `max_bytes` 150 KB:
/// the first partition's batch goes whole, the second's does not fit and comes back empty
/// (never a partial batch alone, which the Java consumer rejects). With `max_bytes` smaller
/// than one batch, the first batch still goes whole (KIP-74).
fn response_limits(zero_copy: &str) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use shardlog::client::{encode_batch, Client};

    let mut broker = Broker::start(
        &[
            ("shardlog.hot.tail.bytes", "0"),
            ("shardlog.fetch.zero.copy", zero_copy),
        ],
        1,
    );
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "limits", 2, &[]);
    let mut client = Client::connect(&bootstrap).expect("connect");
    let records: Vec<_> = (0..100)
        .map(|i| (None, bytes::Bytes::from(vec![b'a' + (i % 26) as u8; 1000])))
        .collect();
    for p in 0..2 {
        let batch =
            encode_batch(&records, kafka_protocol::records::Compression::None).expect("batch");
        produce_batch(&mut client, "limits", p, batch);
    }
    let fetch = |client: &mut Client, max_bytes: i32| {
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("limits"));
        t.partitions = (0..2)
            .map(|p| {
                let mut fp = FetchPartition::default();
                fp.partition = p;
                fp.partition_max_bytes = 1 << 20;
                fp
            })
            .collect();
        let mut r = FetchRequest::default();
        r.max_wait_ms = 0;
        r.max_bytes = max_bytes;
        r.topics = vec![t];
        let resp = client.send(&r, 12).expect("fetch");
        resp.responses[0]
            .partitions
            .iter()
            .map(|p| {
                assert_eq!(p.error_code, 0);
                p.records.as_ref().map_or(0, |r| r.len())
            })
            .collect::<Vec<_>>()
    };
    let batch_len = fetch(&mut client, 1 << 20)[0];
    assert!(batch_len > 100_000, "one batch of 100 records: {batch_len}");
    assert_eq!(fetch(&mut client, 1 << 20), vec![batch_len, batch_len]);
    assert_eq!(fetch(&mut client, 150_000), vec![batch_len, 0]);
    assert_eq!(fetch(&mut client, 1000), vec![batch_len, 0]);
    broker.terminate();
}

fn produce_batch(
    client: &mut shardlog::client::Client,
    topic: &str,
    partition: i32,
    batch: bytes::Bytes,
) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(batch);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 10_000;
    r.topic_data = vec![t];
    let resp = client.send(&r, 9).expect("produce");
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}

#[test]
fn zero_copy_fetch_respects_response_limits() {
    response_limits("true");
}

#[test]
fn copy_path_fetch_respects_response_limits() {
    response_limits("false");
}

/// A consumer that asks for 40 MB of data on disk and then reads nothing must not stall the
/// shard: produce to another topic on the same shard, rolling a segment every few requests
/// (rolls use the shard's blocking pool, as sendfile does), keeps being acknowledged.
#[test]
fn a_consumer_that_stops_reading_does_not_stall_the_shard() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use shardlog::client::{encode_batch, encode_request, Client};
    use std::io::Write;

    let mut broker = Broker::start(&[("shardlog.hot.tail.bytes", "0")], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "big", 1, &[]);
    create_topic(&bootstrap, "flow", 1, &[("segment.bytes", "1048576")]);
    let records: Vec<_> = (0..100)
        .map(|_| (None, bytes::Bytes::from(vec![b'x'; 10_000])))
        .collect();
    let batch = encode_batch(&records, kafka_protocol::records::Compression::None).expect("batch");
    let mut client = Client::connect(&bootstrap).expect("connect");
    for _ in 0..40 {
        produce_batch(&mut client, "big", 0, batch.clone());
    }

    // The stuck consumer: a small receive buffer, one Fetch for everything, never read.
    let addr: std::net::SocketAddr = bootstrap.parse().expect("address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 << 10).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stuck: std::net::TcpStream = socket.into();
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("big"));
    let mut fp = FetchPartition::default();
    fp.partition_max_bytes = 64 << 20;
    t.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.max_bytes = 64 << 20;
    r.topics = vec![t];
    stuck
        .write_all(&encode_request(&r, 12, 1).expect("encode"))
        .expect("send fetch");
    std::thread::sleep(Duration::from_millis(500));

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let flow_batch = batch.slice(..);
    std::thread::spawn(move || {
        let mut client = Client::connect(&bootstrap).expect("connect");
        for _ in 0..30 {
            produce_batch(&mut client, "flow", 0, flow_batch.clone());
        }
        let _ = done_tx.send(());
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(20));
    drop(stuck);
    assert!(
        finished.is_ok(),
        "produce with segment rolls stalled while a consumer did not read"
    );
    broker.terminate();
}
