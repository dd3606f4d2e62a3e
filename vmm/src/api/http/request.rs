// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Reading HTTP/1.x requests off a connection, with limits: header size,
//! body size (`Content-Length` only) and time to receive one request.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::response::Response;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_SIZE: usize = 16 << 10;
/// Largest request body accepted.
pub const MAX_BODY_SIZE: usize = 1 << 20;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 32;

/// Timeouts of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long a kept-alive connection may sit idle between requests.
    pub idle: Duration,
    /// How long a client may take to send one request, from its first byte.
    pub request: Duration,
}

/// One parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, without any query string.
    pub path: String,
    /// The body (empty when there is none).
    pub body: Vec<u8>,
    /// Whether the client wants the connection kept open afterwards.
    pub keep_alive: bool,
}

/// Why no request could be read. Each maps to an answer (or to silence,
/// when the connection is gone) and the connection is then closed.
#[derive(Debug, Error)]
pub enum RequestError {
    /// Not HTTP/1.x, or a malformed head.
    #[error("Malformed HTTP request: {0}")]
    Malformed(String),
    /// The head is larger than [`MAX_HEAD_SIZE`].
    #[error("Request headers are larger than {MAX_HEAD_SIZE} bytes")]
    HeadTooLarge,
    /// The body is larger than [`MAX_BODY_SIZE`].
    #[error("Request body of {0} bytes is larger than the limit of {MAX_BODY_SIZE} bytes")]
    BodyTooLarge(u64),
    /// `Transfer-Encoding` (chunked bodies) is not supported.
    #[error("Transfer-Encoding is not supported: send the body with a Content-Length")]
    TransferEncoding,
    /// The client took too long to send its request.
    #[error("Timed out waiting for the request")]
    Timeout,
    /// The connection closed in the middle of a request.
    #[error("Connection closed in the middle of a request")]
    Truncated,
    /// The connection failed.
    #[error("Connection error")]
    Io(#[source] io::Error),
}

/// The read side of one connection: a stream and the bytes received but
/// not consumed yet (pipelined requests).
#[derive(Debug)]
pub struct RequestReader<S> {
    stream: S,
    buffer: Vec<u8>,
    timeouts: Timeouts,
}

/// What a stream must offer: reads and writes with a settable read timeout.
pub trait TimedStream: Read + Write {
    /// Sets the timeout of the next reads.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl TimedStream for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

struct Head {
    method: String,
    path: String,
    keep_alive: bool,
    content_length: usize,
    expect_continue: bool,
    length: usize,
}

fn parse_head(bytes: &[u8]) -> Result<Option<Head>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(RequestError::Malformed(e.to_string())),
    };
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default();
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    let minor = request.version.unwrap_or(1);
    let mut keep_alive = minor >= 1;
    let mut content_length = None;
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| RequestError::Malformed(format!("header {} is not UTF-8", header.name)))?
            .trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let length: u64 = value.parse().map_err(|_| {
                RequestError::Malformed(format!("invalid Content-Length {value:?}"))
            })?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(RequestError::Malformed(
                    "conflicting Content-Length headers".to_string(),
                ));
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::TransferEncoding);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if header.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY_SIZE as u64 {
        return Err(RequestError::BodyTooLarge(content_length));
    }
    Ok(Some(Head {
        method,
        path,
        keep_alive,
        // Fits: at most MAX_BODY_SIZE.
        content_length: usize::try_from(content_length).unwrap_or(MAX_BODY_SIZE),
        expect_continue,
        length,
    }))
}

impl<S: TimedStream> RequestReader<S> {
    /// Reads requests from `stream`.
    pub fn new(stream: S, timeouts: Timeouts) -> Self {
        RequestReader {
            stream,
            buffer: Vec::new(),
            timeouts,
        }
    }

