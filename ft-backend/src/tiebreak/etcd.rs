// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The etcd tiebreaker: `etcd:http://HOST:PORT/PREFIX`.
//!
//! The slot of generation G is the key `/PREFIX/G`. A claim is one etcd v3
//! transaction through the JSON gateway (`POST /v3/kv/txn`, keys and values
//! base64):
//!
//! ```json
//! {"compare": [{"key": K, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
//!  "success": [{"request_put": {"key": K, "value": RECORD}}],
//!  "failure": [{"request_range": {"key": K}}]}
//! ```
//!
//! etcd applies transactions one at a time: the first claim finds the key
//! absent (create revision 0) and puts the slot record; every later one
//! fails the comparison and reads the record of the winner. The reply's
//! `succeeded` (absent when false, as proto3 JSON omits defaults) says
//! which. Nothing else is needed from etcd (no lease, no session): the key
//! stays, so a claim of a finished generation still finds its winner.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::http::{self, HttpError};
use super::{Outcome, SlotRecord};

/// etcd's usual client port.
const DEFAULT_PORT: u16 = 2379;

/// A claim on etcd failed (the outcome is unknown: not a win).
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The request failed: etcd unreachable, too slow, or not HTTP.
    #[error("no reply from etcd at {0}")]
    Request(String, #[source] HttpError),
    /// etcd answered with an error status.
    #[error("etcd at {url} answered {status}: {message}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// etcd's reply is not the transaction reply expected.
    #[error("unexpected reply from etcd at {url}: {what}")]
    Reply {
        /// The endpoint.
        url: String,
        /// What is wrong.
        what: &'static str,
    },
}

/// `etcd:http://HOST:PORT/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTiebreaker {
    host: String,
    port: u16,
    prefix: String,
    timeout: Duration,
}

impl fmt::Display for EtcdTiebreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}/{}", self.host, self.port, self.prefix)
        } else {
            write!(f, "http://{}:{}/{}", self.host, self.port, self.prefix)
        }
    }
}

impl EtcdTiebreaker {
    /// Parses `http://HOST[:PORT]/PREFIX`; `timeout` bounds each claim.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self, &'static str> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("etcd: takes an http:// URL (https is not supported)")?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or("etcd: needs a key prefix after the address")?;
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("etcd: bad host")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("etcd: bad host")?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("etcd: needs a host");
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err("etcd: bad port"),
            },
        };
        let prefix = path.trim_matches('/');
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if prefix.is_empty() || !prefix.chars().all(allowed) {
            return Err("etcd: needs a key prefix of letters, digits, '.', '_', '-' and '/'");
        }
        Ok(EtcdTiebreaker {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
            timeout,
        })
    }

    /// The same endpoint with another bound on each claim.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key of `generation`'s slot.
    pub fn key(&self, generation: u64) -> String {
        format!("/{}/{generation}", self.prefix)
    }

    /// Claims the slot of `generation` for `claimant`.
    pub fn test_and_set(&self, generation: u64, claimant: &str) -> Result<Outcome, EtcdError> {
        let key = BASE64.encode(self.key(generation));
        let value = BASE64.encode(
            SlotRecord {
                generation,
                winner: claimant.to_string(),
            }
            .encode(),
        );
        let txn = json!({
            "compare": [{
                "key": key,
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": "0",
            }],
            "success": [{"request_put": {"key": key, "value": value}}],
            "failure": [{"request_range": {"key": key}}],
        });
        let url = self.to_string();
        let reply = http::post_json(
            &self.host,
            self.port,
            "/v3/kv/txn",
            txn.to_string().as_bytes(),
            self.timeout,
        )
        .map_err(|e| EtcdError::Request(url.clone(), e))?;
        let bad = |what| EtcdError::Reply {
            url: url.clone(),
            what,
        };
        let body: Value = serde_json::from_slice(&reply.body).map_err(|_| bad("not JSON"))?;
        if reply.status != 200 {
            let message = body
                .get("message")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string();
            return Err(EtcdError::Status {
                url,
                status: reply.status,
                message,
            });
        }
        if body.get("header").is_none() {
            return Err(bad("no header"));
        }
        if body.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Outcome::Won);
        }
        // The comparison failed: the slot exists; the range read says who
        // holds it.
        let stored = body
            .get("responses")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("response_range"))
            .and_then(|r| r.get("kvs"))
            .and_then(|k| k.get(0))
            .and_then(|kv| kv.get("value"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the slot exists but its value is missing"))?;
        let record = BASE64
            .decode(stored)
            .ok()
            .and_then(|data| SlotRecord::decode(&data));
        Ok(SlotRecord::outcome_for(record, claimant))
    }
}
