//! Producers that pipeline without waiting are held back by the broker's bounds (in-flight bytes
//! per connection, queued bytes per partition), not absorbed into memory: a client that writes
//! 512 MiB of Produce requests (large and tiny batches alternating) as fast as the socket takes them leaves the broker's peak
//! resident memory within those bounds, and every batch is acknowledged in order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use shardlog::client::encode_batch;

const BATCH_BYTES: usize = 1 << 20;
const BATCHES: usize = 1024;

fn produce_frame(topic: &str, records: &Bytes, correlation_id: i32) -> Vec<u8> {
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(records.clone());
    let mut t = produce_request::TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = 1;
    r.timeout_ms = 30_000;
    r.topic_data = vec![t];
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = 9;
    header.correlation_id = correlation_id;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(9))
        .expect("header");
    r.encode(&mut buf, 9).expect("body");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024
}

#[test]
fn pipelined_producer_is_bounded_not_buffered() {
    let inflight = 8 << 20;
    let pending = 2 << 20;
    let hot = 8 << 20;
    let mut broker = Broker::start(
        &[
            (
                "shardlog.connection.max.inflight.bytes",
                &inflight.to_string(),
            ),
            ("shardlog.partition.max.pending.bytes", &pending.to_string()),
            ("shardlog.hot.tail.bytes", &hot.to_string()),
        ],
        1,
    );
    let addr = broker.bootstrap();
    create_topic(&addr, "flood", 1, &[]);
    let pid = broker.pid().expect("pid");
    let before = peak_rss_mib(pid);

    let value = Bytes::from(vec![b'f'; 1000]);
    let records: Vec<(Option<Bytes>, Bytes)> = (0..BATCH_BYTES / 1100)
        .map(|_| (None, value.clone()))
        .collect();
    let batch = encode_batch(&records, Compression::None).expect("batch");
    // Every other request is tiny: admission must keep request order, not let it slip past a
    // large batch that is waiting for room in the partition queue.
    let tiny = encode_batch(&records[..1], Compression::None).expect("tiny batch");
    let sent_mib = (BATCHES / 2 * (batch.len() + tiny.len())) >> 20;
    let counts: Vec<i64> = (0..BATCHES)
        .map(|i| if i % 2 == 0 { records.len() as i64 } else { 1 })
        .collect();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let reader = {
        let mut stream = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut offsets = Vec::new();
            for _ in 0..BATCHES {
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).expect("answer length");
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                stream.read_exact(&mut body).expect("answer");
                let mut buf = Bytes::from(body);
                let _header =
                    <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut buf, 1)
                        .expect("header");
                let resp =
                    <ProduceResponse as kafka_protocol::protocol::Decodable>::decode(&mut buf, 9)
                        .expect("decode");
                let part = &resp.responses[0].partition_responses[0];
                assert_eq!(part.error_code, 0, "produce refused");
                offsets.push(part.base_offset);
            }
            offsets
        })
    };
    for i in 0..BATCHES {
        let records = if i % 2 == 0 { &batch } else { &tiny };
        stream
            .write_all(&produce_frame("flood", records, i as i32))
            .expect("write");
    }
    let offsets = reader.join().expect("reader");
    let expected: Vec<i64> = counts
        .iter()
        .scan(0i64, |next, n| {
            let base = *next;
            *next += n;
            Some(base)
        })
        .collect();
    assert_eq!(
        offsets, expected,
        "answers in order, offsets dense and in request order"
    );
    let peak = peak_rss_mib(pid);
    // What the bounds allow: in flight on the connection (read but unanswered), queued for the
    // partition, one write round, the hot tail; plus slack for buffers and allocator reuse.
    let allowed = before + ((inflight + pending + hot + (2 << 20)) >> 20) as u64 + 64;
    eprintln!(
        "broker peak RSS {peak} MiB (before {before} MiB, allowed {allowed} MiB) after {} MiB",
        sent_mib
    );
    assert!(
        peak <= allowed,
        "peak RSS {peak} MiB exceeds the configured bounds ({allowed} MiB)"
    );
    broker.terminate();
}
