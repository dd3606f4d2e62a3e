// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The verified stream the failover tests run: one TCP connection, SETs of
//! unique keys in sequence (optionally a GET of an earlier key every N
//! SETs), each acknowledged SET remembered; never a reconnection. It
//! measures per-request latencies and the largest gap between two
//! consecutive replies (what a client sees of a failover), and tells how
//! the connection ended: completed, reset, end of stream or timeout, which
//! are different things for a failover. A verification pass then reads
//! every acknowledged SET back ([`crate::verify`]).

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::load::percentile;
use super::verify::{verify, Verification};
use super::{ClientError, Connection, MAX_KEY, MAX_VALUE};

/// Longest key prefix: the key is `<prefix>-<n>` with up to 20 digits.
pub const MAX_PREFIX: usize = MAX_KEY - 21;

/// How many bad keys a report lists by name (all are counted).
const LISTED_BAD_KEYS: usize = 10;

/// What to stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The service.
    pub addr: SocketAddr,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ... or after this many SETs (whichever comes first).
    pub count: Option<u64>,
    /// A GET of an earlier acknowledged key after every `get_every` SETs
    /// (0: SETs only).
    pub get_every: u64,
    /// Value length in bytes (longer when the sequence number needs it).
    pub value_size: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a reply may take before the stream ends with
    /// [`StreamEnd::Timeout`]: longer than any failover you test.
    pub reply_timeout: Duration,
    /// Key prefix; keys are `<prefix>-<n>`.
    pub prefix: String,
    /// Read every acknowledged SET back after the stream.
    pub verify: bool,
    /// Stops the stream early and shows its progress to another thread.
    pub control: Option<Arc<StreamControl>>,
}

impl StreamConfig {
    /// Defaults: 2 s, SETs only, 16-byte values, 10 s to connect, 30 s per
    /// reply, verification on, a prefix unique to this process and moment.
    pub fn new(addr: SocketAddr) -> StreamConfig {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        StreamConfig {
            addr,
            duration: Some(Duration::from_secs(2)),
            count: None,
            get_every: 0,
            value_size: 16,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            prefix: format!("s{:x}{:x}", std::process::id(), nanos),
            verify: true,
            control: None,
        }
    }
}

/// Shared between a running stream and the thread that watches it.
#[derive(Debug, Default)]
pub struct StreamControl {
    stop: AtomicBool,
    acked: AtomicU64,
}

impl StreamControl {
    /// Asks the stream to finish after the request in flight.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// SETs acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A stream that could not start.
#[derive(Debug, Error)]
pub enum StreamError {
    /// A parameter out of range.
    #[error("bad stream parameters: {0}")]
    Config(String),
    /// The first connection could not be made.
    #[error("cannot start the stream")]
    Connect(#[source] ClientError),
}

/// How a connection (the stream's, or the verification's) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The duration or count was reached, or the stream was stopped.
    Completed,
    /// The connection was reset (RST: `ECONNRESET`, `ECONNABORTED`,
    /// `EPIPE`).
    Reset,
    /// The server closed the connection (end of stream).
    Eof,
    /// No reply within the reply timeout.
    Timeout,
    /// The server answered `ERR <reason>`.
    Refused(String),
    /// An answer that is not in the protocol.
    Unexpected(String),
    /// Another I/O error.
    Error(String),
}

impl StreamEnd {
    /// Classifies a failed request.
    pub fn of(error: &ClientError) -> StreamEnd {
        match error {
            ClientError::Closed { .. } => StreamEnd::Eof,
            ClientError::Io { source, .. } => match source.kind() {
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => StreamEnd::Reset,
                ErrorKind::WouldBlock | ErrorKind::TimedOut => StreamEnd::Timeout,
                _ => StreamEnd::Error(source.to_string()),
            },
            ClientError::Refused(reason) => StreamEnd::Refused(reason.clone()),
            ClientError::Unexpected { .. } => StreamEnd::Unexpected(error.to_string()),
            ClientError::Connect { .. } | ClientError::Invalid(_) => {
                StreamEnd::Error(error.to_string())
            }
        }
    }
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Completed => f.write_str("completed"),
            StreamEnd::Reset => f.write_str("reset"),
            StreamEnd::Eof => f.write_str("eof"),
            StreamEnd::Timeout => f.write_str("timeout"),
            StreamEnd::Refused(reason) => write!(f, "refused({reason})"),
            StreamEnd::Unexpected(what) => write!(f, "unexpected({what})"),
            StreamEnd::Error(what) => write!(f, "error({what})"),
        }
    }
}

