// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! An open channel: flow control, acks, heartbeats and failure detection.
//!
//! Each open channel runs three threads of its own:
//! - a **reader**, which reads every record (the stream's own bound: the
//!   peer is lost after the stream timeout without a byte from it, 2 s,
//!   counting only time in which this side ran, see
//!   [`RecordReader::detect_failure`]; heartbeats keep an idle channel
//!   talking), applies acks to the sender's window, queues log frames and
//!   progress in a bounded receive buffer for [`ChannelReceiver::recv`], and
//!   sends acks through the [`AckCoalescer`]. When the receive buffer is
//!   full it stops reading: the peer's window fills and its sender waits.
//! - a **writer** ([`super::writer`]), the only thread that seals records
//!   and writes the socket: senders only queue messages for it, and it
//!   sends a heartbeat whenever this side has sent nothing for
//!   `heartbeat`.
//! - a **beacon** thread ([`super::detector`]), the failure detector: it
//!   sends an authenticated UDP datagram every half heartbeat beside the
//!   stream ([`super::beacon`]), takes the peer's, and loses the peer when
//!   neither the stream nor the beacon was heard for `timeout`. Without a
//!   beacon socket (it could not be opened) the reader's bound is
//!   `timeout` and the stream alone decides.
//!
//! All three run in the lowest real-time scheduling class when permitted
//! ([`super::priority`]): a loaded host must not delay them past the
//! peer's timeout, and neither waits for a lock an ordinary thread holds
//! across a write.
//!
//! The first failure (a refused record, a timeout, a closed or failed
//! socket, an error or goodbye from the peer) makes the channel *lost*:
//! the socket is shut down, every waiting call returns that cause, and
//! nothing after it is delivered. Frames received before it stay in the
//! receive buffer and are still returned by `recv` (a backup replays all it
//! received before going live).

use std::collections::VecDeque;
use std::fmt;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ack::AckCoalescer;
use super::beacon::{BeaconOpener, BeaconProgress, BeaconSealer, BeaconSocket, Direction};
use super::counters::{ChannelCounters, CounterSnapshot};
use super::detector::{beacon_loop, Beacon, Liveness};
use super::handshake::Established;
use super::message::{Message, Position, MAX_FRAMES_CHUNK};
use super::record::{detector_tick, RecordError, RecordReader};
use super::writer::{writer_loop, SendQueue};
use super::ChannelConfig;

mod reader;
use reader::reader_loop;

/// Progress positions kept for round-trip measurement.
const MAX_RTT_PENDING: usize = 4096;

/// Accounting overhead of one queued item besides its frame bytes.
const ITEM_OVERHEAD: usize = 64;

/// Why a channel is no longer usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// Receiving failed: timeout, end of stream, refused record.
    #[error("lost the peer: receiving failed")]
    Receive(#[source] Arc<RecordError>),
    /// Sending failed.
    #[error("lost the peer: sending failed")]
    Send(#[source] Arc<RecordError>),
    /// The peer sent an error message.
    #[error("lost the peer: it reported an error: {0}")]
    PeerError(String),
    /// The peer (a backup) closed because its replay diverged: it is
    /// alive, not lost to a fault.
    #[error("the peer's replay diverged at exit {exit}: {reason}")]
    PeerDiverged {
        /// The exit count where it noticed.
        exit: u64,
        /// What differed.
        reason: String,
    },
    /// The peer broke the protocol.
    #[error("lost the peer: protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer closed the channel on purpose.
    #[error("the peer closed the channel (goodbye)")]
    Goodbye,
    /// This side closed the channel.
    #[error("the channel was closed by this side")]
    Closed,
    /// Neither the stream nor the beacon was heard for the timeout.
    #[error("lost the peer: neither the stream nor its beacon heard for {ms} ms")]
    Silent {
        /// The failure detector's timeout.
        ms: u128,
    },
    /// Starting the channel's threads failed.
    #[error("cannot start the channel's threads: {0}")]
    Spawn(String),
}

impl SessionError {
    /// The refused or failed record behind a receive or send failure.
    pub fn record_error(&self) -> Option<&RecordError> {
        match self {
            SessionError::Receive(e) | SessionError::Send(e) => Some(e),
            _ => None,
        }
    }
}

/// What the receiver gets, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Bytes of the log's frames (a stream: chunk boundaries mean nothing).
    LogFrames(Vec<u8>),
    /// The sender has run up to here.
    Progress(Position),
}

