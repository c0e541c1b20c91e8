//! Log compaction (`cleanup.policy=compact` or `compact,delete`): the cleaner of one shard's
//! partitions, as Kafka's LogCleaner does it.
//!
//! A pass over one log: the cleanable part is every closed segment whose records are all older
//! than `min.compaction.lag.ms` (the active segment never is). Segments below the first dirty
//! offset were cleaned before; the rest is dirty. When dirty bytes reach
//! `min.cleanable.dirty.ratio` of the cleanable part (or the oldest dirty segment passed
//! `max.compaction.lag.ms`, or kept tombstones reached their delete horizon), the cleaner maps
//! each key of the dirty segments to its newest offset, then rewrites the cleanable segments
//! from the log start, in groups that fit one segment, keeping only records no newer record of
//! their key supersedes. Offsets never change; compacted segments take the originals' place
//! through `PartitionLog::replace_segments`.
//!
//! Invariants: file reads, filtering and writes run on the shard's cleaner thread (pinned with
//! the shard, under SCHED_IDLE: it takes the core only when the shard leaves it idle), one
//! segment or group per step, so produce and fetch on the shard go on meanwhile; the key map is bounded by this
//! shard's share of `log.cleaner.dedupe.buffer.size` (a pass that fills it cleans up to the
//! last whole segment it mapped, and the next pass goes on from there).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::log::{ClosedSegment, PartitionLog, CLEANED_EXT};
use super::segment::file_name;
use super::txn_index::AbortedTxn;
use crate::record::compact::{self, Filtered};
use crate::record::framed_len;

/// Bytes each map entry costs besides its key (hash table slot, the key's allocation header).
const ENTRY_OVERHEAD: usize = 48;

/// Bounds on a cleaner's resources, from the broker config.
#[derive(Clone, Copy, Debug)]
pub struct CleanerLimits {
    /// Bytes the key map may take (this shard's share of `log.cleaner.dedupe.buffer.size`).
    pub map_budget: usize,
    /// `log.cleaner.io.max.bytes.per.second`: bytes read plus written.
    pub io_bytes_per_sec: f64,
}

/// Keeps a job's reads and writes under a rate by sleeping (on the cleaner thread).
struct Throttle {
    rate: f64,
    start: std::time::Instant,
    bytes: std::cell::Cell<f64>,
}

impl Throttle {
    fn new(rate: f64) -> Throttle {
        Throttle {
            rate,
            start: std::time::Instant::now(),
            bytes: std::cell::Cell::new(0.0),
        }
    }

