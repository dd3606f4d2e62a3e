// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! FT VMotion in the vCPU loop: the point of the loop a seed is taken at
//! ([`SeedCursor`]), given to the backup, and the switch of a running VM
//! into the primary's mode at that point ([`FtContext::become_primary`]).
//!
//! The seed is taken at the loop's rendezvous, at the top of a turn: either
//! right after a guest-caused exit (a synchronous point: the primary
//! delivers and logs the host's events there, the backup replays them), or
//! after a kick (the primary delivers nothing until its next exit or a
//! forced delivery's checkpoint; the backup runs the guest to the next
//! exit, or applies that checkpoint). Both sides continue the exit count
//! and the state of the turn from the cursor.

use std::sync::{Arc, Mutex};

use devices::clock::Clock;
use ft_backend::clock::RecordingClock;
use ft_backend::pair::primary::Primary as PairPrimary;
use ft_backend::{ExitId, LogHeader, Recorder};

use super::pair::PrimaryPair;
use super::record::{Primary, Record};
use super::{FtContext, FtError};

/// The loop's place when a seed is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedCursor {
    /// Guest-caused exits so far.
    pub exits: u64,
    /// The identity of the last one (as this side knows it).
    pub last_id: ExitId,
    /// Right after a guest-caused exit.
    pub at_sync: bool,
    /// The turn is the first after that exit.
    pub fresh_exit: bool,
    /// The last exit was an interrupt window.
    pub window_exit: bool,
    /// Whether the guest could take an interrupt, as KVM said at the
    /// vCPU's last exit (the primary's next injection decides with it; a
    /// new vCPU has no last exit).
    pub ready: bool,
}

/// Bytes of an encoded cursor.
const CURSOR_LEN: usize = 8 + 17 + 4;

impl SeedCursor {
    /// The cursor's bytes (integers little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CURSOR_LEN);
        v.extend_from_slice(&self.exits.to_le_bytes());
        v.push(self.last_id.kind);
        v.extend_from_slice(&self.last_id.addr.to_le_bytes());
        v.extend_from_slice(&self.last_id.rip.to_le_bytes());
        v.extend([
            u8::from(self.at_sync),
            u8::from(self.fresh_exit),
            u8::from(self.window_exit),
            u8::from(self.ready),
        ]);
        v
    }

    /// A cursor from [`encode`](Self::encode)'s bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != CURSOR_LEN {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        Some(SeedCursor {
            exits: u64_at(0),
            last_id: ExitId {
                kind: b[8],
                addr: u64_at(9),
                rip: u64_at(17),
            },
            at_sync: b[25] != 0,
            fresh_exit: b[26] != 0,
            window_exit: b[27] != 0,
            ready: b[28] != 0,
        })
    }
}

/// What a running VM needs to become a primary.
pub struct PrimarySwitch {
    /// The VM as the recording's consumer of the dirty page log sees it
    /// (`DirtyConsumer::into_vm`: registering turned logging on).
    pub dirty_vm: Arc<dyn hypervisor::Vm>,
    /// The pair, on its open channel.
    pub primary: PairPrimary,
    /// The stream's header.
    pub header: LogHeader,
    /// The forced-delivery bound (ns).
    pub max_delay_ns: u64,
    /// Heartbeat and lag bound of the pair (ms).
    pub heartbeat_ms: u64,
    /// The primary's lag bound (ms).
    pub max_lag_ms: u64,
    /// The VM clock the recording clock reads.
    pub vm_clock: Arc<dyn Clock>,
    /// Receives the recording clock: the interrupt controller's.
    pub set_clock: Box<dyn FnOnce(Arc<dyn Clock>) + Send>,
}

impl std::fmt::Debug for PrimarySwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimarySwitch")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl FtContext {
    /// Where the loop is (on the vCPU thread, at the rendezvous);
    /// `ready`: the vCPU's readiness for an interrupt.
    pub fn cursor(&self, ready: bool) -> SeedCursor {
        SeedCursor {
            exits: self.exits,
            last_id: self.last_id,
            at_sync: self.at_sync,
            fresh_exit: self.fresh_exit,
            window_exit: self.window_exit,
            ready,
        }
    }

    /// A seeded backup continues from the primary's `cursor`. After a
    /// kick the backup stands at the cursor's exit as replay does after
    /// that exit: a checkpoint the primary logged there (a forced
    /// delivery) is applied before the guest runs, as at a synchronous
    /// point; otherwise the guest runs to the next exit without a delivery
    /// or an injection, as on the primary. Waits (live) until the stream
    /// says which.
    pub fn set_cursor(&mut self, cursor: SeedCursor) {
        self.exits = cursor.exits;
        self.last_id = cursor.last_id;
        self.at_sync = cursor.at_sync;
        self.fresh_exit = cursor.fresh_exit;
        self.window_exit = cursor.window_exit;
        // The recording's first stretch starts at the seed: unknown there.
        self.start_registers = None;
        if cursor.at_sync {
            // The primary injects with KVM's answer at its last exit; this
            // vCPU has not run yet.
            self.ready_override = Some(cursor.ready);
        }
        self.mode.after_exit(cursor.exits);
        if !cursor.at_sync && self.mode.checkpoint_next(cursor.exits) {
            self.at_sync = true;
            self.fresh_exit = false;
        }
    }

    /// Whether the mode records or replays (a VM that does cannot become
    /// a primary).
    pub fn busy(&self) -> bool {
        self.mode.is_active()
    }

    /// Switches a plain running VM into the primary's mode from the next
    /// loop turn: dirty pages read through the recording's consumer of the
    /// dirty log (`PrimarySwitch::dirty_vm`), the stream's header
    /// and setup sent, the exit count continued, the interrupt
    /// controller's reads recorded.
    pub fn become_primary(&mut self, switch: PrimarySwitch) -> Result<(), FtError> {
        if self.busy() {
            return Err(FtError::GoLive("the VM records or replays already".into()));
        }
        // Its first read returns the pages written from now on.
        self.vm = switch.dirty_vm.clone();
        // The first stretch starts at the seed: its backup does not know
        // the registers of this side's last exit (see `set_cursor`).
        self.start_registers = None;
        let recorder = switch
            .primary
            .recorder(switch.header, self.devices.setup.clone())
            .map_err(FtError::Stream)?;
        let recorder: Arc<Mutex<Recorder>> = Arc::new(Mutex::new(recorder));
        super::lock(&recorder).set_exit(self.exits);
        (switch.set_clock)(Arc::new(RecordingClock::new(
            switch.vm_clock,
            recorder.clone(),
        )));
        let record = Record::new(recorder, switch.max_delay_ns);
        let pair = PrimaryPair::new(switch.primary, switch.heartbeat_ms, switch.max_lag_ms);
        self.mode = Box::new(Primary::new(record, pair));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = SeedCursor {
            exits: 123_456,
            last_id: ExitId {
                kind: 3,
                addr: 0x3f8,
                rip: 0xffff_8000_1234,
            },
            at_sync: true,
            fresh_exit: false,
            window_exit: true,
            ready: true,
        };
        assert_eq!(SeedCursor::decode(&c.encode()), Some(c));
        assert_eq!(SeedCursor::decode(&[0; 3]), None);
    }
}
