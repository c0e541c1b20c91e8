//! The producer side of `shardlog perf`: each producer thread owns one connection, gathers
//! records into per-partition batches (`batch.size`, `linger.ms`, `compression.type`), and
//! keeps up to `max.in.flight.requests.per.connection` Produce requests outstanding; a reader
//! thread takes the answers in order and records, for every record, the time from when it was
//! due (the open-loop schedule) to its acknowledgement.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::partitioner::{partition_for_key, StickyPartitioner};
use super::progress::Progress;
use super::schedule::Schedule;
use super::stats::{run_threads, Stats};
use crate::client::{decode_response, encode_request, read_frame, Client};
use crate::record::builder::{BatchBuilder, Codec};

const PRODUCE_VERSION: i16 = 9;

#[derive(Clone, Debug)]
pub struct ProduceConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: usize,
    pub record_size: usize,
    /// Records in all (split over producers).
    pub records: u64,
    /// Records per second over all producers; `None` for as fast as possible.
    pub throughput: Option<f64>,
    pub batch_size: usize,
    pub linger: Duration,
    pub codec: Codec,
    pub acks: i16,
    pub max_in_flight: usize,
    pub producers: usize,
    /// Keyed records (key = record number) partitioned by murmur2; else sticky.
    pub keyed: bool,
    /// CPUs to pin producer threads to, round robin.
    pub cpus: Vec<usize>,
    /// Write each record's due time (wall clock, ns since the epoch) into the first 8 bytes of
    /// its value, for end-to-end latency (`perf e2e`).
    pub stamp_due: bool,
    /// Acknowledged records, for the live progress line.
    pub progress: Progress,
}

/// The most a record adds to a batch beyond its key and value: its length, attributes,
/// timestamp and offset deltas, key and value lengths (varints) and header count.
const RECORD_OVERHEAD: usize = 32;

impl ProduceConfig {
    /// A batch is full when another record would not fit in `batch.size`, so batches stay
    /// within it as the Java client's do (a record larger than `batch.size` goes alone).
    fn batch_full(&self, batch: &BatchBuilder) -> bool {
        let key = if self.keyed { 20 } else { 0 };
        crate::record::HEADER_LEN + batch.size() + RECORD_OVERHEAD + key + self.record_size
            > self.batch_size
    }

    /// Producer `index`'s share: how many records it sends, and on what schedule.
    pub fn share(&self, index: usize, start: Instant) -> (u64, Schedule) {
        let producers = self.producers.max(1) as u64;
        let mine = self.records / producers + u64::from((index as u64) < self.records % producers);
        let schedule = Schedule::new(start, self.throughput.map(|t| t / producers as f64));
        (mine, schedule)
    }
}

/// Nanoseconds since the Unix epoch, by the wall clock.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A request on the wire: the due time of each of its records.
struct InFlight {
    due: Vec<Instant>,
}

struct PartitionBatch {
    builder: BatchBuilder,
    due: Vec<Instant>,
    opened: Instant,
}

