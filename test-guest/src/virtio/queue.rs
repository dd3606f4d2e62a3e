//! Split virtqueues (virtio 1.x, 2.7): descriptor table, available ring
//! and used ring in one zeroed, page-aligned heap allocation (identity
//! mapped: its address is the physical address the device uses).
//!
//! Notifications are batched: [`Virtqueue::push`] only queues a chain;
//! [`Virtqueue::kick`] notifies the device once for everything pushed
//! since the last kick (one VM exit), unless the device said it does not
//! need it (`VIRTQ_USED_F_NO_NOTIFY`).

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use thiserror::Error;

/// Descriptor flag: the chain continues at `next`.
const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
const DESC_F_WRITE: u16 = 2;
/// Used ring flag: the device does not need notifications now.
const USED_F_NO_NOTIFY: u16 = 1;
/// Available-ring flag: the driver does not want interrupts for this queue.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A queue that could not be set up or used.
#[derive(Debug, Error)]
pub enum QueueError {
    /// Queue size zero or not a power of two.
    #[error("queue size {0} is not a power of two")]
    BadSize(u16),
    /// The ring memory could not be allocated.
    #[error("out of memory for a queue of {0} descriptors")]
    NoMemory(u16),
}

/// One buffer of a chain: guest-physical address, length, and whether
/// the device writes it.
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    /// Guest-physical (= virtual) address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes (true) or reads (false) it.
    pub device_writes: bool,
}

impl Buffer {
    /// A buffer the device reads.
    pub fn readable(bytes: &[u8]) -> Buffer {
        Buffer {
            addr: bytes.as_ptr() as u64,
            len: bytes.len() as u32,
            device_writes: false,
        }
    }

    /// A buffer the device writes.
    pub fn writable(bytes: &mut [u8]) -> Buffer {
        Buffer {
            addr: bytes.as_mut_ptr() as u64,
            len: bytes.len() as u32,
            device_writes: true,
        }
    }
}

/// A split virtqueue.
#[derive(Debug)]
pub struct Virtqueue {
    size: u16,
    /// Descriptor table (16 bytes each).
    desc: *mut u8,
    /// Available ring: flags, idx, ring[size], used_event.
    avail: *mut u16,
    /// Used ring: flags, idx, ring[size] of (id: u32, len: u32), avail_event.
    used: *mut u8,
    /// Free descriptor indexes.
    free: Vec<u16>,
    /// Next available index to publish.
    avail_idx: u16,
    /// Next used index to consume.
    last_used: u16,
    /// Chains pushed since the last kick.
    unkicked: u16,
    /// Where to write the queue index to notify the device.
    notify: *mut u16,
    index: u16,
}

