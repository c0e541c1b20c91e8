//! The consumer side of `shardlog perf`: each consumer thread fetches its share of the topic's
//! partitions from the start until it has read its share of the records, counting records from
//! batch headers (nothing is decompressed or decoded), and times the whole read.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::producer::pin_to;
use super::stats::{run_threads, Stats};
use super::wire::FrameReader;
use crate::client::{decode_response, encode_request, Client};
use crate::record;

const FETCH_VERSION: i16 = 12;

#[derive(Clone, Debug)]
pub struct ConsumeConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: usize,
    /// Records to read in all; `None`: everything up to the end offsets at the start.
    pub records: Option<u64>,
    pub consumers: usize,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
    /// Further librdkafka settings, as given (`--consumer-props`).
    pub client_props: Vec<(String, String)>,
    pub cpus: Vec<usize>,
    /// `isolation.level` (librdkafka only); `None`: the client's default.
    pub isolation_level: Option<String>,
    /// Records read, for the live progress line.
    pub progress: super::progress::Progress,
}

/// A consumer following the topic from given offsets, driven by the thread that owns it
/// without blocking (`poll`), so that `perf e2e` runs it on the producer's own thread: a
/// second thread on the same CPUs would add its wake-up to every record. It keeps one Fetch
/// outstanding (long poll, min_bytes 1) and records, for each record, the time from its due
/// time (stamped by the producer into the first 8 bytes of its value) to the arrival of its
/// response: end-to-end latency.
pub struct Tail {
    cfg: ConsumeConfig,
    stream: TcpStream,
    frames: FrameReader,
    position: BTreeMap<i32, i64>,
    fetching: bool,
    correlation_id: i32,
    pub stats: Stats,
    started: Instant,
}

impl Tail {
    /// Connects, starting each partition at its current end offset.
    pub fn start(cfg: &ConsumeConfig) -> anyhow::Result<Tail> {
        let mut client = Client::connect(&cfg.bootstrap)?;
        let partitions: Vec<i32> = (0..cfg.partitions as i32).collect();
        let position = offsets(&mut client, &cfg.topic, &partitions, -1)?;
        Ok(Tail {
            cfg: cfg.clone(),
            stream: client.into_stream(),
            frames: FrameReader::default(),
            position,
            fetching: false,
            correlation_id: 0,
            stats: Stats::default(),
            started: Instant::now(),
        })
    }

    /// The socket, for ppoll(2) while a Fetch is outstanding.
    pub fn fd(&self) -> Option<RawFd> {
        self.fetching.then(|| self.stream.as_raw_fd())
    }

    /// Takes the Fetch response if it has arrived and sends the next Fetch.
    pub fn poll(&mut self) -> anyhow::Result<()> {
        if self.fetching {
            self.frames.read_available(self.stream.as_raw_fd())?;
            let Some(frame) = self.frames.next_frame()? else {
                return Ok(());
            };
            let now = super::producer::wall_ns();
            let (_, resp) = decode_response::<FetchRequest>(frame, FETCH_VERSION)?;
            self.fetching = false;
            self.take(resp, now)?;
        }
        let r = fetch_request(&self.cfg, self.position.iter(), 100);
        self.correlation_id += 1;
        self.stream
            .write_all(&encode_request(&r, FETCH_VERSION, self.correlation_id)?)?;
        self.fetching = true;
        Ok(())
    }

    fn take(&mut self, resp: FetchResponse, now: u64) -> anyhow::Result<()> {
        for part in resp.responses.iter().flat_map(|t| &t.partitions) {
            if part.error_code != 0 {
                self.stats.errors += 1;
                continue;
            }
            let Some(pos) = self.position.get_mut(&part.partition_index) else {
                continue;
            };
            let records = part.records.clone().unwrap_or_default();
            let end = crate::client::batches_end(&records);
            for rec in crate::client::decode_records(records)? {
                if rec.offset < *pos {
                    continue;
                }
                *pos = rec.offset + 1;
                self.stats.messages += 1;
                let value = rec.value.unwrap_or_default();
                self.stats.bytes += value.len() as u64;
                if let Some(stamp) = value.get(..8) {
                    let due = u64::from_be_bytes(stamp.try_into().unwrap_or([0; 8]));
                    self.stats
                        .record_latency(std::time::Duration::from_nanos(now.saturating_sub(due)));
                }
            }
            if let Some(end) = end {
                *pos = (*pos).max(end);
            }
        }
        Ok(())
    }