    fn account(&self, bytes: u64) {
        self.bytes.set(self.bytes.get() + bytes as f64);
        let due = std::time::Duration::from_secs_f64(self.bytes.get() / self.rate);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// What the partition layer tells the cleaner about a log.
#[derive(Clone, Debug, Default)]
pub struct CleanBounds {
    /// Nothing at or past this offset is cleaned (the last stable offset: a transaction still
    /// open may yet be aborted).
    pub upper: i64,
    /// First offsets of each live producer's last batch: such a batch stays, emptied if
    /// nothing in it survives, so the producer's state can be rebuilt from the log.
    pub keep_batches: HashSet<i64>,
}

/// Which batches belong to aborted transactions: their records never count, neither in the
/// key map nor in the output.
struct Aborted(Vec<AbortedTxn>);

impl Aborted {
    fn contains(&self, batch: &[u8]) -> bool {
        let view = crate::record::BatchView { bytes: batch };
        if !view.is_transactional() || view.is_control() {
            return false;
        }
        let (pid, offset) = (view.producer_id(), view.base_offset());
        self.0
            .iter()
            .any(|t| t.producer_id == pid && t.first_offset <= offset && offset <= t.last_offset)
    }
}

/// Cleans `log` if it is due; `limits` bound the pass's memory and I/O rate.
pub async fn clean_if_due(
    log: &PartitionLog,
    limits: CleanerLimits,
    now: i64,
    bounds: CleanBounds,
) {
    let config = log.config();
    if !config.compact {
        return;
    }
    let (closed, log_start) = log.closed_segments();
    let lag_limit = now.saturating_sub(config.min_compaction_lag_ms);
    let cleanable: Vec<ClosedSegment> = closed
        .into_iter()
        .filter(|s| s.next_offset > log_start)
        .take_while(|s| s.next_offset <= bounds.upper)
        .take_while(|s| config.min_compaction_lag_ms == 0 || s.max_timestamp <= lag_limit)
        .collect();
    if cleanable.is_empty() {
        return;
    }
    let (first_dirty, horizon) = log.cleaner_progress();
    let dirty_from = cleanable
        .iter()
        .position(|s| s.next_offset > first_dirty)
        .unwrap_or(cleanable.len());
    let total: u64 = cleanable.iter().map(|s| s.size).sum();
    let dirty: u64 = cleanable[dirty_from..].iter().map(|s| s.size).sum();
    let ratio_due = dirty > 0 && dirty as f64 >= config.min_cleanable_dirty_ratio * total as f64;
    let lag_due = cleanable.get(dirty_from).is_some_and(|s| {
        config.max_compaction_lag_ms < i64::MAX
            && s.max_timestamp >= 0
            && now - s.max_timestamp > config.max_compaction_lag_ms
    });
    let tombstones_due = horizon <= now;
    if !(ratio_due || lag_due || tombstones_due) {
        return;
    }
    if let Err(e) = clean(log, &cleanable, dirty_from, limits, now, bounds).await {
        tracing::warn!("{}: compaction failed: {e}", log.dir.display());
    }
}

async fn clean(
    log: &PartitionLog,
    cleanable: &[ClosedSegment],
    dirty_from: usize,
    limits: CleanerLimits,
    now: i64,
    bounds: CleanBounds,
) -> std::io::Result<()> {
    let first = cleanable.first().map_or(0, |s| s.base_offset);
    let aborted = Arc::new(Aborted(log.aborted_txns(first, bounds.upper)));
    let keep = Arc::new(bounds.keep_batches);
    let map_budget = limits.map_budget;
    let rate = limits.io_bytes_per_sec;
    let config = log.config();
    // 1. Newest offset of each key in the dirty segments, a segment per step.
    let mut map: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut map_bytes = 0usize;
    let mut mapped_to = dirty_from;
    for segment in &cleanable[dirty_from..] {
        if mapped_to > dirty_from && map_bytes >= map_budget {
            break;
        }
        let file = reader(log, segment).await?;
        let size = segment.size;
        let aborted = Arc::clone(&aborted);
        let (m, b) = blocking(move || {
            let throttle = Throttle::new(rate);
            for_each_batch(&file, size, &throttle, |batch| {
                if aborted.contains(batch) {
                    return Ok(()); // only committed values supersede others
                }
                let keys = compact::keys(batch).map_err(std::io::Error::other)?;
                for (key, offset) in keys {
                    let len = key.len();
                    if map.insert(key, offset).is_none() {
                        map_bytes += len + ENTRY_OVERHEAD;
                    }
                }
                Ok(())
            })?;
            Ok((map, map_bytes))
        })
        .await?;
        (map, map_bytes) = (m, b);
        mapped_to += 1;
    }
    let end = if mapped_to > 0 {
        cleanable[mapped_to - 1].next_offset
    } else {
        cleanable[0].base_offset
    };
    let map = Arc::new(map);

    // 2. Rewrite the segments below `end` in groups that fit one segment.
    let (mut segments_in, mut bytes_in, mut bytes_out) = (0usize, 0u64, 0u64);
    let mut horizon = i64::MAX;
    let upto = cleanable
        .iter()
        .take_while(|s| s.next_offset <= end)
        .count();
    for group in groups(&cleanable[..upto], config.segment_bytes) {
        if log.is_closing() {
            return Ok(());
        }
        let group_end = group[group.len() - 1].next_offset;
        let mut sources = Vec::with_capacity(group.len());
        for segment in group {
            sources.push((reader(log, segment).await?, segment.size));
        }
        let out_path = log.dir.join(file_name(group[0].base_offset, CLEANED_EXT));
        let kept = Kept {
            map: Arc::clone(&map),
            aborted: Arc::clone(&aborted),
            keep_batches: Arc::clone(&keep),
        };
        let (path, retention) = (out_path.clone(), config.delete_retention_ms);
        let written =
            blocking(move || write_cleaned(&sources, &kept, &path, now, retention, rate)).await?;
        segments_in += group.len();
        bytes_in += group.iter().map(|s| s.size).sum::<u64>();
        bytes_out += written.bytes;
        if !log.replace_segments(group, group_end, &out_path).await? {
            return Ok(()); // the log changed under us: the next pass starts over
        }
        horizon = horizon.min(written.tombstone_horizon);
    }
    // Freeing a large map takes a while: on the cleaner thread, not the shard's.
    blocking(move || {
        drop(map);
        Ok(())
    })
    .await?;
    log.set_cleaner_progress(end, horizon).await;
    tracing::info!(
        "{}: compacted {segments_in} segments below offset {end}: {bytes_in} -> {bytes_out} bytes",
        log.dir.display(),
    );
    Ok(())
}

/// Consecutive runs of segments whose total size fits one segment and whose offsets fit the
/// 32-bit relative offsets of an index.
fn groups(segments: &[ClosedSegment], segment_bytes: u64) -> Vec<&[ClosedSegment]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < segments.len() {
        let mut end = start + 1;
        let mut size = segments[start].size;
        while let Some(next) = segments.get(end) {
            let span = next.next_offset - segments[start].base_offset;
            if size + next.size > segment_bytes || span > i32::MAX as i64 {
                break;
            }
            size += next.size;
            end += 1;
        }
        out.push(&segments[start..end]);
        start = end;
    }
    out
}

async fn reader(
    log: &PartitionLog,
    segment: &ClosedSegment,
) -> std::io::Result<Arc<std::fs::File>> {
    log.segment_reader(segment)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// This shard's cleaner thread (started on first use), fed jobs over a channel.
    static WORKER: std::cell::RefCell<Option<std::sync::mpsc::Sender<Job>>> =
        const { std::cell::RefCell::new(None) };
}

/// Starts a cleaner thread: it inherits the shard's CPU pinning and runs under SCHED_IDLE, so
/// it only gets the core when the shard has nothing to run.
fn start_worker() -> std::io::Result<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("shardlog-cleaner".into())
        .spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a syscall on the calling thread with a valid, initialised parameter.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                tracing::warn!(
                    "cleaner thread: cannot lower its priority: {}",
                    std::io::Error::last_os_error()
                );
            }
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    Ok(tx)
}

