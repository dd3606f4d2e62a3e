// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The one owner of KVM's dirty page log.
//!
//! KVM keeps one dirty bitmap per memory slot, and `KVM_GET_DIRTY_LOG`
//! returns it *and clears it*. Two readers of it (a recording's
//! micro-checkpoints and a live migration's pre-copy rounds) would each
//! lose the pages the other read. [`DirtyLog`] is the only code that
//! reads it: every consumer registers ([`DirtyLog::register`]) and reads
//! through its [`DirtyConsumer`]. A read takes KVM's bitmap, merges it into
//! the pending set of every *other* active consumer, and returns the
//! reader's own pending set together with it: every consumer sees every
//! page written since its own previous read, whoever read KVM's log in
//! between.
//!
//! A read normally re-protects every page it reports (`get_dirty_log`).
//! A recording's checkpoint reads without it (`peek_dirty_log`) and then
//! re-protects all but its hot pages (`clear_dirty_log`; see
//! `vcpu/ft/dirty_pages.rs`): the pages it keeps stay reported to every
//! consumer at every read until someone clears them, which costs a
//! migration at most a resend of pages the guest keeps writing anyway.
//!
//! Logging is on while at least one consumer is registered (or from the
//! start, for a VM that records from its first instruction: its memory is
//! registered with logging on). The first consumer turns it on, the last
//! one to leave turns it off again.
//!
//! A recording's context reads the log through the `hypervisor::Vm` trait
//! (`get_dirty_log`); [`DirtyConsumer::into_vm`] gives it a `Vm` whose
//! dirty log is its consumer's and whose other operations are the VM's.
//! `drop_cached_translations` deletes and re-registers slots, which loses
//! KVM's log of them (the trait says so): only a replay calls it, and
//! nothing migrates a replaying VM.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hypervisor::{HypervisorError, MemoryRegion, Vcpu, Vm};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::GuestMemoryMmapT;

/// Bytes per page of the dirty log.
pub const PAGE_SIZE: u64 = 4096;

/// Errors of the dirty log.
#[derive(Debug, thiserror::Error)]
pub enum DirtyLogError {
    /// Turning logging on or off failed.
    #[error("cannot turn dirty page logging {}", if *.on { "on" } else { "off" })]
    Toggle {
        /// The state asked for.
        on: bool,
        /// Why.
        #[source]
        source: HypervisorError,
    },
    /// KVM's log of a slot could not be read.
    #[error("cannot read the dirty page log of slot {slot}")]
    Read {
        /// The slot.
        slot: u32,
        /// Why.
        #[source]
        source: HypervisorError,
    },
    /// A slot the VM does not have.
    #[error("no memory slot {0}")]
    NoSlot(u32),
}

/// A memory slot as the log sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// KVM's slot number.
    pub slot: u32,
    /// Its first guest-physical address.
    pub base: u64,
    /// Its length in bytes.
    pub size: u64,
}

impl Slot {
    /// Words of its bitmap (one bit per page).
    fn words(&self) -> usize {
        usize::try_from(self.size.div_ceil(PAGE_SIZE).div_ceil(64)).unwrap_or(0)
    }
}

/// The pending sets of the registered consumers: the pure merging logic.
#[derive(Debug, Default)]
pub struct PendingSets {
    /// Per consumer, per slot index, the pages written since its last read
    /// that another consumer took from KVM.
    consumers: BTreeMap<u64, Vec<Vec<u64>>>,
    next_id: u64,
}

impl PendingSets {
    /// Adds a consumer with nothing pending for slots of `words` words each.
    pub fn add(&mut self, words: &[usize]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.consumers
            .insert(id, words.iter().map(|&w| vec![0; w]).collect());
        id
    }

    /// Removes a consumer; returns how many remain.
    pub fn remove(&mut self, id: u64) -> usize {
        self.consumers.remove(&id);
        self.consumers.len()
    }

