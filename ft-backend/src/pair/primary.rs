// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The primary: connects to its backup before the guest runs, records
//! into the logging channel, holds outputs under the Output Rule, and
//! watches the channel. When the backup is lost it does the tiebreak:
//! winning, it releases what it held and goes on unprotected; losing, it
//! stops.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::channel::{
    self, ChannelConfig, ChannelHandle, ChannelKey, ChannelSender, DiskDigest, HandshakeError,
    Hello, Position, Role, SessionError,
};
use crate::entry::Setup;
use crate::error_chain;
use crate::log::{LogError, LogHeader, LogWriter};
use crate::log_thread::ProgressSink;
use crate::pair::{tiebreak_or_stop, OutputRule, PairState, PairStatus};
use crate::recorder::{RecordError, Recorder};
use crate::tiebreak::Tiebreaker;

/// Errors starting a primary.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// The backup could not be reached or refused us.
    #[error("cannot open the logging channel to the backup")]
    Channel(#[source] HandshakeError),
    /// The stream could not be set up.
    #[error("cannot record into the logging channel")]
    Record(#[source] RecordError),
    /// A thread could not be started.
    #[error("cannot start the pair's threads")]
    Spawn(#[source] std::io::Error),
}

/// What a primary needs to start.
#[derive(Debug)]
pub struct PrimarySetup {
    /// The backup's channel address.
    pub peer: SocketAddr,
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
    /// Whether the disks are shared (their writes wait for the backup).
    pub shared_disks: bool,
}

/// The channel's sender, shared by the log stream and its progress.
type SharedSender = Arc<Mutex<Option<ChannelSender>>>;

struct ChannelWrite(SharedSender);

impl Write for ChannelWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match s.as_mut() {
            Some(sender) => sender
                .send_frames(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
            None => Err(std::io::Error::other("the logging channel is closed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the backup has the stream's header: only then can it take
/// over (without it a backup does not claim the tiebreak), so only then
/// is the pair protected. Cloned by whoever reports it.
#[derive(Debug, Clone)]
pub struct StreamAck {
    handle: ChannelHandle,
    /// Log-frame bytes sent once the header was (0: not yet).
    start_bytes: Arc<AtomicU64>,
}

impl StreamAck {
    /// Waits until the backup acknowledged the stream's beginning. Fails
    /// (why) when the channel is lost first or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.handle.lost() {
                return Err(error_chain(&e));
            }
            let start = self.start_bytes.load(Ordering::SeqCst);
            if start > 0 && self.handle.frame_bytes().1 >= start {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the backup did not acknowledge the stream's header within {} ms",
                    timeout.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A running primary.
#[derive(Debug)]
pub struct Primary {
    /// What it shows outside.
    pub status: Arc<PairStatus>,
    /// The output sink of its devices.
    pub rule: Arc<OutputRule>,
    handle: ChannelHandle,
    sender: SharedSender,
    unprotected: Arc<AtomicBool>,
    stream_ack: StreamAck,
}

impl Primary {
    /// Connects to the backup (bounded by the channel's connect timeout)
    /// and starts the Output Rule and the failure detector. The pair's
    /// generation is chosen here, new for every pair.
    pub fn connect(setup: PrimarySetup) -> Result<Self, PrimaryError> {
        let status = PairStatus::new("primary", setup.peer.to_string());
        let generation = Self::new_generation();
        let hello = Hello::new(Role::Primary, setup.config_digest, setup.disks, generation);
        let ch = channel::connect(setup.peer, &setup.key, &hello, &setup.channel).map_err(|e| {
            if matches!(e, HandshakeError::Authentication(_)) {
                status.event("auth-failed", &[("peer", setup.peer.to_string())]);
            }
            PrimaryError::Channel(e)
        })?;
        let primary = Self::start(ch, status, generation, setup.shared_disks, setup.tiebreaker)?;
        // Protected once the backup has the stream's header (the recorder
        // sends it before the guest runs).
        let (ack, status) = (primary.stream_ack(), primary.status.clone());
        std::thread::Builder::new()
            .name("ft_protected".into())
            .spawn(move || {
                if ack.wait(Duration::from_secs(3600)).is_ok() {
                    status.protected(&[("generation", generation.to_string())]);
                }
            })
            .map_err(PrimaryError::Spawn)?;
        Ok(primary)
    }

    /// A new pair generation (time-based, never 0).
    pub fn new_generation() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .max(1)
    }

    /// Starts the Output Rule and the failure detector on an open channel
    /// (the boot-time pair's, or one FT VMotion seeded its backup on). The
    /// pair is not protected until the backup acknowledges the stream's
    /// header ([`stream_ack`](Self::stream_ack)); the caller reports it.
    pub fn start(
        ch: channel::Channel,
        status: Arc<PairStatus>,
        generation: u64,
        shared_disks: bool,
        tiebreaker: Tiebreaker,
    ) -> Result<Self, PrimaryError> {
        status.connected(ch.peer_addr.to_string(), generation, ch.handle.clone());
        let rule = OutputRule::new(shared_disks);
        status.set_rule(rule.clone());
        rule.spawn_releaser(ch.handle.clone())
            .map_err(PrimaryError::Spawn)?;
        let unprotected = Arc::new(AtomicBool::new(false));
        let (handle, st, r, u, tb) = (
            ch.handle.clone(),
            status.clone(),
            rule.clone(),
            unprotected.clone(),
            tiebreaker,
        );
        std::thread::Builder::new()
            .name("ft_watch".into())
            .spawn(move || watch(&handle, &st, &r, &u, &tb, generation))
            .map_err(PrimaryError::Spawn)?;
        // The receiver is not used: a backup sends only acks, heartbeats
        // and a divergence, which the channel's own threads take.
        drop(ch.receiver);
        Ok(Primary {
            status,
            rule,
            stream_ack: StreamAck {
                handle: ch.handle.clone(),
                start_bytes: Arc::new(AtomicU64::new(0)),
            },
            handle: ch.handle,
            sender: Arc::new(Mutex::new(Some(ch.sender))),
            unprotected,
        })
    }

    /// Whether the backup has the stream's beginning yet.
    pub fn stream_ack(&self) -> StreamAck {
        self.stream_ack.clone()
    }

    /// A recorder writing the stream: `header` and `setup` first.
    pub fn recorder(&self, header: LogHeader, setup: Setup) -> Result<Recorder, PrimaryError> {
        let mut writer = LogWriter::to_stream(
            Path::new("the logging channel"),
            Box::new(ChannelWrite(self.sender.clone())),
            header,
        )
        .map_err(|e| PrimaryError::Record(RecordError::Log(e)))?;
        // The header goes out now (the frames wait for the first progress):
        // with it the backup can take over, and its ack of these bytes is
        // what makes the pair protected.
        writer
            .flush()
            .map_err(|e| PrimaryError::Record(RecordError::Log(e)))?;
        self.stream_ack
            .start_bytes
            .store(self.handle.frame_bytes().0.max(1), Ordering::SeqCst);
        let sender = self.sender.clone();
        let status = self.status.clone();
        let progress: ProgressSink = Box::new(move |p: Position| {
            let mut s = sender.lock().unwrap_or_else(PoisonError::into_inner);
            let sent = match s.as_mut() {
                Some(sender) => sender.send_progress(p),
                None => return Ok(()),
            };
            status.set_sent(p);
            sent.map_err(|e| LogError::Io {
                path: "the logging channel".into(),
                source: std::io::Error::other(e),
            })
        });
        Recorder::to_stream(writer, setup, progress).map_err(PrimaryError::Record)
    }

    /// Whether the backup was lost and this side won: recording stops,
    /// the VM runs on unprotected.
    pub fn unprotected(&self) -> bool {
        self.unprotected.load(Ordering::SeqCst)
    }

    /// The channel.
    pub fn handle(&self) -> &ChannelHandle {
        &self.handle
    }

    /// The guest ended: waits (at most `timeout`) until the backup has
    /// acknowledged `last` and the outputs held are out, then closes the
    /// channel saying goodbye.
    pub fn finish(&self, last: Position, timeout: Duration) {
        self.status.set_state(PairState::Stopped);
        let deadline = Instant::now() + timeout;
        while self.handle.lost().is_none() && self.handle.acked() < last {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.rule.go_unprotected();
        while self.rule.held() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = sender {
            let _ = s.close();
        }
    }
}

impl Drop for Primary {
    /// Its owner is stopping this side: a loss of the backup from now on
    /// is no reason for a tiebreak.
    fn drop(&mut self) {
        if self.status.state() != PairState::LiveUnprotected {
            self.status.set_state(PairState::Stopped);
        }
    }
}

/// The failure detector: waits for the channel to be lost, then does the
/// tiebreak.
fn watch(
    handle: &ChannelHandle,
    status: &PairStatus,
    rule: &OutputRule,
    unprotected: &AtomicBool,
    tiebreaker: &Tiebreaker,
    generation: u64,
) {
    let why = loop {
        if let Some(e) = handle.wait_lost(Duration::from_secs(3600)) {
            break e;
        }
    };
    if status.state() == PairState::Stopped {
        return;
    }
    if let SessionError::PeerDiverged { exit, reason } = &why {
        // The backup is alive and let go on purpose: no tiebreak, nothing
        // to wait for; the VM runs on unprotected at once (the Output Rule
        // stops holding) and its VMM may seed the backup again.
        unprotected.store(true, Ordering::SeqCst);
        rule.go_unprotected();
        status.set_state(PairState::LiveUnprotected);
        status.backup_diverged(*exit, reason);
        status.event("unprotected", &[]);
        return;
    }
    status.set_state(PairState::PeerLost);
    status.event("peer-lost", &[("reason", error_chain(&why))]);
    tiebreak_or_stop(
        tiebreaker,
        generation,
        &super::claimant("primary"),
        status,
        || rule.drop_all(),
    );
    unprotected.store(true, Ordering::SeqCst);
    rule.go_unprotected();
    status.set_state(PairState::LiveUnprotected);
    status.event("unprotected", &[]);
}
