//! Request-head limits with Cloudflare's envelope. hyper answers a URI over 64 KiB (414) or a
//! head over its read buffer (431) itself, with an empty body, before any service sees the
//! request: clients that parse every error as `{"success": false, "errors": [...]}` then fail on
//! it. So each connection's bytes pass through [`HeadGuard`] first, which holds a request head
//! until it is complete and within [`MAX_URI_BYTES`] / [`MAX_HEAD_BYTES`]. A head over a limit
//! never reaches hyper: the guard reads and drops the rest of it (so closing does not reset the
//! connection under the client's feet), ends hyper's input, and writes the envelope when hyper
//! shuts the connection down, that is, after any response still in flight.
//!
//! Request framing: a `Content-Length` body is passed on byte for byte and the next head is
//! guarded again. After a chunked (or otherwise framed) body the guard stops looking at the
//! connection, and [`limit_head`] (a middleware with the same limits) answers instead for heads
//! that hyper still accepts.
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
pub async fn limit_head(req: Request, next: Next) -> Response {
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

/// The whole HTTP/1.1 response of `e` (the connection closes after it).
fn raw_response(e: ApiError) -> Vec<u8> {
    let status = e.status;
    let body = serde_json::json!({
        "result": null,
        "success": false,
        "errors": [{"code": e.code, "message": e.message}],
        "messages": [],
    })
    .to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
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
    /// Dropping the rest of an oversized head; `matched` bytes of "\r\n\r\n" seen so far.
    Discard { matched: usize, dropped: usize },
    /// hyper's input has ended; the reply waits for `poll_shutdown`.
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
    /// The error response to write at shutdown, from `reply_at`.
    reply: Vec<u8>,
    reply_at: usize,
    io_eof: bool,
}

impl<T> HeadGuard<T> {
    pub fn new(io: T) -> Self {
        HeadGuard {
            io,
            state: State::Head,
            input: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            reply: Vec::new(),
            reply_at: 0,
            io_eof: false,
        }
    }

    fn release(&mut self, n: usize) {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        self.out.extend(self.input.drain(..n));
    }

    fn reject(&mut self, e: ApiError) {
        self.reply = raw_response(e);
        self.state = State::Discard { matched: 0, dropped: 0 };
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
            State::Discard { mut matched, mut dropped } => {
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
                self.state = if end.is_some() || dropped > MAX_DISCARD_BYTES {
                    State::Ended
                } else {
                    State::Discard { matched, dropped }
                };
                n > 0 || self.state == State::Ended
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
                self.reject(uri_too_long());
                return true;
            }
            if self.input.len() > MAX_HEAD_BYTES {
                self.reject(head_too_large());
                return true;
            }
            return false;
        };
        let head = &self.input[..end];
        let line = find(head, b"\r\n").unwrap_or(head.len());
        if target_len(&head[..line]) > MAX_URI_BYTES {
            self.input.drain(..end);
            self.reply = raw_response(uri_too_long());
            self.state = State::Ended;
            return true;
        }
        if end > MAX_HEAD_BYTES {
            self.input.drain(..end);
            self.reply = raw_response(head_too_large());
            self.state = State::Ended;
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
                return Poll::Ready(Ok(()));
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
                if matches!(this.state, State::Discard { .. }) {
                    this.state = State::Ended;
                }
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
        let this = &mut *self;
        while this.reply_at < this.reply.len() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &this.reply[this.reply_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.reply_at += n;
        }
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What hyper would read from the guard, and what the guard would write at shutdown.
    async fn through(input: &[u8]) -> (Vec<u8>, String) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut g = HeadGuard::new(server);
        let mut seen = Vec::new();
        g.read_to_end(&mut seen).await.unwrap();
        g.shutdown().await.unwrap();
        drop(g);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        (seen, String::from_utf8(reply).unwrap())
    }

    #[tokio::test]
    async fn heads_within_limits_and_their_bodies_pass_unchanged() {
        let two = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(through(two).await, (two.to_vec(), String::new()));
        // A body that looks like an oversized head is a body.
        let mut body = b"POST /a HTTP/1.1\r\ncontent-length: 20000\r\n\r\n".to_vec();
        body.extend(vec![b'x'; 20000]);
        assert_eq!(through(&body).await.0, body);
    }

    #[tokio::test]
    async fn an_oversized_uri_or_head_reaches_no_one_and_gets_the_envelope() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_URI_BYTES + 1));
        let (seen, reply) = through(long.as_bytes()).await;
        assert!(seen.is_empty());
        assert!(reply.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{reply}");
        assert!(reply.contains("\"success\":false"), "{reply}");
        let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        let (seen, reply) = through(big.as_bytes()).await;
        assert!(seen.is_empty());
        assert!(reply.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{reply}");
        // After a good request: it passes, the bad one does not.
        let two = format!("GET /ok HTTP/1.1\r\n\r\n{long}");
        let (seen, reply) = through(two.as_bytes()).await;
        assert_eq!(seen, b"GET /ok HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 414"), "{reply}");
    }
}