    /// Consumers registered.
    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    /// True without consumers.
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    /// `reader` read `fresh` from KVM for slot index `index`: every other
    /// consumer keeps it pending; returns the reader's pending set merged
    /// with it, and clears the reader's pending set.
    pub fn read(&mut self, reader: u64, index: usize, fresh: &[u64]) -> Vec<u64> {
        let mut own = Vec::new();
        for (&id, slots) in self.consumers.iter_mut() {
            let Some(pending) = slots.get_mut(index) else {
                continue;
            };
            if pending.len() < fresh.len() {
                pending.resize(fresh.len(), 0);
            }
            if id == reader {
                own = std::mem::take(pending);
                pending.resize(own.len(), 0);
                for (o, f) in own.iter_mut().zip(fresh) {
                    *o |= *f;
                }
            } else {
                for (p, f) in pending.iter_mut().zip(fresh) {
                    *p |= *f;
                }
            }
        }
        own
    }
}

/// The owner of a VM's dirty page log.
#[derive(Debug)]
pub struct DirtyLog {
    vm: Arc<dyn Vm>,
    slots: Vec<Slot>,
    /// Logging was turned on when the memory was registered (a recording):
    /// it stays on.
    always_on: bool,
    pending: Mutex<PendingSets>,
}

impl DirtyLog {
    /// The owner of `vm`'s log of `memory`'s slots (slot `i` is the
    /// `i`-th region, as `memory::create_guest_memory` registers them);
    /// `logging_on` when the slots were registered with logging on.
    pub fn new(vm: Arc<dyn Vm>, memory: &GuestMemoryMmapT, logging_on: bool) -> Arc<DirtyLog> {
        let slots = memory
            .iter()
            .enumerate()
            .map(|(i, r)| Slot {
                slot: u32::try_from(i).unwrap_or(u32::MAX),
                base: r.start_addr().0,
                size: r.len(),
            })
            .collect();
        Arc::new(DirtyLog {
            vm,
            slots,
            always_on: logging_on,
            pending: Mutex::new(PendingSets::default()),
        })
    }

    /// The slots.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingSets> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a consumer (`name` for the logs); turns logging on if it
    /// is the first. Its first read returns the pages written from now on.
    pub fn register(self: &Arc<Self>, name: &'static str) -> Result<DirtyConsumer, DirtyLogError> {
        let mut pending = self.lock();
        if pending.is_empty() && !self.always_on {
            self.vm
                .set_dirty_logging(true)
                .map_err(|source| DirtyLogError::Toggle { on: true, source })?;
        } else if !pending.is_empty() {
            // Whatever KVM logged so far belongs to the consumers already
            // registered, not to the new one.
            for (index, slot) in self.slots.iter().enumerate() {
                let fresh = self
                    .vm
                    .get_dirty_log(slot.slot, slot.size)
                    .map_err(|source| DirtyLogError::Read {
                        slot: slot.slot,
                        source,
                    })?;
                pending.read(u64::MAX, index, &fresh);
            }
        }
        let words: Vec<usize> = self.slots.iter().map(Slot::words).collect();
        let id = pending.add(&words);
        log::debug!("dirty log: {name} registered ({} consumers)", pending.len());
        Ok(DirtyConsumer {
            log: Arc::clone(self),
            id,
            name,
        })
    }

    fn unregister(&self, id: u64, name: &str) {
        let mut pending = self.lock();
        let left = pending.remove(id);
        log::debug!("dirty log: {name} left ({left} consumers)");
        if left == 0 && !self.always_on {
            if let Err(e) = self.vm.set_dirty_logging(false) {
                log::warn!("dirty log: cannot turn logging off: {e}");
            }
        }
    }

