//! Read-ahead for the readers of one partition whose position is behind the hot tail (a
//! consumer catching up, a new consumer group reading from the start).
//!
//! Each reader is a *stream*: consecutive chunks of one segment file, read with O_DIRECT on the
//! shard's io_uring (no blocking-pool hand-off) ahead of the reader's position, so that when
//! its next Fetch arrives the bytes are in memory or on their way. A Fetch is answered from the
//! chunks without a copy (`Chain`). A request whose position continues a stream reuses it;
//! another position starts a new stream.
//!
//! Owns: the partition's streams and their chunks. Invariants: a stream's chunks are
//! contiguous in file order and each holds only bytes below what the segment had written when
//! it was read (bytes there never change); a stream is tied to its segment's file, so a
//! segment that retention deleted or the cleaner replaced is never served from a stream made
//! before (`retain_segments` drops those); chunks read *ahead* of what was asked for stay
//! within `ReadAheadSettings::partition_bytes` for the partition and `shard_bytes` (a count
//! shared by the shard's partitions) for the shard; a stream idle for `idle` is released.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;

use super::chain::{Chain, Piece, ReadSlot};

/// Reads are issued in chunks of this size, at file positions that are multiples of it.
pub const CHUNK_BYTES: u64 = 1 << 20;
/// A stream reads at least this far ahead of what was asked for (and at least as far again as
/// was asked for), within the limits, so that several chunks are in flight while the previous
/// response is on its way. Reads ahead start only once the reads the request waits for are
/// done, so they never hold up a response (of this or another partition of the same Fetch).
const AHEAD_BYTES: u64 = 4 * CHUNK_BYTES;
/// Streams kept per partition; the least recently used goes when another starts.
const MAX_STREAMS: usize = 8;
const BLOCK: u64 = 4096;

/// Limits from the broker config (`shardlog.read.ahead.*`).
#[derive(Clone, Debug)]
pub struct ReadAheadSettings {
    /// Bytes one partition may hold read ahead of its readers; 0 turns read-ahead off (a
    /// request still reads what it asks for through the same path).
    pub partition_bytes: usize,
    /// Bytes the shard's partitions together may hold; counted in `shard_held`.
    pub shard_bytes: usize,
    pub shard_held: Rc<Cell<usize>>,
    /// A stream not read from for this long is released.
    pub idle: Duration,
}

struct Chunk {
    pos: u64,
    len: usize,
    slot: Rc<ReadSlot>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.pos + self.len as u64
    }
}

struct Stream {
    segment: i64,
    file: Rc<DmaFile>,
    chunks: VecDeque<Chunk>,
    /// Where the stream's next chunk starts (its end).
    next: u64,
    last_used: Instant,
}

impl Stream {
    fn start(&self) -> u64 {
        self.chunks.front().map_or(self.next, |c| c.pos)
    }
    fn held(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }
}

pub struct ReadAhead {
    settings: ReadAheadSettings,
    streams: RefCell<Vec<Stream>>,
    /// Set when one of the partition's reads failed or came back short, cleared by a
    /// checked read that succeeds (see [`Self::reads_failed`]).
    failed_reads: Rc<Cell<bool>>,
}

impl ReadAhead {
    pub fn new(settings: ReadAheadSettings) -> ReadAhead {
        ReadAhead {
            settings,
            streams: RefCell::new(Vec::new()),
            failed_reads: Rc::new(Cell::new(false)),
        }
    }

    /// Whether a read of this partition failed since the last checked read succeeded. A
    /// response is framed before its chunks are in, so a failure found while it is sent can
    /// only close the connection; while this holds, reads are waited for before they are
    /// framed, and a failure is answered with an error code instead.
    pub fn reads_failed(&self) -> bool {
        self.failed_reads.get()
    }

    /// A checked read succeeded: responses stream from their chunks again.
    pub fn reads_recovered(&self) {
        self.failed_reads.set(false);
    }

    /// Bytes this partition holds in its streams.
    pub fn held(&self) -> usize {
        self.streams.borrow().iter().map(Stream::held).sum()
    }

    /// `len` bytes of `segment`'s `file` from `pos`, all below `written` (what the segment has
    /// written), as pieces of chunks that may still be in flight. Missing chunks are read, and
    /// further chunks are started ahead of `pos + len` within the limits.
    pub fn read(
        &self,
        segment: i64,
        file: &Rc<DmaFile>,
        pos: u64,
        len: usize,
        written: u64,
        now: Instant,
    ) -> Chain {
        let want_end = pos + len as u64;
        assert!(want_end <= written, "reads stay below what was written");
        let mut chain = Chain::default();
        for (chunk_pos, slot) in self.plan(segment, file, pos, want_end, written, now) {
            let from = pos.max(chunk_pos) - chunk_pos;
            let to = want_end.min(chunk_pos + slot.len() as u64) - chunk_pos;
            chain.push(Piece::Read {
                slot,
                from: from as usize,
                len: (to - from) as usize,
            });
        }
        chain
    }

