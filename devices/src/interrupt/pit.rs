// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The i8254 programmable interval timer (PIT) at ports 0x40..0x43.
//!
//! Why a PIT: a guest that must not read the TSC (record/replay cannot
//! trap RDTSC under KVM) needs another clock to calibrate the local APIC
//! timer against, and Linux's only such clock on a PC without an HPET is
//! the PIT's channel 0 ticking on ISA IRQ 0 (IOAPIC pin 2 through the
//! MADT's interrupt source override). Linux uses it during boot
//! (`check_timer`, the APIC timer calibration) and then switches it off.
//!
//! The counters run at 1.193182 MHz. As for the APIC timer, nothing here
//! fires on its own: the VMM asks for [`Pit::deadline`] (channel 0's next
//! rising output edge, in [`Clock`] time) and calls [`Pit::fire`] once that
//! time has passed. The clock is read only when the guest's action depends
//! on it: loading a count (the count-down starts) and reading or latching a
//! current count.
//!
//! Modelled: the six counting modes as a PC uses them (1 and 5 count as 0
//! and 4: the gates of channels 0 and 1 are tied high), the four access
//! modes, counter latch and read-back (count and status). Not modelled:
//! BCD counting (counts are binary; the BCD bit is only stored), channel
//! 2's gate and output on port 0x61 (that port belongs to the i8042
//! device, as in Cloud Hypervisor), and a new count written in modes 2
//! and 3 waiting for the end of the current period (it restarts the count
//! at once).

use super::lapic::timer::ArmedTimer;
use crate::clock::Clock;

/// First I/O port (channel 0's counter).
pub const PIT_PORT_BASE: u16 = 0x40;
/// Number of ports: three counters and the mode/command register.
pub const PIT_PORT_COUNT: u16 = 4;
/// The input clock, in Hz.
pub const PIT_FREQUENCY_HZ: u64 = 1_193_182;
/// Shortest period channel 0 re-arms with in a periodic mode (as the APIC
/// timer's and KVM's `min_timer_period_us`): a tiny count cannot make the
/// VMM spin delivering ticks.
pub const PIT_MIN_PERIODIC_NS: u64 = 200_000;

const COMMAND_OFFSET: u16 = 3;
const NS_PER_S: u128 = 1_000_000_000;

/// How the counter register is read and written (control word bits 5:4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Least significant byte only.
    Lsb,
    /// Most significant byte only.
    Msb,
    /// Least significant byte, then most significant byte.
    #[default]
    LsbMsb,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::LsbMsb => 3,
        }
    }
}

/// One counter's guest-visible state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PitChannelState {
    /// Counting mode, 0..=5 (6 and 7 are stored as 2 and 3).
    pub mode: u8,
    /// Access mode.
    pub access: Access,
    /// The BCD bit of the control word (stored, not honoured).
    pub bcd: bool,
    /// The count register (0 stands for 65536).
    pub reload: u16,
    /// First byte of an LSB-then-MSB count write, waiting for the second.
    pub pending_lsb: Option<u8>,
    /// The next LSB-then-MSB read returns the most significant byte.
    pub read_msb_next: bool,
    /// A latched count, returned by the next read(s).
    pub latched_count: Option<u16>,
    /// A latched status byte, returned by the next read.
    pub latched_status: Option<u8>,
    /// Clock time (ns) at which the current count-down started, while
    /// counting.
    pub start_ns: Option<u64>,
    /// Channel 0 only: the next rising edge of the output (the interrupt).
    pub irq: Option<ArmedTimer>,
}

/// The three counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PitState {
    /// Channels 0, 1 and 2.
    pub channels: [PitChannelState; 3],
}

/// The timer; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pit {
    state: PitState,
}