    /// The stream, to write answers on.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Reads more bytes; `Ok(false)` on end of stream.
    fn fill(&mut self, started: Option<Instant>) -> Result<bool, RequestError> {
        let timeout = match started {
            None => self.timeouts.idle,
            Some(start) => self
                .timeouts
                .request
                .checked_sub(start.elapsed())
                .filter(|left| !left.is_zero())
                .ok_or(RequestError::Timeout)?,
        };
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(RequestError::Io)?;
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(count) => {
                    self.buffer.extend_from_slice(&chunk[..count]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(RequestError::Timeout)
                }
                Err(e) => return Err(RequestError::Io(e)),
            }
        }
    }

    /// The next request, or `None` when the client closed the connection
    /// (or left it idle past the idle timeout) between requests.
    pub fn next_request(&mut self) -> Result<Option<Request>, RequestError> {
        let mut started = (!self.buffer.is_empty()).then(Instant::now);
        let head = loop {
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
            if self.buffer.len() > MAX_HEAD_SIZE {
                return Err(RequestError::HeadTooLarge);
            }
            match self.fill(started) {
                Ok(true) => {
                    started.get_or_insert_with(Instant::now);
                }
                Ok(false) if self.buffer.is_empty() => return Ok(None),
                Ok(false) => return Err(RequestError::Truncated),
                Err(RequestError::Timeout) if started.is_none() => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        if head.length > MAX_HEAD_SIZE {
            return Err(RequestError::HeadTooLarge);
        }
        let start = started.unwrap_or_else(Instant::now);
        let total = head.length + head.content_length;
        if head.expect_continue && self.buffer.len() < total {
            self.stream
                .write_all(&Response::empty(100).to_bytes(true))
                .map_err(RequestError::Io)?;
        }
        while self.buffer.len() < total {
            if !self.fill(Some(start))? {
                return Err(RequestError::Truncated);
            }
        }
        let body = self.buffer[head.length..total].to_vec();
        self.buffer.drain(..total);
        Ok(Some(Request {
            method: head.method,
            path: head.path,
            body,
            keep_alive: head.keep_alive,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A scripted stream: reads come from `input` in `chunk`-sized pieces.
    struct Script {
        input: Cursor<Vec<u8>>,
        chunk: usize,
        output: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let len = buf.len().min(self.chunk);
            let count = self.input.read(&mut buf[..len])?;
            if count == 0 && self.chunk == usize::MAX {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            Ok(count)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl TimedStream for Script {
        fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    fn reader(input: &[u8], chunk: usize) -> RequestReader<Script> {
        RequestReader::new(
            Script {
                input: Cursor::new(input.to_vec()),
                chunk,
                output: Vec::new(),
            },
            Timeouts {
                idle: Duration::from_secs(1),
                request: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn pipelined_requests_byte_by_byte() {
        let input = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n\
                      PUT /api/v1/vm.create?x=1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}{}\
                      PUT /api/v1/vm.boot HTTP/1.0\r\n\r\n";
        for chunk in [1, 7, 4096] {
            let mut reader = reader(input, chunk);
            let first = reader.next_request().expect("ok").expect("request");
            assert_eq!(first.method, "GET");
            assert_eq!(first.path, "/api/v1/vmm.ping");
            assert!(first.body.is_empty());
            assert!(first.keep_alive);
            let second = reader.next_request().expect("ok").expect("request");
            assert_eq!(second.path, "/api/v1/vm.create");
            assert_eq!(second.body, b"{}{}");
            let third = reader.next_request().expect("ok").expect("request");
            assert!(!third.keep_alive, "HTTP/1.0 closes");
            assert!(reader.next_request().expect("ok").is_none());
        }
    }

    #[test]
    fn connection_close_and_expect_continue() {
        let mut reader = reader(
            b"PUT /a HTTP/1.1\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
            10,
        );
        let request = reader.next_request().expect("ok").expect("request");
        assert!(!request.keep_alive);
        assert_eq!(request.body, b"ab");
        assert_eq!(
            reader.stream().output,
            b"HTTP/1.1 100 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn errors() {
        type Check = fn(&RequestError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"garbage\r\n\r\n", |e| {
                matches!(e, RequestError::Malformed(_))
            }),
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", |e| {
                matches!(e, RequestError::Malformed(_))
            }),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                |e| matches!(e, RequestError::Malformed(_)),
            ),
            (b"PUT / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", |e| {
                matches!(e, RequestError::BodyTooLarge(1_048_577))
            }),
            (
                b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                |e| matches!(e, RequestError::TransferEncoding),
            ),
            (b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", |e| {
                matches!(e, RequestError::Truncated)
            }),
            (b"GET / HTTP/1.1\r\nHost", |e| {
                matches!(e, RequestError::Truncated)
            }),
        ];
        for (input, check) in cases {
            let error = reader(input, 5).next_request().expect_err("error");
            assert!(
                check(&error),
                "{error:?} for {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_SIZE + 100, b'a');
        assert!(matches!(
            reader(&huge, 4096).next_request(),
            Err(RequestError::HeadTooLarge)
        ));
    }

    #[test]
    fn timeouts() {
        // Idle between requests: a clean end.
        assert!(reader(b"", usize::MAX)
            .next_request()
            .expect("ok")
            .is_none());
        // In the middle of a request: an error.
        assert!(matches!(
            reader(b"GET / HT", usize::MAX).next_request(),
            Err(RequestError::Timeout)
        ));
    }
}
