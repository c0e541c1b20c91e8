//! Criterion benches of the broker's work that needs the glommio runtime: appending a 1 MiB
//! produce batch to a partition (acks=1: written; acks=-1: the high watermark passed it, which
//! under the default flush rule means fdatasync'ed),
//! fetching 1 MiB from the in-memory hot tail and from disk (O_DIRECT), and a cross-shard
//! round trip over the same channel mesh and oneshot answer `Shard::call` uses.
//! `cargo bench --bench storage_path`. Data goes to a temporary directory under $TMPDIR.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::channel::oneshot;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use shardlog::config::LogConfig;
use shardlog::partition::{Acks, Durability, Entry, Isolation, Partition, PartitionSettings};
use shardlog::record::builder::{BatchBuilder, Codec};
use shardlog::storage::log::{LogSettings, PartitionLog};

const MIB: usize = 1 << 20;

/// A 1 MiB batch of 1 KiB records, as a producer sends it.
fn one_mib_batch() -> Bytes {
    let value: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    let mut b = BatchBuilder::with_capacity(0, MIB + 64 * 1024);
    while b.size() + 1100 < MIB {
        b.push(0, None, &value);
    }
    b.finish(Codec::None).expect("batch")
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 30,
        segment_ms: i64::MAX,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 4096,
        max_message_bytes: 16 * MIB,
        log_append_time: false,
        compact: false,
        delete: true,
        delete_retention_ms: 86_400_000,
        min_cleanable_dirty_ratio: 0.5,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
    }
}

async fn new_log(dir: &std::path::Path, topic: &str, hot_tail_bytes: usize) -> Rc<Partition> {
    let settings = LogSettings {
        write_buffer_bytes: MIB,
        hot_tail_bytes,
        max_pending_bytes: 32 * MIB,
        preallocate_bytes: 0,
        read_ahead: shardlog::storage::read_ahead::ReadAheadSettings {
            partition_bytes: 16 * MIB,
            shard_bytes: 256 * MIB,
            shard_held: Rc::new(std::cell::Cell::new(0)),
            idle: std::time::Duration::from_secs(10),
        },
    };
    let log = PartitionLog::create(dir, topic, [7; 16], 0, log_config(), settings)
        .await
        .expect("create partition log");
    let settings = PartitionSettings {
        durability: Durability::Sync,
        max_pending_bytes: 32 * MIB,
        write_buffer_bytes: MIB,
    };
    Partition::open(log, settings, Rc::new(event_listener::Event::new()))
        .await
        .expect("open partition")
}

async fn append_one(p: &Rc<Partition>, batches: &shardlog::record::ValidatedBatches, acks: Acks) {
    let entry = Entry::Data {
        batches: batches.clone(),
        origin: shardlog::partition::producer_state::Origin::Client,
    };
    p.append_now(entry, acks, None).await.expect("append");
}

fn append(c: &mut Criterion, ex: &LocalExecutor, dir: &std::path::Path) {
    let batch = one_mib_batch();
    let validated = shardlog::record::validate_batches(batch.clone(), 2 * MIB).expect("valid");
    let log = ex.run(new_log(dir, "append", 8 * MIB));
    let mut g = c.benchmark_group("segment_append");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    for (name, acks) in [("1MiB_acks1", Acks::Leader), ("1MiB_fdatasync", Acks::All)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        append_one(&log, &validated, acks).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    ex.run(log.close()).expect("close");
}

fn fetch(c: &mut Criterion, ex: &LocalExecutor, dir: &std::path::Path) {
    let batch = one_mib_batch();
    let validated = shardlog::record::validate_batches(batch.clone(), 2 * MIB).expect("valid");
    let mut g = c.benchmark_group("fetch");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    // 64 MiB written; the hot log keeps all of it in memory, the cold one none.
    for (name, hot_tail) in [("hot_1MiB", 128 * MIB), ("cold_1MiB", 0)] {
        let log = ex.run(async {
            let log = new_log(dir, name, hot_tail).await;
            for _ in 0..64 {
                append_one(&log, &validated, Acks::All).await;
            }
            log
        });
        let end = log.high_watermark();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        // Walk the log so cold reads are not served by the device's cache.
                        let offset = (i as i64 * 997) % end;
                        let bytes = log
                            .read(offset, MIB, Isolation::ReadUncommitted, false)
                            .await
                            .expect("read");
                        assert!(!bytes.is_empty());
                    }
                    start.elapsed()
                })
            })
        });
        ex.run(log.close()).expect("close");
    }
    g.finish();
}

type Ping = (u64, oneshot::Sender<u64>);

/// Pinned to CPUs 0 and 1 where there are two, as two shards of the broker are.
fn placement(cpu: usize) -> Placement {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > cpu {
        Placement::Fixed(cpu)
    } else {
        Placement::Unbound
    }
}

/// A request to another executor and its answer, as `Shard::call` does it. `spin`: how long
/// both executors spin before parking when idle (glommio's `spin_before_park`); a parked
/// executor must be woken through the kernel, which is most of a round trip's cost.
fn cross_shard(c: &mut Criterion, name: &str, spin: Option<Duration>) {
    let mesh = MeshBuilder::<Ping, _>::full(2, 4096);
    let builder = |cpu: usize| {
        let b = LocalExecutorBuilder::new(placement(cpu)).name("bench-shard");
        match spin {
            Some(d) => b.spin_before_park(d),
            None => b,
        }
    };
    let peer = builder(1)
        .spawn({
            let mesh = mesh.clone();
            move || async move {
                let (_senders, mut receivers) = mesh.join().await.expect("join mesh");
                for (_, rx) in receivers.streams() {
                    while let Some((n, reply)) = rx.recv().await {
                        let _ = reply.send(n + 1);
                    }
                }
            }
        })
        .expect("peer executor");
    let ex = builder(0).make().expect("executor");
    let (senders, _receivers) = ex.run(mesh.join()).expect("join mesh");
    let other = 1 - senders.peer_id();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let start = Instant::now();
                for i in 0..iters {
                    let (tx, rx) = oneshot::channel();
                    senders.send_to(other, (i, tx)).await.expect("send");
                    assert_eq!(rx.await.expect("answer"), i + 1);
                }
                start.elapsed()
            })
        })
    });
    drop(senders);
    peer.join().expect("peer stops");
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("shardlog-bench")
        .tempdir()
        .expect("tempdir");
    let ex = LocalExecutor::default();
    // As the broker does at start: glommio judges the device by the first DMA file it opens.
    ex.run(shardlog::storage::probe_direct_io(dir.path(), 0))
        .expect("direct I/O probe");
    append(c, &ex, dir.path());
    fetch(c, &ex, dir.path());
    drop(ex);
    cross_shard(c, "cross_shard/round_trip_parked", None);
    cross_shard(
        c,
        "cross_shard/round_trip_spin_100us",
        Some(Duration::from_micros(100)),
    );
}

criterion_group! {
    name = storage;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = benches
}
criterion_main!(storage);
