// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The pair as seen from outside: `vm.info`'s `fault_tolerance` object,
//! the channel's counters in `vm.counters`, and the event monitor's
//! `fault-tolerance` events (connected, protected, peer-lost,
//! tiebreak-won, tiebreak-lost, go-live, unprotected, auth-failed).
//! The key never appears here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

use crate::channel::{ChannelHandle, HandshakeError, Position};
use crate::live::LiveFeed;
use crate::pair::OutputRule;

/// Where a side of the pair is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    /// Reaching the peer (primary) or waiting for it (backup).
    Connecting,
    /// Both sides run: the VM is protected.
    Protected,
    /// The peer is gone; the tiebreak is under way.
    PeerLost,
    /// A backup that won: applying what it received, then going live.
    GoingLive,
    /// Running alone, unprotected.
    LiveUnprotected,
    /// The guest ended, or this side lost the tiebreak.
    Stopped,
}

impl PairState {
    /// The name in `vm.info`.
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Connecting => "connecting",
            PairState::Protected => "protected",
            PairState::PeerLost => "peer-lost",
            PairState::GoingLive => "going-live",
            PairState::LiveUnprotected => "live-unprotected",
            PairState::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: PairState,
    peer: String,
    generation: u64,
    handle: Option<ChannelHandle>,
    rule: Option<Arc<OutputRule>>,
    feed: Option<Arc<LiveFeed>>,
    /// Primary: the last progress sent; backup: the last received.
    sent: Position,
    /// Backup: how far the replay has got.
    applied: Position,
    /// Primary: where and why its backup's replay diverged.
    diverged: Option<(u64, String)>,
}

/// One side's pair status, shared by the vCPU, the channel's watchers
/// and the API.
#[derive(Debug)]
pub struct PairStatus {
    role: &'static str,
    inner: Mutex<Inner>,
    /// Notified whenever `inner.state` changes.
    changed: Condvar,
    /// The primary's slowdown, in thousandths of its run time.
    throttle_permille: AtomicU64,
    /// The last lag seen, in µs of guest time.
    lag_us: AtomicU64,
    /// The last lag seen, in exits.
    lag_exits: AtomicU64,
    /// Connections refused on the backup's channel port (strangers, wrong
    /// keys, a second primary).
    connections_refused: AtomicU64,
    /// Of those, the ones whose key did not authenticate.
    auth_failures: AtomicU64,
}

impl PairStatus {
    /// A side (`"primary"` or `"backup"`) reaching or waiting for `peer`.
    pub fn new(role: &'static str, peer: String) -> Arc<Self> {
        Arc::new(PairStatus {
            role,
            inner: Mutex::new(Inner {
                state: PairState::Connecting,
                peer,
                generation: 0,
                handle: None,
                rule: None,
                feed: None,
                sent: Position::default(),
                applied: Position::default(),
                diverged: None,
            }),
            changed: Condvar::new(),
            throttle_permille: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            lag_exits: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        })
    }

    /// A connection to the channel port was refused for `why`: counted
    /// (`vm.counters`), and reported as `auth-failed` when the key did not
    /// authenticate.
    pub fn refused(&self, peer: &str, why: &HandshakeError) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        if matches!(why, HandshakeError::Authentication(_)) {
            self.auth_failures.fetch_add(1, Ordering::Relaxed);
            self.event("auth-failed", &[("peer", peer.to_string())]);
        }
        log::warn!(
            "fault tolerance: refused a connection from {peer}: {}",
            crate::error_chain(why)
        );
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The role.
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The state now.
    pub fn state(&self) -> PairState {
        self.lock().state
    }

    /// Moves to `state` (reported as an event when it changes).
    pub fn set_state(&self, state: PairState) {
        let old = std::mem::replace(&mut self.lock().state, state);
        if old != state {
            self.changed.notify_all();
            log::info!("fault tolerance: {} {}", self.role, state.as_str());
        }
    }