impl Incoming {
    fn cost(&self) -> usize {
        match self {
            Incoming::LogFrames(b) => b.len() + ITEM_OVERHEAD,
            Incoming::Progress(_) => ITEM_OVERHEAD,
        }
    }
}

#[derive(Debug)]
struct Flow {
    /// Log-frame bytes handed to the socket (or about to be).
    sent: u64,
    /// Log-frame bytes the peer acknowledged.
    acked_bytes: u64,
    /// The last progress position the peer acknowledged.
    acked: Position,
    /// Progress positions sent and not yet acknowledged, with their time.
    rtt: VecDeque<(Position, Instant)>,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Incoming>,
    bytes: usize,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: ChannelConfig,
    stream: TcpStream,
    /// What the writer thread sends.
    pub(super) out: SendQueue,
    flow: Mutex<Flow>,
    flow_cv: Condvar,
    inbox: Mutex<Inbox>,
    inbox_cv: Condvar,
    stop: Mutex<()>,
    stop_cv: Condvar,
    lost: OnceLock<SessionError>,
    pub(super) counters: ChannelCounters,
    /// How far this side's replay has got (a backup's acks and beacons
    /// carry it).
    pub(super) applied: Mutex<Position>,
    /// How far the peer's replay has got (from its last ack).
    peer_applied: Mutex<Position>,
    /// What the failure detector watches.
    pub(super) liveness: Liveness,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn lost(&self) -> Option<SessionError> {
        self.lost.get().cloned()
    }