/// A key whose read-back (in the stream or in verification) was not its
/// acknowledged value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    /// The key.
    pub key: String,
    /// The acknowledged value.
    pub expected: String,
    /// What came back (`None`: `NONE`, the SET was lost).
    pub got: Option<String>,
}

/// What a stream measured.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// SETs acknowledged (`OK`).
    pub acked: u64,
    /// GETs answered during the stream.
    pub gets: u64,
    /// Acknowledged keys that read back as `NONE`.
    pub lost: u64,
    /// Acknowledged keys that read back with another value.
    pub wrong: u64,
    /// The first [`LISTED_BAD_KEYS`] lost or wrong keys.
    pub bad_keys: Vec<BadKey>,
    /// How the stream's connection ended.
    pub end: StreamEnd,
    /// When it ended, from the first request.
    pub ended_at: Duration,
    /// When the last reply arrived, from the first request.
    pub last_reply_at: Duration,
    /// The largest time between two consecutive replies (the first one
    /// counted from the first request).
    pub max_gap: Duration,
    /// When that gap began, from the first request.
    pub max_gap_at: Duration,
    /// Index of the request (0-based, SETs and GETs together) whose reply
    /// ended that gap.
    pub max_gap_request: u64,
    /// Median request latency.
    pub p50: Duration,
    /// 99th-percentile request latency.
    pub p99: Duration,
    /// The read-back, when asked for.
    pub verification: Option<Verification>,
    /// Every reply in order: when it arrived and how long it took (for
    /// plots of a failover).
    pub timeline: Vec<ReplyTime>,
}

/// Which request a reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A SET (acknowledged).
    Set,
    /// A GET.
    Get,
}

/// One reply of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTime {
    /// When it arrived, from the first request.
    pub at: Duration,
    /// Its request's latency.
    pub latency: Duration,
    /// What it answered.
    pub kind: RequestKind,
}

impl StreamReport {
    /// The timeline as CSV: `at_s,latency_ms,request` and one line per
    /// reply.
    pub fn timeline_csv(&self) -> String {
        let mut csv = String::from("at_s,latency_ms,request\n");
        for r in &self.timeline {
            let kind = match r.kind {
                RequestKind::Set => "set",
                RequestKind::Get => "get",
            };
            csv.push_str(&format!(
                "{:.6},{:.3},{kind}\n",
                r.at.as_secs_f64(),
                ms(r.latency)
            ));
        }
        csv
    }
}

impl StreamReport {
    /// Whether the stream's connection was reset.
    pub fn reset(&self) -> bool {
        self.end == StreamEnd::Reset
    }

    /// Nothing lost, nothing wrong, the stream completed on its one
    /// connection, and the verification (when asked for) read every
    /// acknowledged key back.
    pub fn ok(&self) -> bool {
        self.end == StreamEnd::Completed
            && self.lost == 0
            && self.wrong == 0
            && self
                .verification
                .as_ref()
                .is_none_or(|v| v.end == StreamEnd::Completed && v.checked == self.acked)
    }

