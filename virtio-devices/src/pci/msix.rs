// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! MSI-X: the vector table and pending-bit array in a BAR, and the
//! capability's message control. Messages leave through
//! [`devices::irq::MsiQueue`], on the vCPU thread.

use std::sync::Arc;

use devices::irq::MsiQueue;

/// MSI-X capability id.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Message control: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

/// The MSI-X state of one function.
#[derive(Debug)]
pub struct Msix {
    table: Vec<Entry>,
    pending: Vec<bool>,
    control: u16,
    queue: Arc<MsiQueue>,
}

impl Msix {
    /// `vectors` vectors (1..=2048), all masked, MSI-X disabled.
    pub fn new(vectors: u16, queue: Arc<MsiQueue>) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        Msix {
            table: vec![
                Entry {
                    control: VECTOR_MASKED,
                    ..Entry::default()
                };
                n
            ],
            pending: vec![false; n],
            control: 0,
            queue,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Always false: there is at least one vector.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The capability bytes: id, next (0), message control, table and PBA
    /// offsets in BAR `bar`.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> [u8; 12] {
        let mut cap = [0u8; 12];
        cap[0] = MSIX_CAP_ID;
        cap[2..4].copy_from_slice(&self.message_control_ro().to_le_bytes());
        cap[4..8].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        cap[8..12].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        cap
    }

    fn message_control_ro(&self) -> u16 {
        (self.table.len() as u16).saturating_sub(1)
    }

    /// The current message control register.
    pub fn message_control(&self) -> u16 {
        self.message_control_ro() | self.control
    }

    /// Whether MSI-X is enabled.
    pub fn enabled(&self) -> bool {
        self.control & CONTROL_ENABLE != 0
    }

