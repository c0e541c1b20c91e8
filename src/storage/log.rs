//! The log of one partition, owned by exactly one shard: its segments and their indexes, its
//! log start offset, the hot tail (the most recent write buffers, kept to serve reads from
//! memory) and the files of the partition directory. It knows nothing of producers, acks or
//! high watermarks: the partition layer (`crate::partition`) decides what is appended, in
//! which order, and up to which offset readers may see; storage writes, syncs and reads.
//!
//! A write round (`append_round`) copies a run of batches into one aligned DMA buffer that
//! starts at the active segment's last 4 KiB boundary, gives them consecutive offsets from the
//! log end offset and writes the buffer with O_DIRECT; `sync` fdatasyncs the active segment
//! (at most one in flight) and reports the position it covers. Reads stop at a `Bound` that
//! the caller chooses (the high watermark or the last stable offset).
//!
//! Invariants: `next_offset` (the log end offset) only moves after the bytes it covers were
//! written; rounds never overlap (the caller runs one at a time); after a failed fdatasync the
//! log takes no more writes. State is in `RefCell`s that are never borrowed across an await.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use glommio::io::{DmaBuffer, DmaFile};

use super::chain::{Chain, Piece};
use super::read_ahead::{ReadAhead, ReadAheadSettings};
use super::segment::{file_name, Segment};
use super::txn_index::AbortedTxn;
use crate::config::LogConfig;
use crate::record::{self, BatchView, ValidatedBatches};

const BLOCK: u64 = 4096;
/// The most zeros written ahead of the log end in one write.
const ZERO_STEP: u64 = 256 << 10;
/// Write rounds this large on average mean a partition writing as fast as it can: there the
/// zeros would double the bytes each fdatasync flushes and slow it, so it writes none.
const BUSY_ROUND_BYTES: u64 = 64 << 10;
const LOG_START_FILE: &str = "log-start-offset";
const RECOVERY_POINT_FILE: &str = "recovery-point";
/// The cleaner's progress: the first dirty offset and the earliest tombstone delete horizon.
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Present while compacted segments replace the originals: "base end" of the replaced range.
const CLEANER_SWAP_FILE: &str = "cleaner-swap";
/// The extension of a compacted segment being written.
pub const CLEANED_EXT: &str = "cleaned";
/// The extension of the merged `.txnindex` of a compacted segment being written.
const CLEANED_TXN_INDEX_EXT: &str = "txnindex.cleaned";
/// Producer-state snapshots: `<20-digit offset>.snapshot`, opaque to storage.
pub const SNAPSHOT_EXT: &str = "snapshot";
/// Snapshots kept when a new one is written.
const SNAPSHOTS_KEPT: usize = 2;
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
/// Names the topic (by id) that a partition directory belongs to, in Kafka's format.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// shardlog runs a single broker for now: every partition is at leader epoch 0.
pub const LEADER_EPOCH: i32 = 0;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a storage operation failed. The Kafka edge picks the error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// A read below the log start or past the log end offset.
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// A write, read or sync failed (full disk, I/O error).
    Io(String),
    /// An earlier fdatasync failed: the log takes no more writes.
    Fenced,
    /// The log is closing (shutdown, topic deleted).
    Closing,
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::OffsetOutOfRange { offset, start, end } => {
                write!(f, "offset {offset} is outside [{start}, {end}]")
            }
            StorageError::Io(e) => write!(f, "{e}"),
            StorageError::Fenced => write!(
                f,
                "an earlier fdatasync of this partition failed; it takes no more writes"
            ),
            StorageError::Closing => write!(f, "partition is closing"),
        }
    }
}

impl StorageError {
    pub fn io(e: impl std::fmt::Display) -> StorageError {
        StorageError::Io(e.to_string())
    }
}

/// Sizes that bound memory and I/O, from the broker config.
#[derive(Clone, Debug)]
pub struct LogSettings {
    pub write_buffer_bytes: usize,
    pub hot_tail_bytes: usize,
    pub max_pending_bytes: usize,
    pub read_ahead: ReadAheadSettings,
    /// Zeros written ahead of the active segment's end (`shardlog.log.preallocate.bytes`; 0:
    /// none), so appends overwrite written blocks instead of extending the file.
    pub preallocate_bytes: u64,
}

/// A place in the log: an offset that starts a batch (or the log end), the segment holding it
/// and its byte position there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: i64,
    pub segment: i64,
    pub position: u64,
}

/// How far a read may go: offsets below `offset`. `position`, where known, is where that
/// offset starts on disk, so a zero-copy read can be cut there without reading headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub offset: i64,
    pub position: Option<(i64, u64)>,
}

impl From<Position> for Bound {
    fn from(p: Position) -> Bound {
        Bound {
            offset: p.offset,
            position: Some((p.segment, p.position)),
        }
    }
}

impl Bound {
    /// No bound: everything written.
    pub const END: Bound = Bound {
        offset: i64::MAX,
        position: None,
    };
}

/// What a write round did: the base offset and position of each item, and where the log ends.
#[derive(Debug)]
pub struct RoundWritten {
    pub starts: Vec<Position>,
    pub end: Position,
    /// The LogAppendTime stamped into the batches, or -1 under CreateTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// A written DMA buffer kept for reads: batches [base_offset, next_offset) at buf[start..end].
struct HotChunk {
    base_offset: i64,
    next_offset: i64,
    buf: Rc<DmaBuffer>,
    start: usize,
    end: usize,
}

struct LogState {
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    next_offset: i64,
    /// The active segment's bytes from its last 4 KiB boundary to its end.
    tail_block: Vec<u8>,
    hot: VecDeque<HotChunk>,
    hot_bytes: usize,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn end(&self) -> Position {
        let a = self.active();
        Position {
            offset: self.next_offset,
            segment: a.base_offset,
            position: a.size,
        }
    }
}

pub struct PartitionLog {
    pub topic: String,
    pub partition: i32,
    pub dir: PathBuf,
    config: RefCell<LogConfig>,
    settings: LogSettings,
    state: RefCell<LogState>,
    closing: Cell<bool>,
    /// Retention found the active segment due: the appender rolls it when idle.
    roll_requested: Cell<bool>,
    /// Set when an fdatasync failed: what it covered may not be durable, so the partition takes
    /// no more writes (as Kafka takes a failed log directory offline); reads go on.
    failed: Cell<bool>,
    /// An fdatasync is running (at most one); `sync_done` fires when it ends.
    sync_in_flight: Cell<bool>,
    sync_done: Event,
    /// A moving average of the bytes per write round (7/8 old, 1/8 new).
    round_bytes: Cell<u64>,
    /// Held while closed segments are removed or replaced (retention, DeleteRecords, the
    /// cleaner's swap), so one never removes files the other is installing.
    segment_changes: glommio::sync::Semaphore,
    /// Bumped whenever closed segments are replaced: a read crossing segments restarts.
    segments_version: Cell<u64>,
    /// Readers behind the hot tail, served from chunks read ahead of them.
    read_ahead: ReadAhead,
    /// Compaction progress: offsets below `first_dirty` were cleaned; tombstones kept by the
    /// last clean may go from `tombstone_horizon` on (`i64::MAX`: none kept).
    first_dirty: Cell<i64>,
    tombstone_horizon: Cell<i64>,
    /// Where recovery must rebuild transaction indexes from (the recovery point of an unclean
    /// start, or the first segment whose `.txnindex` was damaged); `i64::MAX`: nowhere.
    replay_from: Cell<i64>,
}

/// Where a read starts in a segment: the batch holding the offset wanted.
struct SegmentPlace {
    segment: i64,
    file: Rc<DmaFile>,
    path: PathBuf,
    /// The batch's position, and where readable bytes end (the bound, or the segment's end).
    pos: u64,
    limit: u64,
    /// The segment's size when the read began.
    written: u64,
    first_batch_len: usize,
}

enum Located {
    At(SegmentPlace),
    /// The bound has no known position in the segment: read batch by batch.
    Unbounded,
    Nothing,
}

/// A closed segment as the cleaner sees it.
pub struct ClosedSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub file: Rc<DmaFile>,
}

