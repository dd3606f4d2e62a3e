// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A minimal HTTP/1.1 client for the API socket, as `ch-remote` needs:
//! one request, one answer, on a stream that may be reused.

use std::io::{self, Read, Write};

use thiserror::Error;

/// Largest answer head accepted.
const MAX_HEAD_SIZE: usize = 16 << 10;
/// Largest answer body accepted.
const MAX_BODY_SIZE: usize = 16 << 20;

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no answer.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Writing or reading the socket failed.
    #[error("Error writing to or reading from the HTTP socket")]
    Socket(#[source] io::Error),
    /// The server closed the connection before a whole answer.
    #[error("The server closed the connection before answering")]
    Truncated,
    /// Not an HTTP answer.
    #[error("Malformed HTTP answer: {0}")]
    Malformed(String),
}

fn parse_head(bytes: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Malformed(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut content_length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value).unwrap_or("").trim();
            let value: usize = text
                .parse()
                .map_err(|_| ClientError::Malformed(format!("invalid Content-Length {text:?}")))?;
            if value > MAX_BODY_SIZE {
                return Err(ClientError::Malformed(format!("body of {value} bytes")));
            }
            content_length = Some(value);
        }
    }
    Ok(Some((status, length, content_length)))
}

/// A connection to the API socket. Keeps bytes received past one answer
/// for the next, so requests may be pipelined on a kept-alive stream.
#[derive(Debug)]
pub struct ApiClient<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: Read + Write> ApiClient<S> {
    /// A client on `stream` (usually a connected `UnixStream`).
    pub fn new(stream: S) -> Self {
        ApiClient {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends `method /api/v1/<endpoint>` with an optional JSON body and
    /// reads the answer. Any status is an answer; only transport
    /// failures are errors.
    pub fn request(
        &mut self,
        method: &str,
        endpoint: &str,
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, ClientError> {
        let mut request = format!(
            "{method} {}{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n",
            super::HTTP_ROOT
        )
        .into_bytes();
        if let Some(body) = body {
            request.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        request.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            request.extend_from_slice(body);
        }
        self.stream
            .write_all(&request)
            .map_err(ClientError::Socket)?;
        self.stream.flush().map_err(ClientError::Socket)?;
        self.read_response()
    }

    /// Reads one answer, skipping `100 Continue`.
    pub fn read_response(&mut self) -> Result<HttpResponse, ClientError> {
        let mut chunk = [0u8; 4096];
        loop {
            let Some((status, head, content_length)) = parse_head(&self.buffer)? else {
                if self.buffer.len() > MAX_HEAD_SIZE {
                    return Err(ClientError::Malformed("headers too large".to_string()));
                }
                self.fill(&mut chunk)?;
                continue;
            };
            if status == 100 {
                self.buffer.drain(..head);
                continue;
            }
            let no_body = status == 204 || status == 304 || (100..200).contains(&status);
            let length = match (no_body, content_length) {
                (true, _) => Some(0),
                (false, length) => length,
            };
            if let Some(length) = length {
                if self.buffer.len() >= head + length {
                    let body = self.buffer[head..head + length].to_vec();
                    self.buffer.drain(..head + length);
                    return Ok(HttpResponse { status, body });
                }
                self.fill(&mut chunk)?;
                continue;
            }
            // No length: the body runs to the end of the stream.
            let count = read_some(&mut self.stream, &mut chunk)?;
            if count == 0 {
                let body = self.buffer.split_off(head);
                self.buffer.clear();
                return Ok(HttpResponse { status, body });
            }
            self.buffer.extend_from_slice(&chunk[..count]);
            if self.buffer.len() > head + MAX_BODY_SIZE {
                return Err(ClientError::Malformed("body too large".to_string()));
            }
        }
    }

    fn fill(&mut self, chunk: &mut [u8]) -> Result<(), ClientError> {
        let count = read_some(&mut self.stream, chunk)?;
        if count == 0 {
            return Err(ClientError::Truncated);
        }
        self.buffer.extend_from_slice(&chunk[..count]);
        Ok(())
    }
}

fn read_some<S: Read>(stream: &mut S, chunk: &mut [u8]) -> Result<usize, ClientError> {
    loop {
        match stream.read(chunk) {
            Ok(count) => return Ok(count),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ClientError::Socket(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Trickle: three bytes at a time.
            let len = buf.len().min(3);
            self.input.read(&mut buf[..len])
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn duplex(answer: &[u8]) -> Duplex {
        Duplex {
            input: Cursor::new(answer.to_vec()),
            output: Vec::new(),
        }
    }

    #[test]
    fn request_bytes_and_answers() {
        let stream = duplex(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra",
        );
        let mut client = ApiClient::new(stream);
        let response = client
            .request("PUT", "vm.create", Some(b"{\"a\":1}"))
            .expect("answer");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{}");
        assert!(response.is_success());
        let sent = String::from_utf8(client.stream().output.clone()).expect("utf-8");
        assert!(sent.starts_with("PUT /api/v1/vm.create HTTP/1.1\r\n"));
        assert!(sent.contains("Content-Length: 7\r\n"));
        assert!(sent.ends_with("\r\n\r\n{\"a\":1}"));
    }

    #[test]
    fn no_content_and_errors() {
        let read_response = |bytes: &[u8]| ApiClient::new(duplex(bytes)).read_response();
        let response = read_response(b"HTTP/1.1 204 No Content\r\n\r\n").expect("ok");
        assert_eq!((response.status, response.body.len()), (204, 0));
        let response = read_response(b"HTTP/1.1 500 X\r\n\r\n[\"a\"]").expect("ok");
        assert_eq!(response.body, b"[\"a\"]");
        assert!(!response.is_success());
        // Two answers in one read: the second is kept for the next call.
        let mut client = ApiClient::new(duplex(
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        ));
        assert_eq!(client.read_response().expect("first").status, 204);
        assert_eq!(client.read_response().expect("second").body, b"x");
        assert!(matches!(
            read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}"),
            Err(ClientError::Truncated)
        ));
        assert!(matches!(read_response(b""), Err(ClientError::Truncated)));
        assert!(matches!(
            read_response(b"SSH-2.0\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
    }

    /// Upstream's server writes no reason phrase ("HTTP/1.1 200 \r\n"),
    /// ours did and other servers do ("HTTP/1.1 200 OK\r\n"), and
    /// micro-http's "too many connections" answer has not even the space
    /// ("HTTP/1.1 503\r\n"): the client reads all three alike.
    #[test]
    fn status_lines_with_and_without_a_reason_phrase() {
        let upstream: &[(&[u8], u16, &[u8])] = &[
            (
                b"HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
                  Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                200,
                b"{}",
            ),
            (
                b"HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n",
                204,
                b"",
            ),
            (
                b"HTTP/1.1 404 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
                  Content-Type: application/json\r\nContent-Length: 13\r\n\r\n[\"Not Found\"]",
                404,
                b"[\"Not Found\"]",
            ),
            (
                b"HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\n\
                  Content-Length: 40\r\n\r\n{ \"error\": \"Too many open connections\" }",
                503,
                b"{ \"error\": \"Too many open connections\" }",
            ),
        ];
        let with_reason: &[(&[u8], u16, &[u8])] = &[
            (
                b"HTTP/1.1 200 OK\r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
                  Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                200,
                b"{}",
            ),
            (
                b"HTTP/1.1 204 No Content\r\nServer: Cloud Hypervisor API\r\n\
                  Connection: keep-alive\r\nContent-Type: application/json\r\n\r\n",
                204,
                b"",
            ),
            (
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\n[\"a\"]",
                500,
                b"[\"a\"]",
            ),
        ];
        for (bytes, status, body) in upstream.iter().chain(with_reason) {
            let answer = ApiClient::new(duplex(bytes))
                .read_response()
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)));
            assert_eq!((answer.status, &answer.body[..]), (*status, *body));
        }
        // Both forms back to back on one kept-alive stream.
        let mut client = ApiClient::new(duplex(
            b"HTTP/1.1 204 \r\nConnection: keep-alive\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx\
              HTTP/1.1 100 \r\n\r\nHTTP/1.1 200 \r\nContent-Length: 1\r\n\r\ny",
        ));
        assert_eq!(client.read_response().expect("1").status, 204);
        assert_eq!(client.read_response().expect("2").body, b"x");
        assert_eq!(client.read_response().expect("3").body, b"y");
    }
}
