// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A minimal HTTP/1.1 client for etcd's JSON gateway: one `POST` per
//! connection (`Connection: close`), on a std `TcpStream`, bounded in time
//! (connect, send and the whole reply share one deadline) and size.
//! Replies with `Content-Length`, chunked or read-to-close bodies.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest reply read.
const MAX_RESPONSE: usize = 1 << 20;

/// A request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The host name does not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// host:port.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No address of the host accepted a connection.
    #[error("cannot connect to {host}")]
    Connect {
        /// host:port.
        host: String,
        /// The last attempt's error.
        #[source]
        source: io::Error,
    },
    /// The deadline passed.
    #[error("no complete reply from {host} within {ms} ms")]
    TimedOut {
        /// host:port.
        host: String,
        /// The time allowed.
        ms: u128,
    },
    /// The connection failed.
    #[error("the connection to {host} failed")]
    Io {
        /// host:port.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The reply is not HTTP, is cut short, or is too large.
    #[error("bad reply from {host}: {what}")]
    BadResponse {
        /// host:port.
        host: String,
        /// What is wrong.
        what: &'static str,
    },
}

/// A reply.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// `POST`s `body` as JSON to `http://host:port/path`.
pub fn post_json(
    host: &str,
    port: u16,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let deadline = Instant::now() + timeout;
    let ms = timeout.as_millis();
    let timed_out = || HttpError::TimedOut {
        host: authority.clone(),
        ms,
    };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            None
        } else {
            Some(d)
        }
    };
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|source| HttpError::Resolve {
            host: authority.clone(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        let Some(d) = left() else {
            return Err(timed_out());
        };
        match TcpStream::connect_timeout(&addr, d) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some(mut stream) = stream else {
        return Err(HttpError::Connect {
            host: authority,
            source: last,
        });
    };
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
        _ => HttpError::Io {
            host: authority.clone(),
            source,
        },
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.set_write_timeout(left()).map_err(&io_err)?;
    stream.write_all(&request).map_err(&io_err)?;

    let bad = |what| HttpError::BadResponse {
        host: authority.clone(),
        what,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let Some(d) = left() else {
            return Err(timed_out());
        };
        stream.set_read_timeout(Some(d)).map_err(&io_err)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(bad("reply too large"));
        }
        if let Some(response) = parse(&buf, eof).map_err(bad)? {
            return Ok(response);
        }
        if eof {
            return Err(bad("connection closed before the end of the reply"));
        }
    }
}

/// The reply in `buf`, if complete; `eof`: the server closed.
fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("not an HTTP reply"),
    };
    let status = resp.code.ok_or("no status code")?;
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| "bad Content-Length")?;
            length = Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| "bad Content-Length")?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    let rest = &buf[head_len..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if let Some(len) = length {
        if rest.len() < len {
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// A chunked body, if complete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return Ok(data.windows(2).any(|w| w == b"\r\n").then_some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err("bad chunk end");
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_length_chunked_and_close_delimited_replies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
            .expect("parse")
            .expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok", false)
                .expect("parse")
                .is_none()
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        let r = parse(chunked, false).expect("parse").expect("complete");
        assert_eq!(r.body, b"abcde");
        assert!(parse(&chunked[..chunked.len() - 2], false)
            .expect("parse")
            .is_none());
        let r = parse(b"HTTP/1.0 404 Not Found\r\n\r\nnope", true)
            .expect("parse")
            .expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false
        )
        .is_err());
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accepts (the kernel does, from the backlog) and never answers.
        let err = post_json("127.0.0.1", port, "/", b"{}", Duration::from_millis(300))
            .expect_err("must time out");
        assert!(matches!(err, HttpError::TimedOut { .. }), "{err}");
        drop(listener);
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = post_json("127.0.0.1", port, "/", b"{}", Duration::from_secs(2))
            .expect_err("nothing listens");
        assert!(matches!(err, HttpError::Connect { .. }), "{err}");
    }
}
