// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The backup: waits for its primary, replays the stream live
//! ([`crate::live`]), and when the primary is lost does the tiebreak:
//! winning, it applies what it received and goes live; losing, it stops.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use crate::channel::{
    self, ChannelConfig, ChannelHandle, ChannelKey, ChannelSender, DiskDigest, HandshakeError,
    Hello, Role,
};
use crate::live::{spawn_receiver, LiveError, LiveFeed, StreamEnd};
use crate::pair::{tiebreak_or_stop, PairState, PairStatus};
use crate::replayer::Replayer;
use crate::tiebreak::Tiebreaker;

/// Errors starting a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The listening socket.
    #[error("cannot listen for the primary on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stream could not be received.
    #[error("cannot receive the primary's stream")]
    Feed(#[source] LiveError),
    /// The primary went away before its stream began.
    #[error("the primary went away before its stream began: {0}")]
    NoStream(String),
    /// The VMM was asked to stop while waiting.
    #[error("stopped while waiting for the primary")]
    Stopped,
}

/// What a backup needs to start.
#[derive(Debug)]
pub struct BackupSetup {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The shared key.
    pub key: ChannelKey,
    /// The tiebreaker.
    pub tiebreaker: Tiebreaker,
    /// Channel timing.
    pub channel: ChannelConfig,
    /// The guest-visible configuration's digest.
    pub config_digest: u64,
    /// Disk digests (separate disks), empty otherwise.
    pub disks: Vec<DiskDigest>,
    /// Where to keep a copy of the received stream.
    pub copy: Option<PathBuf>,
    /// Polled while waiting for a primary: true stops the wait.
    pub stop: fn() -> bool,
}

/// A running backup.
#[derive(Debug)]
pub struct Backup {
    /// What it shows outside.
    pub status: Arc<PairStatus>,
    /// The replay of the stream (taken by the VMM).
    replayer: Option<Replayer>,
    /// The feed (for go-live checks).
    pub feed: Arc<LiveFeed>,
    handle: ChannelHandle,
    // Owns the channel's threads: kept for as long as the backup runs.
    _sender: ChannelSender,
}

impl Backup {
    /// Listens, accepts the first primary that passes the handshake
    /// (refused connections are reported and waited past), and starts
    /// replaying its stream. Returns once the stream's setup arrived.
    pub fn accept(setup: BackupSetup) -> Result<Self, BackupError> {
        let listener = TcpListener::bind(setup.listen).map_err(|source| BackupError::Listen {
            addr: setup.listen,
            source,
        })?;
        let status = PairStatus::new("backup", String::new());
        log::info!(
            "fault tolerance: backup waiting for its primary on {}",
            setup.listen
        );
        let hello = Hello::new(Role::Backup, setup.config_digest, setup.disks, 0);
        // Waiting for a primary has no bound (and stops on request); each
        // handshake has the channel's.
        listener
            .set_nonblocking(true)
            .map_err(|source| BackupError::Listen {
                addr: setup.listen,
                source,
            })?;
        let ch = loop {
            match channel::accept(&listener, &setup.key, &hello, &setup.channel) {
                Ok(ch) => break ch,
                Err(HandshakeError::Accept(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if (setup.stop)() {
                        return Err(BackupError::Stopped);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    if matches!(e, HandshakeError::Authentication(_)) {
                        status.event("auth-failed", &[]);
                    }
                    log::warn!(
                        "fault tolerance: refused a connection: {}",
                        crate::error_chain(&e)
                    );
                }
            }
        };
        Self::start(
            ch,
            status,
            setup.tiebreaker,
            setup.channel.heartbeat,
            setup.config_digest,
            setup.copy.as_deref(),
        )
    }

    /// Starts replaying on an open channel (the boot-time pair's, or one
    /// a seed arrived on: FT VMotion). Returns once the stream's setup
    /// arrived. `head_start` is the primary's lead in the tiebreak.
    pub fn start(
        ch: channel::Channel,
        status: Arc<PairStatus>,
        tiebreaker: Tiebreaker,
        head_start: std::time::Duration,
        config_digest: u64,
        copy: Option<&std::path::Path>,
    ) -> Result<Self, BackupError> {
        let generation = ch.peer.generation;
        status.connected(ch.peer_addr.to_string(), generation, ch.handle.clone());
        let feed = LiveFeed::new();
        status.set_feed(feed.clone());
        let (st, tb) = (status.clone(), tiebreaker);
        let on_lost = Box::new(move |end: StreamEnd| -> bool {
            match end {
                StreamEnd::Complete => {
                    st.set_state(PairState::Stopped);
                    true
                }
                StreamEnd::Lost(why) => {
                    if st.state() == PairState::Stopped {
                        return true;
                    }
                    st.set_state(PairState::PeerLost);
                    st.event("peer-lost", &[("reason", why)]);
                    // The primary claims first: when both sides are alive
                    // (a cut link, or one side's false timeout, which shuts
                    // the connection and so reaches the other at once) the
                    // VM stays where it runs, unprotected, instead of
                    // failing over. A dead primary costs one heartbeat more.
                    std::thread::sleep(head_start);
                    if st.state() == PairState::Stopped {
                        return true;
                    }
                    tiebreak_or_stop(&tb, generation, &super::claimant("backup"), &st, || {});
                    st.set_state(PairState::GoingLive);
                    true
                }
            }
        });
        spawn_receiver(
            ch.receiver,
            ch.handle.clone(),
            feed.clone(),
            config_digest,
            copy,
            on_lost,
        )
        .map_err(BackupError::Feed)?;
        let header = feed
            .wait_header()
            .ok_or_else(|| BackupError::NoStream(feed.ended().unwrap_or_default()))?;
        let replayer = Replayer::live(header, feed.clone());
        Ok(Backup {
            status,
            replayer: Some(replayer),
            feed,
            handle: ch.handle,
            _sender: ch.sender,
        })
    }

    /// The replay of the stream, once.
    pub fn take_replayer(&mut self) -> Option<Replayer> {
        self.replayer.take()
    }

    /// The channel.
    pub fn handle(&self) -> &ChannelHandle {
        &self.handle
    }
}

impl Drop for Backup {
    /// Its owner is stopping this side: a loss of the primary from now on
    /// is no reason for a tiebreak (nor for going live).
    fn drop(&mut self) {
        if self.status.state() != PairState::LiveUnprotected {
            self.status.stop_waiting();
        }
    }
}
