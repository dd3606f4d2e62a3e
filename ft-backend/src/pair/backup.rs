// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The backup: waits for its primary, replays the stream live
//! ([`crate::live`]), and when the primary is lost does the tiebreak:
//! winning, it applies what it received and goes live; losing, it stops.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::channel::{
    self, ChannelConfig, ChannelHandle, ChannelKey, ChannelSender, DiskDigest, HandshakeError,
    Hello, Role,
};
use crate::live::{spawn_receiver, LiveError, LiveFeed, StreamEnd};
use crate::pair::{tiebreak_or_stop, PairState, PairStatus, ReplayedOutputs};
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
    /// The devices' output sink while replaying: keeps the latest network
    /// frames, sent again at go-live.
    pub replayed: Arc<ReplayedOutputs>,
    handle: ChannelHandle,
    // Owns the channel's threads: kept for as long as the backup runs
    // (taken to close it when the replay diverged).
    sender: Option<ChannelSender>,
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
        // Each connection's handshake runs on a thread of its own, so
        // that a stranger that connects and stalls cannot keep the real
        // primary out; the first that passes wins.
        let (won_tx, won_rx) = mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let ch = loop {
            if let Ok(ch) = won_rx.try_recv() {
                break ch;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    let (key, hello, config) =
                        (setup.key.clone(), hello.clone(), setup.channel.clone());
                    let (st, won_tx) = (status.clone(), won_tx.clone());
                    spawn_handshake(&pending, &status, peer, move || {
                        match channel::accept_stream(stream, peer, &key, &hello, &config) {
                            // A later winner (two primaries raced) goes to
                            // the guard, which closes it.
                            Ok(ch) => drop(won_tx.send(ch)),
                            Err(e) => st.refused(&peer.to_string(), &e),
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if (setup.stop)() {
                        return Err(BackupError::Stopped);
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => status.refused("?", &HandshakeError::Accept(e)),
            }
        };
        drop(won_tx);
        spawn_guard(
            listener,
            setup.key.clone(),
            hello.clone(),
            setup.channel.clone(),
            status.clone(),
            pending,
            won_rx,
        );
        let backup = Self::start(
            ch,
            status,
            setup.tiebreaker,
            (setup.channel.heartbeat, setup.channel.timeout),
            setup.config_digest,
            setup.copy.as_deref(),
        )?;
        // The stream's header is here: this side can take over.
        backup.status.protected(&[]);
        Ok(backup)
    }

    /// Starts replaying on an open channel (the boot-time pair's, or one
    /// a seed arrived on: FT VMotion). Returns once the stream's setup
    /// arrived; the caller reports the pair protected
    /// ([`PairStatus::protected`]). `head_start` is the primary's lead in the tiebreak,
    /// `timeout` the channel's failure timeout.
    pub fn start(
        ch: channel::Channel,
        status: Arc<PairStatus>,
        tiebreaker: Tiebreaker,
        (head_start, timeout): (Duration, Duration),
        config_digest: u64,
        copy: Option<&std::path::Path>,
    ) -> Result<Self, BackupError> {
        let generation = ch.peer.generation;
        status.connected(ch.peer_addr.to_string(), generation, ch.handle.clone());
        let feed = LiveFeed::new();
        status.set_feed(feed.clone());
        let (st, tb, fd) = (status.clone(), tiebreaker, feed.clone());
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
                    if !fd.has_header() {
                        // Lost before its stream began: nothing here can
                        // go live, so this side must not claim the
                        // tiebreak (a primary that is only cut off wins it
                        // and runs on); it stops.
                        st.set_state(PairState::Stopped);
                        st.event(
                            "peer-lost",
                            &[("reason", format!("{why} (before the stream began)"))],
                        );
                        return true;
                    }
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
        // Frames of the last failure timeout of guest time: the primary
        // releases a frame an ack round trip (well under a millisecond)
        // after producing it when it runs freely, but its releaser thread
        // can wait for a CPU on a loaded host; the channel tolerates that
        // much silence, and so much delay is kept (duplicates are
        // harmless, the count is bounded).
        let window = timeout;
        Ok(Backup {
            status,
            replayer: Some(replayer),
            feed,
            replayed: Arc::new(ReplayedOutputs::new(
                u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            )),
            handle: ch.handle,
            sender: Some(ch.sender),
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

    /// The replay diverged from the stream at `exit` (`reason`): this side
    /// stops (neither a tiebreak nor a go-live follows) and tells the
    /// primary, which is alive: it goes on unprotected and may seed this
    /// VMM again.
    pub fn report_diverged(&mut self, exit: u64, reason: &str) {
        self.status.stop_waiting();
        self.status.event(
            "diverged",
            &[("exit", exit.to_string()), ("reason", reason.to_string())],
        );
        if let Some(sender) = self.sender.take() {
            if let Err(e) = sender.close_diverged(exit, reason) {
                log::warn!(
                    "fault tolerance: cannot tell the primary that the replay diverged: {}",
                    crate::error_chain(&e)
                );
            }
        }
    }
}

/// How often a waiting listener looks for a connection.
const POLL: Duration = Duration::from_millis(20);

/// Most handshakes with strangers running at once; connections beyond
/// are closed at once (and counted).
const MAX_HANDSHAKES: usize = 8;

/// Runs `handshake` on a thread of its own, unless [`MAX_HANDSHAKES`] run
/// already (then the connection, owned by `handshake`, is closed).
fn spawn_handshake(
    pending: &Arc<AtomicUsize>,
    status: &Arc<PairStatus>,
    peer: SocketAddr,
    handshake: impl FnOnce() + Send + 'static,
) {
    if pending.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
        pending.fetch_sub(1, Ordering::SeqCst);
        status.refused(
            &peer.to_string(),
            &HandshakeError::Busy(format!("{MAX_HANDSHAKES} handshakes already running")),
        );
        return;
    }
    let counter = pending.clone();
    let spawned = std::thread::Builder::new()
        .name("ft-handshake".into())
        .spawn(move || {
            handshake();
            counter.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        pending.fetch_sub(1, Ordering::SeqCst);
        status.refused(&peer.to_string(), &HandshakeError::Io(e));
    }
}

/// Keeps the channel port open while the backup serves its primary:
/// every later connection runs the handshake and is refused (a stranger
/// or a wrong key as such, reported; a peer that authenticates with an
/// error record), without touching the primary's channel. Ends once this
/// side is live or stopped.
fn spawn_guard(
    listener: TcpListener,
    key: ChannelKey,
    hello: Hello,
    config: ChannelConfig,
    status: Arc<PairStatus>,
    pending: Arc<AtomicUsize>,
    late: mpsc::Receiver<channel::Channel>,
) {
    let guard = move || loop {
        if matches!(
            status.state(),
            PairState::LiveUnprotected | PairState::Stopped
        ) {
            return;
        }
        // A primary whose handshake also passed: refused by closing it.
        while let Ok(ch) = late.try_recv() {
            status.refused(
                &ch.peer_addr.to_string(),
                &HandshakeError::Busy("a second primary".into()),
            );
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                let (key, hello, config) = (key.clone(), hello.clone(), config.clone());
                let st = status.clone();
                spawn_handshake(&pending, &status, peer, move || {
                    let why = channel::refuse_stream(
                        stream,
                        peer,
                        &key,
                        &hello,
                        &config,
                        "this backup already serves its primary",
                    );
                    st.refused(&peer.to_string(), &why);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                status.refused("?", &HandshakeError::Accept(e));
                std::thread::sleep(POLL);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("ft-port-guard".into())
        .spawn(guard)
    {
        log::warn!("fault tolerance: cannot guard the channel port: {e}");
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