    /// Polls (spinning) until `records` arrived in all or `patience` passed without one.
    pub fn finish(mut self, records: u64, patience: std::time::Duration) -> anyhow::Result<Stats> {
        let mut seen = (self.stats.messages, Instant::now());
        while self.stats.messages < records && seen.1.elapsed() < patience {
            self.poll()?;
            if self.stats.messages > seen.0 {
                seen = (self.stats.messages, Instant::now());
            }
            std::hint::spin_loop();
        }
        self.stats.elapsed = self.started.elapsed();
        Ok(self.stats)
    }
}

/// A Fetch of every (partition, offset) given, within the configured byte limits.
fn fetch_request<'a>(
    cfg: &ConsumeConfig,
    positions: impl Iterator<Item = (&'a i32, &'a i64)>,
    max_wait_ms: i32,
) -> FetchRequest {
    let mut t = FetchTopic::default();
    t.topic = topic_name(&cfg.topic);
    t.partitions = positions
        .map(|(&p, &off)| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = off;
            fp.partition_max_bytes = cfg.partition_max_bytes;
            fp
        })
        .collect();
    let mut r = FetchRequest::default();
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = 1;
    r.max_bytes = cfg.fetch_max_bytes;
    r.topics = vec![t];
    r
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Earliest (-2) or latest (-1) offsets of the given partitions.
fn offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    which: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions = partitions
        .iter()
        .map(|&p| {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = which;
            lp
        })
        .collect();
    let mut r = ListOffsetsRequest::default();
    r.replica_id = BrokerId(-1);
    r.topics = vec![t];
    let resp = client.send(&r, 7)?;
    let mut out = BTreeMap::new();
    for p in resp.topics.iter().flat_map(|t| &t.partitions) {
        if p.error_code != 0 {
            anyhow::bail!(
                "{topic}-{}: ListOffsets error {}",
                p.partition_index,
                p.error_code
            );
        }
        out.insert(p.partition_index, p.offset);
    }
    Ok(out)
}

pub fn run(cfg: &ConsumeConfig) -> anyhow::Result<Stats> {
    let (cfg, start) = (cfg.clone(), Instant::now());
    run_threads(cfg.consumers, move |c| {
        consume_thread(&cfg, c, share_of(cfg.partitions, cfg.consumers, c), start)
    })
}

/// The partitions consumer `index` of `consumers` reads: dealt round robin.
pub fn share_of(partitions: usize, consumers: usize, index: usize) -> Vec<i32> {
    (0..partitions as i32)
        .filter(|p| *p as usize % consumers.max(1) == index)
        .collect()
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
    let mut client = Client::connect(&cfg.bootstrap)?;
    let mut position = offsets(&mut client, &cfg.topic, &partitions, -2)?;
    let end = offsets(&mut client, &cfg.topic, &partitions, -1)?;
    let available: u64 = partitions
        .iter()
        .map(|p| (end[p] - position[p]).max(0) as u64)
        .sum();
    let share = cfg
        .records
        .map(|n| n / cfg.consumers.max(1) as u64)
        .unwrap_or(available);
    let want = share.min(available);
    let mut progress = Instant::now();
    while stats.messages < want {
        if progress.elapsed() > std::time::Duration::from_secs(30) {
            anyhow::bail!(
                "no progress for 30 s at {} of {want} records",
                stats.messages
            );
        }
        let unread = position.iter().filter(|(p, off)| **off < end[*p]);
        let r = fetch_request(cfg, unread, 500);
        let resp = client.send(&r, FETCH_VERSION)?;
        for part in resp.responses.iter().flat_map(|t| &t.partitions) {
            if part.error_code != 0 {
                stats.errors += 1;
                continue;
            }
            let records = part.records.clone().unwrap_or_default();
            let (batches, used) = record::valid_prefix(&records);
            stats.bytes += used as u64;
            let pos = position.entry(part.partition_index).or_insert(0);
            for b in batches {
                if b.next_offset() > *pos {
                    let skipped = (*pos - b.base_offset()).max(0);
                    let fresh = (b.record_count() as i64 - skipped).max(0) as u64;
                    stats.messages += fresh;
                    cfg.progress.add(fresh);
                    *pos = b.next_offset();
                    progress = Instant::now();
                }
            }
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}
