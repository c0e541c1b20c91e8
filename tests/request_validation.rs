//! Requests Kafka refuses, refused the same way: two batches for one partition, client control
//! batches, zstd on Produce below v7, a failed acks=0 produce (the connection closes), a bad
//! CreatePartitions assignment (nothing changes), and DescribeConfigs with an empty key list
//! (every key, as Kafka answers).

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use shardlog::client::{encode_batch, Client};

fn tn(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_request(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(records);
    let mut t = produce_request::TopicProduceData::default();
    t.name = tn(topic);
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    r
}

fn produce_error(c: &mut Client, topic: &str, records: Bytes, version: i16) -> i16 {
    let resp = c
        .send(&produce_request(topic, records, 1), version)
        .expect("answered");
    resp.responses[0].partition_responses[0].error_code
}

fn batch(value: &str, compression: Compression) -> Bytes {
    encode_batch(&[(None, Bytes::from(value.to_string()))], compression).expect("batch")
}

/// Sets the control flag and recomputes the CRC-32C over attributes onward.
fn as_control(b: &Bytes) -> Bytes {
    let mut m = BytesMut::from(&b[..]);
    m[22] |= 0x20;
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
    m.freeze()
}

#[test]
fn refused_like_kafka() {
    let mut broker = Broker::start(&[], 1);
    let addr = broker.bootstrap();
    create_topic(&addr, "v", 1, &[]);
    let mut c = Client::connect(&addr).expect("connect");

    let mut two = BytesMut::from(&batch("a", Compression::None)[..]);
    two.extend_from_slice(&batch("b", Compression::None));
    assert_eq!(
        produce_error(&mut c, "v", two.freeze(), 9),
        87,
        "two batches: INVALID_RECORD"
    );
    assert_eq!(
        produce_error(&mut c, "v", as_control(&batch("c", Compression::None)), 9),
        87,
        "control batch: INVALID_RECORD"
    );
    assert_eq!(
        produce_error(&mut c, "v", batch("z", Compression::Zstd), 3),
        76,
        "zstd on v3: UNSUPPORTED_COMPRESSION_TYPE"
    );
    assert_eq!(
        produce_error(&mut c, "v", batch("z", Compression::Zstd), 7),
        0,
        "zstd on v7 is fine"
    );
    let mut flipped = BytesMut::from(&batch("crc", Compression::None)[..]);
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    assert_eq!(
        produce_error(&mut c, "v", flipped.freeze(), 9),
        2,
        "CRC mismatch: CORRUPT_MESSAGE"
    );
    assert_eq!(
        watermarks(&addr, "v", 0),
        (0, 1),
        "only the valid zstd batch was appended"
    );

    // acks=0 gets no answers, so a failure closes the connection.
    let mut quiet = Client::connect(&addr).expect("connect");
    quiet
        .send_only(
            &produce_request("no-such-topic-v", batch("x", Compression::None), 0),
            9,
        )
        .expect("send");
    // Answers leave in request order, so the close comes before any answer to this.
    let closed = quiet.send(&ApiVersionsRequest::default(), 3);
    assert!(
        closed.is_err(),
        "the connection of a failed acks=0 produce is closed"
    );

    // A bad manual assignment creates nothing.
    let mut t = create_partitions_request::CreatePartitionsTopic::default();
    t.name = tn("v");
    t.count = 3;
    let mut a = create_partitions_request::CreatePartitionsAssignment::default();
    a.broker_ids = vec![BrokerId(0)];
    t.assignments = Some(vec![a]); // two new partitions, one assignment
    let mut r = CreatePartitionsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 5000;
    let resp = c.send(&r, 3).expect("CreatePartitions");
    assert_eq!(resp.results[0].error_code, 39, "INVALID_REPLICA_ASSIGNMENT");
    let mut mt = metadata_request::MetadataRequestTopic::default();
    mt.name = Some(tn("v"));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![mt]);
    assert_eq!(
        c.send(&m, 12).expect("metadata").topics[0].partitions.len(),
        1,
        "partition count unchanged"
    );

    // An empty key list means every key.
    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("v");
    res.configuration_keys = Some(vec![]);
    let mut d = DescribeConfigsRequest::default();
    d.resources = vec![res];
    let configs = &c.send(&d, 4).expect("DescribeConfigs").results[0].configs;
    assert!(
        configs.iter().any(|e| e.name.as_str() == "retention.ms"),
        "every key is described"
    );
    broker.terminate();
}
