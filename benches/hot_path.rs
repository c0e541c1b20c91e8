//! Criterion benches of the broker's per-request work that needs no runtime: CRC-32C and batch
//! validation on the produce path, decoding a Produce request, building and compressing a
//! batch (the load generator's side), sparse index lookups and the murmur2 partitioner.
//! `cargo bench --bench hot_path`.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardlog::client::partitioner::murmur2;
use shardlog::record::builder::{BatchBuilder, Codec};
use shardlog::storage::index::OffsetIndex;

/// A batch of `n` records of `size` bytes, as a producer sends it.
fn batch(n: usize, size: usize, codec: Codec) -> Bytes {
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut b = BatchBuilder::with_capacity(0, n * (size + 16));
    for _ in 0..n {
        b.push(0, None, &value);
    }
    b.finish(codec).expect("batch")
}

fn produce_path(c: &mut Criterion) {
    let one_mib = batch(1000, 1024, Codec::None);
    let mut g = c.benchmark_group("produce_path");
    g.throughput(Throughput::Bytes(one_mib.len() as u64));
    g.bench_function("crc32c_1MiB", |b| {
        b.iter(|| crc32c::crc32c(black_box(&one_mib[21..])))
    });
    g.bench_function("validate_batch_1MiB", |b| {
        b.iter(|| {
            shardlog::record::validate_batches(black_box(one_mib.clone()), 2 << 20).expect("valid")
        })
    });
    let mut p = PartitionProduceData::default();
    p.records = Some(one_mib.clone());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("bench"));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = 1;
    r.topic_data = vec![t];
    let mut buf = BytesMut::new();
    r.encode(&mut buf, 9).expect("encode");
    let encoded = buf.freeze();
    g.bench_function("decode_produce_request_1MiB", |b| {
        b.iter(|| ProduceRequest::decode(&mut black_box(encoded.clone()), 9).expect("decode"))
    });
    g.finish();
}

fn build_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("build_batch_1000x1KiB");
    g.throughput(Throughput::Bytes(1000 * 1024));
    for codec in [
        Codec::None,
        Codec::Lz4,
        Codec::Zstd,
        Codec::Snappy,
        Codec::Gzip,
    ] {
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{codec:?}")),
            &codec,
            |b, &codec| b.iter(|| batch(1000, 1024, codec)),
        );
    }
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let index = OffsetIndex {
        entries: (0..100_000u32).map(|i| (i * 4, i * 4096)).collect(),
    };
    c.bench_function("offset_index_floor_100k_entries", |b| {
        let mut x = 0u32;
        b.iter(|| {
            x = x.wrapping_add(7919) % 400_000;
            index.floor_position(black_box(x))
        })
    });
    let mut key = BytesMut::new();
    key.put_slice(b"customer-000123456");
    c.bench_function("murmur2_18_byte_key", |b| {
        b.iter(|| murmur2(black_box(&key)))
    });
}

criterion_group!(benches, produce_path, build_batches, lookups);
criterion_main!(benches);