impl Virtqueue {
    /// Allocates queue `index` with `size` descriptors, notified at `notify`.
    pub fn new(index: u16, size: u16, notify: *mut u16) -> Result<Virtqueue, QueueError> {
        if size == 0 || !size.is_power_of_two() {
            return Err(QueueError::BadSize(size));
        }
        let n = usize::from(size);
        let desc_bytes = 16 * n;
        let avail_bytes = 6 + 2 * n;
        let used_offset = (desc_bytes + avail_bytes).next_multiple_of(4096);
        let total = used_offset + (6 + 8 * n).next_multiple_of(4096);
        let layout =
            Layout::from_size_align(total, 4096).map_err(|_| QueueError::NoMemory(size))?;
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        if base.is_null() {
            return Err(QueueError::NoMemory(size));
        }
        Ok(Virtqueue {
            size,
            desc: base,
            avail: base.wrapping_add(desc_bytes).cast(),
            used: base.wrapping_add(used_offset),
            free: (0..size).rev().collect(),
            avail_idx: 0,
            last_used: 0,
            unkicked: 0,
            notify,
            index,
        })
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Addresses of the descriptor table, available ring and used ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc as u64, self.avail as u64, self.used as u64)
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// The descriptor a one-buffer [`Virtqueue::push`] would use next.
    pub fn next_free(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Queues a chain of `buffers` for the device (no notification yet);
    /// returns its head descriptor, or `None` when too few descriptors
    /// are free.
    pub fn push(&mut self, buffers: &[Buffer]) -> Option<u16> {
        if buffers.is_empty() || buffers.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..buffers.len()).filter_map(|_| self.free.pop()).collect();
        for (i, (buffer, &id)) in buffers.iter().zip(&ids).enumerate() {
            let next = ids.get(i + 1).copied();
            let mut flags = if buffer.device_writes {
                DESC_F_WRITE
            } else {
                0
            };
            if next.is_some() {
                flags |= DESC_F_NEXT;
            }
            self.write_desc(id, buffer.addr, buffer.len, flags, next.unwrap_or(0));
        }
        let head = *ids.first()?;
        let slot = usize::from(self.avail_idx % self.size);
        // SAFETY: avail points at the available ring of `size` entries
        // allocated in `new`; slot < size; +2 skips flags and idx.
        unsafe { write_volatile(self.avail.wrapping_add(2 + slot), head) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The descriptors and ring entry must be visible before the index.
        fence(Ordering::Release);
        // SAFETY: avail[1] is the ring's idx field.
        unsafe { write_volatile(self.avail.wrapping_add(1), self.avail_idx) };
        self.unkicked = self.unkicked.wrapping_add(1);
        Some(head)
    }

    /// Publishes a chain of raw descriptors `(addr, len, flags, next)`
    /// written at indexes 0.. exactly as given, head 0, however malformed
    /// (for testing a device's checks). The queue must be idle; it is not
    /// usable afterwards (the device is expected to need a reset).
    pub fn push_raw(&mut self, descriptors: &[(u64, u32, u16, u16)]) {
        for (id, &(addr, len, flags, next)) in (0..self.size).zip(descriptors) {
            self.write_desc(id, addr, len, flags, next);
        }
        self.free.clear();
        let slot = usize::from(self.avail_idx % self.size);
        // SAFETY: as in `push`.
        unsafe { write_volatile(self.avail.wrapping_add(2 + slot), 0) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::Release);
        // SAFETY: as in `push`.
        unsafe { write_volatile(self.avail.wrapping_add(1), self.avail_idx) };
        self.unkicked = self.unkicked.wrapping_add(1);
    }

    /// Notifies the device if chains were pushed since the last kick and
    /// the device asks for notifications. One VM exit when it does.
    pub fn kick(&mut self) {
        if self.unkicked == 0 {
            return;
        }
        self.unkicked = 0;
        fence(Ordering::SeqCst);
        // SAFETY: `used` points at the used ring; its first u16 is flags.
        let flags = unsafe { read_volatile(self.used.cast::<u16>()) };
        if flags & USED_F_NO_NOTIFY == 0 {
            // SAFETY: `notify` is the device's notification register for
            // this queue, in a mapped, uncached BAR (see VirtioPci).
            unsafe { write_volatile(self.notify, self.index) };
        }
    }

    /// Notifies the device unconditionally (after refilling a queue the
    /// device may have run dry on).
    /// Asks the device not to interrupt when it returns buffers of this
    /// queue (VRING_AVAIL_F_NO_INTERRUPT): for a queue the driver polls.
    pub fn suppress_interrupts(&mut self) {
        // SAFETY: `avail` points at the available ring's flags field, in
        // this queue's allocation, for the queue's lifetime.
        unsafe { write_volatile(self.avail, AVAIL_F_NO_INTERRUPT) };
        fence(Ordering::SeqCst);
    }

    pub fn kick_always(&mut self) {
        self.unkicked = 0;
        fence(Ordering::SeqCst);
        // SAFETY: as in `kick`.
        unsafe { write_volatile(self.notify, self.index) };
    }

    /// Whether the device has returned chains not yet taken.
    pub fn has_used(&self) -> bool {
        self.used_idx() != self.last_used
    }

    /// Takes the next chain the device returned: (head, bytes written),
    /// and frees its descriptors.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        if !self.has_used() {
            return None;
        }
        fence(Ordering::Acquire);
        let slot = usize::from(self.last_used % self.size);
        let entry = self.used.wrapping_add(4 + 8 * slot);
        // SAFETY: entry is element `slot` < size of the used ring.
        let id = unsafe { read_volatile(entry.cast::<u32>()) };
        // SAFETY: the same element's len field.
        let len = unsafe { read_volatile(entry.wrapping_add(4).cast::<u32>()) };
        self.last_used = self.last_used.wrapping_add(1);
        let head = (id % u32::from(self.size)) as u16;
        // Free the chain.
        let mut id = head;
        for _ in 0..self.size {
            let (flags, next) = self.read_desc_links(id);
            self.free.push(id);
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            id = next % self.size;
        }
        Some((head, len))
    }

    fn used_idx(&self) -> u16 {
        // SAFETY: the used ring's idx field (second u16).
        unsafe { read_volatile(self.used.wrapping_add(2).cast::<u16>()) }
    }

    fn write_desc(&mut self, id: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc.wrapping_add(16 * usize::from(id % self.size));
        // SAFETY: `d` is descriptor `id` < size in the table
        // from `new`; the fields are at their spec offsets, naturally
        // aligned, and the device does not own a free descriptor.
        unsafe { write_volatile(d.cast::<u64>(), addr) };
        // SAFETY: as above.
        unsafe { write_volatile(d.wrapping_add(8).cast::<u32>(), len) };
        // SAFETY: as above.
        unsafe { write_volatile(d.wrapping_add(12).cast::<u16>(), flags) };
        // SAFETY: as above.
        unsafe { write_volatile(d.wrapping_add(14).cast::<u16>(), next) };
    }

    fn read_desc_links(&self, id: u16) -> (u16, u16) {
        let d = self.desc.wrapping_add(16 * usize::from(id % self.size));
        // SAFETY: as in `write_desc`.
        let flags = unsafe { read_volatile(d.wrapping_add(12).cast::<u16>()) };
        // SAFETY: as in `write_desc`.
        let next = unsafe { read_volatile(d.wrapping_add(14).cast::<u16>()) };
        (flags, next)
    }
}