    fn record_bad(&mut self, bad: BadKey) {
        if bad.got.is_none() {
            self.lost += 1;
        } else {
            self.wrong += 1;
        }
        if self.bad_keys.len() < LISTED_BAD_KEYS {
            self.bad_keys.push(bad);
        }
    }
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream: acked={} gets={} lost={} wrong={} reset={} end={} seconds={:.3} last_reply_at={:.3} s max_gap={:.3} ms max_gap_at={:.3} s p50={:.3} ms p99={:.3} ms",
            self.acked,
            self.gets,
            self.lost,
            self.wrong,
            self.reset(),
            self.end,
            self.ended_at.as_secs_f64(),
            self.last_reply_at.as_secs_f64(),
            ms(self.max_gap),
            self.max_gap_at.as_secs_f64(),
            ms(self.p50),
            ms(self.p99),
        )?;
        match &self.verification {
            Some(v) => write!(
                f,
                " verified={} on={} verify_end={}",
                v.checked, v.on, v.end
            ),
            None => write!(f, " verified=no"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// SplitMix64: padding for values and the choice of GETs.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn check_config(config: &StreamConfig) -> Result<(), StreamError> {
    if config.duration.is_none() && config.count.is_none() {
        return Err(StreamError::Config("give a duration or a count".into()));
    }
    if config.value_size == 0 || config.value_size > MAX_VALUE {
        return Err(StreamError::Config(format!(
            "value size must be 1..={MAX_VALUE}"
        )));
    }
    if config.prefix.is_empty()
        || config.prefix.len() > MAX_PREFIX
        || !config.prefix.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(StreamError::Config(format!(
            "the prefix must be 1..={MAX_PREFIX} printable bytes without spaces"
        )));
    }
    if config.reply_timeout.is_zero() || config.connect_timeout.is_zero() {
        return Err(StreamError::Config("timeouts must not be zero".into()));
    }
    Ok(())
}

/// The stream's own state while it runs.
struct Run<'a> {
    config: &'a StreamConfig,
    start: Instant,
    last_reply: Instant,
    /// Acknowledged (key, value) pairs in order.
    acked: Vec<(String, String)>,
    report: StreamReport,
    requests: u64,
}

impl Run<'_> {
    /// Books a reply that arrived now for a request sent at `sent`.
    fn replied(&mut self, sent: Instant, kind: RequestKind) {
        let now = Instant::now();
        self.report.timeline.push(ReplyTime {
            at: now - self.start,
            latency: now - sent,
            kind,
        });
        let gap = now - self.last_reply;
        if gap > self.report.max_gap {
            self.report.max_gap = gap;
            self.report.max_gap_at = self.last_reply - self.start;
            self.report.max_gap_request = self.requests;
        }
        self.last_reply = now;
        self.report.last_reply_at = now - self.start;
        self.requests += 1;
    }

    fn done(&self) -> bool {
        self.config.count.is_some_and(|c| self.report.acked >= c)
            || self
                .config
                .duration
                .is_some_and(|d| self.start.elapsed() >= d)
            || self.config.control.as_ref().is_some_and(|c| c.stopped())
    }

    fn value(&self, n: u64, rng: &mut u64) -> String {
        let mut value = format!("v{n}-");
        while value.len() < self.config.value_size {
            value.push(char::from(b'a' + (next(rng) % 26) as u8));
        }
        value
    }

    /// Runs requests until done or the connection fails.
    fn requests(&mut self, c: &mut Connection) -> StreamEnd {
        let mut rng = self.config.prefix.bytes().fold(0x5eed_u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        let mut n = 0u64;
        loop {
            if self.done() {
                return StreamEnd::Completed;
            }
            let key = format!("{}-{n}", self.config.prefix);
            let value = self.value(n, &mut rng);
            n += 1;
            let sent = Instant::now();
            if let Err(e) = c.set(&key, &value) {
                return StreamEnd::of(&e);
            }
            self.replied(sent, RequestKind::Set);
            self.acked.push((key, value));
            self.report.acked += 1;
            if let Some(control) = &self.config.control {
                control.acked.fetch_add(1, Ordering::SeqCst);
            }
            if self.config.get_every > 0 && self.report.acked % self.config.get_every == 0 {
                let pick = (next(&mut rng) % self.acked.len() as u64) as usize;
                let (key, expected) = self.acked[pick].clone();
                let sent = Instant::now();
                let got = match c.get(&key) {
                    Ok(got) => got,
                    Err(e) => return StreamEnd::of(&e),
                };
                self.replied(sent, RequestKind::Get);
                self.report.gets += 1;
                if got.as_deref() != Some(expected.as_str()) {
                    self.report.record_bad(BadKey { key, expected, got });
                }
            }
        }
    }
}

