//! The connections of `lockstep serve`: at most `[server] max_connections` held at once, and
//! each closed when its client is too slow (`header_timeout`, `idle_timeout`).
//!
//! Why here: `axum::serve` drives hyper without a timer, so hyper's own header-read timeout
//! never fires, and it holds every connection the kernel hands it. A client that sends half a
//! request and waits would hold a file descriptor for ever; a thousand of them exhaust the
//! process's file limit, and the server answers no one, `/healthz` included. [`Guarded`] is
//! the listener `axum::serve` takes instead of the bare `TcpListener`:
//!
//! - past the cap, a new connection is answered `503` as soon as it has sent its request's
//!   head, and closed; one that sends none within a second is closed unanswered. The server
//!   never runs out of descriptors, and a prompt client (a health probe) hears why;
//! - each connection it hands on is a [`Deadlines`]: a request's head (its line and headers,
//!   up to the blank line) must arrive within `header_timeout` of the connection's start, or
//!   of its first byte after an answer; a connection that waits for its next request, or does
//!   not take an answer, is closed after `idle_timeout`; a request whose head arrived is never
//!   cut, however long its handler takes;
//! - on shutdown, the connections still waiting for a request's head are closed at once, so
//!   that slow clients cannot hold up the stop.
//!
//! hyper's own `header_read_timeout` would need `hyper` and `hyper-util` (with its `server`
//! features) as direct dependencies, to drive each connection by hand; this needs neither.
//! What it does not bound: a request body sent slowly after a prompt head (its size is
//! bounded by `body_limit`, its time by nothing but the cap).

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use crate::config::Server;

/// Refused connections given time to read their `503`, at most; the file limit must leave room
/// for them beside `max_connections`.
const ANSWERING_REFUSALS: usize = 32;
/// How long a refused connection may take to hear its `503`.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The answer past the cap.
const BUSY_BODY: &str = "lockstep: too many connections; try again shortly\n";

/// How patient the server is with its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(server: &Server) -> Limits {
        Limits {
            header_timeout: server.header_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections,
        }
    }
}

/// A listener that holds at most `max_connections` and puts deadlines on each.
pub struct Guarded {
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    /// The refused connections being answered, oldest first.
    refusals: VecDeque<JoinHandle<()>>,
    /// Raised when the server stops.
    stop: watch::Receiver<bool>,
    /// When the last refusal was logged: one line per burst, not one per connection.
    logged_refusal: Option<Instant>,
}

impl Guarded {
    pub fn new(listener: TcpListener, limits: Limits, stop: watch::Receiver<bool>) -> Guarded {
        Guarded {
            listener,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            refusals: VecDeque::new(),
            stop,
            logged_refusal: None,
        }
    }

    /// Answers `503` and closes, off the accept loop: once the client has sent its request's
    /// head (an HTTP client takes no answer before its question), then reading what else it
    /// sends until it closes, since closing with unread data would reset the connection
    /// before the client reads the answer; all within a second. At most
    /// [`ANSWERING_REFUSALS`] wait so: a new one closes the oldest, most likely a slow
    /// client's, so that a prompt client (a health probe) is always answered.
    async fn refuse(&mut self, mut stream: TcpStream) {
        let now = Instant::now();
        if self
            .logged_refusal
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            self.logged_refusal = Some(now);
            tracing::warn!(
                "{} connections open, the most `server.max_connections` allows: new ones are \
                 answered 503",
                self.limits.max_connections
            );
        }
        self.refusals.retain(|r| !r.is_finished());
        if self.refusals.len() >= ANSWERING_REFUSALS
            && let Some(oldest) = self.refusals.pop_front()
        {
            // Waits until its socket is closed: the next connection may need the descriptor.
            oldest.abort();
            let _ = oldest.await;
        }
        let answering = tokio::spawn(async move {
            let answer = async {
                let mut head = HeadEnd::default();
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 || head.feed(&buf[..n]) {
                        break;
                    }
                }
                stream.write_all(busy_answer().as_bytes()).await?;
                stream.shutdown().await?;
                while stream.read(&mut buf).await? > 0 {}
                io::Result::Ok(())
            };
            let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
        });
        self.refusals.push_back(answering);
    }
}

/// The whole `503` answer, headers and body.
fn busy_answer() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nx-content-type-options: nosniff\r\n\
         connection: close\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    )
}

