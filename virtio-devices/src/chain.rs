// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Checked descriptor chains: the device walks a chain itself and refuses
//! it whole when it is malformed (an index past the queue, a loop, an
//! indirect descriptor that was not negotiated, a buffer outside guest RAM,
//! a device-readable buffer after a device-writable one, too many bytes).
//! `virtio-queue` keeps the rings; this module decides what a chain says.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use virtio_bindings::virtio_ring;

/// Descriptor flag: the chain goes on at `next`.
pub(crate) const VRING_DESC_F_NEXT: u16 = virtio_ring::VRING_DESC_F_NEXT as u16;
/// Descriptor flag: device-writable buffer.
pub(crate) const VRING_DESC_F_WRITE: u16 = virtio_ring::VRING_DESC_F_WRITE as u16;
/// Descriptor flag: indirect table (never offered by these devices).
pub(crate) const VRING_DESC_F_INDIRECT: u16 = virtio_ring::VRING_DESC_F_INDIRECT as u16;
/// Size of one split-ring descriptor.
const DESC_SIZE: u64 = 16;

/// One buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A chain split into the device-readable then device-writable buffers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Head index (to return in the used ring).
    pub head: u16,
    /// Device-readable buffers, in order.
    pub readable: Vec<Buffer>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Buffer>,
}

/// Why a chain (or a ring) is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A descriptor index at or past the queue size.
    #[error("descriptor index {index} is out of the queue (size {size})")]
    IndexOutOfRange {
        /// The index.
        index: u16,
        /// Queue size.
        size: u16,
    },
    /// More descriptors than the queue has: a loop.
    #[error("descriptor chain from head {0} loops or is longer than the queue")]
    Loop(u16),
    /// An indirect descriptor (the feature is not offered).
    #[error("indirect descriptor in chain {0} (not negotiated)")]
    Indirect(u16),
    /// A buffer outside guest memory.
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutOfRange {
        /// Address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// A device-readable buffer after a device-writable one.
    #[error("device-readable descriptor after a device-writable one in chain {0}")]
    ReadableAfterWritable(u16),
    /// A buffer of the wrong direction for this queue.
    #[error("{0}")]
    WrongDirection(&'static str),
    /// More data than the device accepts in one chain.
    #[error("chain {head} carries {bytes} bytes, more than {max}")]
    TooLong {
        /// Head index.
        head: u16,
        /// Bytes.
        bytes: u64,
        /// Limit.
        max: u64,
    },
    /// The descriptor table cannot be read.
    #[error("descriptor table at {0:#x} cannot be read")]
    Table(u64),
    /// The available ring says more buffers are there than the queue holds.
    #[error("available ring index is invalid")]
    AvailRing,
    /// The used ring cannot be written.
    #[error("used ring cannot be written")]
    UsedRing,
}

/// Takes the next available chain of `queue`, checked. `Ok(None)`: the
/// ring is empty.
pub fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    max_bytes: u64,
) -> Result<Option<Chain>, ChainError> {
    let avail = queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map_err(|_| ChainError::AvailRing)?;
    let waiting = (avail - std::num::Wrapping(queue.next_avail())).0;
    if waiting == 0 {
        return Ok(None);
    }
    if waiting > queue.size() {
        return Err(ChainError::AvailRing);
    }
    let Some(chain) = queue.pop_descriptor_chain(mem) else {
        return Err(ChainError::AvailRing);
    };
    let head = chain.head_index();
    walk(
        mem,
        GuestAddress(queue.desc_table()),
        queue.size(),
        head,
        max_bytes,
    )
    .map(Some)
}

/// Walks the chain starting at `head` in the table at `table`.
pub fn walk(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    size: u16,
    head: u16,
    max_bytes: u64,
) -> Result<Chain, ChainError> {
    let mut chain = Chain {
        head,
        ..Chain::default()
    };
    let mut index = head;
    let mut total = 0u64;
    for _ in 0..size {
        if index >= size {
            return Err(ChainError::IndexOutOfRange { index, size });
        }
        let at = table
            .checked_add(u64::from(index) * DESC_SIZE)
            .ok_or(ChainError::Table(table.0))?;
        let mut raw = [0u8; DESC_SIZE as usize];
        mem.read_slice(&mut raw, at)
            .map_err(|_| ChainError::Table(at.0))?;
        let addr = u64::from_le_bytes([
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ]);
        let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let flags = u16::from_le_bytes([raw[12], raw[13]]);
        let next = u16::from_le_bytes([raw[14], raw[15]]);
        if flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(ChainError::Indirect(head));
        }
        if len > 0 && !mem.check_range(GuestAddress(addr), len as usize) {
            return Err(ChainError::OutOfRange { addr, len });
        }
        total += u64::from(len);
        if total > max_bytes {
            return Err(ChainError::TooLong {
                head,
                bytes: total,
                max: max_bytes,
            });
        }
        let buffer = Buffer {
            addr: GuestAddress(addr),
            len,
        };
        if flags & VRING_DESC_F_WRITE != 0 {
            chain.writable.push(buffer);
        } else if chain.writable.is_empty() {
            chain.readable.push(buffer);
        } else {
            return Err(ChainError::ReadableAfterWritable(head));
        }
        if flags & VRING_DESC_F_NEXT == 0 {
            return Ok(chain);
        }
        index = next;
    }
    Err(ChainError::Loop(head))
}