/// Records a read found: bytes in memory, a range of a segment file (sent with sendfile), or
/// pieces of this shard's buffers (the hot tail, read-ahead), which never leave the shard.
#[derive(Debug)]
pub enum Fetched {
    Memory(Bytes),
    File(FileSlice),
    Buffers(Chain),
}

/// `Fetched` as it crosses to another shard (`crate::shard::ops::sent`): buffers were copied
/// into bytes.
#[derive(Debug)]
pub enum SentFetched {
    Memory(Bytes),
    File(FileSlice),
}

impl Fetched {
    pub fn len(&self) -> usize {
        match self {
            Fetched::Memory(b) => b.len(),
            Fetched::File(f) => f.len,
            Fetched::Buffers(c) => c.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `len` bytes of a segment file from `position`: whole batches, except that the last may be
/// cut short. It holds the file open, so retention deleting the segment meanwhile is harmless.
#[derive(Clone, Debug)]
pub struct FileSlice {
    pub file: Arc<std::fs::File>,
    pub path: PathBuf,
    pub position: u64,
    pub len: usize,
    /// The length of the first batch: a slice cut shorter holds no whole batch.
    pub first_batch_len: usize,
}

pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

async fn write_small_file(path: PathBuf, contents: String) -> std::io::Result<()> {
    blocking(move || crate::metadata::write_atomically(&path, contents.as_bytes())).await
}

async fn read_small_number(path: PathBuf) -> Option<i64> {
    blocking(move || std::fs::read_to_string(path).ok()?.trim().parse().ok()).await
}

impl PartitionLog {
    /// Creates the directory and first segment of a new partition of topic `topic_id`. Whatever
    /// was in the directory before (a deleted topic of the same name) is removed first.
    pub async fn create(
        log_dir: &Path,
        topic: &str,
        topic_id: [u8; 16],
        partition: i32,
        config: LogConfig,
        settings: LogSettings,
    ) -> std::io::Result<Rc<PartitionLog>> {
        let dir = partition_dir(log_dir, topic, partition);
        let (d, parent) = (dir.clone(), log_dir.to_path_buf());
        blocking(move || {
            if d.exists() {
                std::fs::remove_dir_all(&d)?;
            }
            std::fs::create_dir_all(&d)?;
            std::fs::File::open(parent)?.sync_all()
        })
        .await?;
        write_small_file(
            dir.join(PARTITION_METADATA_FILE),
            partition_metadata(topic_id),
        )
        .await?;
        write_small_file(
            dir.join(LEADER_EPOCH_FILE),
            format!("0\n1\n{LEADER_EPOCH} 0\n"),
        )
        .await?;
        Self::open(log_dir, topic, partition, config, settings, true).await
    }

    /// Opens an existing partition. Unless the broker shut down cleanly, every segment from the
    /// recovery point on is scanned: CRCs checked, a torn or damaged tail truncated (with a
    /// warning naming the file and position), indexes rebuilt.
    pub async fn open(
        log_dir: &Path,
        topic: &str,
        partition: i32,
        config: LogConfig,
        settings: LogSettings,
        clean: bool,
    ) -> std::io::Result<Rc<PartitionLog>> {
        let dir = partition_dir(log_dir, topic, partition);
        let d = dir.clone();
        blocking(move || finish_interrupted_swap(&d)).await?;
        let d = dir.clone();
        let mut bases: Vec<i64> = blocking(move || -> std::io::Result<Vec<i64>> {
            let mut out = Vec::new();
            for e in std::fs::read_dir(&d)? {
                let name = e?.file_name();
                let name = name.to_string_lossy();
                if let Some(stem) = name.strip_suffix(".log") {
                    if stem.len() == 20 {
                        if let Ok(base) = stem.parse::<i64>() {
                            out.push(base);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await?;
        bases.sort_unstable();
        let now = now_ms();
        if bases.is_empty() {
            bases.push(0);
            Segment::create(&dir, 0, now).await?;
        }
        let recovery_point = if clean {
            i64::MAX
        } else {
            read_small_number(dir.join(RECOVERY_POINT_FILE))
                .await
                .unwrap_or(0)
        };
        let mut segments = BTreeMap::new();
        let last = *bases.last().unwrap_or(&0);
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = Segment::open(&dir, base, now).await?;
            let file_size = seg.file.file_size().await.map_err(std::io::Error::from)?;
            let is_last = base == last;
            let next_base = bases.get(i + 1).copied();
            let must_scan = base >= recovery_point || next_base.is_some_and(|n| n > recovery_point);
            let mut loaded = false;
            if !must_scan && file_size > 0 {
                seg.size = file_size;
                loaded = seg.load_indexes().await;
                if !loaded {
                    tracing::warn!(
                        "{}: index missing or damaged, rebuilding it",
                        seg.path("index").display()
                    );
                }
                if loaded {
                    seg.max_timestamp = seg.time_index.entries.last().map(|e| e.0).unwrap_or(-1);
                    seg.next_offset = next_base.unwrap_or(base);
                }
            }
            if must_scan || !loaded || is_last {
                // A full scan, or for a trusted last segment a scan from its last index entry.
                let from = if loaded {
                    seg.index.last_position() as u64
                } else {
                    0
                };
                if !loaded {
                    seg.index = Default::default();
                    seg.time_index = Default::default();
                    seg.next_offset = base;
                } else if let Some(&(rel, _)) = seg.index.entries.last() {
                    seg.next_offset = base + rel as i64;
                }
                let valid = seg.scan(from, config.index_interval_bytes).await?;
                if valid < file_size {
                    let padding_only = blocking({
                        let p = seg.path("log");
                        move || tail_is_zero(&p, valid)
                    })
                    .await;
                    if !padding_only {
                        tracing::warn!(
                            "{}: damaged or torn data at byte {valid} (offset {}), truncating {} bytes",
                            seg.path("log").display(),
                            seg.next_offset,
                            file_size - valid
                        );
                    }
                    seg.file
                        .truncate(valid)
                        .await
                        .map_err(std::io::Error::from)?;
                    if !is_last && !padding_only && must_scan {
                        // Damage in the unflushed region: what follows it was written after
                        // it and cannot be trusted either, so later segments go. (Damage in a
                        // closed, flushed segment truncates only that segment, as in Kafka.)
                        segments.insert(base, seg);
                        for &later in &bases[i + 1..] {
                            tracing::warn!(
                                "{}: removing segment after damaged data",
                                dir.join(file_name(later, "log")).display()
                            );
                            remove_segment_files(&dir, later).await;
                        }
                        break;
                    }
                }
                if !is_last {
                    // A closed segment's rebuilt indexes go back to disk for the next start.
                    seg.index_files().write().await?;
                }
            }
            segments.insert(base, seg);
        }
        // A closed segment spans offsets up to the next one's base, whatever its last batch
        // (compaction may have removed the records at its end).
        let bases: Vec<i64> = segments.keys().copied().collect();
        for pair in bases.windows(2) {
            if let Some(seg) = segments.get_mut(&pair[0]) {
                seg.next_offset = pair[1];
            }
        }
        let (first_base, next_offset) = {
            let first = segments.values().next().map(|s| s.base_offset).unwrap_or(0);
            let last = segments
                .values()
                .next_back()
                .map(|s| s.next_offset)
                .unwrap_or(0);
            (first, last)
        };
        let stored_start = read_small_number(dir.join(LOG_START_FILE))
            .await
            .unwrap_or(0);
        let log_start_offset = stored_start.max(first_base).min(next_offset);
        let mut state = LogState {
            segments,
            log_start_offset,
            next_offset,
            tail_block: Vec::new(),
            hot: VecDeque::new(),
            hot_bytes: 0,
        };
        let active = state.active();
        let aligned = active.size / BLOCK * BLOCK;
        if active.size > aligned {
            let bytes = active
                .read(aligned, (active.size - aligned) as usize)
                .await?;
            state.tail_block = bytes.to_vec();
        }
        // Appends will be at a new position: mark this segment as needing recovery from now.
        write_small_file(
            dir.join(RECOVERY_POINT_FILE),
            state.active().base_offset.to_string(),
        )
        .await?;
        let checkpoint = blocking({
            let p = dir.join(CLEANER_CHECKPOINT_FILE);
            move || std::fs::read_to_string(p).unwrap_or_default()
        })
        .await;
        let mut numbers = checkpoint.split_whitespace().map(str::parse::<i64>);
        let first_dirty = numbers.next().and_then(Result::ok).unwrap_or(0);
        let tombstone_horizon = numbers.next().and_then(Result::ok).unwrap_or(i64::MAX);
        // Transaction indexes: a damaged one must be rebuilt by replaying from its segment.
        let mut replay_from = recovery_point;
        for seg in state.segments.values_mut() {
            if !seg.load_txn_index().await {
                tracing::warn!(
                    "{}: transaction index damaged, rebuilding it",
                    seg.path("txnindex").display()
                );
                replay_from = replay_from.min(seg.base_offset);
            }
        }
        let log = Rc::new(PartitionLog {
            topic: topic.to_string(),
            partition,
            dir,
            config: RefCell::new(config),
            read_ahead: ReadAhead::new(settings.read_ahead.clone()),
            settings,
            state: RefCell::new(state),
            closing: Cell::new(false),
            roll_requested: Cell::new(false),
            failed: Cell::new(false),
            sync_in_flight: Cell::new(false),
            round_bytes: Cell::new(0),
            sync_done: Event::new(),
            segment_changes: glommio::sync::Semaphore::new(1),
            segments_version: Cell::new(0),
            first_dirty: Cell::new(first_dirty),
            tombstone_horizon: Cell::new(tombstone_horizon),
            replay_from: Cell::new(replay_from),
        });
        // A crash between recording a new log start offset and unlinking the segments below
        // it leaves them behind: finish the job.
        log.delete_segments_below_start().await;
        Ok(log)
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    pub fn settings(&self) -> LogSettings {
        self.settings.clone()
    }

    /// The offset the next batch gets, and where it will be written.
    pub fn end(&self) -> Position {
        self.state.borrow().end()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.state.borrow().next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start_offset
    }

    /// Where recovery must replay from to rebuild transaction indexes (`i64::MAX`: nowhere).
    pub fn replay_from(&self) -> i64 {
        self.replay_from.get()
    }

    /// Whether an fdatasync failed (the log takes no more writes).
    pub fn is_fenced(&self) -> bool {
        self.failed.get()
    }

    /// Whether the active segment must roll before a round of `bytes` holding `offsets`
    /// offsets is written at `now` (`segment.bytes`, `segment.ms`, 32-bit relative offsets),
    /// or retention asked for a roll.
    pub fn roll_due(&self, bytes: usize, offsets: i64, now: i64) -> bool {
        let config = self.config.borrow();
        let st = self.state.borrow();
        let a = st.active();
        // Index entries hold offsets relative to the segment base in 32 bits.
        let relative_end = st.next_offset + offsets - a.base_offset;
        a.size > 0
            && (self.roll_requested.get()
                || a.size + bytes as u64 > config.segment_bytes
                || now - a.created_ms >= config.segment_ms
                || relative_end > i32::MAX as i64)
    }

    /// The zeros to write ahead of the active segment's end now, if any: where and how many
    /// (`shardlog.log.preallocate.bytes` ahead, in steps of at most [`ZERO_STEP`], never past
    /// `segment.bytes`, never over the partial tail block). Before a round only once half the
    /// lead is used; when `idle`, up to the whole lead, but only for a segment written to since
    /// it was opened (a partition nobody writes to gets no zeros). None while rounds average
    /// [`BUSY_ROUND_BYTES`] or more.
    fn zero_fill_plan(&self, idle: bool) -> Option<(Rc<DmaFile>, u64, usize)> {
        let ahead = self.settings.preallocate_bytes;
        if ahead == 0
            || self.failed.get()
            || self.closing.get()
            || self.round_bytes.get() >= BUSY_ROUND_BYTES
        {
            return None;
        }
        let segment_bytes = self.config.borrow().segment_bytes;
        let st = self.state.borrow();
        let a = st.active();
        let start = a.zeroed_to.max(a.size.div_ceil(BLOCK) * BLOCK);
        let goal = (a.size + ahead).min(segment_bytes.div_ceil(BLOCK) * BLOCK);
        let lagging = if idle {
            a.zeroed_to > 0
        } else {
            start - a.size <= ahead / 2
        };
        if a.zero_fill_failed || start >= goal || !lagging {
            return None;
        }
        let len = (goal - start).min(ZERO_STEP).div_ceil(BLOCK) * BLOCK;
        Some((Rc::clone(&a.file), start, len as usize))
    }

    /// Writes the next step of zeros ahead of the active segment's end, if one is due (see
    /// [`Self::zero_fill_plan`]); returns whether it wrote. Run by the appender between rounds
    /// and while idle (nothing else writes the active file, so the zeros never meet data); a
    /// failure only stops the filling, appends then extend the file as before.
    pub async fn zero_fill_step(&self, idle: bool) -> bool {
        let Some((file, start, len)) = self.zero_fill_plan(idle) else {
            return false;
        };
        let mut buf = file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        let written = file.write_rc_at(Rc::new(buf), start).await;
        let mut st = self.state.borrow_mut();
        let a = st.active_mut();
        if !Rc::ptr_eq(&a.file, &file) {
            return false;
        }
        match written {
            Ok(n) if n == len => a.zeroed_to = a.zeroed_to.max(start + len as u64),
            Ok(_) | Err(_) => {
                tracing::warn!(
                    "{}: cannot write zeros ahead of the log end; appends extend the file",
                    a.path("log").display()
                );
                a.zero_fill_failed = true;
            }
        }
        true
    }

    /// Whether retention asked for the active segment to roll (the appender does it when idle).
    pub fn roll_requested(&self) -> bool {
        self.roll_requested.get() && self.state.borrow().active().size > 0
    }

    /// Writes one round: every batch of `items`, in order, with consecutive offsets from the
    /// log end offset, in one O_DIRECT write. The caller runs one round at a time.
    pub async fn append_round(
        &self,
        items: &[&ValidatedBatches],
    ) -> Result<RoundWritten, StorageError> {
        if self.failed.get() {
            return Err(StorageError::Fenced);
        }
        if self.closing.get() {
            return Err(StorageError::Closing);
        }
        let config = self.config();
        let total: usize = items.iter().map(|b| b.records.len()).sum();
        let now = now_ms();
        // Lay out the round: [partial tail block][batches...][zero padding to 4 KiB].
        let (file, write_pos, buf, starts, log_start_offset) = {
            let st = self.state.borrow();
            let active = st.active();
            let write_pos = active.size / BLOCK * BLOCK;
            let lead = st.tail_block.len();
            let len = ((lead + total) as u64).div_ceil(BLOCK) * BLOCK;
            let mut buf = active.file.alloc_dma_buffer(len as usize);
            let out = buf.as_bytes_mut();
            out[..lead].copy_from_slice(&st.tail_block);
            let mut at = lead;
            let mut next = st.next_offset;
            let append_time = config.log_append_time.then_some(now);
            let mut starts = Vec::with_capacity(items.len());
            for b in items {
                starts.push(Position {
                    offset: next,
                    segment: active.base_offset,
                    position: active.size + (at - lead) as u64,
                });
                for &(s, e) in &b.batches {
                    let dst = &mut out[at..at + (e - s)];
                    dst.copy_from_slice(&b.records[s..e]);
                    let count = BatchView { bytes: dst }.last_offset_delta() as i64 + 1;
                    record::assign_offsets(dst, next, LEADER_EPOCH, append_time);
                    next += count;
                    at += e - s;
                }
            }
            out[at..].fill(0);
            (
                Rc::clone(&active.file),
                write_pos,
                Rc::new(buf),
                starts,
                st.log_start_offset,
            )
        };
        let began = crate::timing::start();
        let written = file.write_rc_at(Rc::clone(&buf), write_pos).await;
        crate::timing::record(crate::timing::Stage::Write, began);
        match written {
            Ok(n) if n == buf.len() => {}
            Ok(n) => {
                let msg = format!("short write of {n} of {} bytes", buf.len());
                tracing::error!("{}: write failed: {msg}", self.dir.display());
                return Err(StorageError::Io(msg));
            }
            Err(e) => {
                tracing::error!("{}: write failed: {e}", self.dir.display());
                return Err(StorageError::io(e));
            }
        }
        let end = self.publish_round(&buf, total, &config);
        Ok(RoundWritten {
            starts,
            end,
            log_append_time: if config.log_append_time { now } else { -1 },
            log_start_offset,
        })
    }

    /// After a successful write: index the batches, advance the log end offset and keep the
    /// buffer as hot tail. Returns the new end.
    fn publish_round(&self, buf: &Rc<DmaBuffer>, total: usize, config: &LogConfig) -> Position {
        self.round_bytes
            .set((self.round_bytes.get() * 7 + total as u64) / 8);
        let mut st = self.state.borrow_mut();
        let lead = st.tail_block.len();
        let bytes = buf.as_bytes();
        let first_offset = st.next_offset;
        let active = st.active_mut();
        let mut pos = active.size;
        let mut at = lead;
        while at < lead + total {
            let len = record::framed_len(&bytes[at..]).unwrap_or(lead + total - at);
            let view = BatchView {
                bytes: &bytes[at..at + len],
            };
            active.track_batch(pos, &view, config.index_interval_bytes);
            pos += len as u64;
            at += len;
        }
        let new_size = active.size;
        let next_offset = active.next_offset;
        // The buffer was written at the old 4 KiB boundary; the new tail starts at the new one.
        let aligned = new_size / BLOCK * BLOCK;
        let old_aligned = new_size - (lead + total) as u64;
        active.zeroed_to = active.zeroed_to.max(old_aligned + buf.len() as u64);
        st.tail_block = bytes[(aligned - old_aligned) as usize..lead + total].to_vec();
        st.next_offset = next_offset;
        if self.settings.hot_tail_bytes > 0 {
            st.hot.push_back(HotChunk {
                base_offset: first_offset,
                next_offset,
                buf: Rc::clone(buf),
                start: lead,
                end: lead + total,
            });
            st.hot_bytes += buf.len();
            while st.hot_bytes > self.settings.hot_tail_bytes && st.hot.len() > 1 {
                if let Some(c) = st.hot.pop_front() {
                    st.hot_bytes -= c.buf.len();
                }
            }
        }
        st.end()
    }

    /// Records an aborted transaction whose marker was just written (in the active segment).
    pub fn add_aborted_txn(&self, txn: AbortedTxn) {
        let mut st = self.state.borrow_mut();
        let seg = match st.segments.range_mut(..=txn.last_offset).next_back() {
            Some((_, seg)) => seg,
            None => st.active_mut(),
        };
        seg.txn_index.push(txn);
    }

    /// Aborted transactions overlapping [`from`, `upper`), from the transaction indexes of the
    /// segments at and after the one holding `from` (Kafka's `collectAbortedTransactions`).
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let st = self.state.borrow();
        let start = st
            .segments
            .range(..=from)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        let mut out = Vec::new();
        for seg in st.segments.range(start..).map(|(_, s)| s) {
            let found = seg.txn_index.collect(from, upper);
            out.extend(found.found);
            if found.complete {
                break;
            }
        }
        out
    }

    /// Waits for the fdatasync in flight, if any.
    async fn wait_for_sync(&self) {
        while self.sync_in_flight.get() {
            let l = self.sync_done.listen();
            if !self.sync_in_flight.get() {
                break;
            }
            l.await;
        }
    }

    /// fdatasyncs the active segment and returns the end it covers: everything written when
    /// the call began (closed segments were synced when they rolled). One runs at a time.
    /// After a failed sync the kernel may report the next one as fine although the earlier
    /// data is lost, so once one fails every later one fails too.
    pub async fn sync(&self) -> Result<Position, StorageError> {
        self.wait_for_sync().await;
        if self.failed.get() {
            return Err(StorageError::Fenced);
        }
        let (file, end) = {
            let st = self.state.borrow();
            (Rc::clone(&st.active().file), st.end())
        };
        self.sync_in_flight.set(true);
        let began = crate::timing::start();
        let result = file.fdatasync().await;
        crate::timing::record(crate::timing::Stage::Sync, began);
        self.sync_in_flight.set(false);
        self.sync_done.notify(usize::MAX);
        match result {
            Ok(()) if !self.failed.get() => Ok(end),
            Ok(()) => Err(StorageError::Fenced),
            Err(e) => {
                tracing::error!(
                    "{}: fdatasync failed, refusing further writes: {e}",
                    self.dir.display()
                );
                self.failed.set(true);
                Err(StorageError::io(e))
            }
        }
    }

    /// Closes the active segment (synced, indexes written), writes `snapshot` (the producer
    /// state at the new segment's base) and starts a new segment there. Returns the end the
    /// roll made durable.
    pub async fn roll(
        &self,
        now: i64,
        snapshot: Option<Vec<u8>>,
    ) -> Result<Position, StorageError> {
        // The sync in flight must report its own result first: an error is reported to one
        // fdatasync only, and roll's must not swallow it.
        self.wait_for_sync().await;
        if self.failed.get() {
            return Err(StorageError::Fenced);
        }
        self.roll_requested.set(false);
        let (file, size, end) = {
            let st = self.state.borrow();
            (Rc::clone(&st.active().file), st.active().size, st.end())
        };
        let next = end.offset;
        // Trim the O_DIRECT padding after the last batch, so the closed file is exactly its batches.
        file.truncate(size).await.map_err(StorageError::io)?;
        if let Err(e) = file.fdatasync().await {
            self.failed.set(true);
            return Err(StorageError::io(e));
        }
        let segment = Segment::create(&self.dir, next, now)
            .await
            .map_err(StorageError::io)?;
        let dir = self.dir.clone();
        blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(StorageError::io)?;
        let index_files = {
            let mut st = self.state.borrow_mut();
            let files = st.active_mut().index_files();
            st.segments.insert(next, segment);
            st.tail_block.clear();
            files
        };
        index_files.write().await.map_err(StorageError::io)?;
        if let Some(bytes) = snapshot {
            self.write_snapshot(next, bytes).await;
        }
        write_small_file(self.dir.join(RECOVERY_POINT_FILE), next.to_string())
            .await
            .map_err(StorageError::io)?;
        Ok(end)
    }

    /// Writes a producer-state snapshot taken at `offset` and removes all but the newest few.
    /// A failure is logged: snapshots only shorten recovery.
    pub async fn write_snapshot(&self, offset: i64, bytes: Vec<u8>) {
        let dir = self.dir.clone();
        let written = blocking(move || -> std::io::Result<()> {
            crate::metadata::write_atomically(&dir.join(file_name(offset, SNAPSHOT_EXT)), &bytes)?;
            let mut all = list_snapshots(&dir)?;
            all.sort_unstable();
            let doomed = all.len().saturating_sub(SNAPSHOTS_KEPT);
            for old in &all[..doomed] {
                std::fs::remove_file(dir.join(file_name(*old, SNAPSHOT_EXT)))?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(
                "{}: cannot write producer snapshot at {offset}: {e}",
                self.dir.display()
            );
        }
    }

    /// The producer-state snapshots on disk, newest first: (offset, contents).
    pub async fn snapshots(&self) -> Vec<(i64, std::io::Result<Vec<u8>>)> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut all = list_snapshots(&dir).unwrap_or_default();
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.into_iter()
                .map(|o| (o, std::fs::read(dir.join(file_name(o, SNAPSHOT_EXT)))))
                .collect()
        })
        .await
    }

    /// Removes a snapshot that recovery cannot use (taken past the recovered log end).
    pub async fn remove_snapshot(&self, offset: i64) {
        let path = self.dir.join(file_name(offset, SNAPSHOT_EXT));
        if let Err(e) = blocking(move || std::fs::remove_file(path)).await {
            tracing::warn!("{}: cannot remove snapshot: {e}", self.dir.display());
        }
    }

    fn check_range(st: &LogState, offset: i64) -> Result<(), StorageError> {
        if offset < st.log_start_offset || offset > st.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: st.log_start_offset,
                end: st.next_offset,
            });
        }
        Ok(())
    }

    /// Whole batches from `offset` on that start below `bound`, at most `max_bytes` (but always
    /// one whole batch). An offset past `bound` but within the log reads nothing.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: Bound,
    ) -> Result<Bytes, StorageError> {
        let version = self.segments_version.get();
        let (segment_file, mut pos, mut seg_base, seg_size) = {
            let st = self.state.borrow();
            Self::check_range(&st, offset)?;
            if offset >= st.next_offset || offset >= bound.offset {
                return Ok(Bytes::new());
            }
            if st.hot.front().is_some_and(|c| c.base_offset <= offset) {
                return Ok(read_hot(&st.hot, offset, max_bytes, bound.offset).copy());
            }
            // Below every segment (the log start lies in a gap compaction left): the first.
            let found = st.segments.range(..=offset).next_back();
            let Some((_, seg)) = found.or_else(|| st.segments.iter().next()) else {
                return Ok(Bytes::new());
            };
            let rel = (offset - seg.base_offset).max(0) as u32;
            (
                Rc::clone(&seg.file),
                seg.index.floor_position(rel) as u64,
                seg.base_offset,
                seg.size,
            )
        };
        let mut file = segment_file;
        let mut size = seg_size;
        let mut out = BytesMut::new();
        let window = max_bytes.clamp(64 << 10, 8 << 20) + (16 << 10);
        loop {
            if pos >= size {
                // End of this segment: continue in the next one, if any. If the cleaner
                // replaced segments meanwhile, the next one may not follow this one: start over.
                if out.is_empty() && self.segments_version.get() != version {
                    return Box::pin(self.read(offset, max_bytes, bound)).await;
                }
                let st = self.state.borrow();
                match st.segments.range(seg_base + 1..).next() {
                    Some((_, next))
                        if out.is_empty()
                            && next.base_offset < st.next_offset
                            && next.base_offset < bound.offset =>
                    {
                        file = Rc::clone(&next.file);
                        seg_base = next.base_offset;
                        size = next.size;
                        pos = 0;
                        continue;
                    }
                    _ => break,
                }
            }
            let want = window.min((size - pos) as usize);
            let r = file.read_at(pos, want).await.map_err(StorageError::io)?;
            let chunk: &[u8] = &r;
            let mut at = 0;
            let mut progressed = false;
            while let Some(len) = record::framed_len(&chunk[at..]) {
                if (BatchView {
                    bytes: &chunk[at..],
                })
                .base_offset()
                    >= bound.offset
                {
                    return Ok(out.freeze());
                }
                if at + len > chunk.len() {
                    if out.is_empty() && !progressed && at == 0 {
                        // One batch larger than the window: read exactly it.
                        let whole = file.read_at(pos, len).await.map_err(StorageError::io)?;
                        out.extend_from_slice(&whole);
                        return Ok(out.freeze());
                    }
                    break;
                }
                let view = BatchView {
                    bytes: &chunk[at..at + len],
                };
                if view.next_offset() > offset {
                    if !out.is_empty() && out.len() + len > max_bytes {
                        return Ok(out.freeze());
                    }
                    out.extend_from_slice(view.bytes);
                }
                at += len;
                progressed = true;
            }
            if at == 0 {
                break; // nothing readable here (should not happen below the log end)
            }
            pos += at as u64;
            if out.len() >= max_bytes {
                break;
            }
        }
        Ok(out.freeze())
    }

    /// Like `read`, but data on disk comes back as a byte range of its segment file, to be
    /// sent to the socket by the kernel (`shardlog.fetch.zero.copy`). The range starts at the
    /// batch holding `offset` and runs to `max_bytes` (at least that first batch whole), the
    /// end of its segment or the bound, so it may end inside a batch, as Kafka's file slices
    /// do; clients drop a partial batch at the end. Data still in the hot tail, and reads
    /// whose bound has no known position in this segment, come back as bytes.
    pub async fn read_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: Bound,
    ) -> Result<Fetched, StorageError> {
        if self.in_memory_or_empty(offset, bound)? {
            return self
                .read(offset, max_bytes, bound)
                .await
                .map(Fetched::Memory);
        }
        let header = async |file: &Rc<DmaFile>, _: i64, pos: u64, n: usize, _: u64| {
            let r = file.read_at(pos, n).await.map_err(StorageError::io)?;
            Ok(r.to_vec())
        };
        let (at, len) = match self
            .plan_disk_read(offset, max_bytes, bound, header)
            .await?
        {
            Ok(plan) => plan,
            Err(instead) => return Ok(instead),
        };
        Ok(Fetched::File(FileSlice {
            file: self.sendfile_source(at.segment, &at.file).await?,
            path: at.path,
            position: at.pos,
            len,
            first_batch_len: at.first_batch_len,
        }))
    }

    /// Like `read_slice`, but data on disk is read (with read-ahead for a reader that goes on
    /// where its last read ended) into this shard's buffers, and the hot tail's buffers are
    /// used as they are: no copy either way (`Fetched::Buffers`).
    pub async fn read_buffered(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: Bound,
        now: std::time::Instant,
    ) -> Result<Fetched, StorageError> {
        if self.in_memory_or_empty(offset, bound)? {
            let st = self.state.borrow();
            if offset < st.next_offset && offset < bound.offset {
                let chain = read_hot(&st.hot, offset, max_bytes, bound.offset);
                return Ok(Fetched::Buffers(chain));
            }
            return Ok(Fetched::Memory(Bytes::new()));
        }
        let read_ahead = &self.read_ahead;
        let header = async |file: &Rc<DmaFile>, seg: i64, pos: u64, n: usize, written: u64| {
            let chain = read_ahead.read(seg, file, pos, n, written, now);
            let mut bytes = vec![0; n];
            let got = chain
                .copy_prefix(&mut bytes)
                .await
                .map_err(StorageError::io)?;
            bytes.truncate(got);
            Ok(bytes)
        };
        let (at, len) = match self
            .plan_disk_read(offset, max_bytes, bound, header)
            .await?
        {
            Ok(plan) => plan,
            Err(instead) => return Ok(instead),
        };
        let still_there = {
            let st = self.state.borrow();
            st.segments
                .get(&at.segment)
                .is_some_and(|s| Rc::ptr_eq(&s.file, &at.file))
        };
        if !still_there {
            // Retention or the cleaner removed the segment while its headers were read: drop
            // what the header reads started for it and look again (the offset may now be out
            // of range, or in the replacement).
            self.prune_read_ahead();
            return Box::pin(self.read_buffered(offset, max_bytes, bound, now)).await;
        }
        // The chunks may still be in flight: the connection's writer waits for them, so the
        // response starts leaving as soon as its first chunk is in. After a failed read, the
        // reads are waited for here, so that a failure is answered (KAFKA_STORAGE_ERROR)
        // rather than found mid-response.
        let mut chain = read_ahead.read(at.segment, &at.file, at.pos, len, at.written, now);
        chain.first_batch_len = at.first_batch_len;
        if read_ahead.reads_failed() {
            if let Err(e) = chain.ready().await {
                tracing::warn!("{}: cannot read it: {e}", at.path.display());
                return Err(StorageError::io(e));
            }
            read_ahead.reads_recovered();
        }
        Ok(Fetched::Buffers(chain))
    }

    /// Where a read of up to `max_bytes` from `offset` starts in a segment file and how long
    /// it is (at least the first batch whole); or, when it cannot be sent from the file, the
    /// answer instead (read batch by batch into memory, or nothing).
    async fn plan_disk_read(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: Bound,
        header: impl AsyncFn(&Rc<DmaFile>, i64, u64, usize, u64) -> Result<Vec<u8>, StorageError>,
    ) -> Result<Result<(SegmentPlace, usize), Fetched>, StorageError> {
        let at = match self.locate(offset, bound, header).await? {
            Located::At(at) => at,
            Located::Unbounded => {
                let bytes = self.read(offset, max_bytes, bound).await?;
                return Ok(Err(Fetched::Memory(bytes)));
            }
            Located::Nothing => return Ok(Err(Fetched::Memory(Bytes::new()))),
        };
        let len = (at.limit - at.pos).min(max_bytes.max(at.first_batch_len) as u64) as usize;
        Ok(Ok((at, len)))
    }

    /// Whether a read at `offset` is served from the hot tail or finds nothing to read.
    fn in_memory_or_empty(&self, offset: i64, bound: Bound) -> Result<bool, StorageError> {
        let st = self.state.borrow();
        Self::check_range(&st, offset)?;
        Ok(offset >= st.next_offset
            || offset >= bound.offset
            || st.hot.front().is_some_and(|c| c.base_offset <= offset))
    }

    /// Finds where the batch holding `offset` starts in its segment and where readable bytes
    /// end there under `bound`, walking batch headers (read with `header`: file, segment base,
    /// position, length, the segment's written size) from the index entry below it.
    async fn locate(
        &self,
        offset: i64,
        bound: Bound,
        header: impl AsyncFn(&Rc<DmaFile>, i64, u64, usize, u64) -> Result<Vec<u8>, StorageError>,
    ) -> Result<Located, StorageError> {
        let version = self.segments_version.get();
        let (mut file, mut path, mut pos, mut seg_base, mut size) = {
            let st = self.state.borrow();
            let found = st.segments.range(..=offset).next_back();
            let Some((_, seg)) = found.or_else(|| st.segments.iter().next()) else {
                return Ok(Located::Nothing);
            };
            let rel = (offset - seg.base_offset).max(0) as u32;
            (
                Rc::clone(&seg.file),
                seg.path("log"),
                seg.index.floor_position(rel) as u64,
                seg.base_offset,
                seg.size,
            )
        };
        loop {
            // Where this segment's readable bytes end under the bound.
            let whole_segment_below = || {
                let st = self.state.borrow();
                let next = st.segments.range(seg_base + 1..).next();
                next.is_some_and(|(base, _)| *base <= bound.offset)
            };
            let limit = match bound.position {
                _ if bound.offset == i64::MAX => size,
                Some((seg, p)) if seg == seg_base => p.min(size),
                Some((seg, _)) if seg > seg_base && whole_segment_below() => size,
                // The bound lies in an earlier segment (replaced by the cleaner) or its place
                // is unknown: read it into memory, batch by batch.
                _ => return Ok(Located::Unbounded),
            };
            if pos >= limit {
                if self.segments_version.get() != version {
                    return Box::pin(self.locate(offset, bound, header)).await;
                }
                let st = self.state.borrow();
                match st.segments.range(seg_base + 1..).next() {
                    Some((_, next))
                        if next.base_offset < st.next_offset
                            && next.base_offset < bound.offset
                            && limit == size =>
                    {
                        file = Rc::clone(&next.file);
                        path = next.path("log");
                        seg_base = next.base_offset;
                        size = next.size;
                        pos = 0;
                        continue;
                    }
                    _ => return Ok(Located::Nothing),
                }
            }
            // Walk batch headers from the index entry to the batch holding `offset`.
            let want = record::HEADER_LEN.min((limit - pos) as usize);
            let bytes = header(&file, seg_base, pos, want, size).await?;
            let len = match record::framed_len(&bytes) {
                Some(len) if bytes.len() == record::HEADER_LEN => len,
                _ => return Ok(Located::Nothing),
            };
            let view = BatchView { bytes: &bytes };
            if view.next_offset() <= offset {
                pos += len as u64;
                continue;
            }
            return Ok(Located::At(SegmentPlace {
                segment: seg_base,
                file,
                path,
                pos,
                limit,
                written: size,
                first_batch_len: len,
            }));
        }
    }

    /// Releases the read-ahead of readers idle for `shardlog.read.ahead.idle.ms`; returns the
    /// bytes released.
    pub fn release_idle_read_ahead(&self, now: std::time::Instant) -> usize {
        self.read_ahead.release_idle(now)
    }

    /// Drops read-ahead of segments that are gone or were replaced.
    fn prune_read_ahead(&self) {
        let st = self.state.borrow();
        self.read_ahead.retain_segments(|base, file| {
            st.segments
                .get(&base)
                .is_some_and(|s| Rc::ptr_eq(&s.file, file))
        });
    }

    /// The segment's file opened for buffered reads, opened once and kept with the segment.
    /// It is opened through the DMA file's descriptor (`/proc/self/fd`), not the path, so it
    /// is the same file even if retention unlinked it or the topic was recreated meanwhile.
    async fn sendfile_source(
        &self,
        seg_base: i64,
        dma: &Rc<DmaFile>,
    ) -> Result<Arc<std::fs::File>, StorageError> {
        let cached = self
            .state
            .borrow()
            .segments
            .get(&seg_base)
            .filter(|s| Rc::ptr_eq(&s.file, dma))
            .and_then(|s| s.sendfile_source.clone());
        if let Some(f) = cached {
            return Ok(f);
        }
        // `dma` stays open (held here) until the open below has completed.
        let through = PathBuf::from(format!("/proc/self/fd/{}", dma.as_raw_fd()));
        let file = Arc::new(
            blocking(move || std::fs::File::open(through))
                .await
                .map_err(StorageError::io)?,
        );
        if let Some(seg) = self.state.borrow_mut().segments.get_mut(&seg_base) {
            if Rc::ptr_eq(&seg.file, dma) {
                seg.sendfile_source = Some(Arc::clone(&file));
            }
        }
        Ok(file)
    }

    /// Kafka's ListOffsets by timestamp: the first record at or after the log start offset
    /// with timestamp >= `ts`. Segments are tried in order (a segment whose matches all lie
    /// below the log start offset does not end the search); within one, the time index gives
    /// where to start scanning.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let candidates: Vec<(Rc<glommio::io::DmaFile>, u64, u64)> = {
            let st = self.state.borrow();
            st.segments
                .values()
                .filter(|s| s.max_timestamp >= ts && s.next_offset > st.log_start_offset)
                .map(|s| {
                    (
                        Rc::clone(&s.file),
                        s.index.floor_position(s.time_index.scan_start(ts)) as u64,
                        s.size,
                    )
                })
                .collect()
        };
        for (file, mut pos, size) in candidates {
            while pos < size {
                let log_start = self.log_start_offset();
                let want = ((size - pos) as usize).min(1 << 20);
                let r = file.read_at(pos, want).await.map_err(StorageError::io)?;
                let mut at = 0;
                while let Some(len) = record::framed_len(&r[at..]) {
                    if at + len > r.len() {
                        if at == 0 {
                            let whole = file.read_at(pos, len).await.map_err(StorageError::io)?;
                            if let Some(found) = first_at_or_after(&whole, ts, log_start).await {
                                return Ok(Some(found));
                            }
                            at = len;
                        }
                        break;
                    }
                    if let Some(found) = first_at_or_after(&r[at..at + len], ts, log_start).await {
                        return Ok(Some(found));
                    }
                    at += len;
                }
                if at == 0 {
                    break;
                }
                pos += at as u64;
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP): the first record
    /// carrying the largest timestamp of the live segments.
    pub async fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let max = {
            let st = self.state.borrow();
            st.segments
                .values()
                .filter(|s| s.next_offset > st.log_start_offset)
                .map(|s| s.max_timestamp)
                .max()
                .unwrap_or(-1)
        };
        if max < 0 {
            return Ok(None);
        }
        self.offset_for_timestamp(max).await
    }

    /// Moves the log start offset forward to `target` (DeleteRecords), which must not pass
    /// `high_watermark`. Returns the log start offset after.
    pub async fn delete_records(
        &self,
        target: i64,
        high_watermark: i64,
    ) -> Result<i64, StorageError> {
        if target < 0 || target > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                offset: target,
                start: self.log_start_offset(),
                end: high_watermark,
            });
        }
        if target > self.log_start_offset() {
            self.state.borrow_mut().log_start_offset = target;
            write_small_file(self.dir.join(LOG_START_FILE), target.to_string())
                .await
                .map_err(StorageError::io)?;
            self.delete_segments_below_start().await;
        }
        Ok(self.log_start_offset())
    }

    async fn delete_segments_below_start(&self) {
        let Ok(_permit) = self.segment_changes.acquire_permit(1).await else {
            return;
        };
        let doomed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
            let start = st.log_start_offset;
            let active_base = st.active().base_offset;
            let bases: Vec<i64> = st
                .segments
                .values()
                .filter(|s| s.base_offset != active_base && s.next_offset <= start)
                .map(|s| s.base_offset)
                .collect();
            bases.iter().filter_map(|b| st.segments.remove(b)).collect()
        };
        self.prune_read_ahead();
        for seg in doomed {
            remove_segment_files(&self.dir, seg.base_offset).await;
        }
    }

    /// Deletes whole closed segments past `retention.ms` or beyond `retention.bytes`, never
    /// moving the log start offset past `upper` (the high watermark).
    pub async fn enforce_retention(&self, now: i64, upper: i64) {
        let config = self.config();
        if !config.delete {
            return;
        }
        let new_start = {
            let st = self.state.borrow();
            let mut total: i64 = st.segments.values().map(|s| s.size as i64).sum();
            let active_base = st.active().base_offset;
            let mut new_start = None;
            for s in st.segments.values() {
                // An empty closed segment (everything compacted away) holds nothing to keep.
                let emptied = s.size == 0 && s.base_offset != active_base;
                let expired = emptied
                    || config.retention_ms >= 0
                        && s.max_timestamp >= 0
                        && now - s.max_timestamp > config.retention_ms;
                let oversize =
                    config.retention_bytes >= 0 && total - s.size as i64 >= config.retention_bytes;
                if !(expired || oversize) {
                    break;
                }
                if s.base_offset == active_base {
                    // The active segment is due too: have the appender roll it, and a later
                    // pass deletes it (a log always keeps one segment, as in Kafka).
                    if s.size > 0 {
                        self.roll_requested.set(true);
                    }
                    break;
                }
                if s.next_offset > upper {
                    break;
                }
                total -= s.size as i64;
                new_start = Some(s.next_offset);
            }
            new_start
        };
        if let Some(start) = new_start {
            if start > self.log_start_offset() {
                tracing::info!(
                    "{}: retention moves the log start offset to {start}",
                    self.dir.display()
                );
                self.state.borrow_mut().log_start_offset = start;
                if let Err(e) =
                    write_small_file(self.dir.join(LOG_START_FILE), start.to_string()).await
                {
                    tracing::error!(
                        "{}: cannot record log start offset: {e}",
                        self.dir.display()
                    );
                }
                self.delete_segments_below_start().await;
            }
        }
    }

    /// The closed segments (every one but the active), oldest first, and the log start offset.
    pub fn closed_segments(&self) -> (Vec<ClosedSegment>, i64) {
        let st = self.state.borrow();
        let active_base = st.active().base_offset;
        let closed = st
            .segments
            .values()
            .filter(|s| s.base_offset != active_base)
            .map(|s| ClosedSegment {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size: s.size,
                max_timestamp: s.max_timestamp,
                file: Rc::clone(&s.file),
            })
            .collect();
        (closed, st.log_start_offset)
    }

    /// A closed segment's file for buffered reads off the executor.
    pub async fn segment_reader(
        &self,
        segment: &ClosedSegment,
    ) -> Result<Arc<std::fs::File>, StorageError> {
        self.sendfile_source(segment.base_offset, &segment.file)
            .await
    }

    /// (first dirty offset, earliest tombstone delete horizon) of the cleaner.
    pub fn cleaner_progress(&self) -> (i64, i64) {
        (self.first_dirty.get(), self.tombstone_horizon.get())
    }

    /// Whether the log is closing (shutdown, topic deleted): background work stops.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Records the cleaner's progress, in memory and in the partition directory.
    pub async fn set_cleaner_progress(&self, first_dirty: i64, tombstone_horizon: i64) {
        if self.closing.get() {
            return;
        }
        self.first_dirty.set(first_dirty);
        self.tombstone_horizon.set(tombstone_horizon);
        let path = self.dir.join(CLEANER_CHECKPOINT_FILE);
        if let Err(e) = write_small_file(path, format!("{first_dirty} {tombstone_horizon}\n")).await
        {
            tracing::warn!(
                "{}: cannot record cleaner progress: {e}",
                self.dir.display()
            );
        }
    }

    /// Puts the compacted file `cleaned` in place of the closed segments `group` (consecutive,
    /// together holding offsets up to `end`). Returns false, leaving everything as it was, if
    /// the log changed meanwhile (a segment went, the log is closing). Crash-safe: a marker
    /// names the range before any file is touched, and `open` finishes an interrupted swap.
    pub async fn replace_segments(
        &self,
        group: &[ClosedSegment],
        end: i64,
        cleaned: &Path,
    ) -> std::io::Result<bool> {
        let Some(first) = group.first() else {
            return Ok(false);
        };
        let base = first.base_offset;
        let _permit = self
            .segment_changes
            .acquire_permit(1)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let unchanged = {
            let st = self.state.borrow();
            !self.closing.get()
                && st.active().base_offset >= end
                && group.iter().all(|g| {
                    st.segments
                        .get(&g.base_offset)
                        .is_some_and(|s| Rc::ptr_eq(&s.file, &g.file))
                })
        };
        if !unchanged {
            let path = cleaned.to_path_buf();
            blocking(move || std::fs::remove_file(path)).await.ok();
            return Ok(false);
        }
        // Validate and index the replacement before it takes the originals' place.
        let mut segment = Segment::open_file(&self.dir, base, cleaned, now_ms()).await?;
        let file_size = segment
            .file
            .file_size()
            .await
            .map_err(std::io::Error::from)?;
        let valid = segment.scan(0, self.config().index_interval_bytes).await?;
        if valid != file_size {
            return Err(std::io::Error::other(format!(
                "{}: compacted segment fails validation at byte {valid}",
                cleaned.display()
            )));
        }
        segment.next_offset = end;
        // The aborted transactions of every replaced segment stay with the one replacing them;
        // their merged index is written before the swap, which puts it in place.
        {
            let st = self.state.borrow();
            for g in group {
                if let Some(s) = st.segments.get(&g.base_offset) {
                    for t in &s.txn_index.entries {
                        segment.txn_index.push(*t);
                    }
                }
            }
        }
        if !segment.txn_index.entries.is_empty() {
            let path = self.dir.join(file_name(base, CLEANED_TXN_INDEX_EXT));
            let bytes = segment.txn_index.encode();
            blocking(move || crate::metadata::write_atomically(&path, &bytes)).await?;
        }
        write_small_file(self.dir.join(CLEANER_SWAP_FILE), format!("{base} {end}\n")).await?;
        let (dir, replaced): (PathBuf, Vec<i64>) = (
            self.dir.clone(),
            group.iter().map(|g| g.base_offset).collect(),
        );
        blocking(move || swap_in_cleaned(&dir, &replaced)).await?;
        let index_files = segment.index_files();
        index_files.write().await?;
        {
            let mut st = self.state.borrow_mut();
            for g in group {
                st.segments.remove(&g.base_offset);
            }
            st.segments.insert(base, segment);
            // The hot tail must not serve what compaction removed.
            while st.hot.front().is_some_and(|c| c.base_offset < end) {
                if let Some(c) = st.hot.pop_front() {
                    st.hot_bytes -= c.buf.len();
                }
            }
        }
        self.segments_version.set(self.segments_version.get() + 1);
        self.prune_read_ahead();
        let marker = self.dir.join(CLEANER_SWAP_FILE);
        blocking(move || std::fs::remove_file(marker)).await?;
        Ok(true)
    }

    /// Syncs, writes the indexes and `snapshot` (the producer state at the log end) and trims
    /// the active segment's padding, so that a clean restart needs no scan. The caller has
    /// stopped appending; nothing is written after this.
    pub async fn close(&self, snapshot: Option<Vec<u8>>) -> std::io::Result<()> {
        self.closing.set(true);
        // A segment swap in progress finishes first; none starts after `closing`.
        let _permit = self.segment_changes.acquire_permit(1).await;
        self.wait_for_sync().await;
        let (file, size, end, index_files) = {
            let mut st = self.state.borrow_mut();
            let end = st.next_offset;
            let active = st.active_mut();
            (
                Rc::clone(&active.file),
                active.size,
                end,
                active.index_files(),
            )
        };
        file.truncate(size).await.map_err(std::io::Error::from)?;
        if let Err(e) = file.fdatasync().await {
            self.failed.set(true);
            return Err(e.into());
        }
        index_files.write().await?;
        if let Some(bytes) = snapshot {
            self.write_snapshot(end, bytes).await;
        }
        Ok(())
    }
}