/// `count` input-clock ticks in nanoseconds.
fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = u128::from(ticks) * NS_PER_S / u128::from(PIT_FREQUENCY_HZ);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Whole input-clock ticks in `ns` nanoseconds.
fn ns_to_ticks(ns: u64) -> u64 {
    let ticks = u128::from(ns) * u128::from(PIT_FREQUENCY_HZ) / NS_PER_S;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

impl PitChannelState {
    /// The count register as a tick count (0 means 65536).
    fn period_ticks(&self) -> u64 {
        match self.reload {
            0 => 0x1_0000,
            n => u64::from(n),
        }
    }

    fn periodic(&self) -> bool {
        matches!(self.mode, 2 | 3)
    }

    /// The counter's value at `now`.
    fn count_at(&self, now: u64) -> u16 {
        let Some(start) = self.start_ns else {
            return self.reload;
        };
        let elapsed = ns_to_ticks(now.saturating_sub(start));
        let n = self.period_ticks();
        let value = match self.mode {
            // Mode 2 counts N..1 then reloads; mode 3 counts down by two,
            // twice per period.
            2 => n - elapsed % n,
            3 => n - (elapsed * 2) % n,
            // Modes 0 and 4 count down once and wrap past zero.
            _ => n.wrapping_sub(elapsed) & 0xffff,
        };
        (value & 0xffff) as u16
    }

    /// The output pin at `now` (for the read-back status).
    fn output_at(&self, now: u64) -> bool {
        let Some(start) = self.start_ns else {
            // Mode 0 drives the output low from the control word on; the
            // other modes leave it high.
            return self.mode != 0;
        };
        let elapsed = ns_to_ticks(now.saturating_sub(start));
        let n = self.period_ticks();
        match self.mode {
            0 => elapsed >= n,
            2 => elapsed % n != n - 1,
            3 => (elapsed * 2) % (2 * n) < n,
            _ => elapsed != n,
        }
    }

    fn status_at(&self, now: u64) -> u8 {
        (u8::from(self.output_at(now)) << 7)
            | (u8::from(self.start_ns.is_none()) << 6)
            | (self.access.bits() << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, now: u64) {
        // A second latch before the first was read is ignored.
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count_at(now));
            self.read_msb_next = false;
        }
    }

    fn program(&mut self, control: u8) {
        self.access = match (control >> 4) & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::LsbMsb,
        };
        self.mode = match (control >> 1) & 7 {
            6 => 2,
            7 => 3,
            m => m,
        };
        self.bcd = control & 1 != 0;
        self.pending_lsb = None;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
        self.start_ns = None;
        self.irq = None;
    }

    /// A count was written: the count-down starts now.
    fn load(&mut self, reload: u16, now: u64, drives_irq: bool) {
        self.reload = reload;
        self.start_ns = Some(now);
        self.irq = None;
        if drives_irq {
            let period = ticks_to_ns(self.period_ticks());
            self.irq = Some(if self.periodic() {
                let period = period.max(PIT_MIN_PERIODIC_NS);
                ArmedTimer {
                    deadline_ns: now.saturating_add(period),
                    period_ns: period,
                }
            } else {
                // Mode 0 rises at the terminal count; mode 4's strobe
                // ends one tick later.
                let extra = if matches!(self.mode, 4 | 5) {
                    ticks_to_ns(1)
                } else {
                    0
                };
                ArmedTimer {
                    deadline_ns: now.saturating_add(period + extra),
                    period_ns: 0,
                }
            });
        }
    }

    fn write_count(&mut self, byte: u8, clock: &dyn Clock, drives_irq: bool) {
        let reload = match self.access {
            Access::Lsb => u16::from(byte),
            Access::Msb => u16::from(byte) << 8,
            Access::LsbMsb => match self.pending_lsb.take() {
                None => {
                    self.pending_lsb = Some(byte);
                    return;
                }
                Some(lsb) => u16::from(lsb) | (u16::from(byte) << 8),
            },
        };
        self.load(reload, clock.now_ns(), drives_irq);
    }

    fn read_byte(&mut self, clock: &dyn Clock) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let (value, latched) = match self.latched_count {
            Some(v) => (v, true),
            None => (self.count_at(clock.now_ns()), false),
        };
        let [lsb, msb] = value.to_le_bytes();
        let (byte, done) = match self.access {
            Access::Lsb => (lsb, true),
            Access::Msb => (msb, true),
            Access::LsbMsb => {
                let msb_now = self.read_msb_next;
                self.read_msb_next = !msb_now;
                if msb_now {
                    (msb, true)
                } else {
                    (lsb, false)
                }
            }
        };
        if latched && done {
            self.latched_count = None;
        }
        byte
    }
}

impl Pit {
    /// A PIT in its power-up state: no channel counting.
    pub fn new() -> Self {
        Pit::default()
    }

    /// A PIT with the given state.
    pub fn from_state(state: PitState) -> Self {
        Pit { state }
    }

    /// The guest-visible state.
    pub fn state(&self) -> &PitState {
        &self.state
    }

    /// Whether `port` is one of the PIT's.
    pub fn owns(port: u16) -> bool {
        (PIT_PORT_BASE..PIT_PORT_BASE + PIT_PORT_COUNT).contains(&port)
    }

