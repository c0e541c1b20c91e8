//! One client connection: framing, bounded pipelining and in-order responses.
//!
//! The reader takes size-prefixed frames (refusing any over `socket.request.max.bytes` by
//! closing the connection), spawns a task per request and queues the task's handle; the writer
//! awaits the handles in queue order and writes each response, so responses leave in request
//! order however the handlers interleave. Produce requests also take a turn in the
//! connection's order (`order`), so their appends reach the partitions in the order sent. In-flight work per connection is bounded in requests
//! (the queue's capacity) and in bytes (a semaphore whose permits travel with each request).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use crate::protocol::fetch_frame::Part;
use crate::protocol::{self, Outcome};
use crate::server::order::ConnectionOrder;
use crate::shard::Shard;
use crate::storage::log::FileSlice;
use crate::timing::{self, Stage};

/// A stream shared by the reader and writer tasks; glommio keeps separate read and write
/// sources per socket, and a borrow lasts only for one poll.
#[derive(Clone)]
struct SharedStream(Rc<RefCell<TcpStream>>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// A request in the connection's queue: where its handler's outcome arrives (with, for a
/// Produce request with `timing` on, when the response was ready), its share of the byte
/// budget, and for a Produce request when its frame was read.
///
/// The handler's task is detached at once and answers through a channel rather than a
/// `JoinHandle`: glommio 0.9's `JoinHandle::drop` reads the task's reference count without
/// synchronisation and frees the task when it sees zero, which can race with another shard
/// dropping the task's last waker (a handler waits on other shards) and free it twice.
struct Pending {
    outcome: oneshot::Receiver<(Outcome, Option<Instant>)>,
    permit: Option<StaticPermit>,
    produce_read: Option<Instant>,
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    set_send_timeout(&stream);
    // A client that takes nothing for this long has its connection closed, so no response
    // (and the buffers it holds) waits on it forever.
    let _ = stream.set_write_timeout(Some(SENDFILE_STALL));
    let stream = SharedStream(Rc::new(RefCell::new(stream)));
    let (tx, rx) =
        local_channel::new_bounded::<Pending>(shard.config.connection_max_inflight_requests);
    // Detached at spawn, like the handlers (see `Pending`): the writer ends by itself once the
    // reader has gone and every queued response is written.
    drop(glommio::spawn_local(write_responses(stream.clone(), rx, peer.clone())).detach());
    read_requests(&shard, stream, tx, &peer).await;
}

async fn read_requests(
    shard: &Rc<Shard>,
    mut stream: SharedStream,
    tx: local_channel::LocalSender<Pending>,
    peer: &str,
) {
    let max = shard.config.socket_request_max_bytes;
    let budget = shard.config.connection_max_inflight_bytes;
    let order = Rc::new(ConnectionOrder::default());
    let inflight_bytes = Rc::new(Semaphore::new(budget as u64));
    loop {
        let mut len = [0u8; 4];
        let stop = shard.stop_event.listen();
        if shard.stopping.get() {
            return;
        }
        let read =
            futures_lite::future::or(async { Some(stream.read_exact(&mut len).await) }, async {
                stop.await;
                None
            })
            .await;
        match read {
            Some(Ok(())) => {}
            Some(Err(_)) | None => return,
        }
        let frame_started = timing::start();
        let n = i32::from_be_bytes(len);
        if n < 0 || n as usize > max {
            tracing::warn!(
                "closing connection from {peer}: frame of {n} bytes exceeds socket.request.max.bytes ({max})"
            );
            return;
        }
        let n = n as usize;
        let permit = inflight_bytes
            .acquire_static_permit(n.min(budget) as u64)
            .await
            .ok();
        let mut body = BytesMut::zeroed(n);
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let body: Bytes = body.freeze();
        let is_produce = body.len() >= 2 && i16::from_be_bytes([body[0], body[1]]) == 0;
        let produce_read = is_produce.then(timing::start).flatten();
        if produce_read.is_some() {
            timing::record(Stage::Read, frame_started);
        }
        let turn = is_produce.then(|| order.take());
        let me = Rc::clone(shard);
        me.in_flight.set(me.in_flight.get() + 1);
        let peer = peer.to_string();
        let (done, outcome) = oneshot::channel();
        glommio::spawn_local(async move {
            let out = protocol::handle(&me, body, &peer, turn).await;
            me.in_flight.set(me.in_flight.get() - 1);
            let _ = done.send((out, produce_read.and(timing::start())));
        })
        .detach();
        let pending = Pending {
            outcome,
            permit,
            produce_read,
        };
        if tx.send(pending).await.is_err() {
            return;
        }
    }
}

async fn write_responses(
    mut stream: SharedStream,
    rx: local_channel::LocalReceiver<Pending>,
    peer: String,
) {
    while let Some(pending) = rx.recv().await {
        let outcome = pending.outcome.await.ok();
        drop(pending.permit);
        let ready = outcome.as_ref().and_then(|(_, ready)| *ready);
        let sent = || {
            timing::record(Stage::Send, ready);
            timing::record(Stage::Request, pending.produce_read);
        };
        match outcome.map(|(outcome, _)| outcome) {
            Some(Outcome::Respond(frame)) => {
                if stream.write_all(&frame).await.is_err() {
                    break;
                }
                sent();
            }
            Some(Outcome::RespondParts(parts)) => {
                if let Err(e) = write_parts(&mut stream, parts).await {
                    tracing::debug!("closing connection from {peer}: {e}");
                    break;
                }
                sent();
            }
            Some(Outcome::NoResponse) => {}
            Some(Outcome::Close(why)) => {
                tracing::warn!("closing connection from {peer}: {why}");
                break;
            }
            None => break,
        }
    }
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// Writes a response frame given in parts: bytes and buffers with `send`, file ranges by
/// `sendfile`.
async fn write_parts(stream: &mut SharedStream, parts: Vec<Part>) -> std::io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(b) => stream.write_all(&b).await?,
            // A read-ahead chunk may still be on its way from the disk: wait for it. A read
            // that failed leaves the announced frame short, so the connection closes; the
            // partition's next reads are waited for before they are framed and answer
            // KAFKA_STORAGE_ERROR if they fail too.
            Part::Buffer(p) => {
                let bytes = p.bytes().await.map_err(std::io::Error::other)?;
                stream.write_all(&bytes).await?
            }
            Part::File(f) => send_file(stream, f).await?,
        }
    }
    Ok(())
}