    fn slot(&self, slot: u32) -> Result<(usize, &Slot), DirtyLogError> {
        self.slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.slot == slot)
            .ok_or(DirtyLogError::NoSlot(slot))
    }

    /// Consumer `id`'s pages of `slot`; with `rearm`, every page KVM
    /// reported is tracked again, else KVM keeps reporting them (and, when
    /// it keeps pages, leaves them writable) until [`Self::clear`].
    fn read(&self, id: u64, slot: u32, rearm: bool) -> Result<Vec<u64>, DirtyLogError> {
        let (index, s) = self.slot(slot)?;
        let mut pending = self.lock();
        let fresh = if rearm {
            self.vm.get_dirty_log(s.slot, s.size)
        } else {
            self.vm.peek_dirty_log(s.slot, s.size)
        }
        .map_err(|source| DirtyLogError::Read { slot, source })?;
        Ok(pending.read(id, index, &fresh))
    }

    /// Tracks the pages of `bitmap` in `slot` again (after a read without
    /// re-arming).
    fn clear(&self, slot: u32, bitmap: &[u64]) -> Result<(), DirtyLogError> {
        let (_, s) = self.slot(slot)?;
        let _pending = self.lock();
        self.vm
            .clear_dirty_log(s.slot, s.size, bitmap)
            .map_err(|source| DirtyLogError::Read { slot, source })
    }
}

/// A registered reader of the dirty log; dropping it unregisters it.
#[derive(Debug)]
pub struct DirtyConsumer {
    log: Arc<DirtyLog>,
    id: u64,
    name: &'static str,
}

impl DirtyConsumer {
    /// The pages of `slot` written since this consumer's last read.
    pub fn read_slot(&self, slot: u32) -> Result<Vec<u64>, DirtyLogError> {
        self.log.read(self.id, slot, true)
    }

    /// Every slot's pages written since this consumer's last read, with
    /// the slot.
    pub fn read_all(&self) -> Result<Vec<(Slot, Vec<u64>)>, DirtyLogError> {
        self.log
            .slots
            .iter()
            .map(|s| Ok((*s, self.read_slot(s.slot)?)))
            .collect()
    }

    /// A `hypervisor::Vm` whose `get_dirty_log` reads this consumer's log
    /// and whose other operations are the VM's (for code written against
    /// the trait: the recording's micro-checkpoints).
    pub fn into_vm(self) -> Arc<dyn Vm> {
        Arc::new(ConsumerVm { consumer: self })
    }
}

impl Drop for DirtyConsumer {
    fn drop(&mut self) {
        self.log.unregister(self.id, self.name);
    }
}

/// See [`DirtyConsumer::into_vm`].
#[derive(Debug)]
struct ConsumerVm {
    consumer: DirtyConsumer,
}

impl Vm for ConsumerVm {
    unsafe fn set_user_memory_region(&self, region: MemoryRegion) -> hypervisor::Result<()> {
        // SAFETY: the caller upholds the trait's contract, passed on as is.
        unsafe { self.consumer.log.vm.set_user_memory_region(region) }
    }

    fn create_vcpu(&self, id: u8) -> hypervisor::Result<Box<dyn Vcpu>> {
        self.consumer.log.vm.create_vcpu(id)
    }

    fn get_dirty_log(&self, slot: u32, _size: u64) -> hypervisor::Result<Vec<u64>> {
        self.consumer
            .log
            .read(self.consumer.id, slot, true)
            .map_err(hypervisor_error)
    }

    fn keeps_dirty_pages(&self) -> bool {
        self.consumer.log.vm.keeps_dirty_pages()
    }

    fn peek_dirty_log(&self, slot: u32, _size: u64) -> hypervisor::Result<Vec<u64>> {
        self.consumer
            .log
            .read(self.consumer.id, slot, false)
            .map_err(hypervisor_error)
    }

    fn clear_dirty_log(&self, slot: u32, _size: u64, bitmap: &[u64]) -> hypervisor::Result<()> {
        self.consumer
            .log
            .clear(slot, bitmap)
            .map_err(hypervisor_error)
    }

    fn drop_cached_translations(&self, changed: &[u64]) -> hypervisor::Result<()> {
        self.consumer.log.vm.drop_cached_translations(changed)
    }

