//! One log segment: a `.log` file of record batches starting at `base_offset`, with its
//! in-memory indexes. Owns the file handle, the segment's logical size (bytes of valid batches;
//! the file itself may be longer by O_DIRECT padding) and the scan that validates batches.
//! Invariant: bytes [0, size) of the file are a sequence of CRC-valid batches with increasing
//! offsets, all below `next_offset`.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{DmaFile, OpenOptions};

use super::index::{OffsetIndex, TimeIndex};
use super::txn_index::TxnIndex;
use crate::record;

pub struct IndexFiles {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl IndexFiles {
    pub async fn write(self) -> std::io::Result<()> {
        glommio::executor()
            .spawn_blocking(move || {
                for (path, bytes) in &self.files {
                    crate::metadata::write_atomically(path, bytes)?;
                }
                Ok(())
            })
            .await
    }
}

pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

pub struct Segment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Aborted transactions whose abort marker is in this segment.
    pub txn_index: TxnIndex,
    pub created_ms: i64,
    /// The file is known to hold written zeros (or data) up to here, past `size`
    /// (`shardlog.log.preallocate.bytes`): appends below it overwrite allocated, written
    /// blocks, which the file system does in place, without an i_size or extent change.
    pub zeroed_to: u64,
    /// Writing zeros ahead failed for this segment (a full disk): appends extend the file.
    pub zero_fill_failed: bool,
    bytes_since_index: u64,
    pub file: Rc<DmaFile>,
    pub dir: PathBuf,
    /// The same file opened for buffered reads, for zero-copy fetch (opened on first use).
    pub sendfile_source: Option<Arc<std::fs::File>>,
}