    /// The state once it is no longer `seen`, or after `timeout` (then
    /// maybe still `seen`): for watchers that act on a change without
    /// polling.
    pub fn wait_for_change(&self, seen: PairState, timeout: Duration) -> PairState {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.state == seen)
            .unwrap_or_else(PoisonError::into_inner);
        guard.state
    }

    /// The channel is open: peer address, generation, handle. Not yet
    /// protected: see [`protected`](Self::protected).
    pub fn connected(&self, peer: String, generation: u64, handle: ChannelHandle) {
        {
            let mut s = self.lock();
            s.peer = peer.clone();
            s.generation = generation;
            s.handle = Some(handle);
        }
        self.event(
            "connected",
            &[("peer", peer), ("generation", generation.to_string())],
        );
    }

    /// The backup can take over from here on: it has the stream's header
    /// (a primary knows from the backup's ack of it, a backup once it
    /// arrived). Reported once, with `properties`, unless the pair ended
    /// first.
    pub fn protected(&self, properties: &[(&str, String)]) {
        {
            let mut s = self.lock();
            if s.state != PairState::Connecting {
                return;
            }
            s.state = PairState::Protected;
        }
        self.changed.notify_all();
        log::info!("fault tolerance: {} protected", self.role);
        self.event("protected", properties);
    }

    /// A primary's backup diverged at `exit` (`reason`) and closed: the
    /// primary goes on unprotected (no tiebreak) and seeds it again.
    pub fn backup_diverged(&self, exit: u64, reason: &str) {
        self.lock().diverged = Some((exit, reason.to_string()));
        self.event(
            "backup-diverged",
            &[("exit", exit.to_string()), ("reason", reason.to_string())],
        );
    }

    /// The primary's Output Rule (for `vm.info`'s held outputs).
    pub fn set_rule(&self, rule: Arc<OutputRule>) {
        self.lock().rule = Some(rule);
    }

    /// The backup's feed (ended when the VMM stops).
    pub fn set_feed(&self, feed: Arc<LiveFeed>) {
        self.lock().feed = Some(feed);
    }

    /// The VMM is stopping this side: a backup waiting for its stream
    /// stops instead of going live.
    pub fn stop_waiting(&self) {
        self.set_state(PairState::Stopped);
        let feed = self.lock().feed.clone();
        if let Some(f) = feed {
            f.end("the VMM is stopping".into());
        }
    }

    /// The pair's generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The channel, while connected.
    pub fn handle(&self) -> Option<ChannelHandle> {
        self.lock().handle.clone()
    }

    /// Primary: progress sent; backup: progress received.
    pub fn set_sent(&self, p: Position) {
        self.lock().sent = p;
    }

    /// Backup: how far the replay has got.
    pub fn set_applied(&self, p: Position) {
        let handle = {
            let mut s = self.lock();
            s.applied = p;
            s.handle.clone()
        };
        if let Some(h) = handle {
            h.set_applied(p);
        }
    }

    /// The primary's lag figures and slowdown.
    pub fn set_lag(&self, lag_us: u64, lag_exits: u64, throttle_permille: u64) {
        self.lag_us.store(lag_us, Ordering::Relaxed);
        self.lag_exits.store(lag_exits, Ordering::Relaxed);
        self.throttle_permille
            .store(throttle_permille, Ordering::Relaxed);
    }

    /// Reports `event` on the event monitor, with this side's role.
    pub fn event(&self, event: &str, properties: &[(&str, String)]) {
        let mut map = std::collections::HashMap::new();
        map.insert("role".to_string(), self.role.to_string());
        for (k, v) in properties {
            map.insert((*k).to_string(), v.clone());
        }
        event_monitor::event_log("fault-tolerance", event, Some(&map));
        log::info!("fault tolerance: event {event} {properties:?}");
    }

    /// `vm.info`'s `fault_tolerance` object.
    pub fn info(&self) -> Value {
        let s = self.lock();
        let acked = s
            .handle
            .as_ref()
            .map(ChannelHandle::acked)
            .unwrap_or_default();
        let peer_applied = s
            .handle
            .as_ref()
            .map(ChannelHandle::peer_applied)
            .unwrap_or_default();
        let applied = if self.role == "primary" {
            peer_applied
        } else {
            s.applied
        };
        let pos = |p: Position| json!({"exits": p.exits, "guest_ns": p.guest_ns});
        let diverged = s
            .diverged
            .as_ref()
            .map(|(exit, reason)| json!({"exit": exit, "reason": reason}));
        json!({
            "role": self.role,
            "state": s.state.as_str(),
            "peer": s.peer,
            "generation": s.generation,
            "position_sent": pos(s.sent),
            "position_acknowledged": pos(acked),
            "position_applied": pos(applied),
            "lag_exits": self.lag_exits.load(Ordering::Relaxed),
            "lag_ms": self.lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "outputs_held": s.rule.as_ref().map_or(0, |r| r.held()),
            "outputs_released": s.rule.as_ref().map_or(0, |r| r.released()),
            "throttle": self.throttle_permille.load(Ordering::Relaxed) as f64 / 1000.0,
            "backup_diverged": diverged,
        })
    }

    /// The channel's counters (`vm.counters`' `fault_tolerance` entry).
    pub fn counters(&self) -> Value {
        let s = self.lock();
        let mut map = serde_json::Map::new();
        map.insert(
            "connections_refused".into(),
            json!(self.connections_refused.load(Ordering::Relaxed)),
        );
        map.insert(
            "auth_failures".into(),
            json!(self.auth_failures.load(Ordering::Relaxed)),
        );
        if let Some(h) = &s.handle {
            for (k, v) in h.counters().pairs() {
                map.insert(k.to_string(), json!(v));
            }
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_watcher_wakes_on_a_change_and_times_out_without_one() {
        let status = PairStatus::new("backup", "tcp:127.0.0.1:1".into());
        let t = Instant::now();
        let same = status.wait_for_change(PairState::Connecting, Duration::from_millis(20));
        assert_eq!(same, PairState::Connecting);
        assert!(t.elapsed() >= Duration::from_millis(20));

        let setter = Arc::clone(&status);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            setter.set_state(PairState::LiveUnprotected);
        });
        let changed = status.wait_for_change(PairState::Connecting, Duration::from_secs(60));
        assert_eq!(changed, PairState::LiveUnprotected);
        thread.join().expect("setter");

        let setter = Arc::clone(&status);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            setter.set_state(PairState::Stopped);
        });
        let stopped = status.wait_for_change(PairState::LiveUnprotected, Duration::from_secs(60));
        assert_eq!(stopped, PairState::Stopped);
        thread.join().expect("setter");
    }
}
