//! Reading response frames from a socket without blocking, for the load threads that keep
//! several requests (or a producer and a consumer) going on one thread: whatever has arrived
//! is taken with `MSG_DONTWAIT`, and complete size-prefixed frames come out in order.

use std::os::fd::RawFd;

use bytes::{Buf, Bytes, BytesMut};

/// The bytes of frames read so far from one connection.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Reads everything the socket holds now, without waiting.
    pub fn read_available(&mut self, fd: RawFd) -> anyhow::Result<()> {
        loop {
            self.buf.reserve(256 << 10);
            let spare = self.buf.spare_capacity_mut();
            let room = spare.len();
            // SAFETY: recv writes at most `room` bytes into the spare capacity.
            let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
            if n == 0 {
                anyhow::bail!("the broker closed the connection");
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => return Ok(()),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Err(e.into()),
                }
            }
            // SAFETY: the kernel initialised the `n` bytes it wrote.
            unsafe { self.buf.set_len(self.buf.len() + n as usize) };
            if (n as usize) < room {
                return Ok(());
            }
        }
    }

    /// The next complete frame (without its length prefix), if one has arrived whole.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Bytes>> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = usize::try_from(len)
            .map_err(|_| anyhow::anyhow!("broker sent a negative frame length"))?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}
