// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! HTTP answers, written as upstream's API server writes them: a
//! `Server: Cloud Hypervisor API` header, JSON content type, and error
//! bodies that are a JSON array of messages from the outermost error to
//! its root cause.

use std::io::{self, Write};

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes (JSON), possibly empty.
    pub body: Vec<u8>,
}

/// The reason phrase of the status codes this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

impl Response {
    /// An answer with no body.
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

    /// Writes the answer; `keep_alive` says whether the connection stays
    /// open afterwards.
    pub fn write_to<W: Write>(&self, out: &mut W, keep_alive: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: Cloud Hypervisor API\r\nConnection: {}\r\n\
             Content-Type: application/json\r\n",
            self.status,
            reason(self.status),
            if keep_alive { "keep-alive" } else { "close" },
        );
        // A 204 carries no body and, per RFC 9110, no Content-Length.
        if self.status != 204 {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if self.status != 204 {
            bytes.extend_from_slice(&self.body);
        }
        out.write_all(&bytes)?;
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
            "HTTP/1.1 200 OK\r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\
             Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn no_content_has_no_length() {
        let text = written(&Response::empty(204), false);
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn error_body_is_a_json_array() {
        let response = Response::error(500, ["Error from API", "The VM could not boot", "x \"y\""]);
        let body: Vec<String> = serde_json::from_slice(&response.body).expect("json");
        assert_eq!(body, ["Error from API", "The VM could not boot", "x \"y\""]);
        let text = written(&Response::empty(200), true);
        assert!(text.contains("Content-Length: 0\r\n"));
    }
}
