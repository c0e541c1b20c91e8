//! `--client rdkafka`: the same workloads as the project's own client, driven through
//! librdkafka (the `rdkafka` crate), so every figure can be checked against the reference
//! client. Producers keep the open-loop schedule: each record carries its due time as the
//! delivery opaque, and the delivery report records due-to-acknowledgement latency. Keyed
//! records use librdkafka's `murmur2_random` partitioner, the Java client's rule.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::consumer::{share_of, ConsumeConfig};
use super::producer::{pin_to, wall_ns, ProduceConfig};
use super::stats::{run_threads, Stats};

/// Collects delivery reports, which librdkafka's polling thread hands over as soon as they
/// arrive (the lock is only contended at the end, when the totals are read).
struct Deliveries {
    stats: Mutex<Stats>,
    progress: super::progress::Progress,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, due: Box<Instant>) {
        let done = Instant::now();
        if let Ok(mut stats) = self.stats.lock() {
            stats.messages += 1;
            if result.is_err() {
                stats.errors += 1;
            }
            stats.record_latency(done.saturating_duration_since(*due));
        }
        self.progress.add(1);
    }
}

fn producer_config(cfg: &ProduceConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap)
        .set("acks", cfg.acks.to_string())
        .set("batch.size", cfg.batch_size.to_string())
        .set("linger.ms", format!("{}", cfg.linger.as_secs_f64() * 1e3))
        .set("compression.type", cfg.codec.name())
        .set(
            "max.in.flight.requests.per.connection",
            cfg.max_in_flight.to_string(),
        )
        .set("enable.idempotence", cfg.idempotence.to_string())
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000");
    c
}

/// Runs `cfg.producers` librdkafka producers, one thread each, and merges their results.
pub fn produce(cfg: &ProduceConfig) -> anyhow::Result<Stats> {
    let (cfg, start) = (cfg.clone(), Instant::now());
    run_threads(cfg.producers, move |p| produce_thread(&cfg, p, start))
}

fn produce_thread(cfg: &ProduceConfig, index: usize, start: Instant) -> anyhow::Result<Stats> {
    pin_to(&cfg.cpus, index);
    let (mine, schedule) = cfg.share(index, start);
    let context = Deliveries {
        stats: Mutex::new(Stats::default()),
        progress: cfg.progress.clone(),
    };
    let mut config = producer_config(cfg);
    if cfg.transaction_records.is_some() {
        config.set(
            "transactional.id",
            format!("shardlog-perf-{}-{index}", std::process::id()),
        );
    }
    let producer: ThreadedProducer<Deliveries> = config.create_with_context(context)?;
    let txn_timeout = Duration::from_secs(60);
    if cfg.transaction_records.is_some() {
        producer.init_transactions(txn_timeout)?;
        producer.begin_transaction()?;
    }
    let mut value = vec![b'x'; cfg.record_size];
    let wall_start = wall_ns() - start.elapsed().as_nanos() as u64;
    let stamp = cfg.stamp_due && cfg.record_size >= 8;
    for i in 0..mine {
        let due = schedule.due(i, Instant::now());
        wait_until(due);
        if stamp {
            let due_ns = wall_start + due.saturating_duration_since(start).as_nanos() as u64;
            value[..8].copy_from_slice(&due_ns.to_be_bytes());
        }
        let key = cfg.keyed.then(|| (index as u64 * mine + i).to_string());
        let mut record = BaseRecord::with_opaque_to(&cfg.topic, Box::new(due)).payload(&value[..]);
        if let Some(k) = &key {
            record = record.key(k.as_bytes());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err((e, _)) => anyhow::bail!("librdkafka refused a record: {e}"),
            }
        }
        if let Some(n) = cfg.transaction_records {
            if (i + 1) % n == 0 || i + 1 == mine {
                // Wait for the producer thread to serve every delivery report first: the
                // flush in commit_transaction polls the same queue in 100 ms rounds, and loses
                // the race for each report to that thread.
                let deadline = Instant::now() + txn_timeout;
                while producer.in_flight_count() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(50));
                }
                producer.commit_transaction(txn_timeout)?;
                if i + 1 < mine {
                    producer.begin_transaction()?;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let mut stats = producer
        .context()
        .stats
        .lock()
        .map_err(|_| anyhow::anyhow!("delivery stats poisoned"))?
        .clone();
    stats.elapsed = start.elapsed();
    stats.bytes = stats.messages * cfg.record_size as u64;
    Ok(stats)
}

/// Runs `cfg.consumers` librdkafka consumers over the topic from the start, partitions dealt
/// round robin, each reading its share of what was there when it started.
pub fn consume(cfg: &ConsumeConfig) -> anyhow::Result<Stats> {
    let (cfg, start) = (cfg.clone(), Instant::now());
    run_threads(cfg.consumers, move |c| {
        consume_thread(&cfg, c, share_of(cfg.partitions, cfg.consumers, c), start)
    })
}

fn consume_thread(
    cfg: &ConsumeConfig,
    index: usize,
    partitions: Vec<i32>,
    start: Instant,
) -> anyhow::Result<Stats> {
    pin_to(&cfg.cpus, index);
    let mut stats = Stats::default();
    if partitions.is_empty() {
        return Ok(stats);
    }
    let mut config = ClientConfig::new();
    if let Some(level) = &cfg.isolation_level {
        config.set("isolation.level", level);
    }
    config
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("group.id", "shardlog-perf")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", cfg.fetch_max_bytes.to_string())
        .set(
            "max.partition.fetch.bytes",
            cfg.partition_max_bytes.to_string(),
        )
        .set("enable.partition.eof", "true");
    for (k, v) in &cfg.client_props {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    let mut available = 0u64;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(&cfg.topic, p, Duration::from_secs(10))?;
        available += (high - low).max(0) as u64;
        tpl.add_partition_offset(&cfg.topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let share = cfg
        .records
        .map(|n| n / cfg.consumers.max(1) as u64)
        .unwrap_or(available);
    let want = share.min(available);
    // Transaction markers take offsets but are never delivered: the end of every partition
    // also ends the read.
    let mut at_end = std::collections::BTreeSet::new();
    while stats.messages < want && at_end.len() < partitions.len() {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Ok(m)) => {
                stats.messages += 1;
                stats.bytes += m.payload().map_or(0, |p| p.len()) as u64;
                if stats.messages % 1024 == 0 {
                    cfg.progress.add(1024);
                }
            }
            Some(Err(e)) => anyhow::bail!("librdkafka consumer: {e}"),
            None => anyhow::bail!("no record for 30 s at {} of {want}", stats.messages),
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Waits until `t`: sleeps while far off, then spins the last stretch. A sleeping thread wakes
/// tens of microseconds late (timer slack, scheduling), which would show up as latency of the
/// broker; the load generator has its own core, so spinning costs nothing that matters. The
/// spin yields, so librdkafka's own threads (which share the core) are never starved by it.
fn wait_until(t: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if t > now + SPIN {
        std::thread::sleep(t - now - SPIN);
    }
    while Instant::now() < t {
        std::thread::yield_now();
    }
}
