// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The verifying load generator: C connections, each a thread sending a
//! stream of SETs and GETs over its own keys, so that it knows what every
//! GET must return: the last acknowledged SET of that key, or `NONE`.
//! After the run each connection reads all its keys back once more.

use std::fmt;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{ClientError, Connection, MAX_KEY, MAX_VALUE};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The service.
    pub addr: SocketAddr,
    /// Connections (threads).
    pub connections: usize,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ... or after this many requests per connection.
    pub count: Option<u64>,
    /// Keys per connection.
    pub keys: u64,
    /// Percentage of GETs (0..=100); the rest are SETs.
    pub get_percent: u32,
    /// Value length in bytes.
    pub value_size: usize,
    /// Connect and per-request timeout.
    pub timeout: Duration,
    /// Key prefix; keys are `<prefix>-c<connection>-k<index>`.
    pub prefix: String,
}

impl LoadConfig {
    /// A configuration with the defaults: 4 connections, 1000 requests
    /// each, 100 keys each, 50 % GETs, 16-byte values, 10 s timeout, and
    /// a prefix unique to this process and moment.
    pub fn new(addr: SocketAddr) -> LoadConfig {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        LoadConfig {
            addr,
            connections: 4,
            duration: None,
            count: Some(1000),
            keys: 100,
            get_percent: 50,
            value_size: 16,
            timeout: Duration::from_secs(10),
            prefix: format!("r{:x}{:x}", std::process::id(), nanos),
        }
    }
}

/// A load run that failed.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A parameter out of range.
    #[error("bad load parameters: {0}")]
    Config(String),
    /// A request failed.
    #[error("connection {connection} failed")]
    Client {
        /// Which connection.
        connection: usize,
        /// The error.
        #[source]
        source: ClientError,
    },
    /// A GET returned something else than the last acknowledged SET.
    #[error("connection {connection}: GET {key} returned {got:?}, expected {expected:?}")]
    Mismatch {
        /// Which connection.
        connection: usize,
        /// The key.
        key: String,
        /// The last acknowledged value (None: never set).
        expected: Option<String>,
        /// What came back.
        got: Option<String>,
    },
    /// A worker thread panicked.
    #[error("connection {0}: worker thread panicked")]
    Panicked(usize),
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests answered (SETs + GETs), the final read-back excluded.
    pub requests: u64,
    /// SETs acknowledged.
    pub sets: u64,
    /// GETs answered.
    pub gets: u64,
    /// Keys read back and verified after the run.
    pub verified: u64,
    /// Wall time of the request phase.
    pub elapsed: Duration,
    /// Median request latency.
    pub p50: Duration,
    /// 99th-percentile request latency.
    pub p99: Duration,
    /// Median SET latency (includes the disk flush).
    pub set_p50: Duration,
    /// Median GET latency.
    pub get_p50: Duration,
}

impl Report {
    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} sets={} gets={} seconds={:.3} throughput={:.1} req/s p50={:.3} ms p99={:.3} ms set_p50={:.3} ms get_p50={:.3} ms verified={} keys",
            self.requests,
            self.sets,
            self.gets,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            ms(self.p50),
            ms(self.p99),
            ms(self.set_p50),
            ms(self.get_p50),
            self.verified
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0..=100) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: u32) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p.min(100) as usize).div_ceil(100);
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// What one connection measured.
#[derive(Debug, Default)]
struct Worker {
    set_latencies: Vec<Duration>,
    get_latencies: Vec<Duration>,
    verified: u64,
}