    /// Reads `data.len()` successive bytes from `port` (a multi-byte access
    /// reads the port that many times).
    pub fn io_read(&mut self, port: u16, data: &mut [u8], clock: &dyn Clock) {
        let offset = port.wrapping_sub(PIT_PORT_BASE);
        for b in data.iter_mut() {
            *b = match offset {
                0..=2 => self.state.channels[usize::from(offset)].read_byte(clock),
                // The mode register cannot be read.
                _ => 0xff,
            };
        }
    }

    /// Writes `data` byte by byte to `port`.
    pub fn io_write(&mut self, port: u16, data: &[u8], clock: &dyn Clock) {
        let offset = port.wrapping_sub(PIT_PORT_BASE);
        for &byte in data {
            match offset {
                0..=2 => {
                    self.state.channels[usize::from(offset)].write_count(byte, clock, offset == 0)
                }
                COMMAND_OFFSET => self.command(byte, clock),
                _ => {}
            }
        }
    }

    fn command(&mut self, byte: u8, clock: &dyn Clock) {
        let select = usize::from(byte >> 6);
        if select == 3 {
            self.read_back(byte, clock);
            return;
        }
        let channel = &mut self.state.channels[select];
        if (byte >> 4) & 3 == 0 {
            channel.latch_count(clock.now_ns());
        } else {
            channel.program(byte);
        }
    }

    /// Read-back command: bit 5 clear latches counts, bit 4 clear latches
    /// status, bits 1..3 select channels 0..2.
    fn read_back(&mut self, byte: u8, clock: &dyn Clock) {
        let latch_count = byte & 0x20 == 0;
        let latch_status = byte & 0x10 == 0;
        if !latch_count && !latch_status {
            return;
        }
        let now = clock.now_ns();
        for (i, channel) in self.state.channels.iter_mut().enumerate() {
            if byte & (2 << i) == 0 {
                continue;
            }
            if latch_status && channel.latched_status.is_none() {
                channel.latched_status = Some(channel.status_at(now));
            }
            if latch_count {
                channel.latch_count(now);
            }
        }
    }

    /// Clock time of channel 0's next interrupt, if it is counting towards
    /// one.
    pub fn deadline(&self) -> Option<u64> {
        self.state.channels[0].irq.map(|a| a.deadline_ns)
    }

