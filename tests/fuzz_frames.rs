//! Seeded fuzzing of the wire: random bytes, oversized and negative frame lengths, hostile array
//! counts, and byte-level mutations (flips, truncations, splices) of valid requests for every
//! supported API. After each attack the connection must be answered or closed, never hang the
//! broker; throughout, a well-behaved client keeps producing and fetching, and at the end the
//! broker is still running and every record it acknowledged reads back.
//!
//! Seed: SHARDLOG_FUZZ_SEED (default fixed), rounds: SHARDLOG_FUZZ_ROUNDS (default 600).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog::client::{decode_records, encode_batch, Client};

const MAX_FRAME: usize = 1 << 20;

fn frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let key = ApiKey::try_from(R::KEY).expect("known key");
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    req.encode(&mut buf, version).expect("body");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Valid requests of every supported API, at assorted versions, as seeds for mutation.
fn seeds(topic: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let batch = encode_batch(
        &[(Some(Bytes::from("k")), Bytes::from("value"))],
        kafka_protocol::records::Compression::None,
    )
    .expect("batch");
    for v in [3, 7, 9] {
        let mut p = produce_request::PartitionProduceData::default();
        p.records = Some(batch.clone());
        let mut t = produce_request::TopicProduceData::default();
        t.name = topic_name(topic);
        t.partition_data = vec![p];
        let mut r = ProduceRequest::default();
        r.acks = 1;
        r.timeout_ms = 1000;
        r.topic_data = vec![t];
        out.push(frame(&r, v, 1));
    }
    for v in [4, 11, 12] {
        let mut p = fetch_request::FetchPartition::default();
        p.partition_max_bytes = 1 << 16;
        let mut t = fetch_request::FetchTopic::default();
        t.topic = topic_name(topic);
        t.partitions = vec![p];
        let mut r = FetchRequest::default();
        r.max_wait_ms = 10;
        r.max_bytes = 1 << 20;
        r.topics = vec![t];
        out.push(frame(&r, v, 2));
    }
    for v in [0, 4, 9, 12] {
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(topic_name(topic));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t]);
        out.push(frame(&r, v, 3));
    }
    for v in [1, 7] {
        let mut p = list_offsets_request::ListOffsetsPartition::default();
        p.timestamp = -1;
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = topic_name(topic);
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.topics = vec![t];
        out.push(frame(&r, v, 4));
    }
    for v in [0, 3, 4] {
        out.push(frame(&ApiVersionsRequest::default(), v, 5));
    }
    for v in [2, 7] {
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = topic_name("fuzz-created");
        t.num_partitions = 1;
        t.replication_factor = 1;
        let mut r = CreateTopicsRequest::default();
        r.topics = vec![t];
        r.validate_only = true;
        out.push(frame(&r, v, 6));
    }
    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.to_string());
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    out.push(frame(&r, 4, 7));
    let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
    p.leader_epoch = 0;
    let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
    t.topic = topic_name(topic);
    t.partitions = vec![p];
    let mut r = OffsetForLeaderEpochRequest::default();
    r.topics = vec![t];
    out.push(frame(&r, 4, 8));
    let mut p = delete_records_request::DeleteRecordsPartition::default();
    p.offset = 0;
    let mut t = delete_records_request::DeleteRecordsTopic::default();
    // Another topic: a mutated offset could legitimately delete the target's records.
    t.name = topic_name("fuzz-other");
    t.partitions = vec![p];
    let mut r = DeleteRecordsRequest::default();
    r.topics = vec![t];
    out.push(frame(&r, 2, 9));
    out.push(frame(&DescribeClusterRequest::default(), 1, 10));
    out
}