/// Runs the load and verifies every answer.
pub fn run_load(config: &LoadConfig) -> Result<Report, LoadError> {
    if config.connections == 0 || config.keys == 0 {
        return Err(LoadError::Config(
            "connections and keys must be at least 1".into(),
        ));
    }
    if config.get_percent > 100 {
        return Err(LoadError::Config("get percentage must be 0..=100".into()));
    }
    if config.value_size == 0 || config.value_size > MAX_VALUE {
        return Err(LoadError::Config(format!(
            "value size must be 1..={MAX_VALUE}"
        )));
    }
    if config.duration.is_none() && config.count.is_none() {
        return Err(LoadError::Config("give a duration or a count".into()));
    }
    let longest_key = format!("{}-c{}-k{}", config.prefix, config.connections, config.keys);
    if longest_key.len() > MAX_KEY || !longest_key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(LoadError::Config(format!(
            "keys like {longest_key:?} are not valid"
        )));
    }
    // Connect everyone first, so that the timed phase measures requests.
    let mut connections = Vec::with_capacity(config.connections);
    for connection in 0..config.connections {
        let c = Connection::connect(config.addr, config.timeout)
            .map_err(|source| LoadError::Client { connection, source })?;
        connections.push(c);
    }
    let start = Instant::now();
    let results: Vec<Result<Worker, LoadError>> = thread::scope(|scope| {
        let handles: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(index, c)| scope.spawn(move || worker(config, index, c, start)))
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(index, h)| h.join().unwrap_or(Err(LoadError::Panicked(index))))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut report = Report {
        elapsed,
        ..Report::default()
    };
    let mut all = Vec::new();
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for result in results {
        let w = result?;
        report.verified += w.verified;
        sets.extend(w.set_latencies);
        gets.extend(w.get_latencies);
    }
    report.sets = sets.len() as u64;
    report.gets = gets.len() as u64;
    report.requests = report.sets + report.gets;
    all.extend_from_slice(&sets);
    all.extend_from_slice(&gets);
    all.sort_unstable();
    sets.sort_unstable();
    gets.sort_unstable();
    report.p50 = percentile(&all, 50);
    report.p99 = percentile(&all, 99);
    report.set_p50 = percentile(&sets, 50);
    report.get_p50 = percentile(&gets, 50);
    Ok(report)
}

/// SplitMix64, for the request mix (no dependency needed for this).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn worker(
    config: &LoadConfig,
    index: usize,
    mut c: Connection,
    start: Instant,
) -> Result<Worker, LoadError> {
    let fail = |source| LoadError::Client {
        connection: index,
        source,
    };
    let mut w = Worker::default();
    let mut known: Vec<Option<String>> = vec![None; config.keys as usize];
    let mut rng = index as u64 ^ 0x5eed;
    let mut n = 0u64;
    loop {
        if config.count.is_some_and(|count| n >= count)
            || config.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        n += 1;
        let k = (next(&mut rng) % config.keys) as usize;
        let key = format!("{}-c{index}-k{k}", config.prefix);
        let t = Instant::now();
        if (next(&mut rng) % 100) < u64::from(config.get_percent) {
            let got = c.get(&key).map_err(fail)?;
            w.get_latencies.push(t.elapsed());
            if got != known[k] {
                return Err(LoadError::Mismatch {
                    connection: index,
                    key,
                    expected: known[k].clone(),
                    got,
                });
            }
        } else {
            let mut value = format!("v{n}-");
            while value.len() < config.value_size {
                value.push(char::from(b'a' + (next(&mut rng) % 26) as u8));
            }
            value.truncate(config.value_size);
            c.set(&key, &value).map_err(fail)?;
            w.set_latencies.push(t.elapsed());
            known[k] = Some(value);
        }
    }
    // Every acknowledged SET must read back.
    for (k, expected) in known.iter().enumerate() {
        if expected.is_none() {
            continue;
        }
        let key = format!("{}-c{index}-k{k}", config.prefix);
        let got = c.get(&key).map_err(fail)?;
        if &got != expected {
            return Err(LoadError::Mismatch {
                connection: index,
                key,
                expected: expected.clone(),
                got,
            });
        }
        w.verified += 1;
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn load_against_a_fake_server_verifies() {
        let addr = super::super::tests::fake_server();
        let mut config = LoadConfig::new(addr);
        config.connections = 3;
        config.count = Some(200);
        config.keys = 10;
        let report = run_load(&config).unwrap();
        assert_eq!(report.requests, 600);
        assert!(report.verified > 0 && report.verified <= 30);
        assert!(report.p50 <= report.p99);
        assert!(report.to_string().contains("requests=600"));
    }

    #[test]
    fn a_lying_server_is_caught() {
        // Pre-set one of the run's keys behind its back: the first GET of
        // that key expects NONE and must fail.
        let addr = super::super::tests::fake_server();
        let mut config = LoadConfig::new(addr);
        config.connections = 1;
        config.keys = 1;
        config.get_percent = 100;
        config.count = Some(5);
        let mut c = Connection::connect(addr, Duration::from_secs(5)).unwrap();
        c.set(&format!("{}-c0-k0", config.prefix), "stale").unwrap();
        let err = run_load(&config).unwrap_err();
        assert!(matches!(err, LoadError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn bad_parameters() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut config = LoadConfig::new(addr);
        config.connections = 0;
        assert!(matches!(run_load(&config), Err(LoadError::Config(_))));
        let mut config = LoadConfig::new(addr);
        config.value_size = 513;
        assert!(matches!(run_load(&config), Err(LoadError::Config(_))));
        let mut config = LoadConfig::new(addr);
        config.prefix = "x".repeat(60);
        assert!(matches!(run_load(&config), Err(LoadError::Config(_))));
    }
}