    /// Finds or starts the stream for `pos`, drops what it no longer needs, issues the reads
    /// it lacks, and returns the chunks that cover [`pos`, `want_end`).
    fn plan(
        &self,
        segment: i64,
        file: &Rc<DmaFile>,
        pos: u64,
        want_end: u64,
        written: u64,
        now: Instant,
    ) -> Vec<(u64, Rc<ReadSlot>)> {
        let mut streams = self.streams.borrow_mut();
        // A stream whose read failed starts over (the failure reached whoever waited for it).
        streams.retain(|s| !s.chunks.iter().any(|c| c.slot.failed()));
        let found = streams.iter().position(|s| {
            s.segment == segment && Rc::ptr_eq(&s.file, file) && s.start() <= pos && pos <= s.next
        });
        let mut i = match found {
            Some(i) => i,
            None => {
                if streams.len() >= MAX_STREAMS {
                    if let Some(lru) = (0..streams.len()).min_by_key(|&i| streams[i].last_used) {
                        streams.swap_remove(lru);
                    }
                }
                streams.push(Stream {
                    segment,
                    file: Rc::clone(file),
                    chunks: VecDeque::new(),
                    next: pos - pos % BLOCK,
                    last_used: now,
                });
                streams.len() - 1
            }
        };
        // Past chunks go: the reader's next request starts at or after `pos`.
        {
            let s = &mut streams[i];
            s.last_used = now;
            while s.chunks.front().is_some_and(|c| c.end() <= pos) {
                s.chunks.pop_front();
            }
            if s.chunks.is_empty() {
                s.next = s.next.max(pos - pos % BLOCK);
            }
        }
        // What it must read now, then what it may read ahead (at least one more response of
        // this size), while the partition and the shard have room.
        let ahead_end = written.min(want_end + (want_end - pos).max(AHEAD_BYTES));
        let mut gate: Option<Rc<ReadSlot>> = None;
        loop {
            let next = streams[i].next;
            if next >= want_end.max(ahead_end) {
                break;
            }
            if next >= want_end {
                let others: usize = streams
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, s)| s.held())
                    .sum();
                let mine = streams[i].held();
                let room = self.settings.partition_bytes;
                let shard_room = self.settings.shard_bytes;
                let chunk = CHUNK_BYTES as usize;
                if mine + others + chunk > room
                    && others > 0
                    && mine + chunk <= room
                    && evict_lru_other(&mut streams, &mut i)
                {
                    continue;
                }
                let held = self.settings.shard_held.get();
                if mine + others + chunk > room || held + chunk > shard_room {
                    break;
                }
                if gate.is_none() {
                    gate = streams[i]
                        .chunks
                        .iter()
                        .rev()
                        .find(|c| c.pos < want_end)
                        .map(|c| Rc::clone(&c.slot));
                }
            }
            let end = written.min((next / CHUNK_BYTES + 1) * CHUNK_BYTES);
            let slot = self.start_read(file, next, (end - next) as usize, gate.clone());
            let s = &mut streams[i];
            s.chunks.push_back(Chunk {
                pos: next,
                len: (end - next) as usize,
                slot,
            });
            s.next = end;
        }
        streams[i]
            .chunks
            .iter()
            .filter(|c| c.end() > pos && c.pos < want_end)
            .map(|c| (c.pos, Rc::clone(&c.slot)))
            .collect()
    }

    /// Starts reading a chunk, once the read `after` (if any) is done.
    fn start_read(
        &self,
        file: &Rc<DmaFile>,
        pos: u64,
        len: usize,
        after: Option<Rc<ReadSlot>>,
    ) -> Rc<ReadSlot> {
        let slot = ReadSlot::new(len, &self.settings.shard_held, &self.failed_reads);
        let (file, filled) = (Rc::clone(file), Rc::clone(&slot));
        glommio::spawn_local(async move {
            if let Some(first) = after {
                let _ = first.wait().await;
            }
            let r = file.read_at(pos, len).await.map_err(|e| e.to_string());
            filled.fill(r);
        })
        .detach();
        slot
    }

    /// Drops the streams of segments that `keep` rejects (deleted or replaced ones).
    pub fn retain_segments(&self, keep: impl Fn(i64, &Rc<DmaFile>) -> bool) {
        self.streams
            .borrow_mut()
            .retain(|s| keep(s.segment, &s.file));
    }

    /// Releases streams unused for the idle time; returns the bytes they held.
    pub fn release_idle(&self, now: Instant) -> usize {
        let idle = self.settings.idle;
        let mut released = 0;
        self.streams.borrow_mut().retain(|s| {
            let keep = now.saturating_duration_since(s.last_used) < idle;
            if !keep {
                released += s.held();
            }
            keep
        });
        released
    }
}

