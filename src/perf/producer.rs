//! The producer side of `shardlog perf`: each producer thread owns one connection, gathers
//! records into per-partition batches (`batch.size`, `linger.ms`, `compression.type`), and
//! keeps up to `max.in.flight.requests.per.connection` Produce requests outstanding. The same
//! thread reads the answers whenever it waits, and records, for every record, the time from
//! when it was due (the open-loop schedule) to its acknowledgement, and for every request its
//! round trip (sent to answered).

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::consumer::Tail;
use super::progress::Progress;
use super::schedule::Schedule;
use super::stats::{run_threads, Stats};
use super::wire::FrameReader;
use crate::client::partitioner::{partition_for_key, StickyPartitioner};
use crate::client::{decode_response, encode_request, Client};
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
    /// `enable.idempotence` (librdkafka only).
    pub idempotence: bool,
    /// Records per transaction, each producer with its own transactional id (librdkafka only).
    pub transaction_records: Option<u64>,
    /// Acknowledged records, for the live progress line.
    pub progress: Progress,
    /// Spin on the socket between sends instead of sleeping in ppoll(2): a sleeping thread
    /// (on a VM, a halted vCPU) can wake late, and that would show up as latency.
    pub busy_poll: bool,
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

    /// Records that can be added, to whichever partition, before one of them can fill its
    /// batch (each counted at its largest): until then nothing is sent but what lingered.
    fn records_that_fit(&self, open: &[Option<PartitionBatch>]) -> u64 {
        let key = if self.keyed { 20 } else { 0 };
        let per = RECORD_OVERHEAD + key + self.record_size;
        let room = |used: usize| {
            let left = self
                .batch_size
                .saturating_sub(crate::record::HEADER_LEN + used + per);
            (left / per) as u64
        };
        open.iter()
            .map(|b| room(b.as_ref().map_or(0, |b| b.builder.size())))
            .min()
            .unwrap_or(0)
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

/// A request on the wire: when it was sent, and the due time of each of its records.
struct InFlight {
    sent: Instant,
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

/// Runs every producer and merges their results.
pub fn run(cfg: &ProduceConfig) -> anyhow::Result<Stats> {
    let (cfg, start) = (cfg.clone(), Instant::now());
    run_threads(cfg.producers, move |p| {
        produce_thread(&cfg, p, start, None).map(|(stats, _)| stats)
    })
}

/// One producer on the calling thread, polling `tail` whenever it polls its own answers
/// (`perf e2e`); returns the producer's stats and the tail, to be finished.
pub fn run_with_tail(cfg: &ProduceConfig, tail: Tail) -> anyhow::Result<(Stats, Tail)> {
    let (stats, tail) = produce_thread(cfg, 0, Instant::now(), Some(tail))?;
    let tail = tail.ok_or_else(|| anyhow::anyhow!("the tail was lost"))?;
    Ok((stats, tail))
}

fn produce_thread(
    cfg: &ProduceConfig,
    index: usize,
    start: Instant,
    tail: Option<Tail>,
) -> anyhow::Result<(Stats, Option<Tail>)> {
    pin_to(&cfg.cpus, index);
    let (mine, schedule) = cfg.share(index, start);
    let mut stream = Client::connect(&cfg.bootstrap)?.into_stream();
    // Sleeps end when asked, not up to 50 us later (the default timer slack).
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut acks = Acks {
        busy_poll: cfg.busy_poll,
        stream: stream.try_clone()?,
        frames: FrameReader::default(),
        inflight: VecDeque::new(),
        acks: cfg.acks,
        stats: Stats::default(),
        progress: cfg.progress.clone(),
        tail,
    };
    let max_in_flight = cfg.max_in_flight.max(1);
    let mut value = vec![b'x'; cfg.record_size];
    // The wall-clock time of `start`, so due instants map onto the clock the consumer reads.
    let wall_start = wall_ns() - start.elapsed().as_nanos() as u64;
    let stamp = cfg.stamp_due && cfg.record_size >= 8;
    let mut sticky = StickyPartitioner::new(cfg.partitions, cfg.batch_size, 0x5eed ^ index as u64);
    let mut open: Vec<Option<PartitionBatch>> = (0..cfg.partitions).map(|_| None).collect();
    let mut correlation_id = 0;
    let mut send = |open: &mut Vec<Option<PartitionBatch>>,
                    acks: &mut Acks,
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
        // Waits while max.in.flight requests are outstanding: the backpressure a real
        // producer feels.
        acks.wait_for_room(max_in_flight)?;
        let sent = Instant::now();
        stream.write_all(&frame)?;
        acks.inflight.push_back(InFlight { sent, due });
        Ok(())
    };
    let mut i = 0;
    while i < mine {
        // Add every record due by now, each stamped with its own due time; a full batch
        // goes at once.
        let now = Instant::now();
        while i < mine {
            // Without a rate each record is due as it is made.
            let due = schedule.due(i, Instant::now());
            if schedule.is_open_loop() && due > now {
                break;
            }
            let key = cfg.keyed.then(|| (index as u64 * mine + i).to_string());
            let partition = match &key {
                Some(k) => partition_for_key(k.as_bytes(), cfg.partitions),
                None => sticky.next(cfg.record_size),
            };
            let batch = open[partition].get_or_insert_with(|| PartitionBatch {
                builder: BatchBuilder::with_capacity(
                    now_ms(),
                    cfg.batch_size + cfg.record_size + 64,
                ),
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
            if cfg.batch_full(&batch.builder) {
                send(&mut open, &mut acks, true, Instant::now())?;
            }
            i += 1;
            if i % 64 == 0 {
                // Behind schedule: batches that lingered long enough go too.
                send(&mut open, &mut acks, true, Instant::now())?;
            }
        }
        send(&mut open, &mut acks, true, Instant::now())?;
        if i == mine {
            break;
        }
        // Sleep (reading answers) until something must be sent: a batch lingered long enough,
        // the next record opens a batch that will, or a record may fill a batch. Records due
        // before then change nothing on the wire, so they are added together on waking.
        let now = Instant::now();
        let next = schedule.due(i, now);
        let fills = schedule.due(i + cfg.records_that_fit(&open), now);
        let wake = open
            .iter()
            .flatten()
            .map(|b| b.opened + cfg.linger)
            .chain([next + cfg.linger, fills])
            .min()
            .unwrap_or(next);
        acks.wait_until(wake)?;
    }
    send(&mut open, &mut acks, false, Instant::now())?;
    acks.wait_for_room(1)?;
    let mut stats = acks.stats;
    stats.elapsed = start.elapsed();
    stats.bytes = mine * cfg.record_size as u64;
    Ok((stats, acks.tail))
}

/// The answers side of one producer connection: the requests on the wire in order, and the
/// bytes of answers read so far. The producer thread itself reads them (`MSG_DONTWAIT`)
/// whenever it waits, spinning on the socket until an answer or its next send (or sleeping in
/// ppoll(2), without `busy_poll`): a second thread would add a wake-up to every answer.
struct Acks {
    busy_poll: bool,
    stream: TcpStream,
    frames: FrameReader,
    inflight: VecDeque<InFlight>,
    acks: i16,
    stats: Stats,
    progress: Progress,
    /// A consumer polled along with the answers (`perf e2e`).
    tail: Option<Tail>,
}

impl Acks {
    /// Takes every answer that has arrived, recording each record's latency from its due time.
    fn poll(&mut self) -> anyhow::Result<()> {
        if let Some(tail) = &mut self.tail {
            tail.poll()?;
        }
        if self.acks == 0 {
            // Never answered: done when written.
            while let Some(request) = self.inflight.pop_front() {
                self.complete(request, true);
            }
            return Ok(());
        }
        self.frames.read_available(self.stream.as_raw_fd())?;
        while let Some(frame) = self.frames.next_frame()? {
            let (_, response) = decode_response::<ProduceRequest>(frame, PRODUCE_VERSION)?;
            let ok = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .all(|p| p.error_code == 0);
            let request = self
                .inflight
                .pop_front()
                .ok_or_else(|| anyhow::anyhow!("the broker answered a request never sent"))?;
            self.complete(request, ok);
        }
        Ok(())
    }

    fn complete(&mut self, request: InFlight, ok: bool) {
        let done = Instant::now();
        if self.acks != 0 {
            self.stats
                .record_round_trip(done.saturating_duration_since(request.sent));
        }
        let n = request.due.len() as u64;
        self.stats.messages += n;
        if !ok {
            self.stats.errors += n;
        }
        for due in &request.due {
            self.stats
                .record_latency(done.saturating_duration_since(*due));
        }
        self.progress.add(n);
    }

    /// Reads answers until `t`.
    fn wait_until(&mut self, t: Instant) -> anyhow::Result<()> {
        loop {
            self.poll()?;
            let now = Instant::now();
            if now >= t {
                return Ok(());
            }
            self.idle(Some(t - now));
        }
    }

    /// Reads answers until fewer than `max` requests are on the wire.
    fn wait_for_room(&mut self, max: usize) -> anyhow::Result<()> {
        loop {
            self.poll()?;
            if self.inflight.len() < max {
                return Ok(());
            }
            self.idle(None);
        }
    }

    /// Waits up to `limit` (`None`: no limit) for an answer to arrive: ppoll(2) on the socket
    /// while answers are due (else a plain sleep), or one spin with `busy_poll`.
    fn idle(&self, limit: Option<Duration>) {
        if self.busy_poll {
            std::hint::spin_loop();
            return;
        }
        let expecting = self.acks != 0 && !self.inflight.is_empty();
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [pollfd(-1), pollfd(-1)];
        let mut n = 0;
        let watched = expecting.then(|| self.stream.as_raw_fd());
        for fd in watched
            .into_iter()
            .chain(self.tail.as_ref().and_then(Tail::fd))
        {
            fds[n] = pollfd(fd);
            n += 1;
        }
        if n == 0 && limit.is_none() {
            return;
        }
        let timeout = limit.map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let timeout_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `n` valid pollfds, a timespec that outlives the call, no sigmask.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                n as libc::nfds_t,
                timeout_ptr,
                std::ptr::null(),
            )
        };
    }
}
