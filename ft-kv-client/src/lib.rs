// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Client of the test guest's key-value service (`workload=kv`): single
//! requests ([`Connection`]) and a verifying load generator
//! ([`run_load`]) that reports throughput and latency percentiles.
//!
//! Protocol: `SET <key> <value>\n` → `OK\n`; `GET <key>\n` →
//! `VALUE <value>\n` or `NONE\n`; errors → `ERR <reason>\n`.

pub mod load;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use load::{run_load, LoadConfig, LoadError, Report};

/// A request that failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The connection could not be made within the timeout.
    #[error("cannot connect to {addr} within {timeout:?}")]
    Connect {
        /// Server address.
        addr: SocketAddr,
        /// How long connecting was retried.
        timeout: Duration,
        /// The last error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection failed (including timeouts).
    #[error("I/O on the connection to {addr}")]
    Io {
        /// Server address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection before answering.
    #[error("{addr} closed the connection before answering")]
    Closed {
        /// Server address.
        addr: SocketAddr,
    },
    /// The server answered `ERR <reason>`.
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// An answer that is not in the protocol.
    #[error("unexpected answer {answer:?} to {request}")]
    Unexpected {
        /// What was asked (command and key).
        request: String,
        /// What came back.
        answer: String,
    },
    /// A key or value the protocol cannot carry.
    #[error("{0:?} is not a valid key or value (1..=64 / 1..=512 printable bytes, no spaces)")]
    Invalid(String),
}

/// Longest key and value the service accepts.
pub const MAX_KEY: usize = 64;
/// Longest value.
pub const MAX_VALUE: usize = 512;

/// One TCP connection to the service.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl Connection {
    /// Connects to `addr`, retrying refused or unreachable attempts until
    /// `timeout` has passed (the guest may still be starting). Reads and
    /// writes then time out after `timeout` as well.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, ClientError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(10))) {
                Ok(stream) => break stream,
                Err(source) if Instant::now() >= deadline => {
                    return Err(ClientError::Connect {
                        addr,
                        timeout,
                        source,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let io = |source| ClientError::Io { addr, source };
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Connection {
            addr,
            reader: BufReader::new(stream),
            writer,
            line: String::new(),
        })
    }

    /// Sends one raw line (a `\n` is appended) and returns the answer
    /// line without its `\n`.
    pub fn request(&mut self, line: &str) -> Result<String, ClientError> {
        let addr = self.addr;
        let io = |source| ClientError::Io { addr, source };
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        self.writer.write_all(&out).map_err(io)?;
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).map_err(io)?;
        if n == 0 || !self.line.ends_with('\n') {
            return Err(ClientError::Closed { addr });
        }
        self.line.pop();
        Ok(self.line.clone())
    }

    /// `SET key value`: returns once the server acknowledged it (on disk).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        check(key, MAX_KEY)?;
        check(value, MAX_VALUE)?;
        let answer = self.request(&format!("SET {key} {value}"))?;
        match answer.as_str() {
            "OK" => Ok(()),
            _ => Err(unexpected(format!("SET {key}"), answer)),
        }
    }

    /// `GET key`: the value, or `None`.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        check(key, MAX_KEY)?;
        let answer = self.request(&format!("GET {key}"))?;
        if answer == "NONE" {
            return Ok(None);
        }
        match answer.strip_prefix("VALUE ") {
            Some(value) => Ok(Some(value.to_string())),
            None => Err(unexpected(format!("GET {key}"), answer)),
        }
    }
}

fn check(word: &str, max: usize) -> Result<(), ClientError> {
    if word.is_empty() || word.len() > max || !word.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ClientError::Invalid(word.to_string()));
    }
    Ok(())
}

fn unexpected(request: String, answer: String) -> ClientError {
    match answer.strip_prefix("ERR ") {
        Some(reason) => ClientError::Refused(reason.to_string()),
        None => ClientError::Unexpected { request, answer },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A tiny in-process server speaking the protocol, for the client's
    /// own tests (the real one is the guest).
    pub(crate) fn fake_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let table = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let table = table.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        let words: Vec<&str> = line.split(' ').collect();
                        let answer = match words.as_slice() {
                            ["SET", k, v] => {
                                table.lock().unwrap().insert(k.to_string(), v.to_string());
                                "OK".to_string()
                            }
                            ["GET", k] => match table.lock().unwrap().get(*k) {
                                Some(v) => format!("VALUE {v}"),
                                None => "NONE".to_string(),
                            },
                            _ => "ERR unknown command (expected SET or GET)".to_string(),
                        };
                        if writer.write_all(format!("{answer}\n").as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn round_trip() {
        let addr = fake_server();
        let mut c = Connection::connect(addr, Duration::from_secs(5)).unwrap();
        assert_eq!(c.get("foo").unwrap(), None);
        c.set("foo", "bar").unwrap();
        assert_eq!(c.get("foo").unwrap().as_deref(), Some("bar"));
        let err = c.request("DEL foo").unwrap();
        assert_eq!(err, "ERR unknown command (expected SET or GET)");
    }

    #[test]
    fn invalid_words_are_refused_locally() {
        let addr = fake_server();
        let mut c = Connection::connect(addr, Duration::from_secs(5)).unwrap();
        assert!(matches!(c.set("a b", "v"), Err(ClientError::Invalid(_))));
        assert!(matches!(c.set("k", ""), Err(ClientError::Invalid(_))));
        assert!(matches!(
            c.get(&"k".repeat(65)),
            Err(ClientError::Invalid(_))
        ));
        assert!(matches!(
            c.set("k", &"v".repeat(513)),
            Err(ClientError::Invalid(_))
        ));
    }

    #[test]
    fn errors_are_mapped() {
        assert!(matches!(
            unexpected("SET k".into(), "ERR disk full".into()),
            ClientError::Refused(r) if r == "disk full"
        ));
        assert!(matches!(
            unexpected("SET k".into(), "WHAT".into()),
            ClientError::Unexpected { .. }
        ));
    }

    #[test]
    fn connect_times_out_with_a_clear_error() {
        // A port nothing listens on (bound, then closed).
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = Connection::connect(addr, Duration::from_millis(200)).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot connect to 127.0.0.1:"),
            "{err}"
        );
    }
}
