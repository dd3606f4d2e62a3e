// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! HTTP answers, written byte for byte as upstream's API server (the
//! micro-http crate) writes them, because upstream's clients parse them
//! literally:
//!
//! ```text
//! HTTP/1.1 <code> \r\n                 no reason phrase: upstream's client takes
//!                                       everything after "HTTP/1.1 " as the number
//! Server: Cloud Hypervisor API\r\n
//! Connection: keep-alive\r\n           ("close" when this server closes after it)
//! Content-Type: application/json\r\n   not on 100 or 204
//! Content-Length: <n>\r\n              not on 100 or 204; 0 for an empty body
//! \r\n
//! <body>                                compact JSON; errors are a JSON array of
//!                                       messages, outermost error first
//! ```

use std::io::{self, Write};

/// The `Server` header upstream's API server sends.
pub const SERVER: &str = "Cloud Hypervisor API";

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes (JSON), possibly empty.
    pub body: Vec<u8>,
}

/// Whether answers with `status` carry neither a body nor the content
/// headers (RFC 9110: 1xx and 204 have no Content-Length).
fn bodiless(status: u16) -> bool {
    status == 204 || (100..200).contains(&status)
}

impl Response {
    /// An answer with no body (`Content-Length: 0` unless 1xx or 204).
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            body: Vec::new(),
        }
    }

    /// 200 with a compact JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Response {
            status: 200,
            body: value.to_string().into_bytes(),
        }
    }

    /// 200 with a body that is JSON text already.
    pub fn json_text(text: String) -> Self {
        Response {
            status: 200,
            body: text.into_bytes(),
        }
    }

    /// An error answer whose body is the JSON array of `messages`.
    pub fn error<I, S>(status: u16, messages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let messages: Vec<String> = messages.into_iter().map(Into::into).collect();
        Response {
            status,
            body: serde_json::Value::from(messages).to_string().into_bytes(),
        }
    }

    /// The answer's bytes; `keep_alive` says whether the connection stays
    /// open afterwards.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} \r\nServer: {SERVER}\r\nConnection: {}\r\n",
            self.status,
            if keep_alive { "keep-alive" } else { "close" },
        );
        if !bodiless(self.status) {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                self.body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !bodiless(self.status) {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// Writes the answer; `keep_alive` says whether the connection stays
    /// open afterwards.
    pub fn write_to<W: Write>(&self, out: &mut W, keep_alive: bool) -> io::Result<()> {
        out.write_all(&self.to_bytes(keep_alive))?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(response: &Response, keep_alive: bool) -> String {
        let mut out = Vec::new();
        response.write_to(&mut out, keep_alive).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn json_answer() {
        let text = written(&Response::json(&serde_json::json!({"a": 1})), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
             Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn no_content_has_no_content_headers() {
        assert_eq!(
            written(&Response::empty(204), true),
            "HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            written(&Response::empty(204), false),
            "HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: close\r\n\r\n"
        );
        // Even if a body were set, a 204 sends none.
        let mut response = Response::empty(204);
        response.body = b"x".to_vec();
        assert!(written(&response, true).ends_with("keep-alive\r\n\r\n"));
    }

    #[test]
    fn empty_answers_say_length_zero() {
        assert_eq!(
            written(&Response::empty(200), true),
            "HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
             Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            written(&Response::empty(400), true),
            "HTTP/1.1 400 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
             Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn error_body_is_a_json_array() {
        let response = Response::error(500, ["Error from API", "The VM could not boot", "x \"y\""]);
        let body: Vec<String> = serde_json::from_slice(&response.body).expect("json");
        assert_eq!(body, ["Error from API", "The VM could not boot", "x \"y\""]);
        assert_eq!(
            written(&Response::error(404, ["Not Found"]), false),
            "HTTP/1.1 404 \r\nServer: Cloud Hypervisor API\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: 13\r\n\r\n[\"Not Found\"]"
        );
    }
}