impl Segment {
    pub fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(file_name(self.base_offset, ext))
    }

    pub async fn create(dir: &Path, base_offset: i64, now_ms: i64) -> std::io::Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .map_err(std::io::Error::from)?;
        Ok(Segment::new(dir, base_offset, Rc::new(file), now_ms))
    }

    pub async fn open(dir: &Path, base_offset: i64, now_ms: i64) -> std::io::Result<Segment> {
        Self::open_file(
            dir,
            base_offset,
            &dir.join(file_name(base_offset, "log")),
            now_ms,
        )
        .await
    }

    /// Opens the segment starting at `base_offset` from `path`, a file that will be renamed
    /// to the segment's name (a compacted replacement).
    pub async fn open_file(
        dir: &Path,
        base_offset: i64,
        path: &Path,
        now_ms: i64,
    ) -> std::io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(std::io::Error::from)?;
        Ok(Segment::new(dir, base_offset, Rc::new(file), now_ms))
    }

    fn new(dir: &Path, base_offset: i64, file: Rc<DmaFile>, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: -1,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            txn_index: TxnIndex::default(),
            created_ms: now_ms,
            bytes_since_index: 0,
            zeroed_to: 0,
            zero_fill_failed: false,
            file,
            dir: dir.to_path_buf(),
            sendfile_source: None,
        }
    }

    /// Records a batch that now lies at `position` (its header already rewritten).
    pub fn track_batch(
        &mut self,
        position: u64,
        batch: &record::BatchView<'_>,
        index_interval: u32,
    ) {
        let relative = (batch.base_offset() - self.base_offset) as u32;
        let after_last = self.index.entries.last().is_none_or(|&(o, _)| relative > o);
        if position > 0 && after_last && self.bytes_since_index >= index_interval as u64 {
            self.index.entries.push((relative, position as u32));
            self.time_index.maybe_append(self.max_timestamp, relative);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += batch.len() as u64;
        if batch.max_timestamp() > self.max_timestamp {
            self.max_timestamp = batch.max_timestamp();
        }
        self.size = position + batch.len() as u64;
        self.next_offset = batch.next_offset();
    }

    /// Reads `len` bytes at `position` (any alignment).
    pub async fn read(&self, position: u64, len: usize) -> std::io::Result<bytes::Bytes> {
        if len == 0 {
            return Ok(bytes::Bytes::new());
        }
        let r = self
            .file
            .read_at(position, len)
            .await
            .map_err(std::io::Error::from)?;
        Ok(bytes::Bytes::copy_from_slice(&r[..]))
    }

    /// Walks the file from `from` (a batch boundary), validating and indexing every batch.
    /// Returns the end of the valid prefix; anything after it is damage or padding.
    pub async fn scan(&mut self, from: u64, index_interval: u32) -> std::io::Result<u64> {
        const CHUNK: usize = 8 << 20;
        let file_size = self.file.file_size().await.map_err(std::io::Error::from)?;
        let mut pos = from;
        self.size = from;
        'chunks: while pos < file_size {
            let want = CHUNK.min((file_size - pos) as usize);
            let buf = self.read(pos, want).await?;
            let mut at = 0usize;
            loop {
                let rest = &buf[at..];
                let Some(len) = record::framed_len(rest) else {
                    if rest.len() >= record::LOG_OVERHEAD
                        || pos + (at as u64) + (rest.len() as u64) >= file_size
                    {
                        break 'chunks;
                    }
                    break;
                };
                if len > rest.len() {
                    if pos + at as u64 + len as u64 > file_size {
                        break 'chunks; // torn: the batch runs past the end of the file
                    }
                    if at == 0 {
                        // A single batch larger than the chunk: read exactly it.
                        let whole = self.read(pos, len).await?;
                        match record::check_stored(&whole) {
                            Ok(view) => self.track_batch(pos, &view, index_interval),
                            Err(_) => break 'chunks,
                        }
                        at = len;
                    }
                    break;
                }
                match record::check_stored(&rest[..len]) {
                    Ok(view) if view.base_offset() >= self.next_offset => {
                        self.track_batch(pos + at as u64, &view, index_interval)
                    }
                    _ => break 'chunks,
                }
                at += len;
            }
            pos += at as u64;
        }
        Ok(self.size)
    }

    /// The `.index`, `.timeindex` and (when it has entries) `.txnindex` contents to persist,
    /// with a final time entry for the whole segment. Written by `IndexFiles::write`, so no
    /// borrow of the segment spans it.
    pub fn index_files(&mut self) -> IndexFiles {
        let relative_end = (self.next_offset - self.base_offset) as u32;
        self.time_index
            .maybe_append(self.max_timestamp, relative_end);
        let mut files = vec![
            (self.path("index"), self.index.encode()),
            (self.path("timeindex"), self.time_index.encode()),
        ];
        if !self.txn_index.entries.is_empty() {
            files.push((self.path("txnindex"), self.txn_index.encode()));
        }
        IndexFiles { files }
    }

    /// Loads the `.txnindex` (none means no aborted transaction); false if it is damaged.
    pub async fn load_txn_index(&mut self) -> bool {
        let path = self.path("txnindex");
        let bytes = glommio::executor()
            .spawn_blocking(move || std::fs::read(path))
            .await;
        match bytes {
            Ok(b) => match TxnIndex::decode(&b) {
                Some(i) => {
                    self.txn_index = i;
                    true
                }
                None => false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        }
    }

    /// Loads the indexes written by `persist_indexes`; false if missing or damaged.
    pub async fn load_indexes(&mut self) -> bool {
        let (ip, tp) = (self.path("index"), self.path("timeindex"));
        let (idx, time) = glommio::executor()
            .spawn_blocking(move || (std::fs::read(ip).ok(), std::fs::read(tp).ok()))
            .await;
        let (Some(idx), Some(time)) = (idx, time) else {
            return false;
        };
        match (
            OffsetIndex::decode(&idx, self.size),
            super::index::TimeIndex::decode(&time),
        ) {
            (Some(i), Some(t)) => {
                self.index = i;
                self.time_index = t;
                true
            }
            _ => false,
        }
    }
}