    /// The guest wrote the message control register.
    pub fn set_message_control(&mut self, value: u16) {
        self.control = value & (CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        self.deliver_unmasked_pending();
    }

    fn masked(&self, vector: usize) -> bool {
        self.control & CONTROL_FUNCTION_MASK != 0 || self.table[vector].control & VECTOR_MASKED != 0
    }

    /// Sends `vector` (or marks it pending while masked). Out-of-range
    /// vectors (including virtio's NO_VECTOR) send nothing.
    pub fn trigger(&mut self, vector: u16) {
        let v = usize::from(vector);
        if v >= self.table.len() || !self.enabled() {
            return;
        }
        if self.masked(v) {
            self.pending[v] = true;
            return;
        }
        self.send(v);
    }

    fn send(&self, v: usize) {
        let e = self.table[v];
        let address = (u64::from(e.addr_hi) << 32) | u64::from(e.addr_lo);
        self.queue.send(address, e.data);
    }

    fn deliver_unmasked_pending(&mut self) {
        if !self.enabled() {
            return;
        }
        for v in 0..self.table.len() {
            if self.pending[v] && !self.masked(v) {
                self.pending[v] = false;
                self.send(v);
            }
        }
    }

    /// Reads the table at byte `offset`.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            let index = (off / ENTRY_SIZE) as usize;
            *d = match self.table.get(index) {
                Some(e) => {
                    let word = match (off % ENTRY_SIZE) / 4 {
                        0 => e.addr_lo,
                        1 => e.addr_hi,
                        2 => e.data,
                        _ => e.control,
                    };
                    word.to_le_bytes()[(off % 4) as usize]
                }
                None => 0xff,
            };
        }
    }

    /// Writes the table at byte `offset` (dword or qword accesses).
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        if !matches!(data.len(), 4 | 8) || offset % 4 != 0 {
            return;
        }
        for (chunk_index, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * chunk_index as u64;
            let index = (off / ENTRY_SIZE) as usize;
            let Some(e) = self.table.get_mut(index) else {
                return;
            };
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            match (off % ENTRY_SIZE) / 4 {
                0 => e.addr_lo = value & !3,
                1 => e.addr_hi = value,
                2 => e.data = value,
                _ => e.control = value & VECTOR_MASKED,
            }
        }
        self.deliver_unmasked_pending();
    }

    /// Reads the pending-bit array at byte `offset`.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            let base = (offset as usize + i) * 8;
            *d = (0..8)
                .filter(|bit| self.pending.get(base + bit).copied().unwrap_or(false))
                .fold(0u8, |acc, bit| acc | (1 << bit));
        }
    }

    /// Appends the state (control, table, pending bits) to `w`.
    pub fn save(&self, w: &mut vm_migration::ByteWriter) {
        w.u32(u32::from(self.control)).u32(self.table.len() as u32);
        for (e, p) in self.table.iter().zip(&self.pending) {
            w.u32(e.addr_lo)
                .u32(e.addr_hi)
                .u32(e.data)
                .u32(e.control)
                .u8(u8::from(*p));
        }
    }

    /// Reads a state saved by [`save`](Self::save) for the same number of
    /// vectors.
    pub fn restore(
        &mut self,
        r: &mut vm_migration::ByteReader<'_>,
    ) -> Result<(), vm_migration::CodecError> {
        let control = r.u32()?;
        let n = r.u32()? as usize;
        if n != self.table.len() || control > u32::from(u16::MAX) {
            return Err(r.bad(format!(
                "MSI-X state for {n} vectors, this device has {}",
                self.table.len()
            )));
        }
        for i in 0..n {
            self.table[i] = Entry {
                addr_lo: r.u32()?,
                addr_hi: r.u32()?,
                data: r.u32()?,
                control: r.u32()?,
            };
            self.pending[i] = r.u8()? != 0;
        }
        self.control = control as u16;
        Ok(())
    }

    /// Back to the reset state (disabled, all vectors masked).
    pub fn reset(&mut self) {
        let n = self.table.len();
        *self = Msix::new(n as u16, self.queue.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(m: &mut Msix, v: u64, data: u32) {
        m.table_write(v * 16, &0xfee0_0000u32.to_le_bytes());
        m.table_write(v * 16 + 4, &0u32.to_le_bytes());
        m.table_write(v * 16 + 8, &data.to_le_bytes());
        m.table_write(v * 16 + 12, &0u32.to_le_bytes());
    }

    #[test]
    fn delivers_when_enabled_and_unmasked() {
        let q = MsiQueue::new();
        let mut m = Msix::new(3, q.clone());
        assert_eq!(m.message_control(), 2);
        program(&mut m, 1, 0x41);
        m.trigger(1);
        assert!(q.take().is_empty(), "disabled");
        m.set_message_control(CONTROL_ENABLE);
        m.trigger(1);
        assert_eq!(q.take(), vec![(0xfee0_0000, 0x41)]);
        m.trigger(0xffff);
        m.trigger(3);
        assert!(q.take().is_empty());
        let mut d = [0u8; 4];
        m.table_read(16 + 8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x41);
        m.table_read(16 * 5, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn masked_vectors_pend_then_fire() {
        let q = MsiQueue::new();
        let mut m = Msix::new(2, q.clone());
        m.set_message_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        program(&mut m, 0, 0x30);
        m.trigger(0);
        assert!(q.take().is_empty());
        let mut p = [0u8; 1];
        m.pba_read(0, &mut p);
        assert_eq!(p[0], 1);
        m.set_message_control(CONTROL_ENABLE);
        assert_eq!(q.take(), vec![(0xfee0_0000, 0x30)]);
        m.pba_read(0, &mut p);
        assert_eq!(p[0], 0);
        // Per-vector mask.
        m.table_write(12, &1u32.to_le_bytes());
        m.trigger(0);
        assert!(q.take().is_empty());
        m.table_write(12, &0u32.to_le_bytes());
        assert_eq!(q.take(), vec![(0xfee0_0000, 0x30)]);
        // Odd-sized writes are ignored.
        m.table_write(0, &[1, 2]);
        m.reset();
        assert!(!m.enabled());
    }

    #[test]
    fn capability_layout() {
        let m = Msix::new(4, MsiQueue::new());
        let cap = m.capability(0, 0x4000, 0x5000);
        assert_eq!(cap[0], MSIX_CAP_ID);
        assert_eq!(u16::from_le_bytes([cap[2], cap[3]]), 3);
        assert_eq!(u32::from_le_bytes([cap[4], cap[5], cap[6], cap[7]]), 0x4000);
        assert_eq!(
            u32::from_le_bytes([cap[8], cap[9], cap[10], cap[11]]),
            0x5000
        );
    }
}
