// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The channel's one writer: the only thread that seals records and writes
//! the socket.
//!
//! Senders (the log thread's frames and progress, the reader's acks) only
//! queue plaintext messages; the writer takes them in order, seals each as
//! the next record (so sequence numbers, which are also the AEAD nonces,
//! stay monotonic) and writes them, several records per `write`. When it
//! has sent nothing for `heartbeat` it sends a heartbeat itself.
//!
//! Why one writer: the channel's liveness must not depend on a thread that
//! can be starved. The writer runs in the real-time class
//! ([`super::priority`]); the senders do not (the log thread and vCPU
//! threads are ordinary). When every sender wrote the socket under one
//! lock, an ordinary thread preempted or throttled (a CPU cgroup's budget
//! spent) while holding it kept the real-time heartbeat thread out for the
//! rest of the period, up to 700 ms in `a_pair_starved_of_cpu_does_not_fail_over`,
//! and the peer declared this side lost. Here the writer never blocks on a
//! lock an ordinary thread holds for long: the queue's lock is held by a
//! sender only to push one message, and the writer only *tries* it; when a
//! sender holds it, the writer sends the heartbeat anyway and takes the
//! queue once the sender is done (a sender wakes the writer after each
//! push). The sealing state (the record writer) is shared only with the
//! reader, also real-time: the reader writes an ack itself when the writer
//! is not writing (no hand-off: the Output Rule waits on these acks), and
//! otherwise leaves it in a slot the writer sends first.
//!
//! Flow control: the queue is bounded in bytes ([`QUEUE_BYTES`]); a sender
//! waits for room, so the primary's unsent log stays small and its lag
//! (which throttles the vCPU) measures the backup, not this queue. The
//! unacknowledged window ([`super::ChannelConfig::window_bytes`]) still
//! bounds what is sent but not acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::message::Message;
use super::record::RecordWriter;
use super::session::{lock, SessionError, Shared};

/// Bytes of queued messages after which a sender waits (one message always
/// fits in an empty queue).
pub(super) const QUEUE_BYTES: usize = 1 << 20;

/// Sealed bytes the writer gathers for one `write` at most.
const BATCH_BYTES: usize = 256 << 10;

/// Accounting overhead of one queued message besides its frame bytes.
const MESSAGE_OVERHEAD: usize = 64;

/// How soon the writer looks at the queue again when a sender held its
/// lock (the sender wakes it anyway when done).
const RETRY: Duration = Duration::from_millis(1);

fn cost(msg: &Message) -> usize {
    match msg {
        Message::LogFrames(b) => b.len() + MESSAGE_OVERHEAD,
        _ => MESSAGE_OVERHEAD,
    }
}

#[derive(Debug)]
struct Queued {
    msg: Message,
    at: Instant,
    cost: usize,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Queued>,
    bytes: usize,
    /// The channel is closing: the writer writes what is queued, then
    /// the goodbye when `true`, then stops.
    close: Option<bool>,
}

/// The queue between the senders and the writer.
#[derive(Debug)]
pub(super) struct SendQueue {
    /// The socket's sending half, taken only by the writer and the reader
    /// (both real-time).
    sink: Mutex<Sink>,
    queue: Mutex<Queue>,
    /// Senders wait here for room.
    room: Condvar,
    /// The newest ack not yet sent (an ack covers every earlier one).
    ack: Mutex<Option<Message>>,
    /// The writer thread, to wake it.
    writer: OnceLock<Thread>,
    /// The goodbye was written.
    said_goodbye: AtomicBool,
    /// A divergence report was written.
    said_diverged: AtomicBool,
    /// Why writing failed, if it did (kept even when the channel was
    /// already closing, for [`super::ChannelSender::close`]).
    failed: OnceLock<SessionError>,
}