    /// Records the first failure and wakes every waiter.
    pub(super) fn lose(&self, cause: SessionError) {
        let first = self.lost.set(cause.clone()).is_ok();
        if first && !matches!(cause, SessionError::Closed) {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        // Take each lock before notifying: a waiter checks `lost` under its
        // lock, so it is either not yet checking or already waiting.
        drop(lock(&self.flow));
        self.flow_cv.notify_all();
        drop(lock(&self.inbox));
        self.inbox_cv.notify_all();
        drop(lock(&self.stop));
        self.stop_cv.notify_all();
        self.out.wake_all();
    }

    /// Logs a delay on this side's sending path that ate half the peer's
    /// failure timeout or more (the evidence when a peer declares this
    /// side lost while it ran).
    pub(super) fn slow(&self, what: &str, took: Duration) {
        if took >= self.config.timeout / 2 {
            log::warn!(
                "logging channel: {} {what} for {} ms (the peer's timeout is {} ms)",
                std::thread::current().name().unwrap_or("a thread"),
                took.as_millis(),
                self.config.timeout.as_millis()
            );
        }
    }

    /// Queues `msg` for the writer thread (waiting while its queue is
    /// full); fails once the channel is lost.
    fn send(&self, msg: Message) -> Result<(), SessionError> {
        if let Some(e) = self.lost() {
            return Err(e);
        }
        self.out.push(self, msg)
    }

    /// Hands the writer an ack of everything received so far (it replaces
    /// an older ack the writer has not sent yet).
    fn send_ack(&self, acks: &mut AckCoalescer) -> Result<(), SessionError> {
        if let Some(e) = self.lost() {
            return Err(e);
        }
        let (position, log_bytes) = acks.take();
        let applied = *lock(&self.applied);
        self.out.send_ack(
            self,
            Message::Ack {
                position,
                log_bytes,
                applied,
            },
        );
        Ok(())
    }

    fn on_ack(&self, position: Position, log_bytes: u64) {
        let mut flow = lock(&self.flow);
        if log_bytes > flow.sent {
            drop(flow);
            self.lose(SessionError::Protocol("an ack for log frames never sent"));
            return;
        }
        self.counters.ack_received();
        flow.acked_bytes = flow.acked_bytes.max(log_bytes);
        flow.acked = flow.acked.max(position);
        while let Some(&(p, at)) = flow.rtt.front() {
            if p > position {
                break;
            }
            flow.rtt.pop_front();
            self.counters.round_trip(at.elapsed());
        }
        drop(flow);
        self.flow_cv.notify_all();
    }

    /// Queues an item for the receiver, waiting while the receive buffer
    /// is full (after acking what is queued). False when the channel is
    /// lost.
    fn push(&self, item: Incoming, acks: &mut AckCoalescer) -> bool {
        let cost = item.cost();
        let mut inbox = lock(&self.inbox);
        loop {
            if self.lost.get().is_some() {
                return false;
            }
            if inbox.queue.is_empty() || inbox.bytes + cost <= self.config.recv_buffer_bytes {
                inbox.bytes += cost;
                inbox.queue.push_back(item);
                drop(inbox);
                self.inbox_cv.notify_all();
                return true;
            }
            if acks.pending() {
                drop(inbox);
                if self.send_ack(acks).is_err() {
                    return false;
                }
                inbox = lock(&self.inbox);
                continue;
            }
            inbox = self
                .inbox_cv
                .wait(inbox)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Starts the channel's threads on an established connection.
pub(super) fn start(
    established: Established,
    config: &ChannelConfig,
) -> Result<(ChannelSender, ChannelReceiver, ChannelHandle), SessionError> {
    let Established {
        stream,
        writer,
        mut reader,
        transport,
        session_id,
        initiator,
        ..
    } = established;
    let (ours, theirs) = if initiator {
        (Direction::FromPrimary, Direction::FromBackup)
    } else {
        (Direction::FromBackup, Direction::FromPrimary)
    };
    let beacon = match stream
        .local_addr()
        .and_then(|local| Ok((local, stream.peer_addr()?)))
        .and_then(|(local, peer)| BeaconSocket::open(local, peer, initiator))
    {
        Ok(socket) => Some(Beacon {
            socket,
            sealer: BeaconSealer::new(Arc::clone(&transport), session_id, ours),
            opener: BeaconOpener::new(transport, session_id, theirs),
        }),
        Err(e) => {
            log::warn!(
                "logging channel: no beacon ({e}): the stream alone tells whether the peer lives"
            );
            None
        }
    };
    // The reader's own bound (set here, not only by the handshake: the
    // seed of FT VMotion runs the same connection with longer timeouts
    // first): the stream timeout beside a beacon, else the timeout.
    let bound = if beacon.is_some() {
        config.stream_timeout()
    } else {
        config.timeout
    };
    stream
        .set_read_timeout(Some(detector_tick(bound)))
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| SessionError::Receive(Arc::new(RecordError::Io(e))))?;
    reader.detect_failure(bound);
    let liveness = Liveness::default();
    reader.report_heard(Arc::clone(&liveness.stream_heard));
    let shared = Arc::new(Shared {
        config: config.clone(),
        stream,
        out: SendQueue::new(writer),
        flow: Mutex::new(Flow {
            sent: 0,
            acked_bytes: 0,
            acked: Position::default(),
            rtt: VecDeque::new(),
        }),
        flow_cv: Condvar::new(),
        inbox: Mutex::new(Inbox::default()),
        inbox_cv: Condvar::new(),
        stop: Mutex::new(()),
        stop_cv: Condvar::new(),
        lost: OnceLock::new(),
        counters: ChannelCounters::default(),
        applied: Mutex::new(Position::default()),
        peer_applied: Mutex::new(Position::default()),
        liveness,
    });
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .map_err(|e| SessionError::Spawn(e.to_string()))
    };
    let r = Arc::clone(&shared);
    let reader_thread = spawn(
        "ft-chan-rx",
        Box::new(move || {
            super::priority::raise_current_thread();
            reader_loop(&r, reader);
        }),
    )?;
    let w = Arc::clone(&shared);
    let write = Box::new(move || {
        super::priority::raise_current_thread();
        writer_loop(&w);
    });
    let writer_thread = match spawn("ft-chan-tx", write) {
        Ok(t) => t,
        Err(e) => {
            shared.lose(e.clone());
            let _ = reader_thread.join();
            return Err(e);
        }
    };
    let beacon_thread = match beacon {
        None => None,
        Some(beacon) => {
            let b = Arc::clone(&shared);
            let run = Box::new(move || {
                super::priority::raise_current_thread();
                beacon_loop(&b, beacon);
            });
            match spawn("ft-chan-beacon", run) {
                Ok(t) => Some(t),
                Err(e) => {
                    shared.lose(e.clone());
                    let _ = reader_thread.join();
                    let _ = writer_thread.join();
                    return Err(e);
                }
            }
        }
    };
    Ok((
        ChannelSender {
            shared: Arc::clone(&shared),
            reader: Some(reader_thread),
            writer: Some(writer_thread),
            beacon: beacon_thread,
        },
        ChannelReceiver {
            shared: Arc::clone(&shared),
        },
        ChannelHandle { shared },
    ))
}

/// The sending side (the primary's vCPU thread): log frames and progress,
/// within the unacknowledged window. Dropping it closes the channel
/// abruptly; [`ChannelSender::close`] says goodbye first.
pub struct ChannelSender {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    beacon: Option<JoinHandle<()>>,
}

impl fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSender")
            .field("lost", &self.shared.lost.get())
            .finish_non_exhaustive()
    }
}