/// One attack: the bytes to send.
fn attack(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.gen_range(0..seeds.len())];
    match rng.gen_range(0..8) {
        // Pure noise.
        0 => (0..rng.gen_range(0..4096)).map(|_| rng.gen()).collect(),
        // A valid length prefix over noise.
        1 => {
            let n = rng.gen_range(0..2048usize);
            let mut v = (n as i32).to_be_bytes().to_vec();
            v.extend((0..n).map(|_| rng.gen::<u8>()));
            v
        }
        // Oversized or negative length.
        2 => {
            let n: i32 = if rng.gen() {
                (MAX_FRAME as i32) + rng.gen_range(1..1_000_000)
            } else {
                -rng.gen_range(1..i32::MAX)
            };
            let mut v = n.to_be_bytes().to_vec();
            v.extend_from_slice(&[0u8; 16]);
            v
        }
        // Bit flips in a valid request, length prefix kept.
        3 => {
            let mut v = seed.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(4..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            v
        }
        // A valid request cut short, prefix claiming the full length (the broker waits, we close).
        4 => {
            let cut = rng.gen_range(4..seed.len());
            seed[..cut].to_vec()
        }
        // Truncated body with a consistent prefix: the decoder runs out of bytes.
        5 => {
            let cut = rng.gen_range(8..seed.len().max(9));
            let mut v = ((cut - 4) as i32).to_be_bytes().to_vec();
            v.extend_from_slice(&seed[4..cut.min(seed.len())]);
            v
        }
        // Hostile counts: overwrite 4 bytes after the header with huge or negative numbers.
        6 => {
            let mut v = seed.clone();
            if v.len() > 16 {
                let i = rng.gen_range(12..v.len() - 4);
                let n: i32 = *[i32::MAX, 0x7fff_0000, -2, 1 << 30]
                    .get(rng.gen_range(0..4))
                    .unwrap_or(&i32::MAX);
                v[i..i + 4].copy_from_slice(&n.to_be_bytes());
            }
            v
        }
        // Unknown API keys and versions in an otherwise valid frame.
        _ => {
            let mut v = seed.clone();
            let key: i16 = rng.gen_range(-5..200);
            let version: i16 = rng.gen_range(-3..40);
            v[4..6].copy_from_slice(&key.to_be_bytes());
            v[6..8].copy_from_slice(&version.to_be_bytes());
            v
        }
    }
}

/// Sends the attack and waits briefly for an answer or a close; never for long.
fn deliver(addr: &str, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        panic!("broker at {addr} refused a connection")
    };
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

fn healthy_round_trip(addr: &str, topic: &str, round: usize) -> i64 {
    let mut client = Client::connect(addr).expect("well-behaved client connects");
    let value = Bytes::from(format!("healthy-{round}"));
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(
        encode_batch(
            &[(None, value.clone())],
            kafka_protocol::records::Compression::None,
        )
        .expect("batch"),
    );
    let mut t = produce_request::TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    let resp = client.send(&r, 9).expect("produce answered");
    let part = &resp.responses[0].partition_responses[0];
    assert_eq!(
        part.error_code, 0,
        "healthy produce failed in round {round}"
    );
    let offset = part.base_offset;
    let mut fp = fetch_request::FetchPartition::default();
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 16;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = topic_name(topic);
    ft.partitions = vec![fp];
    let mut f = FetchRequest::default();
    f.max_bytes = 1 << 20;
    f.topics = vec![ft];
    let resp = client.send(&f, 12).expect("fetch answered");
    let records = decode_records(
        resp.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default(),
    )
    .expect("decodes");
    let got = records
        .iter()
        .find(|r| r.offset == offset)
        .expect("produced record is fetched back");
    assert_eq!(got.value.as_ref(), Some(&value));
    offset
}

#[test]
fn malformed_frames_never_take_the_broker_down() {
    let seed = env_usize("SHARDLOG_FUZZ_SEED", 0x5eed);
    let rounds = env_usize("SHARDLOG_FUZZ_ROUNDS", 600);
    let max = MAX_FRAME.to_string();
    let mut broker = Broker::start(&[("socket.request.max.bytes", max.as_str())], 1);
    let addr = broker.bootstrap();
    let topic = "fuzz-target";
    create_topic(&addr, topic, 1, &[]);
    let seeds = seeds(topic);
    let mut rng = StdRng::seed_from_u64(seed as u64);
    let mut acknowledged = Vec::new();
    for round in 0..rounds {
        let bytes = attack(&mut rng, &seeds);
        deliver(&addr, &bytes);
        if round % 50 == 0 {
            assert!(
                broker.is_running(),
                "broker died in round {round} (seed {seed:#x})"
            );
            acknowledged.push(healthy_round_trip(&addr, topic, round));
        }
    }
    assert!(broker.is_running(), "broker died (seed {seed:#x})");
    acknowledged.push(healthy_round_trip(&addr, topic, rounds));
    // Everything acknowledged to the well-behaved client is still there, in order.
    let (low, high) = watermarks(&addr, topic, 0);
    assert_eq!(low, 0, "nothing may move the target's log start");
    let records = consume_all(
        &addr,
        topic,
        1,
        (high - low) as usize,
        Duration::from_secs(30),
    );
    let offsets: Vec<i64> = records.iter().map(|r| r.1).collect();
    for off in &acknowledged {
        assert!(
            offsets.contains(off),
            "acknowledged offset {off} missing after fuzzing"
        );
    }
    broker.terminate();
}