pub fn pin_to(cpus: &[usize], index: usize) {
    if !cpus.is_empty() {
        core_affinity::set_for_current(core_affinity::CoreId {
            id: cpus[index % cpus.len()],
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits until `t`: sleeps while far off, then spins the last stretch. A sleeping thread wakes
/// tens of microseconds late (timer slack, scheduling), which would show up as latency of the
/// broker; the load generator has its own core, so spinning costs nothing that matters. The
/// spin yields, so the ack reader (which may share the core) is never starved by it.
pub fn wait_until(t: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if t > now + SPIN {
        std::thread::sleep(t - now - SPIN);
    }
    while Instant::now() < t {
        std::thread::yield_now();
    }
}

/// Runs every producer and merges their results.
pub fn run(cfg: &ProduceConfig) -> anyhow::Result<Stats> {
    let (cfg, start) = (cfg.clone(), Instant::now());
    run_threads(cfg.producers, move |p| produce_thread(&cfg, p, start))
}

fn produce_thread(cfg: &ProduceConfig, index: usize, start: Instant) -> anyhow::Result<Stats> {
    pin_to(&cfg.cpus, index);
    let (mine, schedule) = cfg.share(index, start);
    let mut stream = Client::connect(&cfg.bootstrap)?.into_stream();
    let reader_stream = stream.try_clone()?;
    // The reader holds one request while it waits for that request's answer, so the channel
    // holds the rest: at most max.in.flight on the wire.
    let (inflight_tx, inflight_rx) = mpsc::sync_channel::<InFlight>(cfg.max_in_flight.max(1) - 1);
    let acks = cfg.acks;
    let reader = std::thread::spawn({
        let cpus = cfg.cpus.clone();
        let progress = cfg.progress.clone();
        move || read_acks(reader_stream, inflight_rx, acks, &cpus, index, &progress)
    });
    let mut value = vec![b'x'; cfg.record_size];
    // The wall-clock time of `start`, so due instants map onto the clock the consumer reads.
    let wall_start = wall_ns() - start.elapsed().as_nanos() as u64;
    let stamp = cfg.stamp_due && cfg.record_size >= 8;
    let mut sticky = StickyPartitioner::new(cfg.partitions, cfg.batch_size, 0x5eed ^ index as u64);
    let mut open: Vec<Option<PartitionBatch>> = (0..cfg.partitions).map(|_| None).collect();
    let mut correlation_id = 0;
    let mut send = |open: &mut Vec<Option<PartitionBatch>>,
                    only_ready: bool,
                    now: Instant|
     -> anyhow::Result<()> {
        let mut partitions = Vec::new();
        let mut due = Vec::new();
        for (p, slot) in open.iter_mut().enumerate() {
            let ready = slot.as_ref().is_some_and(|b| {
                !only_ready || cfg.batch_full(&b.builder) || now >= b.opened + cfg.linger
            });
            if ready {
                if let Some(batch) = slot.take() {
                    let records = batch.builder.finish(cfg.codec)?;
                    let mut data = PartitionProduceData::default();
                    data.index = p as i32;
                    data.records = Some(records);
                    partitions.push(data);
                    due.extend(batch.due);
                }
            }
        }
        if partitions.is_empty() {
            return Ok(());
        }
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(StrBytes::from_string(cfg.topic.clone()));
        topic.partition_data = partitions;
        let mut request = ProduceRequest::default();
        request.acks = cfg.acks;
        request.timeout_ms = 30_000;
        request.topic_data = vec![topic];
        correlation_id += 1;
        let frame = encode_request(&request, PRODUCE_VERSION, correlation_id)?;
        // Blocks while max.in.flight requests are outstanding: the backpressure a real
        // producer feels. Queued before writing, so the reader always knows what it reads.
        inflight_tx
            .send(InFlight { due })
            .map_err(|_| anyhow::anyhow!("the ack reader stopped"))?;
        stream.write_all(&frame)?;
        Ok(())
    };
    for i in 0..mine {
        let now = Instant::now();
        let due = schedule.due(i, now);
        if due > now {
            // Ahead of schedule: send what lingered long enough, then wait for the due time.
            send(&mut open, true, now)?;
            let wake = open
                .iter()
                .flatten()
                .map(|b| b.opened + cfg.linger)
                .min()
                .unwrap_or(due)
                .min(due);
            wait_until(wake);
            send(&mut open, true, Instant::now())?;
            wait_until(due);
        }
        let key = cfg.keyed.then(|| (index as u64 * mine + i).to_string());
        let partition = match &key {
            Some(k) => partition_for_key(k.as_bytes(), cfg.partitions),
            None => sticky.next(cfg.record_size),
        };
        let batch = open[partition].get_or_insert_with(|| PartitionBatch {
            builder: BatchBuilder::with_capacity(now_ms(), cfg.batch_size + cfg.record_size + 64),
            due: Vec::new(),
            opened: due,
        });
        if stamp {
            let due_ns = wall_start + due.saturating_duration_since(start).as_nanos() as u64;
            value[..8].copy_from_slice(&due_ns.to_be_bytes());
        }
        batch
            .builder
            .push(now_ms(), key.as_deref().map(str::as_bytes), &value);
        batch.due.push(due);
        // A full batch goes at once; every 64 records, so do batches that lingered long enough.
        if cfg.batch_full(&batch.builder) || i % 64 == 63 {
            send(&mut open, true, Instant::now())?;
        }
    }
    send(&mut open, false, Instant::now())?;
    drop(inflight_tx);
    let mut stats = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the ack reader panicked"))??;
    stats.elapsed = start.elapsed();
    stats.bytes = mine * cfg.record_size as u64;
    Ok(stats)
}

/// Reads answers in request order and records each record's latency from its due time.
fn read_acks(
    mut stream: TcpStream,
    inflight: mpsc::Receiver<InFlight>,
    acks: i16,
    cpus: &[usize],
    index: usize,
    progress: &Progress,
) -> anyhow::Result<Stats> {
    pin_to(cpus, index);
    let mut stats = Stats::default();
    while let Ok(request) = inflight.recv() {
        let ok = if acks == 0 {
            true // never answered: counted when written
        } else {
            let (_, response) =
                decode_response::<ProduceRequest>(read_frame(&mut stream)?, PRODUCE_VERSION)?;
            response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .all(|p| p.error_code == 0)
        };
        let done = Instant::now();
        stats.messages += request.due.len() as u64;
        progress.add(request.due.len() as u64);
        if !ok {
            stats.errors += request.due.len() as u64;
        }
        for due in &request.due {
            stats.record_latency(done.saturating_duration_since(*due));
        }
    }
    Ok(stats)
}
