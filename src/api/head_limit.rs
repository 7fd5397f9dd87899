//! Request-head limits with Cloudflare's envelope. hyper answers a URI over 64 KiB (414) or a
//! head over its read buffer (431) itself, with an empty body, before any service sees the
//! request: clients that parse every error as `{"success": false, "errors": [...]}` then fail on
//! it. So each connection's bytes pass through [`HeadGuard`] first, which holds a request head
//! until it is complete and within [`MAX_URI_BYTES`] / [`MAX_HEAD_BYTES`]. A head over a limit
//! never reaches hyper: the guard reads and drops the rest of it (so closing does not reset the
//! connection under the client's feet) and hands hyper a small stand-in request instead,
//! `GET /` with [`LIMIT_HEADER`] and `connection: close`, which [`limit_head`] answers with the
//! envelope. hyper thus orders that answer after any response still in flight and closes the
//! connection after it, as for any request.
//!
//! Request framing: a `Content-Length` body is passed on byte for byte and the next head is
//! guarded again. After a chunked (or otherwise framed) body the guard stops looking at the
//! connection, and [`limit_head`] applies the same limits to heads that hyper still accepts.
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::envelope::{code, ApiError};

/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Bytes of an oversized head read and dropped before the connection is closed anyway.
const MAX_DISCARD_BYTES: usize = 4 << 20;
const READ_CHUNK: usize = 8 * 1024;
/// Marks the guard's stand-in for an oversized head; its value is the status to answer.
pub const LIMIT_HEADER: &str = "x-pcapd-head-limit";

fn stand_in(status: StatusCode) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nhost: pcapd\r\n{LIMIT_HEADER}: {}\r\nconnection: close\r\n\r\n", status.as_u16())
        .into_bytes()
}

fn uri_too_long() -> ApiError {
    ApiError::new(
        StatusCode::URI_TOO_LONG,
        code::TOO_LARGE,
        format!("URI too long: the path and query may have at most {MAX_URI_BYTES} bytes"),
    )
}

fn head_too_large() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        code::TOO_LARGE,
        format!(
            "Request header fields too large: the request line and headers may have at most {MAX_HEAD_BYTES} bytes"
        ),
    )
}

/// The same limits for requests hyper parsed without the guard looking (see the module doc).
/// Also answers the guard's stand-ins (see the module doc).
pub async fn limit_head(req: Request, next: Next) -> Response {
    match req.headers().get(LIMIT_HEADER).map(|v| v.as_bytes()) {
        Some(b"414") => return uri_too_long().into_response(),
        Some(b"431") => return head_too_large().into_response(),
        _ => {}
    }
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return uri_too_long().into_response();
    }
    let head: usize = uri + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
    if head > MAX_HEAD_BYTES {
        return head_too_large().into_response();
    }
    next.run(req).await
}

/// Accepts TCP connections wrapped in a [`HeadGuard`] (for `axum::serve`).
pub struct GuardedListener(pub TcpListener);