impl axum::serve::Listener for Guarded {
    type Io = Deadlines;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Deadlines, SocketAddr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        // Out of descriptors, most likely: wait for some to close, as hyper
                        // advises, rather than spin.
                        tracing::error!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    return (
                        Deadlines::new(stream, slot, self.limits, self.stop.clone()),
                        addr,
                    );
                }
                Err(_) => self.refuse(stream).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Where a connection is in its exchange, as far as its bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request's head is awaited or arriving: `header_timeout` runs.
    Head,
    /// The head arrived: the body, the handler and the answer take the time they take.
    Request,
    /// An answer went out; the next request may come within `idle_timeout`.
    Idle,
}

/// A connection with its deadlines; it holds one of the listener's slots until dropped.
pub struct Deadlines {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    limits: Limits,
    phase: Phase,
    head: HeadEnd,
    /// When the read side gives up, in `Head` and `Idle`.
    deadline: Pin<Box<Sleep>>,
    /// When a write that makes no progress gives up.
    stalled: Option<Pin<Box<Sleep>>>,
    stop: watch::Receiver<bool>,
}

impl Deadlines {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        limits: Limits,
        stop: watch::Receiver<bool>,
    ) -> Deadlines {
        Deadlines {
            stream,
            _slot: slot,
            limits,
            phase: Phase::Head,
            head: HeadEnd::default(),
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            stalled: None,
            stop,
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let after = match phase {
            Phase::Head => self.limits.header_timeout,
            Phase::Idle | Phase::Request => self.limits.idle_timeout,
        };
        self.deadline.as_mut().reset(Instant::now() + after);
    }

    /// Follows the request bytes read.
    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.head = HeadEnd::default();
            self.enter(Phase::Head);
        }
        if self.phase == Phase::Head && self.head.feed(bytes) {
            self.phase = Phase::Request;
        }
    }

    /// Follows the answer bytes written (`buf`, of which `n` went out).
    fn wrote(&mut self, buf: &[u8], n: usize) {
        if n == 0 {
            return;
        }
        match self.phase {
            // An interim answer (`100 Continue`) comes before the body: the request goes on.
            Phase::Request if !buf.starts_with(b"HTTP/1.1 1") => self.enter(Phase::Idle),
            Phase::Idle => self.enter(Phase::Idle),
            _ => {}
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl AsyncRead for Deadlines {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.phase == Phase::Request => Poll::Pending,
            Poll::Pending => {
                // The server's graceful shutdown polls every connection again: one that has
                // not sent a whole head by then has no request to finish.
                if this.phase == Phase::Head && *this.stop.borrow() {
                    return Poll::Ready(Err(timed_out("the server is stopping")));
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) if this.phase == Phase::Head => {
                        Poll::Ready(Err(timed_out("no request head within `header_timeout`")))
                    }
                    Poll::Ready(()) => Poll::Ready(Err(timed_out("idle past `idle_timeout`"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Deadlines {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.stalled = None;
                this.wrote(buf, n);
                if this.phase == Phase::Idle {
                    // hyper may not read again until the socket wakes it: the deadline must
                    // wake it too. Its firing is seen by the next read.
                    let _ = this.deadline.as_mut().poll(cx);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => this
                .stall(cx)
                .map(|()| Err(timed_out("the client takes no answer"))),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Deadlines {
    /// A write is blocked: ready once it has been blocked for `idle_timeout`.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.limits.idle_timeout;
        self.stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)))
            .as_mut()
            .poll(cx)
    }
}

/// Finds the blank line that ends a request's head (`\r\n\r\n`, or `\n\n` as hyper also
/// accepts), across reads.
#[derive(Debug, Default)]
struct HeadEnd {
    /// 0: not after a line's end; 1: just after `\n`; 2: after `\n\r`.
    after_newline: u8,
}

impl HeadEnd {
    /// Feeds the next bytes; true once the head is complete.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for b in bytes {
            self.after_newline = match (*b, self.after_newline) {
                (b'\n', 1 | 2) => {
                    self.after_newline = 0;
                    return true;
                }
                (b'\n', _) => 1,
                (b'\r', 1) => 2,
                _ => 0,
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_blank_line_across_reads() {
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"));
        assert!(!h.feed(b"Accept: */*\r"));
        assert!(h.feed(b"\n\r\n"));
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\rX: y\r\n"));
        assert!(h.feed(b"\n"));
        let mut h = HeadEnd::default();
        assert!(h.feed(b"GET / HTTP/1.0\nHost: x\n\n"));
        let mut h = HeadEnd::default();
        for b in b"GET / HTTP/1.1\r\nHost: x\r\n" {
            assert!(!h.feed(&[*b]));
        }
        assert!(!h.feed(b"\r"));
        assert!(h.feed(b"\n"));
    }

    #[test]
    fn the_busy_answer_is_whole() {
        let a = busy_answer();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{head}"
        );
        assert_eq!(body, BUSY_BODY);
    }
}