    /// Called by the VMM once [`deadline`](Self::deadline) has passed.
    /// Returns whether IRQ 0 rises (false when nothing was armed). Periodic
    /// modes re-arm from the programmed deadline, so the deadlines depend
    /// only on when the guest loaded the count; the others disarm.
    pub fn fire(&mut self) -> bool {
        let channel = &mut self.state.channels[0];
        match channel.irq {
            None => false,
            Some(a) if a.period_ns > 0 => {
                channel.irq = Some(ArmedTimer {
                    deadline_ns: a.deadline_ns.saturating_add(a.period_ns),
                    period_ns: a.period_ns,
                });
                true
            }
            Some(_) => {
                channel.irq = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const CH0: u16 = 0x40;
    const CH2: u16 = 0x42;
    const CMD: u16 = 0x43;

    fn write(p: &mut Pit, c: &ManualClock, port: u16, bytes: &[u8]) {
        p.io_write(port, bytes, c);
    }

    fn read(p: &mut Pit, c: &ManualClock, port: u16) -> u8 {
        let mut b = [0u8];
        p.io_read(port, &mut b, c);
        b[0]
    }

    /// Linux's periodic set-up: mode 2, LSB then MSB, LATCH for HZ=100.
    #[test]
    fn linux_periodic_tick_fires_every_period() {
        let c = ManualClock::new(1_000);
        let mut p = Pit::new();
        assert_eq!(p.deadline(), None);
        let latch: u16 = 11932; // (1193182 + 50) / 100
        write(&mut p, &c, CMD, &[0x34]);
        write(&mut p, &c, CH0, &[latch as u8]);
        assert_eq!(p.deadline(), None, "half-written count does not start");
        write(&mut p, &c, CH0, &[(latch >> 8) as u8]);
        let period = ticks_to_ns(u64::from(latch));
        assert!((9_999_000..10_001_000).contains(&period), "{period}");
        assert_eq!(p.deadline(), Some(1_000 + period));
        for k in 2..5u64 {
            assert!(p.fire());
            assert_eq!(p.deadline(), Some(1_000 + k * period));
        }
    }

    /// Linux's one-shot set-up: mode 4, then counts written per event.
    #[test]
    fn one_shot_fires_once_and_a_new_count_rearms() {
        let c = ManualClock::new(0);
        let mut p = Pit::new();
        write(&mut p, &c, CMD, &[0x38]);
        assert_eq!(p.deadline(), None);
        write(&mut p, &c, CH0, &[0xa9, 0x04]); // 1193 ticks ≈ 1 ms
        let d = p.deadline().unwrap();
        assert_eq!(d, ticks_to_ns(1193) + ticks_to_ns(1));
        assert!(p.fire());
        assert_eq!(p.deadline(), None);
        assert!(!p.fire(), "nothing armed");
        c.set(5_000_000);
        write(&mut p, &c, CH0, &[0x10, 0x00]);
        assert_eq!(p.deadline(), Some(5_000_000 + ticks_to_ns(17)));
        // Linux's shutdown: mode 0 control word, counting stops.
        write(&mut p, &c, CMD, &[0x30]);
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn mode0_counts_down_and_wraps() {
        // 4096 - 96 = 4000 = 0x0fa0: LSB 0xa0, MSB 0x0f.
        let c2 = ManualClock::new(0);
        let mut q = Pit::new();
        write(&mut q, &c2, CMD, &[0x30]);
        write(&mut q, &c2, CH0, &[0x00, 0x10]);
        c2.set(ticks_to_ns(96) + 1);
        write(&mut q, &c2, CMD, &[0x00]); // latch channel 0
        c2.set(ticks_to_ns(2000) + 1); // the latch keeps the old value
        assert_eq!(read(&mut q, &c2, CH0), 0xa0);
        assert_eq!(read(&mut q, &c2, CH0), 0x0f);
        // Unlatched reads follow the clock; past zero the count wraps.
        c2.set(ticks_to_ns(4096 + 16) + 1);
        assert_eq!(read(&mut q, &c2, CH0), 0xf0);
        assert_eq!(read(&mut q, &c2, CH0), 0xff);
    }

    #[test]
    fn mode2_reloads_and_lsb_only_access() {
        let c = ManualClock::new(0);
        let mut p = Pit::new();
        write(&mut p, &c, CMD, &[0x94]); // channel 2, LSB only, mode 2
        write(&mut p, &c, CH2, &[100]);
        assert_eq!(read(&mut p, &c, CH2), 100);
        c.set(ticks_to_ns(30) + 1);
        assert_eq!(read(&mut p, &c, CH2), 70);
        c.set(ticks_to_ns(130) + 1);
        assert_eq!(read(&mut p, &c, CH2), 70, "reloaded after 100 ticks");
        assert_eq!(p.deadline(), None, "only channel 0 interrupts");
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let c = ManualClock::new(0);
        let mut p = Pit::new();
        write(&mut p, &c, CMD, &[0x36]); // ch0, LSB/MSB, mode 3
                                         // Null count: programmed, no count yet.
        write(&mut p, &c, CMD, &[0xe2]); // read-back status of channel 0
        assert_eq!(read(&mut p, &c, CH0), 0x80 | 0x40 | 0x30 | 0x06);
        write(&mut p, &c, CH0, &[0x00, 0x01]); // 256
        c.set(ticks_to_ns(10) + 1);
        write(&mut p, &c, CMD, &[0xc2]); // status and count of channel 0
        assert_eq!(
            read(&mut p, &c, CH0),
            0x80 | 0x30 | 0x06,
            "output high, counting"
        );
        assert_eq!(read(&mut p, &c, CH0), 236);
        assert_eq!(read(&mut p, &c, CH0), 0);
        // A periodic period shorter than the floor is stretched.
        write(&mut p, &c, CH0, &[0x02, 0x00]);
        let d = p.deadline().unwrap();
        assert_eq!(d - c.now_ns(), PIT_MIN_PERIODIC_NS);
    }

    #[test]
    fn odd_accesses_never_panic() {
        let c = ManualClock::new(0);
        let mut p = Pit::new();
        for control in 0..=255u8 {
            write(&mut p, &c, CMD, &[control]);
            for port in CH0..=CMD {
                write(&mut p, &c, port, &[0xff, 0x00, 0x12, 0x34]);
                let mut buf = [0u8; 4];
                p.io_read(port, &mut buf, &c);
                p.io_read(port, &mut [], &c);
            }
            c.set(c.now_ns() + 12_345);
            let _ = p.fire();
        }
        assert!(!Pit::owns(0x3f) && Pit::owns(0x40) && Pit::owns(0x43) && !Pit::owns(0x44));
        let mut b = [0u8];
        p.io_read(CMD, &mut b, &c);
        assert_eq!(b[0], 0xff);
    }
}