impl ChannelSender {
    /// Sends bytes of log frames (opaque to the channel), in records of at
    /// most [`MAX_FRAMES_CHUNK`] bytes. Waits while the unacknowledged
    /// log-frame bytes would pass the window (one record always fits in
    /// an empty window), and while the writer's queue is full. Returns
    /// once they are queued for the writer thread: a failure to write
    /// them loses the channel, which the next call (and
    /// [`ChannelHandle::lost`]) reports.
    pub fn send_frames(&mut self, frames: &[u8]) -> Result<(), SessionError> {
        for chunk in frames.chunks(MAX_FRAMES_CHUNK) {
            self.reserve(chunk.len())?;
            self.shared.send(Message::LogFrames(chunk.to_vec()))?;
            self.shared.counters.frames_sent(chunk.len());
        }
        Ok(())
    }

    /// Tells the peer this side has run up to `position` (every frame up
    /// to there is sent). The peer's ack of it completes a round trip.
    pub fn send_progress(&mut self, position: Position) -> Result<(), SessionError> {
        {
            let mut flow = lock(&self.shared.flow);
            if flow.rtt.len() == MAX_RTT_PENDING {
                flow.rtt.pop_front();
            }
            flow.rtt.push_back((position, Instant::now()));
        }
        self.shared.send(Message::Progress(position))?;
        self.shared.counters.progress_sent();
        Ok(())
    }

    /// Says goodbye and closes: the peer sees [`SessionError::Goodbye`]
    /// after everything sent before.
    pub fn close(mut self) -> Result<(), SessionError> {
        if let Some(e) = self.shared.lost() {
            self.shutdown();
            return Err(e);
        }
        // Closed first: the peer's answer to the goodbye (closing its side)
        // is then no loss. The writer still writes what was queued before,
        // then the goodbye.
        self.shared.lose(SessionError::Closed);
        self.shared.out.close(true);
        self.shutdown();
        self.shared.out.goodbye_result()
    }

    /// A backup whose replay diverged at `exit`: tells the peer why, then
    /// closes as [`close`](Self::close) does. Fails only when the report
    /// could not be written: a peer that read it may close its side before
    /// the goodbye (the channel is then lost before `close`, or the
    /// goodbye is not written), which is the expected end.
    pub fn close_diverged(self, exit: u64, reason: &str) -> Result<(), SessionError> {
        self.shared.send(Message::Diverged {
            exit,
            reason: reason.to_string(),
        })?;
        let shared = Arc::clone(&self.shared);
        // `close` joins the writer: whether it wrote the report is final.
        match self.close() {
            Err(e) if shared.out.said_diverged() => {
                log::debug!(
                    "logging channel: no goodbye after the divergence report \
                     (the peer had it and closed first): {}",
                    crate::error_chain(&e)
                );
                Ok(())
            }
            closed => closed,
        }
    }

