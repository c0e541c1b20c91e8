//! One client connection: framing, bounded pipelining and in-order responses.
//!
//! The reader takes size-prefixed frames (refusing any over `socket.request.max.bytes` by
//! closing the connection), spawns a task per request and queues the task's handle; the writer
//! awaits the handles in queue order and writes each response, so responses leave in request
//! order however the handlers interleave. In-flight work per connection is bounded in requests
//! (the queue's capacity) and in bytes (a semaphore whose permits travel with each request).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use crate::protocol::fetch_frame::Part;
use crate::protocol::{self, Outcome};
use crate::shard::Shard;
use crate::storage::log::FileSlice;

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

type Pending = (glommio::task::JoinHandle<Outcome>, Option<StaticPermit>);

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let stream = SharedStream(Rc::new(RefCell::new(stream)));
    let (tx, rx) =
        local_channel::new_bounded::<Pending>(shard.config.connection_max_inflight_requests);
    let writer = glommio::spawn_local(write_responses(stream.clone(), rx, peer.clone()));
    read_requests(&shard, stream, tx, &peer).await;
    writer.await;
}

async fn read_requests(
    shard: &Rc<Shard>,
    mut stream: SharedStream,
    tx: local_channel::LocalSender<Pending>,
    peer: &str,
) {
    let max = shard.config.socket_request_max_bytes;
    let budget = shard.config.connection_max_inflight_bytes;
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
        let me = Rc::clone(shard);
        me.in_flight.set(me.in_flight.get() + 1);
        let task = glommio::spawn_local(async move {
            let out = protocol::handle(&me, body).await;
            me.in_flight.set(me.in_flight.get() - 1);
            out
        })
        .detach();
        if tx.send((task, permit)).await.is_err() {
            return;
        }
    }
}

async fn write_responses(
    mut stream: SharedStream,
    rx: local_channel::LocalReceiver<Pending>,
    peer: String,
) {
    while let Some((task, permit)) = rx.recv().await {
        let outcome = task.await;
        drop(permit);
        match outcome {
            Some(Outcome::Respond(frame)) => {
                if stream.write_all(&frame).await.is_err() {
                    break;
                }
            }
            Some(Outcome::RespondParts(parts)) => {
                if let Err(e) = write_parts(&mut stream, parts).await {
                    tracing::debug!("closing connection from {peer}: {e}");
                    break;
                }
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

/// Writes a response frame given in parts: bytes through the ring, file ranges by `sendfile`.
async fn write_parts(stream: &mut SharedStream, parts: Vec<Part>) -> std::io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(b) => stream.write_all(&b).await?,
            Part::File(f) => {
                let socket = stream.0.borrow().as_raw_fd();
                send_file(socket, f).await?;
            }
        }
    }
    Ok(())
}

/// Sends a file range to the socket with `sendfile(2)` on glommio's blocking-thread pool: the
/// kernel moves the bytes (through the page cache), and the shard's core is not held while it
/// reads the disk or waits for room in the socket buffer. The frame already announced `len`
/// bytes, so a file that turned out shorter is an error that closes the connection.
async fn send_file(socket: RawFd, slice: FileSlice) -> std::io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            let file = slice.file;
            let mut offset = slice.position as libc::off_t;
            let mut left = slice.len;
            while left > 0 {
                // SAFETY: both descriptors are open for the whole call (the socket is owned by
                // the connection, which awaits this), and `offset` is a valid out-pointer.
                let n = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, left) };
                if n > 0 {
                    left -= n as usize;
                    continue;
                }
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} ended before the range sent", slice.path.display()),
                    ));
                }
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => {}
                    std::io::ErrorKind::WouldBlock => wait_writable(socket)?,
                    _ => return Err(e),
                }
            }
            Ok(())
        })
        .await
}

/// Waits (on a blocking thread) until a non-blocking socket has room again.
fn wait_writable(socket: RawFd) -> std::io::Result<()> {
    let mut fd = libc::pollfd {
        fd: socket,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut fd, 1, 30_000) } <= 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "socket not writable for 30 s",
        ));
    }
    Ok(())
}