/// Runs the stream on one connection, then (when asked) the verification.
/// Only a bad configuration or a first connection that cannot be made is
/// an error; how the connection ended afterwards is in the report.
pub fn run_stream(config: &StreamConfig) -> Result<StreamReport, StreamError> {
    check_config(config)?;
    let mut c =
        Connection::connect(config.addr, config.connect_timeout).map_err(StreamError::Connect)?;
    c.set_timeout(config.reply_timeout)
        .map_err(StreamError::Connect)?;
    let start = Instant::now();
    let mut run = Run {
        config,
        start,
        last_reply: start,
        acked: Vec::new(),
        report: StreamReport {
            acked: 0,
            gets: 0,
            lost: 0,
            wrong: 0,
            bad_keys: Vec::new(),
            end: StreamEnd::Completed,
            ended_at: Duration::ZERO,
            last_reply_at: Duration::ZERO,
            max_gap: Duration::ZERO,
            max_gap_at: Duration::ZERO,
            max_gap_request: 0,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            verification: None,
            timeline: Vec::new(),
        },
        requests: 0,
    };
    run.report.end = run.requests(&mut c);
    run.report.ended_at = start.elapsed();
    let mut latencies: Vec<Duration> = run.report.timeline.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    run.report.p50 = percentile(&latencies, 50);
    run.report.p99 = percentile(&latencies, 99);
    let mut report = run.report;
    if config.verify {
        // The stream's own connection when it is still good; a new one
        // otherwise, so that a reset stream still learns what was lost.
        let same = report.end == StreamEnd::Completed;
        let (verification, bad) = verify(config, same.then_some(c), &run.acked);
        for b in bad {
            report.record_bad(b);
        }
        report.verification = Some(verification);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{answer, fake_server, forgetful_server, scripted_server, Reply};

    fn config(addr: SocketAddr) -> StreamConfig {
        let mut config = StreamConfig::new(addr);
        config.reply_timeout = Duration::from_secs(5);
        config.connect_timeout = Duration::from_secs(5);
        config
    }

    #[test]
    fn a_stream_against_a_good_server_verifies() {
        let addr = fake_server();
        let mut c = config(addr);
        c.duration = None;
        c.count = Some(300);
        c.get_every = 3;
        let report = run_stream(&c).unwrap();
        assert_eq!(report.acked, 300);
        assert_eq!(report.gets, 100);
        assert_eq!((report.lost, report.wrong), (0, 0));
        assert_eq!(report.end, StreamEnd::Completed);
        let v = report.verification.as_ref().unwrap();
        assert_eq!(v.checked, 300);
        assert_eq!(v.on, crate::verify::VerifiedOn::SameConnection);
        assert!(report.ok(), "{report}");
        assert!(report.p50 <= report.p99 && report.p99 <= report.max_gap.max(report.p99));
        let line = report.to_string();
        assert!(
            line.starts_with("stream: acked=300 gets=100 lost=0 wrong=0 reset=false end=completed"),
            "{line}"
        );
        assert!(line.contains("verified=300 on=same"), "{line}");
        assert_eq!(report.timeline.len(), 400);
        assert!(report.timeline.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(report.timeline[3].kind, RequestKind::Get);
        let csv = report.timeline_csv();
        assert_eq!(csv.lines().count(), 401);
        assert!(csv.starts_with("at_s,latency_ms,request\n"), "{csv}");
        assert!(csv.lines().nth(4).unwrap().ends_with(",get"), "{csv}");
    }

    #[test]
    fn a_stream_can_be_stopped_and_watched() {
        let addr = fake_server();
        let mut c = config(addr);
        c.duration = Some(Duration::from_secs(60));
        let control = Arc::new(StreamControl::default());
        c.control = Some(control.clone());
        let report = std::thread::scope(|s| {
            let h = s.spawn(|| run_stream(&c).unwrap());
            while control.acked() < 50 {
                std::thread::sleep(Duration::from_millis(1));
            }
            control.stop();
            h.join().unwrap()
        });
        assert!(report.acked >= 50 && report.ok(), "{report}");
    }

    #[test]
    fn the_largest_gap_is_found() {
        // The server stalls 300 ms before its 21st reply.
        let addr = scripted_server(|n, table, line| {
            if n == 20 {
                std::thread::sleep(Duration::from_millis(300));
            }
            answer(table, line)
        });
        let mut c = config(addr);
        c.duration = None;
        c.count = Some(40);
        c.verify = false;
        let report = run_stream(&c).unwrap();
        assert!(report.ok(), "{report}");
        assert!(report.max_gap >= Duration::from_millis(300), "{report}");
        assert_eq!(report.max_gap_request, 20);
        assert!(report.max_gap_at <= report.last_reply_at);
        assert!(report.verification.is_none());
    }

    #[test]
    fn a_reset_is_reported_as_such_and_verified_on_a_new_connection() {
        // The first connection is reset after 10 replies (SO_LINGER 0);
        // the server keeps its table for the verification connection.
        let addr = scripted_server(|n, table, line| {
            if n == 10 {
                return Reply::Reset;
            }
            answer(table, line)
        });
        let mut c = config(addr);
        c.duration = None;
        c.count = Some(100);
        let report = run_stream(&c).unwrap();
        assert_eq!(report.end, StreamEnd::Reset, "{report}");
        assert!(report.reset());
        assert_eq!(report.acked, 10);
        let v = report.verification.as_ref().unwrap();
        assert_eq!(v.on, crate::verify::VerifiedOn::NewConnection);
        assert_eq!(v.checked, 10);
        assert_eq!((report.lost, report.wrong), (0, 0));
        assert!(!report.ok());
    }

    #[test]
    fn eof_and_timeout_are_told_apart() {
        let eof = scripted_server(|n, table, line| {
            if n == 5 {
                return Reply::Close;
            }
            answer(table, line)
        });
        let mut c = config(eof);
        c.verify = false;
        let report = run_stream(&c).unwrap();
        assert_eq!(report.end, StreamEnd::Eof, "{report}");
        assert_eq!(report.acked, 5);

        let silent = scripted_server(|n, table, line| {
            if n == 5 {
                return Reply::Silence;
            }
            answer(table, line)
        });
        let mut c = config(silent);
        c.verify = false;
        c.reply_timeout = Duration::from_millis(300);
        let report = run_stream(&c).unwrap();
        assert_eq!(report.end, StreamEnd::Timeout, "{report}");
        assert!(!report.reset() && !report.ok());
    }

    #[test]
    fn lost_and_wrong_values_are_caught() {
        // A server that forgets every 7th SET and garbles every 11th.
        let addr = forgetful_server(7, 11);
        let mut c = config(addr);
        c.duration = None;
        c.count = Some(77);
        let report = run_stream(&c).unwrap();
        assert_eq!(report.end, StreamEnd::Completed);
        assert_eq!(report.lost, 11, "{report}");
        assert_eq!(report.wrong, 7 - 1, "{report}");
        assert_eq!(report.bad_keys.len(), LISTED_BAD_KEYS);
        assert!(!report.ok());
    }

    #[test]
    fn bad_configurations_are_refused() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut c = StreamConfig::new(addr);
        c.duration = None;
        assert!(matches!(run_stream(&c), Err(StreamError::Config(_))));
        let mut c = StreamConfig::new(addr);
        c.prefix = "x".repeat(MAX_PREFIX + 1);
        assert!(matches!(run_stream(&c), Err(StreamError::Config(_))));
        let mut c = StreamConfig::new(addr);
        c.prefix = "a b".into();
        assert!(matches!(run_stream(&c), Err(StreamError::Config(_))));
        let mut c = StreamConfig::new(addr);
        c.value_size = MAX_VALUE + 1;
        assert!(matches!(run_stream(&c), Err(StreamError::Config(_))));
    }

    #[test]
    fn end_of_stream_classification() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let io = |kind| ClientError::Io {
            addr,
            source: std::io::Error::from(kind),
        };
        assert_eq!(
            StreamEnd::of(&io(ErrorKind::ConnectionReset)),
            StreamEnd::Reset
        );
        assert_eq!(StreamEnd::of(&io(ErrorKind::BrokenPipe)), StreamEnd::Reset);
        assert_eq!(
            StreamEnd::of(&io(ErrorKind::WouldBlock)),
            StreamEnd::Timeout
        );
        assert_eq!(StreamEnd::of(&io(ErrorKind::TimedOut)), StreamEnd::Timeout);
        assert_eq!(StreamEnd::of(&ClientError::Closed { addr }), StreamEnd::Eof);
        assert_eq!(
            StreamEnd::of(&ClientError::Refused("the table is full".into())),
            StreamEnd::Refused("the table is full".into())
        );
    }
}