    /// Counts `len` bytes into the window, waiting until they fit.
    fn reserve(&self, len: usize) -> Result<(), SessionError> {
        let window = self.shared.config.window_bytes as u64;
        let mut flow = lock(&self.shared.flow);
        let mut counted = false;
        loop {
            if let Some(e) = self.shared.lost() {
                return Err(e);
            }
            let unacked = flow.sent - flow.acked_bytes;
            if unacked == 0 || unacked + len as u64 <= window {
                flow.sent += len as u64;
                return Ok(());
            }
            if !counted {
                self.shared.counters.window_wait();
                counted = true;
            }
            flow = self
                .shared
                .flow_cv
                .wait(flow)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn shutdown(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        self.shared.lose(SessionError::Closed);
        // The writer writes what was queued (as long as it makes progress:
        // a peer that reads nothing for the failure detector's timeout is
        // cut off).
        self.shared.out.close(false);
        let timeout = self.shared.config.timeout;
        let mut sent = self.shared.counters.snapshot().bytes_sent;
        loop {
            wait_finished(&writer, timeout);
            let now = self.shared.counters.snapshot().bytes_sent;
            if writer.is_finished() || now == sent {
                break;
            }
            sent = now;
        }
        // Half-close: the peer reads everything sent, then closes its side,
        // which ends our reader. A peer that does not (its receive buffer
        // is full, but its heartbeats still come) is cut off after the
        // failure detector's timeout.
        let _ = self.shared.stream.shutdown(Shutdown::Write);
        if let Some(reader) = &self.reader {
            wait_finished(reader, timeout);
        }
        let _ = self.shared.stream.shutdown(Shutdown::Both);
        let _ = writer.join();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        // The beacon thread sees the loss within a tick.
        if let Some(beacon) = self.beacon.take() {
            let _ = beacon.join();
        }
    }
}

/// Waits at most `timeout` for `thread` to end.
fn wait_finished(thread: &JoinHandle<()>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Drop for ChannelSender {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The receiving side (the backup's replay): log frames and progress in
/// the order sent, from a bounded receive buffer.
pub struct ChannelReceiver {
    shared: Arc<Shared>,
}

impl fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("lost", &self.shared.lost.get())
            .finish_non_exhaustive()
    }
}

impl ChannelReceiver {
    /// The next item, waiting for it. Items received before the channel
    /// was lost are returned first; then the cause of the loss.
    pub fn recv(&mut self) -> Result<Incoming, SessionError> {
        loop {
            if let Some(item) = self.recv_until(None)? {
                return Ok(item);
            }
        }
    }

    /// The next item, waiting at most `timeout`: `None` when nothing came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming>, SessionError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, SessionError> {
        let mut inbox = lock(&self.shared.inbox);
        loop {
            if let Some(item) = inbox.queue.pop_front() {
                inbox.bytes -= item.cost();
                drop(inbox);
                self.shared.inbox_cv.notify_all();
                return Ok(Some(item));
            }
            if let Some(e) = self.shared.lost() {
                return Err(e);
            }
            inbox = match deadline {
                None => self
                    .shared
                    .inbox_cv
                    .wait(inbox)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.shared
                        .inbox_cv
                        .wait_timeout(inbox, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// A handle any thread may hold: acknowledged positions (the Output Rule
/// waits on them), the channel's state and counters.
#[derive(Clone)]
pub struct ChannelHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelHandle")
            .field("lost", &self.shared.lost.get())
            .finish_non_exhaustive()
    }
}

impl ChannelHandle {
    /// The last progress position the peer acknowledged.
    pub fn acked(&self) -> Position {
        lock(&self.shared.flow).acked
    }

    /// Log-frame bytes sent, and acknowledged by the peer.
    pub fn frame_bytes(&self) -> (u64, u64) {
        let flow = lock(&self.shared.flow);
        (flow.sent, flow.acked_bytes)
    }

    /// Waits until the peer acknowledged `position` (or later); fails when
    /// the channel is lost first (within the failure detector's timeout).
    pub fn wait_acked(&self, position: Position) -> Result<(), SessionError> {
        let mut flow = lock(&self.shared.flow);
        loop {
            if flow.acked >= position {
                return Ok(());
            }
            if let Some(e) = self.shared.lost() {
                return Err(e);
            }
            flow = self
                .shared
                .flow_cv
                .wait(flow)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Why the channel was lost, if it was.
    pub fn lost(&self) -> Option<SessionError> {
        self.shared.lost()
    }

    /// Waits at most `timeout` for the channel to be lost.
    pub fn wait_lost(&self, timeout: Duration) -> Option<SessionError> {
        let deadline = Instant::now() + timeout;
        let mut stop = lock(&self.shared.stop);
        loop {
            if let Some(e) = self.shared.lost() {
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            stop = self
                .shared
                .stop_cv
                .wait_timeout(stop, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The counters now.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// A backup: how far its replay has got (sent with its acks).
    pub fn set_applied(&self, position: Position) {
        *lock(&self.shared.applied) = position;
    }

    /// A primary: how far the backup's replay had got at its last ack.
    pub fn peer_applied(&self) -> Position {
        *lock(&self.shared.peer_applied)
    }

    /// What the peer's last authentic beacon said (its stream progress,
    /// not held back by a stalled stream); `None` before the first.
    pub fn peer_beacon(&self) -> Option<BeaconProgress> {
        self.shared.liveness.peer_beacon()
    }

    /// Closes the channel from any thread (the peer sees it lost).
    pub fn shut_down(&self) {
        self.shared.lose(SessionError::Closed);
        let _ = self.shared.stream.shutdown(Shutdown::Both);
    }
}
