//! A client socket that holds what the server writes until it is about to
//! wait for the client: responses to a batch of messages (Bind, Execute,
//! Sync of a prepared statement) leave in one write, as PostgreSQL sends
//! them, instead of one write per message that wakes the client each time.
//!
//! Output goes out when the reader needs more input (before blocking on
//! the socket), when it exceeds [`HELD_BYTES_MAX`], and at
//! [`Corked::drain`] (the end of the connection).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Output held before it is written whatever comes next.
pub const HELD_BYTES_MAX: usize = 256 << 10;

pub struct Corked {
    inner: TcpStream,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
}

impl Corked {
    pub fn new(inner: TcpStream) -> Self {
        Corked {
            inner,
            out: Vec::with_capacity(8 << 10),
            sent: 0,
        }
    }

    /// Writes everything held; `Ready` once it is all written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes everything held and flushes (the connection ends).
    pub async fn drain(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.inner.flush().await
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The server wants more input: the client must have its answers.
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= HELD_BYTES_MAX {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Held until the reader waits for the client (see the module).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
