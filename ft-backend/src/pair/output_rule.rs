// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The Output Rule on the primary: an output (a virtio-net TX frame, a
//! virtio-blk write or flush with shared disks; reads too, to stay behind
//! the writes of their device) produced at exit X is held until the
//! backup has acknowledged the primary's progress up to exit X: then the
//! backup has everything it needs to reproduce it, and a failover can
//! never show the world an output the backup's guest did not produce.
//!
//! Outputs are released in the order they were produced (one queue, so
//! in order per device), by a thread of their own: the vCPU never waits
//! for an acknowledgement. When the peer is lost nothing is released
//! until the tiebreak: the winner releases everything held and performs
//! later outputs at once ([`OutputRule::go_unprotected`]); a loser drops
//! them ([`OutputRule::drop_all`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use virtio_devices::{Output, OutputKind, OutputSink};

use crate::channel::{ChannelHandle, Position};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Held until acknowledged.
    Hold,
    /// Performed at once (unprotected).
    Immediate,
    /// Dropped (this side lost).
    Drop,
}

#[derive(Debug)]
struct State {
    held: VecDeque<(u64, Output)>,
    mode: Mode,
    /// Outputs released and performed.
    released: u64,
}

/// The primary's output sink.
#[derive(Debug)]
pub struct OutputRule {
    state: Mutex<State>,
    cv: Condvar,
    /// The exit count outputs are produced at (set by the vCPU).
    position: AtomicU64,
    /// The exit count of the newest output held.
    newest: AtomicU64,
    /// Whether disk writes and flushes are outputs (shared disks); with
    /// separate disks the backup writes its own copy as it replays, so
    /// only the network waits.
    hold_disks: bool,
}

impl OutputRule {
    /// A rule holding outputs; disk requests too when `hold_disks`.
    pub fn new(hold_disks: bool) -> Arc<Self> {
        Arc::new(OutputRule {
            state: Mutex::new(State {
                held: VecDeque::new(),
                mode: Mode::Hold,
                released: 0,
            }),
            cv: Condvar::new(),
            position: AtomicU64::new(0),
            newest: AtomicU64::new(0),
            hold_disks,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The vCPU is at exit `exits`: outputs from now on belong to it.
    pub fn set_position(&self, exits: u64) {
        self.position.store(exits, Ordering::Relaxed);
    }

    /// The exit count of the newest output held (the progress the primary
    /// must send for it to be released).
    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::Relaxed)
    }

    /// Outputs held now.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Outputs released so far.
    pub fn released(&self) -> u64 {
        self.lock().released
    }

    /// The peer won't acknowledge any more and this side continues alone:
    /// everything held is performed, and later outputs at once.
    pub fn go_unprotected(&self) {
        self.lock().mode = Mode::Immediate;
        self.cv.notify_all();
    }

    /// This side lost: nothing held is ever performed.
    pub fn drop_all(&self) {
        let mut s = self.lock();
        s.mode = Mode::Drop;
        s.held.clear();
        drop(s);
        self.cv.notify_all();
    }

    /// Releases outputs as `handle` reports acknowledgements; returns
    /// when the channel is lost (the tiebreak then decides) and keeps
    /// going in the mode decided.
    pub fn spawn_releaser(
        self: &Arc<Self>,
        handle: ChannelHandle,
    ) -> std::io::Result<JoinHandle<()>> {
        let rule = self.clone();
        std::thread::Builder::new()
            .name("ft_outputs".into())
            .spawn(move || rule.release_loop(&handle))
    }

    fn release_loop(&self, handle: &ChannelHandle) {
        loop {
            let (front, mode) = {
                let mut s = self.lock();
                while s.held.is_empty() && s.mode != Mode::Drop {
                    s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
                }
                match s.held.front() {
                    Some((p, _)) => (*p, s.mode),
                    None => return,
                }
            };
            let upto = match mode {
                Mode::Drop => return,
                Mode::Immediate => u64::MAX,
                Mode::Hold => {
                    let want = Position {
                        exits: front,
                        guest_ns: 0,
                    };
                    match handle.wait_acked(want) {
                        Ok(()) => handle.acked().exits,
                        Err(_) => {
                            // Lost: wait for the tiebreak's decision.
                            let mut s = self.lock();
                            while s.mode == Mode::Hold {
                                s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
                            }
                            continue;
                        }
                    }
                }
            };
            let ready: Vec<Output> = {
                let mut s = self.lock();
                if s.mode == Mode::Drop {
                    return;
                }
                let mut v = Vec::new();
                while s.held.front().is_some_and(|(p, _)| *p <= upto) {
                    if let Some((_, o)) = s.held.pop_front() {
                        v.push(o);
                    }
                }
                s.released += v.len() as u64;
                v
            };
            for o in ready {
                o.release();
            }
        }
    }
}

impl OutputSink for OutputRule {
    fn submit(&self, output: Output) {
        if !self.hold_disks && !matches!(output.kind, OutputKind::NetFrame { .. }) {
            // Separate disks: the device's own order is kept by its thread.
            output.release();
            return;
        }
        let mut s = self.lock();
        match s.mode {
            Mode::Drop => {}
            Mode::Immediate if s.held.is_empty() => {
                s.released += 1;
                drop(s);
                output.release();
            }
            _ => {
                // Exit counts start at 1: nothing is acknowledged at 0.
                let p = self.position.load(Ordering::Relaxed).max(1);
                self.newest.store(p, Ordering::Relaxed);
                s.held.push_back((p, output));
                drop(s);
                self.cv.notify_all();
            }
        }
    }
}