fn list_snapshots(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(o) = stem.parse::<i64>() {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// A topic id as Kafka writes it: URL-safe base64 without padding.
pub fn topic_id_text(topic_id: [u8; 16]) -> String {
    base64_url(&topic_id)
}

/// Kafka's `partition.metadata`: a version and the topic id.
fn partition_metadata(topic_id: [u8; 16]) -> String {
    format!("version: 0\ntopic_id: {}\n", topic_id_text(topic_id))
}

/// The topic id a partition directory was created for, if its `partition.metadata` says.
pub async fn stored_topic_id(dir: &Path) -> Option<String> {
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = blocking(move || std::fs::read_to_string(path).ok()).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .map(|id| id.trim().to_string())
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The first record of `batch` at or after `log_start` with timestamp >= `ts`, if the batch
/// can hold one. Looking inside means decompressing, which runs off the executor.
async fn first_at_or_after(batch: &[u8], ts: i64, log_start: i64) -> Option<(i64, i64)> {
    let view = BatchView { bytes: batch };
    if view.max_timestamp() < ts || view.next_offset() <= log_start {
        return None;
    }
    let batch = batch.to_vec();
    let records = blocking(move || record::record_timestamps(&batch)).await;
    records
        .into_iter()
        .find(|&(o, t)| t >= ts && o >= log_start)
}

/// Whole batches of the hot tail from the one holding `offset`, below `bound`, at most
/// `max_bytes` (but at least one batch), as pieces of the written buffers.
fn read_hot(hot: &VecDeque<HotChunk>, offset: i64, max_bytes: usize, bound: i64) -> Chain {
    let i = hot.partition_point(|c| c.next_offset <= offset);
    let mut out = Chain::default();
    for c in hot.iter().skip(i) {
        let bytes = &c.buf.as_bytes()[c.start..c.end];
        let (mut at, mut from) = (0, None);
        let mut full = false;
        while let Some(len) = record::framed_len(&bytes[at..]) {
            if at + len > bytes.len() {
                break;
            }
            let view = BatchView {
                bytes: &bytes[at..at + len],
            };
            if view.base_offset() >= bound {
                full = true;
                break;
            }
            if view.next_offset() > offset {
                let taken = out.len + from.map_or(0, |f| at - f);
                if taken > 0 && taken + len > max_bytes {
                    full = true;
                    break;
                }
                if out.len == 0 && from.is_none() {
                    out.first_batch_len = len;
                }
                from.get_or_insert(at);
            }
            at += len;
        }
        if let Some(f) = from {
            out.push(Piece::Written {
                buf: Rc::clone(&c.buf),
                start: c.start + f,
                end: c.start + at,
            });
        }
        if full {
            break;
        }
    }
    out
}

/// True if the file holds only zero bytes from `from` on (O_DIRECT padding, not damage).
fn tail_is_zero(path: &Path, from: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if buf[..n].iter().any(|&b| b != 0) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Replaces segment `replaced[0]` with its `.cleaned` file and removes the other segments of
/// `replaced` (their `.log` and indexes), then syncs the directory. Idempotent, so a restart
/// can run it again after a crash part-way.
fn swap_in_cleaned(dir: &Path, replaced: &[i64]) -> std::io::Result<()> {
    let Some(&base) = replaced.first() else {
        return Ok(());
    };
    let remove = |path: PathBuf| match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for &other in &replaced[1..] {
        for ext in ["log", "index", "timeindex", "txnindex"] {
            remove(dir.join(file_name(other, ext)))?;
        }
    }
    let txn_index = dir.join(file_name(base, CLEANED_TXN_INDEX_EXT));
    if txn_index.exists() {
        std::fs::rename(&txn_index, dir.join(file_name(base, "txnindex")))?;
    }
    let cleaned = dir.join(file_name(base, CLEANED_EXT));
    if cleaned.exists() {
        for ext in ["index", "timeindex"] {
            remove(dir.join(file_name(base, ext)))?;
        }
        std::fs::rename(&cleaned, dir.join(file_name(base, "log")))?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// At open: completes a swap of compacted segments that a crash interrupted (the marker names
/// the range; the `.cleaned` file was synced before the marker was written), and removes
/// `.cleaned` files of cleans that never reached their swap.
fn finish_interrupted_swap(dir: &Path) -> std::io::Result<()> {
    let marker = dir.join(CLEANER_SWAP_FILE);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let mut numbers = text.split_whitespace().map(str::parse::<i64>);
        if let (Some(Ok(base)), Some(Ok(end))) = (numbers.next(), numbers.next()) {
            let mut replaced = vec![base];
            for e in std::fs::read_dir(dir)? {
                let name = e?.file_name();
                let name = name.to_string_lossy();
                let other = name
                    .strip_suffix(".log")
                    .filter(|stem| stem.len() == 20)
                    .and_then(|stem| stem.parse::<i64>().ok());
                if let Some(other) = other.filter(|&o| o > base && o < end) {
                    replaced.push(other);
                }
            }
            tracing::warn!(
                "{}: finishing an interrupted compaction of offsets {base}..{end}",
                dir.display()
            );
            swap_in_cleaned(dir, &replaced)?;
        }
        std::fs::remove_file(&marker)?;
    }
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == CLEANED_EXT) {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

async fn remove_segment_files(dir: &Path, base: i64) {
    let paths: Vec<PathBuf> = ["log", "index", "timeindex", "txnindex"]
        .iter()
        .map(|e| dir.join(file_name(base, e)))
        .collect();
    blocking(move || {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn topic_id_in_kafka_base64() {
        // Kafka prints Uuid 0x00112233-4455-6677-8899-aabbccddeeff as "ABEiM0RVZneImaq7zN3u_w".
        let id = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(super::base64_url(&id), "ABEiM0RVZneImaq7zN3u_w");
        assert!(super::partition_metadata(id).contains("topic_id: ABEiM0RVZneImaq7zN3u_w\n"));
    }
}