/// Removes the least recently used stream other than `*i` (fixing `*i`); false if none.
fn evict_lru_other(streams: &mut Vec<Stream>, i: &mut usize) -> bool {
    let lru = (0..streams.len())
        .filter(|&j| j != *i && streams[j].held() > 0)
        .min_by_key(|&j| streams[j].last_used);
    let Some(j) = lru else { return false };
    streams.remove(j);
    if j < *i {
        *i -= 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn settings(partition_bytes: usize, held: &Rc<Cell<usize>>) -> ReadAheadSettings {
        ReadAheadSettings {
            partition_bytes,
            shard_bytes: 64 * MIB,
            shard_held: Rc::clone(held),
            idle: Duration::from_millis(100),
        }
    }

    /// Runs `f` on a glommio executor with a 12 MiB file whose byte i is `i % 251`.
    fn with_file(f: impl AsyncFnOnce(Rc<DmaFile>, u64) + 'static) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let bytes: Vec<u8> = (0..12 * MIB).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        ex.run(async move {
            let file = Rc::new(DmaFile::open(&path).await.unwrap());
            f(file, bytes.len() as u64).await;
        });
    }

    async fn bytes_of(chain: &Chain) -> Vec<u8> {
        let mut out = vec![0; chain.len];
        let n = chain.copy_prefix(&mut out).await.unwrap();
        out.truncate(n);
        out
    }

    fn expected(pos: u64, len: usize) -> Vec<u8> {
        (pos..pos + len as u64).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_sequential_reader_gets_its_bytes_and_reads_ahead_within_the_limit() {
        with_file(async |file, size| {
            let held = Rc::new(Cell::new(0));
            let ra = ReadAhead::new(settings(6 * MIB, &held));
            let now = Instant::now();
            // Unaligned, across chunk boundaries, one response after another.
            let mut pos = 12_345u64;
            for _ in 0..8 {
                let chain = ra.read(0, &file, pos, MIB + 77, size, now);
                assert_eq!(bytes_of(&chain).await, expected(pos, MIB + 77));
                assert!(ra.held() <= 6 * MIB + 2 * MIB, "held {}", ra.held());
                pos += MIB as u64 + 50; // the next request starts inside the last response
            }
            assert_eq!(ra.streams.borrow().len(), 1, "one reader, one stream");
            assert!(held.get() >= ra.held());
        });
    }

    #[test]
    fn limits_zero_reads_only_what_is_asked_and_idle_streams_are_released() {
        with_file(async |file, size| {
            let held = Rc::new(Cell::new(0));
            let ra = ReadAhead::new(settings(0, &held));
            let now = Instant::now();
            let chain = ra.read(0, &file, 0, 1000, size, now);
            assert_eq!(bytes_of(&chain).await, expected(0, 1000));
            drop(chain);
            assert_eq!(ra.held(), CHUNK_BYTES as usize, "only the chunk asked for");
            assert_eq!(ra.release_idle(now + Duration::from_millis(50)), 0);
            let released = ra.release_idle(now + Duration::from_millis(150));
            assert_eq!(released, CHUNK_BYTES as usize);
            assert_eq!(ra.held(), 0);
            assert_eq!(held.get(), 0, "the shard's count goes back down");
        });
    }

    #[test]
    fn readers_at_other_places_get_streams_of_their_own_and_replaced_files_none() {
        with_file(async |file, size| {
            let held = Rc::new(Cell::new(0));
            let ra = ReadAhead::new(settings(32 * MIB, &held));
            let now = Instant::now();
            let a = ra.read(0, &file, 0, 4096, size, now);
            let b = ra.read(0, &file, 8 * MIB as u64, 4096, size, now);
            assert_eq!(bytes_of(&a).await, expected(0, 4096));
            assert_eq!(bytes_of(&b).await, expected(8 * MIB as u64, 4096));
            assert_eq!(ra.streams.borrow().len(), 2);
            // The segment's file was replaced (compaction): its streams go.
            ra.retain_segments(|_, _| false);
            assert_eq!(ra.held(), 0);
        });
    }
}