    fn set_dirty_logging(&self, on: bool) -> hypervisor::Result<()> {
        self.consumer.log.vm.set_dirty_logging(on)
    }
}

/// A dirty-log error as the `hypervisor::Vm` trait reports it.
fn hypervisor_error(e: DirtyLogError) -> HypervisorError {
    match e {
        DirtyLogError::Read { source, .. } | DirtyLogError::Toggle { source, .. } => source,
        DirtyLogError::NoSlot(_) => HypervisorError::Ioctl {
            op: "KVM_GET_DIRTY_LOG",
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_consumer_gets_what_kvm_logged() {
        let mut p = PendingSets::default();
        let a = p.add(&[2]);
        assert_eq!(p.read(a, 0, &[0b101, 1]), vec![0b101, 1]);
        assert_eq!(p.read(a, 0, &[0, 0]), vec![0, 0]);
    }

    #[test]
    fn a_read_by_one_consumer_is_kept_for_the_other() {
        let mut p = PendingSets::default();
        let rec = p.add(&[2, 1]);
        let mig = p.add(&[2, 1]);
        // The recording reads pages 0 and 65; the migration has not read.
        assert_eq!(p.read(rec, 0, &[1, 2]), vec![1, 2]);
        // KVM now logs page 3: the migration gets 0, 65 and 3.
        assert_eq!(p.read(mig, 0, &[0b1000, 0]), vec![0b1001, 2]);
        // The recording gets page 3 (read by the migration) and page 4.
        assert_eq!(p.read(rec, 0, &[0b1_0000, 0]), vec![0b1_1000, 0]);
        // The migration gets page 4 only.
        assert_eq!(p.read(mig, 0, &[0, 0]), vec![0b1_0000, 0]);
        // Slots are kept apart.
        assert_eq!(p.read(rec, 1, &[7]), vec![7]);
        assert_eq!(p.read(mig, 1, &[0]), vec![7]);
        assert_eq!(p.read(mig, 0, &[0, 0]), vec![0, 0]);
    }

    #[test]
    fn three_consumers_and_a_departure() {
        let mut p = PendingSets::default();
        let a = p.add(&[1]);
        let b = p.add(&[1]);
        let c = p.add(&[1]);
        assert_eq!(p.read(a, 0, &[1]), vec![1]);
        assert_eq!(p.read(b, 0, &[2]), vec![3]);
        assert_eq!(p.remove(b), 2);
        assert_eq!(p.read(c, 0, &[4]), vec![7]);
        assert_eq!(p.read(a, 0, &[0]), vec![6]);
        assert_eq!(p.read(c, 0, &[0]), vec![0]);
    }

    #[test]
    fn a_new_consumer_starts_empty_and_a_reader_not_registered_feeds_all() {
        let mut p = PendingSets::default();
        let a = p.add(&[1]);
        // What `register` does for a newcomer: KVM's log so far goes to
        // the consumers already there.
        p.read(u64::MAX, 0, &[0b11]);
        let b = p.add(&[1]);
        assert_eq!(p.read(b, 0, &[0b100]), vec![0b100]);
        assert_eq!(p.read(a, 0, &[0]), vec![0b111]);
    }

    #[test]
    fn every_page_reaches_every_consumer_in_a_random_interleaving() {
        // A made-up stream of KVM bitmaps read by two consumers in a
        // pseudo-random order: each sees the union of everything logged
        // since its previous read.
        let mut p = PendingSets::default();
        let ids = [p.add(&[4]), p.add(&[4])];
        let mut since = [[0u64; 4]; 2];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let fresh = [x, x.rotate_left(17), x & 0xff, !x];
            let who = (x >> 60) as usize & 1;
            for s in &mut since {
                for (w, f) in s.iter_mut().zip(fresh) {
                    *w |= f;
                }
            }
            let got = p.read(ids[who], 0, &fresh);
            assert_eq!(got, since[who].to_vec());
            since[who] = [0; 4];
        }
    }
}