/// Total length of `buffers`.
pub fn total_len(buffers: &[Buffer]) -> u64 {
    buffers.iter().map(|b| u64::from(b.len)).sum()
}

/// Copies guest bytes of `buffers`, from byte `skip`, into `out` (which is
/// filled completely; the caller checked the lengths).
pub fn read_buffers(
    mem: &GuestMemoryMmap,
    buffers: &[Buffer],
    mut skip: u64,
    out: &mut [u8],
) -> Result<(), ChainError> {
    let mut done = 0usize;
    for b in buffers {
        if done == out.len() {
            break;
        }
        let len = u64::from(b.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(out.len() - done);
        let at = GuestAddress(b.addr.0 + skip);
        mem.read_slice(&mut out[done..done + n], at)
            .map_err(|_| ChainError::OutOfRange {
                addr: at.0,
                len: n as u32,
            })?;
        done += n;
        skip = 0;
    }
    if done == out.len() {
        Ok(())
    } else {
        Err(ChainError::TooLong {
            head: 0,
            bytes: out.len() as u64,
            max: done as u64,
        })
    }
}

/// Copies `data` into guest `buffers` from byte `skip`; returns how many
/// bytes were written (less than `data.len()` if the buffers are short).
pub fn write_buffers(
    mem: &GuestMemoryMmap,
    buffers: &[Buffer],
    mut skip: u64,
    data: &[u8],
) -> Result<usize, ChainError> {
    let mut done = 0usize;
    for b in buffers {
        if done == data.len() {
            break;
        }
        let len = u64::from(b.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(data.len() - done);
        let at = GuestAddress(b.addr.0 + skip);
        mem.write_slice(&data[done..done + n], at)
            .map_err(|_| ChainError::OutOfRange {
                addr: at.0,
                len: n as u32,
            })?;
        crate::dirty::mark(at.0, n as u64);
        done += n;
        skip = 0;
    }
    Ok(done)
}

/// Test helpers: a split ring laid out by hand in guest memory.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Where the test ring lives.
    pub const DESC: u64 = 0x1000;
    /// Available ring.
    pub const AVAIL: u64 = 0x2000;
    /// Used ring.
    pub const USED: u64 = 0x3000;

    /// 1 MiB of guest memory.
    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    /// A ready queue of `size` at the fixed addresses (offset by `base`).
    pub fn queue(size: u16, base: u64) -> Queue {
        let mut q = Queue::new(256).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some((DESC + base) as u32), Some(0));
        q.set_avail_ring_address(Some((AVAIL + base) as u32), Some(0));
        q.set_used_ring_address(Some((USED + base) as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Writes descriptor `index`.
    pub fn desc(
        mem: &GuestMemoryMmap,
        base: u64,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = GuestAddress(DESC + base + u64::from(index) * 16);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, at).unwrap();
    }

    /// Publishes `heads` in the available ring (from slot 0) and sets its index.
    pub fn publish(mem: &GuestMemoryMmap, base: u64, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            mem.write_obj(*h, GuestAddress(AVAIL + base + 4 + 2 * i as u64))
                .unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(AVAIL + base + 2))
            .unwrap();
    }

    /// The used ring's index and its entries.
    pub fn used(mem: &GuestMemoryMmap, base: u64) -> (u16, Vec<(u32, u32)>) {
        let idx: u16 = mem.read_obj(GuestAddress(USED + base + 2)).unwrap();
        let entries = (0..u64::from(idx))
            .map(|i| {
                let at = USED + base + 4 + 8 * i;
                (
                    mem.read_obj(GuestAddress(at)).unwrap(),
                    mem.read_obj(GuestAddress(at + 4)).unwrap(),
                )
            })
            .collect();
        (idx, entries)
    }

    pub(crate) use super::{
        VRING_DESC_F_INDIRECT as F_INDIRECT, VRING_DESC_F_NEXT as F_NEXT,
        VRING_DESC_F_WRITE as F_WRITE,
    };
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn a_good_chain() {
        let mem = memory();
        let mut q = queue(8, 0);
        desc(&mem, 0, 0, 0x10000, 16, F_NEXT, 3);
        desc(&mem, 0, 3, 0x11000, 512, F_NEXT | F_WRITE, 5);
        desc(&mem, 0, 5, 0x12000, 1, F_WRITE, 0);
        publish(&mem, 0, &[0]);
        let chain = pop_chain(&mut q, &mem, 1 << 20).unwrap().unwrap();
        assert_eq!(chain.head, 0);
        assert_eq!(chain.readable.len(), 1);
        assert_eq!(total_len(&chain.writable), 513);
        assert_eq!(pop_chain(&mut q, &mem, 1 << 20), Ok(None));
        mem.write_slice(b"abcdef", GuestAddress(0x10000)).unwrap();
        let mut out = [0u8; 3];
        read_buffers(&mem, &chain.readable, 2, &mut out).unwrap();
        assert_eq!(&out, b"cde");
        assert_eq!(
            write_buffers(&mem, &chain.writable, 510, b"xyz!").unwrap(),
            3
        );
        let mut b = [0u8; 1];
        mem.read_slice(&mut b, GuestAddress(0x12000)).unwrap();
        assert_eq!(&b, b"z");
        let mut long = [0u8; 32];
        assert!(read_buffers(&mem, &chain.readable, 0, &mut long).is_err());
    }

    #[test]
    fn malformed_chains_are_refused() {
        let mem = memory();
        let table = GuestAddress(DESC);
        // Loop.
        desc(&mem, 0, 0, 0x10000, 16, F_NEXT, 1);
        desc(&mem, 0, 1, 0x10000, 16, F_NEXT, 0);
        assert_eq!(walk(&mem, table, 8, 0, 1 << 20), Err(ChainError::Loop(0)));
        // Next out of the queue.
        desc(&mem, 0, 1, 0x10000, 16, F_NEXT, 9);
        assert_eq!(
            walk(&mem, table, 8, 0, 1 << 20),
            Err(ChainError::IndexOutOfRange { index: 9, size: 8 })
        );
        assert!(matches!(
            walk(&mem, table, 8, 8, 1 << 20),
            Err(ChainError::IndexOutOfRange { .. })
        ));
        // Buffer outside RAM, and one straddling its end.
        desc(&mem, 0, 2, 0x4000_0000, 16, 0, 0);
        assert!(matches!(
            walk(&mem, table, 8, 2, 1 << 20),
            Err(ChainError::OutOfRange { .. })
        ));
        desc(&mem, 0, 2, (1 << 20) - 8, 16, 0, 0);
        assert!(matches!(
            walk(&mem, table, 8, 2, 1 << 20),
            Err(ChainError::OutOfRange { .. })
        ));
        // Wrong order of directions.
        desc(&mem, 0, 2, 0x10000, 16, F_WRITE | F_NEXT, 3);
        desc(&mem, 0, 3, 0x10000, 16, 0, 0);
        assert_eq!(
            walk(&mem, table, 8, 2, 1 << 20),
            Err(ChainError::ReadableAfterWritable(2))
        );
        // Indirect.
        desc(&mem, 0, 4, 0x10000, 16, F_INDIRECT, 0);
        assert_eq!(
            walk(&mem, table, 8, 4, 1 << 20),
            Err(ChainError::Indirect(4))
        );
        // Too long.
        desc(&mem, 0, 5, 0x10000, 0x8000, F_NEXT, 6);
        desc(&mem, 0, 6, 0x10000, 0x8000, 0, 0);
        assert!(matches!(
            walk(&mem, table, 8, 5, 0x8000),
            Err(ChainError::TooLong { .. })
        ));
        // Descriptor table outside RAM.
        assert_eq!(
            walk(&mem, GuestAddress(0x4000_0000), 8, 0, 1 << 20),
            Err(ChainError::Table(0x4000_0000))
        );
    }

    #[test]
    fn bogus_avail_index_is_refused() {
        let mem = memory();
        let mut q = queue(8, 0);
        mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
        assert_eq!(pop_chain(&mut q, &mem, 1 << 20), Err(ChainError::AvailRing));
    }
}