/// The most one blocking-pool call sends (bounds how long one step holds the pool on a cold read).
const SENDFILE_STEP: usize = 4 << 20;
/// How long one `sendfile` waits for room in the socket buffer (`SO_SNDTIMEO`).
const SENDFILE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
/// A client that takes nothing for this long has its connection closed (sendfile and writes).
const SENDFILE_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends a file range to the socket with `sendfile(2)`: the kernel moves the bytes from the
/// page cache. Each step (at most `SENDFILE_STEP`) runs on glommio's blocking pool, so a page
/// cache miss reads the disk there and not on the shard; the socket's `SO_SNDTIMEO` bounds how
/// long a step may wait for a slow reader, so no client holds the pool. When the socket has no
/// room, the shard waits on a timer (growing to 1 ms) before the next step. The frame already
/// announced `len` bytes, so a file that turns out shorter is an error that closes the
/// connection, as is a client that takes nothing for `SENDFILE_STALL`.
async fn send_file(stream: &SharedStream, slice: FileSlice) -> std::io::Result<()> {
    use std::time::{Duration, Instant};
    let mut sent = 0;
    let mut last_progress = Instant::now();
    let mut backoff = Duration::from_micros(50);
    while sent < slice.len {
        // A descriptor of its own for the pool thread: the connection's may be closed and its
        // number reused if this task is dropped while the step runs.
        let socket = stream.0.borrow().as_raw_fd();
        // SAFETY: `socket` is open (the stream is borrowed above and alive here); dup returns
        // a new descriptor that the OwnedFd closes.
        let socket = match unsafe { libc::dup(socket) } {
            -1 => return Err(std::io::Error::last_os_error()),
            fd => unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let file = Arc::clone(&slice.file);
        let position = slice.position + sent as u64;
        let want = (slice.len - sent).min(SENDFILE_STEP);
        let n = glommio::executor()
            .spawn_blocking(move || sendfile_step(&socket, &file, position, want))
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", slice.path.display())))?;
        if n > 0 {
            sent += n;
            last_progress = Instant::now();
            backoff = Duration::from_micros(50);
        } else {
            if last_progress.elapsed() > SENDFILE_STALL {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client took no data for 30 s",
                ));
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// One `sendfile` step on a blocking thread: up to `want` bytes from `position`, stopping early
/// (possibly at 0) when the socket stays full for `SO_SNDTIMEO`.
fn sendfile_step(
    socket: &OwnedFd,
    file: &std::fs::File,
    position: u64,
    want: usize,
) -> std::io::Result<usize> {
    let mut offset = position as libc::off_t;
    let mut done = 0;
    while done < want {
        // SAFETY: both descriptors are open for the call; `offset` is a valid out-pointer.
        let n = unsafe {
            libc::sendfile(
                socket.as_raw_fd(),
                file.as_raw_fd(),
                &mut offset,
                want - done,
            )
        };
        if n > 0 {
            done += n as usize;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ended before the range announced",
            ));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => break,
            _ => return Err(e),
        }
    }
    Ok(done)
}

/// Bounds how long a blocking send on this socket waits for room (glommio's own sends never
/// block, so only `sendfile` feels it).
fn set_send_timeout(stream: &TcpStream) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: SENDFILE_WAIT.as_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(
            "cannot set SO_SNDTIMEO: {}",
            std::io::Error::last_os_error()
        );
    }
}