impl SendQueue {
    /// A queue whose records go out through `records`.
    pub(super) fn new(records: RecordWriter) -> Self {
        SendQueue {
            sink: Mutex::new(Sink {
                records,
                wire: Vec::with_capacity(BATCH_BYTES + (64 << 10)),
                gathered: 0,
                oldest: None,
                last_sent: Instant::now(),
                diverged: false,
            }),
            queue: Mutex::default(),
            room: Condvar::new(),
            ack: Mutex::default(),
            writer: OnceLock::new(),
            said_goodbye: AtomicBool::new(false),
            said_diverged: AtomicBool::new(false),
            failed: OnceLock::new(),
        }
    }

    fn wake_writer(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Wakes every waiting sender and the writer (the channel was lost).
    pub(super) fn wake_all(&self) {
        drop(lock(&self.queue));
        self.room.notify_all();
        self.wake_writer();
    }

    /// Queues `msg` for the writer, waiting while the queue is full.
    pub(super) fn push(&self, shared: &Shared, msg: Message) -> Result<(), SessionError> {
        let cost = cost(&msg);
        let asked = Instant::now();
        let mut q = lock(&self.queue);
        shared.counters.send_lock(asked.elapsed());
        let mut counted = false;
        let pushed = loop {
            if let Some(e) = shared.lost() {
                break Err(e);
            }
            if q.items.is_empty() || q.bytes + cost <= QUEUE_BYTES {
                q.bytes += cost;
                q.items.push_back(Queued {
                    msg,
                    at: Instant::now(),
                    cost,
                });
                break Ok(());
            }
            if !counted {
                shared.counters.queue_full_wait();
                counted = true;
            }
            q = self.room.wait(q).unwrap_or_else(PoisonError::into_inner);
        };
        drop(q);
        self.wake_writer();
        pushed
    }

    /// Sends an ack (from the reader): at once when the writer is not
    /// writing, otherwise as the writer's next record (replacing an older
    /// ack not yet sent).
    pub(super) fn send_ack(&self, shared: &Shared, ack: Message) {
        let mut sink = match self.sink.try_lock() {
            Ok(sink) => sink,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                *lock(&self.ack) = Some(ack);
                self.wake_writer();
                return;
            }
        };
        let sent = sink
            .seal(shared, &ack, None)
            .and_then(|()| sink.flush(shared));
        drop(sink);
        match sent {
            Ok(()) => shared.counters.ack_sent(),
            Err(e) => {
                let _ = self.failed.set(e.clone());
                shared.lose(e);
            }
        }
    }

    /// Asks the writer to write what is queued, then (`goodbye`) a
    /// goodbye, then stop. A goodbye asked for before stays asked for.
    pub(super) fn close(&self, goodbye: bool) {
        let mut q = lock(&self.queue);
        q.close = Some(q.close.unwrap_or(false) || goodbye);
        drop(q);
        self.wake_writer();
    }

    /// Whether the writer wrote the goodbye; otherwise why not.
    pub(super) fn goodbye_result(&self) -> Result<(), SessionError> {
        if self.said_goodbye.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(self.failed.get().cloned().unwrap_or(SessionError::Closed))
    }

    /// Whether the writer wrote a divergence report (final once the
    /// writer thread ended).
    pub(super) fn said_diverged(&self) -> bool {
        self.said_diverged.load(Ordering::SeqCst)
    }
}

/// What the writer took from the queue in one look.
enum Took {
    /// The queue's lock was held by a sender.
    Busy,
    /// Messages (maybe none), and the close request when the queue was
    /// emptied.
    Some(Option<bool>),
}

/// The socket's sending half and what is gathered for one write.
#[derive(Debug)]
struct Sink {
    records: RecordWriter,
    wire: Vec<u8>,
    /// Records gathered in `wire`, and the oldest one's queueing time.
    gathered: u64,
    oldest: Option<Instant>,
    last_sent: Instant,
    /// `wire` holds a divergence report.
    diverged: bool,
}