/// Runs CPU- and I/O-heavy cleaner work on this shard's cleaner thread and waits for it.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> std::io::Result<R> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    WORKER.with(|worker| -> std::io::Result<()> {
        let mut worker = worker.borrow_mut();
        if worker.is_none() {
            *worker = Some(start_worker()?);
        }
        match worker.as_ref().map(|w| w.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => {
                *worker = None; // the thread is gone: the next call starts another
                Err(std::io::Error::other("the cleaner thread stopped"))
            }
        }
    })?;
    rx.await
        .map_err(|_| std::io::Error::other("the cleaner thread stopped"))?
}

struct Written {
    bytes: u64,
    tombstone_horizon: i64,
}

/// What a rewrite keeps: records no newer committed record of their key supersedes, outside
/// aborted transactions, and the last batch of each live producer (emptied if need be).
struct Kept {
    map: Arc<HashMap<Vec<u8>, i64>>,
    aborted: Arc<Aborted>,
    keep_batches: Arc<HashSet<i64>>,
}

/// Writes the records of `sources` that compaction keeps into `path`, synced.
fn write_cleaned(
    sources: &[(Arc<std::fs::File>, u64)],
    kept: &Kept,
    path: &PathBuf,
    now: i64,
    delete_retention_ms: i64,
    io_bytes_per_sec: f64,
) -> std::io::Result<Written> {
    let throttle = Throttle::new(io_bytes_per_sec);
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
    let mut written = Written {
        bytes: 0,
        tombstone_horizon: i64::MAX,
    };
    let mut synced = 0u64;
    let superseded =
        |key: &[u8], offset: i64| kept.map.get(key).is_some_and(|&newest| newest > offset);
    for (source, size) in sources {
        for_each_batch(source, *size, &throttle, |batch| {
            let outcome = if kept.aborted.contains(batch) {
                compact::FilterOutcome {
                    batch: Filtered::Drop,
                    tombstone_horizon: None,
                }
            } else {
                compact::filter(batch, superseded, now, delete_retention_ms)
                    .map_err(std::io::Error::other)?
            };
            if let Some(h) = outcome.tombstone_horizon {
                written.tombstone_horizon = written.tombstone_horizon.min(h);
            }
            let base = crate::record::BatchView { bytes: batch }.base_offset();
            let emptied;
            let bytes: &[u8] = match &outcome.batch {
                Filtered::Keep => batch,
                Filtered::Drop if kept.keep_batches.contains(&base) => {
                    emptied = compact::empty_batch(batch);
                    &emptied
                }
                Filtered::Drop => return Ok(()),
                Filtered::Rewrite(b) => b,
            };
            out.write_all(bytes)?;
            written.bytes += bytes.len() as u64;
            if written.bytes - synced >= SYNC_STEP {
                // Write back as we go: one large flush at the end would hold the device (and
                // the file system journal) long enough to stall the shard's appends.
                out.flush()?;
                sync_range(&file, synced, written.bytes - synced)?;
                throttle.account(written.bytes - synced);
                synced = written.bytes;
            }
            Ok(())
        })?;
    }
    out.flush()?;
    drop(out);
    file.sync_all()?;
    Ok(written)
}

/// Bytes of a compacted segment written between write-backs.
const SYNC_STEP: u64 = 4 << 20;

/// Starts writing back `len` bytes of `file` from `from` and waits for them.
fn sync_range(file: &std::fs::File, from: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a syscall on a file descriptor this function borrows for its duration.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), from as i64, len as i64, flags) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Calls `f` with each whole batch of the first `size` bytes of `file`, read in large chunks.
fn for_each_batch(
    file: &std::fs::File,
    size: u64,
    throttle: &Throttle,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const CHUNK: u64 = 8 << 20;
    let mut buf = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        buf.resize(CHUNK.min(size - pos) as usize, 0);
        file.read_exact_at(&mut buf, pos)?;
        throttle.account(buf.len() as u64);
        let mut at = 0;
        while let Some(len) = framed_len(&buf[at..]) {
            if at + len > buf.len() {
                if at == 0 {
                    // One batch larger than the chunk: read exactly it.
                    let mut whole = vec![0; len];
                    file.read_exact_at(&mut whole, pos)?;
                    f(&whole)?;
                    at = len;
                }
                break;
            }
            f(&buf[at..at + len])?;
            at += len;
        }
        if at == 0 {
            return Err(std::io::Error::other(format!(
                "unreadable batch at byte {pos} of a closed segment"
            )));
        }
        pos += at as u64;
    }
    Ok(())
}
