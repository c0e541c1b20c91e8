//! Records held in this shard's DMA memory, sent to a socket without a copy: pieces of hot-tail
//! write buffers and of read-ahead chunks, in order. A read-ahead chunk may still be on its way
//! from the disk when its piece is framed into a response: the connection's writer waits for
//! it (`Piece::bytes`), so a large response starts leaving while its later chunks are read.
//! The memory belongs to the shard that read or wrote it (glommio's buffers are not `Send`),
//! so a chain never leaves its shard: a result for another shard is copied into `Bytes`
//! first (`to_bytes`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use glommio::io::{DmaBuffer, ReadResult};

/// One read of a chunk of a segment file, in flight or done; its bytes count against the
/// shard's read-ahead memory (`held`) until the last reference goes. A read that fails, or
/// turns out shorter than the bytes a piece needs, sets `failed_reads` (shared by the
/// partition's slots), so that the partition's next reads are checked before they are framed.
pub struct ReadSlot {
    result: RefCell<Option<Result<ReadResult, String>>>,
    done: Event,
    len: usize,
    held: Rc<Cell<usize>>,
    failed_reads: Rc<Cell<bool>>,
}

impl ReadSlot {
    /// A slot for a read of `len` bytes, counted in `held`; a failure sets `failed_reads`.
    pub fn new(len: usize, held: &Rc<Cell<usize>>, failed_reads: &Rc<Cell<bool>>) -> Rc<ReadSlot> {
        held.set(held.get() + len);
        Rc::new(ReadSlot {
            result: RefCell::new(None),
            done: Event::new(),
            len,
            held: Rc::clone(held),
            failed_reads: Rc::clone(failed_reads),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the read completed with an error.
    pub fn failed(&self) -> bool {
        matches!(self.result.borrow().as_ref(), Some(Err(_)))
    }

    /// Records the read's outcome and wakes whoever waits for it.
    pub fn fill(&self, result: Result<ReadResult, String>) {
        if result.is_err() {
            self.failed_reads.set(true);
        }
        *self.result.borrow_mut() = Some(result);
        self.done.notify(usize::MAX);
    }

    /// The read's bytes (`len` of them), once it completed.
    pub async fn wait(&self) -> Result<ReadResult, String> {
        loop {
            if let Some(r) = self.result.borrow().as_ref() {
                return r.clone();
            }
            let listener = self.done.listen();
            if let Some(r) = self.result.borrow().as_ref() {
                return r.clone();
            }
            listener.await;
        }
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        self.held.set(self.held.get().saturating_sub(self.len));
    }
}

/// One contiguous run of bytes.
#[derive(Clone)]
pub enum Piece {
    /// `buf[start..end]` of a written buffer of the hot tail.
    Written {
        buf: Rc<DmaBuffer>,
        start: usize,
        end: usize,
    },
    /// `len` bytes from `from` of a chunk read (or being read).
    Read {
        slot: Rc<ReadSlot>,
        from: usize,
        len: usize,
    },
}

/// A piece's bytes, ready.
pub enum PieceBytes {
    Written(Rc<DmaBuffer>, usize, usize),
    Read(ReadResult),
}

impl std::ops::Deref for PieceBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PieceBytes::Written(buf, start, end) => &buf.as_bytes()[*start..*end],
            PieceBytes::Read(r) => r,
        }
    }
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Written { start, end, .. } => end - start,
            Piece::Read { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, waiting for a read still in flight; `Err` says why a read failed.
    pub async fn bytes(&self) -> Result<PieceBytes, String> {
        match self {
            Piece::Written { buf, start, end } => {
                Ok(PieceBytes::Written(Rc::clone(buf), *start, *end))
            }
            Piece::Read { slot, from, len } => {
                let data = slot.wait().await?;
                if data.len() < from + len {
                    let e = format!(
                        "a read returned {} bytes where {} were written",
                        data.len(),
                        from + len
                    );
                    // A failed read from now on: its stream starts over at the next read.
                    slot.fill(Err(e.clone()));
                    return Err(e);
                }
                Ok(PieceBytes::Read(
                    ReadResult::slice(&data, *from, *len).unwrap_or_default(),
                ))
            }
        }
    }

    /// The first `n` bytes of the piece (`n` at most its length).
    fn prefix(&self, n: usize) -> Piece {
        match self {
            Piece::Written { buf, start, .. } => Piece::Written {
                buf: Rc::clone(buf),
                start: *start,
                end: start + n,
            },
            Piece::Read { slot, from, .. } => Piece::Read {
                slot: Rc::clone(slot),
                from: *from,
                len: n,
            },
        }
    }
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Piece({} bytes)", self.len())
    }
}

/// Pieces in order: `len` bytes that start at a batch boundary. `first_batch_len` is the length
/// of that first batch: a chain cut shorter holds no whole batch.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub pieces: Vec<Piece>,
    pub len: usize,
    pub first_batch_len: usize,
}

impl Chain {
    pub fn push(&mut self, piece: Piece) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    /// Keeps the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        let mut kept = 0;
        let mut pieces = Vec::new();
        for p in self.pieces.drain(..) {
            if kept == n {
                break;
            }
            let take = p.len().min(n - kept);
            pieces.push(if take == p.len() { p } else { p.prefix(take) });
            kept += take;
        }
        self.pieces = pieces;
        self.len = n;
    }

    /// The bytes of a chain of written buffers only (the hot tail), copied.
    pub fn copy(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len);
        for p in &self.pieces {
            if let Piece::Written { buf, start, end } = p {
                out.extend_from_slice(&buf.as_bytes()[*start..*end]);
            }
        }
        out.freeze()
    }

    /// Waits for every read of the chain; `Err` says why one failed (or came back short).
    pub async fn ready(&self) -> Result<(), String> {
        for p in &self.pieces {
            p.bytes().await?;
        }
        Ok(())
    }

    /// The bytes, copied (for a result that goes to another shard), once every read is done.
    pub async fn to_bytes(&self) -> Result<Bytes, String> {
        let mut out = BytesMut::with_capacity(self.len);
        for p in &self.pieces {
            out.extend_from_slice(&p.bytes().await?);
        }
        Ok(out.freeze())
    }

    /// Copies up to `out.len()` bytes from the start into `out`, waiting for reads; returns
    /// how many.
    pub async fn copy_prefix(&self, out: &mut [u8]) -> Result<usize, String> {
        let mut done = 0;
        for p in &self.pieces {
            if done == out.len() {
                break;
            }
            let b = p.bytes().await?;
            let n = b.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&b[..n]);
            done += n;
        }
        Ok(done)
    }
}