impl Sink {
    /// Seals `msg` into the batch; writes the batch when it is full.
    fn seal(
        &mut self,
        shared: &Shared,
        msg: &Message,
        queued: Option<Instant>,
    ) -> Result<(), SessionError> {
        self.records
            .seal(msg, &mut self.wire)
            .map_err(|e| SessionError::Send(Arc::new(e)))?;
        self.gathered += 1;
        self.diverged |= matches!(msg, Message::Diverged { .. });
        if let Some(at) = queued {
            self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
        }
        if self.wire.len() >= BATCH_BYTES {
            self.flush(shared)?;
        }
        Ok(())
    }

    /// Writes the gathered records.
    fn flush(&mut self, shared: &Shared) -> Result<(), SessionError> {
        if self.wire.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let written = self.records.write_sealed(&self.wire);
        let done = Instant::now();
        shared.slow("wrote records", done - start);
        shared.counters.send_write(done - start);
        written.map_err(|e| SessionError::Send(Arc::new(e)))?;
        let gap = start.saturating_duration_since(self.last_sent);
        shared.slow("sent nothing", gap);
        shared.counters.send_gap(gap);
        if let Some(at) = self.oldest.take() {
            shared
                .counters
                .send_queue(done.saturating_duration_since(at));
        }
        shared
            .counters
            .sent_records(self.gathered, self.wire.len() as u64);
        self.gathered = 0;
        self.wire.clear();
        self.last_sent = done;
        if std::mem::take(&mut self.diverged) {
            shared.out.said_diverged.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Takes the pending ack and up to a batch of queued messages and
    /// seals them.
    fn take(&mut self, shared: &Shared) -> Result<(Took, bool), SessionError> {
        let out = &shared.out;
        let ack = lock(&out.ack).take();
        let mut any = false;
        if let Some(ack) = ack {
            self.seal(shared, &ack, None)?;
            shared.counters.ack_sent();
            any = true;
        }
        let mut q = match out.queue.try_lock() {
            Ok(q) => q,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok((Took::Busy, any)),
        };
        let mut taken = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES {
            let Some(item) = q.items.pop_front() else {
                break;
            };
            q.bytes -= item.cost;
            bytes += item.cost;
            taken.push(item);
        }
        let close = if q.items.is_empty() { q.close } else { None };
        drop(q);
        if !taken.is_empty() {
            out.room.notify_all();
            any = true;
        }
        for item in taken {
            self.seal(shared, &item.msg, Some(item.at))?;
        }
        Ok((Took::Some(close), any))
    }
}

/// The writer thread's loop: queued messages in order, acks first,
/// heartbeats when idle, the goodbye last.
pub(super) fn writer_loop(shared: &Shared) {
    let _ = shared.out.writer.set(std::thread::current());
    if let Err(e) = run(shared) {
        let _ = shared.out.failed.set(e.clone());
        shared.lose(e);
    }
}

fn run(shared: &Shared) -> Result<(), SessionError> {
    let period = shared.config.heartbeat;
    loop {
        // A channel closed by this side still writes what was queued
        // before (and the goodbye); any other loss ends the writer.
        match shared.lost() {
            None | Some(SessionError::Closed) => {}
            Some(_) => return Ok(()),
        }
        let mut sink = lock(&shared.out.sink);
        let (took, any) = sink.take(shared)?;
        sink.flush(shared)?;
        let close = match took {
            Took::Some(close) => close,
            Took::Busy => None,
        };
        if any {
            continue;
        }
        if let Some(goodbye) = close {
            if goodbye {
                sink.seal(shared, &Message::Goodbye, None)?;
                sink.flush(shared)?;
                shared.out.said_goodbye.store(true, Ordering::SeqCst);
            }
            return Ok(());
        }
        let due = sink.last_sent + period;
        let now = Instant::now();
        if now >= due {
            let late = now - due;
            shared.slow("sent a heartbeat late", late);
            shared.counters.heartbeat_late(late);
            sink.seal(shared, &Message::Heartbeat, None)?;
            sink.flush(shared)?;
            shared.counters.heartbeat_sent();
            continue;
        }
        drop(sink);
        let mut wait = due - now;
        if matches!(took, Took::Busy) {
            wait = wait.min(RETRY);
        }
        std::thread::park_timeout(wait);
    }
}