impl axum::serve::Listener for GuardedListener {
    type Io = HeadGuard<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((s, a)) => return (HeadGuard::new(s), a),
                Err(e) => {
                    // As axum's own listener: a full descriptor table or an aborted
                    // connection must not end the server; wait a little and go on.
                    tracing::warn!("admin API: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Passing on this many more body bytes.
    Body(u64),
    /// Not looking any more (chunked bodies, upgrades, unparseable framing: hyper decides).
    Through,
    /// Dropping the rest of an oversized head (then the stand-in for `status` goes to hyper);
    /// `matched` bytes of "\r\n\r\n" seen so far.
    Discard { status: StatusCode, matched: usize, dropped: usize },
    /// The stand-in is hyper's last request here; nothing more is read.
    Ended,
}

/// A connection whose request heads are checked before hyper reads them.
pub struct HeadGuard<T> {
    io: T,
    state: State,
    /// Bytes read from `io` and not yet classified.
    input: Vec<u8>,
    /// Bytes released to hyper, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    io_eof: bool,
}

impl<T> HeadGuard<T> {
    pub fn new(io: T) -> Self {
        HeadGuard { io, state: State::Head, input: Vec::new(), out: Vec::new(), out_at: 0, io_eof: false }
    }

    fn release(&mut self, n: usize) {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        self.out.extend(self.input.drain(..n));
    }

    fn reject(&mut self, status: StatusCode) {
        self.state = State::Discard { status, matched: 0, dropped: 0 };
    }

    /// The oversized head is gone: hyper gets the stand-in, and nothing after it.
    fn end(&mut self, status: StatusCode) {
        self.input.clear();
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        self.out.extend(stand_in(status));
        self.state = State::Ended;
    }

    /// Classifies buffered input; returns whether anything changed.
    fn step(&mut self) -> bool {
        match self.state {
            State::Through => {
                let n = self.input.len();
                self.release(n);
                n > 0
            }
            State::Body(left) => {
                let n = self.input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.release(n);
                self.state = if left == n as u64 { State::Head } else { State::Body(left - n as u64) };
                n > 0 || left == 0
            }
            State::Head => self.step_head(),
            State::Discard { status, mut matched, mut dropped } => {
                let mut end = None;
                for (i, &b) in self.input.iter().enumerate() {
                    matched = match (matched, b) {
                        (0 | 2, b'\r') => matched + 1,
                        (1 | 3, b'\n') => matched + 1,
                        (_, b'\r') => 1,
                        _ => 0,
                    };
                    if matched == 4 {
                        end = Some(i + 1);
                        break;
                    }
                }
                let n = end.unwrap_or(self.input.len());
                self.input.drain(..n);
                dropped += n;
                if end.is_some() || dropped > MAX_DISCARD_BYTES || (self.io_eof && self.input.is_empty()) {
                    self.end(status);
                    return true;
                }
                self.state = State::Discard { status, matched, dropped };
                n > 0
            }
            State::Ended => false,
        }
    }

    fn step_head(&mut self) -> bool {
        // Empty lines between requests: hyper skips them too.
        let blank = self.input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        if blank > 0 {
            self.input.drain(..blank);
            return true;
        }
        let Some(end) = find(&self.input, b"\r\n\r\n").map(|i| i + 4) else {
            // Incomplete: decide early when a limit is already passed.
            let line = find(&self.input, b"\r\n").unwrap_or(self.input.len());
            if target_len(&self.input[..line]) > MAX_URI_BYTES {
                self.reject(StatusCode::URI_TOO_LONG);
                return true;
            }
            if self.input.len() > MAX_HEAD_BYTES {
                self.reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                return true;
            }
            return false;
        };
        let head = &self.input[..end];
        let line = find(head, b"\r\n").unwrap_or(head.len());
        if target_len(&head[..line]) > MAX_URI_BYTES {
            self.end(StatusCode::URI_TOO_LONG);
            return true;
        }
        if end > MAX_HEAD_BYTES {
            self.end(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            return true;
        }
        let next = body_framing(&head[line..]).map_or(State::Through, State::Body);
        self.release(end);
        self.state = next;
        true
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of the request target of a (possibly partial) request line `METHOD SP target SP ver`.
fn target_len(line: &[u8]) -> usize {
    let Some(start) = line.iter().position(|&b| b == b' ') else { return 0 };
    let rest = &line[start + 1..];
    rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())
}

/// The body length of a request with these header lines: `Some(n)` for no body or a single
/// `Content-Length`; `None` when anything else frames it (chunked, upgrades) or it is unclear.
fn body_framing(headers: &[u8]) -> Option<u64> {
    let mut len = None;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], std::str::from_utf8(&line[colon + 1..]).ok()?.trim());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n: u64 = value.parse().ok()?;
            if len.is_some_and(|l| l != n) {
                return None;
            }
            len = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"upgrade") {
            return None;
        }
    }
    Some(len.unwrap_or(0))
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Ended {
                // Not an end of input: hyper takes that, while a request is in flight, for
                // a client gone away and drops the response. The stand-in closes the
                // connection instead.
                return Poll::Pending;
            }
            if this.step() {
                continue;
            }
            if this.io_eof {
                // An incomplete head at the end: hyper sees what there is and then the end.
                if !this.input.is_empty() {
                    let n = this.input.len();
                    this.release(n);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.io_eof = true;
            } else {
                this.input.extend_from_slice(rb.filled());
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What hyper would read from the guard (until it has nothing more to give).
    async fn through(input: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut g = HeadGuard::new(server);
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), g.read_to_end(&mut seen)).await;
        seen
    }

    #[tokio::test]
    async fn heads_within_limits_and_their_bodies_pass_unchanged() {
        let two = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(through(two).await, two.to_vec());
        // A body that looks like an oversized head is a body.
        let mut body = b"POST /a HTTP/1.1\r\ncontent-length: 20000\r\n\r\n".to_vec();
        body.extend(vec![b'x'; 20000]);
        assert_eq!(through(&body).await, body);
    }

    #[tokio::test]
    async fn an_oversized_uri_or_head_reaches_hyper_as_a_stand_in() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_URI_BYTES + 1));
        assert_eq!(through(long.as_bytes()).await, stand_in(StatusCode::URI_TOO_LONG));
        let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(through(big.as_bytes()).await, stand_in(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        // Cut short by the client: still the stand-in.
        assert_eq!(through(&long.as_bytes()[..MAX_URI_BYTES + 10]).await, stand_in(StatusCode::URI_TOO_LONG));
        // After a good request: it passes, the bad one does not, nor anything after it.
        let two = format!("GET /ok HTTP/1.1\r\n\r\n{long}GET /more HTTP/1.1\r\n\r\n");
        let mut want = b"GET /ok HTTP/1.1\r\n\r\n".to_vec();
        want.extend(stand_in(StatusCode::URI_TOO_LONG));
        assert_eq!(through(two.as_bytes()).await, want);
    }
}

#[cfg(test)]
mod served {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn after_a_good_request_an_oversized_one_gets_the_envelope() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "ok\n" }))
            .layer(axum::middleware::from_fn(limit_head));
        rt.spawn(super::super::serve(listener, app, std::future::pending()));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_URI_BYTES + 1));
        s.write_all(format!("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n{long}").as_bytes()).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.contains("HTTP/1.1 414 URI Too Long"), "{got}");
        assert!(got.contains("\"success\":false") && got.contains("URI too long"), "{got}");
    }
}
