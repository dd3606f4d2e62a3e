// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Client of the test guest's key-value service (`workload=kv`): single
//! requests ([`Connection`]), a verifying load generator ([`run_load`])
//! that reports throughput and latency percentiles, and the verified
//! single-connection stream of the failover tests ([`run_stream`]).
//!
//! Protocol: `SET <key> <value>\n` → `OK\n`; `GET <key>\n` →
//! `VALUE <value>\n` or `NONE\n`; errors → `ERR <reason>\n`.

pub mod load;
pub mod stream;
pub mod verify;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use load::{run_load, LoadConfig, LoadError, Report};
pub use stream::{
    run_stream, BadKey, ReplyTime, RequestKind, StreamConfig, StreamControl, StreamEnd,
    StreamError, StreamReport,
};
pub use verify::{Verification, VerifiedOn};

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

    /// Sets the read and write timeout of the connection.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let addr = self.addr;
        let io = |source| ClientError::Io { addr, source };
        self.writer.set_read_timeout(Some(timeout)).map_err(io)?;
        self.writer.set_write_timeout(Some(timeout)).map_err(io)
    }

    /// Sends one raw line (a `\n` is appended) and returns the answer
    /// line without its `\n`.
    pub fn request(&mut self, line: &str) -> Result<String, ClientError> {
        self.send(&[line])?;
        self.read_answer()
    }

    /// Sends raw lines (each followed by `\n`) in one write, without
    /// waiting for their answers (the service answers in order).
    pub fn send<S: AsRef<str>>(&mut self, lines: &[S]) -> Result<(), ClientError> {
        let addr = self.addr;
        let mut out = Vec::new();
        for line in lines {
            out.extend_from_slice(line.as_ref().as_bytes());
            out.push(b'\n');
        }
        self.writer
            .write_all(&out)
            .map_err(|source| ClientError::Io { addr, source })
    }

    /// Reads the next answer line, without its `\n`.
    pub fn read_answer(&mut self) -> Result<String, ClientError> {
        let addr = self.addr;
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .map_err(|source| ClientError::Io { addr, source })?;
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

    /// What a scripted server does with one request.
    pub(crate) enum Reply {
        /// Answers this line.
        Line(String),
        /// Closes the connection (FIN): the client sees end of stream.
        Close,
        /// Resets the connection (RST, through `SO_LINGER` 0).
        Reset,
        /// Never answers (and keeps the connection open).
        Silence,
    }

    type Table = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

    /// The protocol's answer to `line`, on `table`.
    pub(crate) fn answer(table: &Table, line: &str) -> Reply {
        let words: Vec<&str> = line.split(' ').collect();
        Reply::Line(match words.as_slice() {
            ["SET", k, v] => {
                table.lock().unwrap().insert(k.to_string(), v.to_string());
                "OK".to_string()
            }
            ["GET", k] => match table.lock().unwrap().get(*k) {
                Some(v) => format!("VALUE {v}"),
                None => "NONE".to_string(),
            },
            _ => "ERR unknown command (expected SET or GET)".to_string(),
        })
    }

    fn reset(stream: &TcpStream) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads a `linger` of the given size from a
        // valid pointer; the fd is open for the call.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    }

    /// A tiny in-process server speaking the protocol over one shared
    /// table; `script(n, line)` decides the reply to the first
    /// connection's request `n` (0-based), later connections are answered
    /// plainly.
    pub(crate) fn scripted_server(
        script: impl Fn(u64, &Table, &str) -> Reply + Send + Sync + 'static,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Table::default();
        let script = std::sync::Arc::new(script);
        std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let table = table.clone();
                let script = script.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut silent = false;
                    for (n, line) in BufReader::new(stream).lines().enumerate() {
                        let Ok(line) = line else { return };
                        if silent {
                            continue;
                        }
                        let reply = if index == 0 {
                            script(n as u64, &table, &line)
                        } else {
                            answer(&table, &line)
                        };
                        match reply {
                            Reply::Line(text) => {
                                if writer.write_all(format!("{text}\n").as_bytes()).is_err() {
                                    return;
                                }
                            }
                            Reply::Close => return,
                            Reply::Reset => return reset(&writer),
                            Reply::Silence => silent = true,
                        }
                    }
                });
            }
        });
        addr
    }

    /// A server that answers every request correctly.
    pub(crate) fn fake_server() -> SocketAddr {
        scripted_server(|_, table, line| answer(table, line))
    }

    /// A server that acknowledges every SET but forgets every `forget`-th
    /// one and stores a garbled value for every `garble`-th (1-based).
    pub(crate) fn forgetful_server(forget: u64, garble: u64) -> SocketAddr {
        let sets = std::sync::atomic::AtomicU64::new(0);
        let lying = Table::default();
        scripted_server(move |_, table, line| {
            if line.starts_with("SET ") {
                let n = sets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if n % forget == 0 {
                    return answer(&lying, line);
                }
                if n % garble == 0 {
                    let garbled = format!("{line}x");
                    return answer(table, &garbled);
                }
            }
            answer(table, line)
        })
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
