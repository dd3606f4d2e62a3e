// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! [`Snapshottable`] for the platform devices with guest-visible state: the
//! user-space interrupt controller (local APIC with its timer, IOAPIC) and
//! the serial port. The other legacy devices (shutdown port, debug port,
//! i8042) hold no guest-visible state.

use devices::interrupt::ioapic::IoapicState;
use devices::interrupt::lapic::timer::{ArmedTimer, TimerState};
use devices::interrupt::lapic::vectors::VectorSet;
use devices::interrupt::lapic::LapicState;
use devices::interrupt::pit::{Access, PitChannelState, PitState};
use devices::interrupt::{InterruptController, InterruptControllerState};
use devices::legacy::Serial;
use vm_superio::SerialState;

use crate::codec::{ByteReader, ByteWriter, CodecError};
use crate::{MigratableError, Snapshottable};

/// Version 2 added the PIT.
const INTC_VERSION: u8 = 2;
const SERIAL_VERSION: u8 = 1;

fn put_vectors(w: &mut ByteWriter, v: &VectorSet) {
    for word in v.0 {
        w.u32(word);
    }
}

fn get_vectors(r: &mut ByteReader<'_>) -> Result<VectorSet, CodecError> {
    let mut v = VectorSet::default();
    for word in v.0.iter_mut() {
        *word = r.u32()?;
    }
    Ok(v)
}

/// Encodes the interrupt controller's state.
pub fn encode_intc(s: &InterruptControllerState) -> Vec<u8> {
    let mut w = ByteWriter::new();
    let l = &s.lapic;
    w.u8(INTC_VERSION)
        .u32(l.id)
        .u32(l.tpr)
        .u32(l.ldr)
        .u32(l.dfr)
        .u32(l.svr);
    put_vectors(&mut w, &l.isr);
    put_vectors(&mut w, &l.tmr);
    put_vectors(&mut w, &l.irr);
    w.u32(l.esr).u32(l.esr_pending);
    w.u32(u32::try_from(l.lvt.len()).unwrap_or(0));
    for v in l.lvt {
        w.u32(v);
    }
    w.u32(l.icr_low).u32(l.icr_high);
    w.u32(l.timer.initial_count).u32(l.timer.divide_config);
    match l.timer.armed {
        None => w.u8(0),
        Some(a) => w.u8(1).u64(a.deadline_ns).u64(a.period_ns),
    };
    let io = &s.ioapic;
    w.u32(io.id).u32(io.ioregsel);
    w.u32(u32::try_from(io.redirection.len()).unwrap_or(0));
    for e in io.redirection {
        w.u64(e);
    }
    w.u32(io.asserted);
    put_pit(&mut w, &s.pit);
    w.into_inner()
}

fn put_opt_u64(w: &mut ByteWriter, v: Option<u64>) {
    match v {
        None => w.u8(0),
        Some(v) => w.u8(1).u64(v),
    };
}

fn get_opt_u64(r: &mut ByteReader<'_>) -> Result<Option<u64>, CodecError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        t => Err(r.bad(format!("option tag {t}"))),
    }
}

fn put_pit(w: &mut ByteWriter, pit: &PitState) {
    for c in &pit.channels {
        let access = match c.access {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::LsbMsb => 3,
        };
        w.u8(c.mode)
            .u8(access)
            .u8(u8::from(c.bcd))
            .u32(u32::from(c.reload));
        put_opt_u64(w, c.pending_lsb.map(u64::from));
        w.u8(u8::from(c.read_msb_next));
        put_opt_u64(w, c.latched_count.map(u64::from));
        put_opt_u64(w, c.latched_status.map(u64::from));
        put_opt_u64(w, c.start_ns);
        match c.irq {
            None => w.u8(0),
            Some(a) => w.u8(1).u64(a.deadline_ns).u64(a.period_ns),
        };
    }
}

fn get_pit(r: &mut ByteReader<'_>) -> Result<PitState, CodecError> {
    let mut pit = PitState::default();
    for c in pit.channels.iter_mut() {
        let mode = r.u8()?;
        if mode > 5 {
            return Err(r.bad(format!("PIT mode {mode}")));
        }
        let access = match r.u8()? {
            1 => Access::Lsb,
            2 => Access::Msb,
            3 => Access::LsbMsb,
            a => return Err(r.bad(format!("PIT access mode {a}"))),
        };
        let bcd = r.u8()? != 0;
        let reload = u16::try_from(r.u32()?).map_err(|_| r.bad("PIT count"))?;
        let byte = |r: &mut ByteReader<'_>, what: &str| -> Result<Option<u8>, CodecError> {
            get_opt_u64(r)?
                .map(|v| u8::try_from(v).map_err(|_| r.bad(what.to_string())))
                .transpose()
        };
        let pending_lsb = byte(r, "PIT pending byte")?;
        let read_msb_next = r.u8()? != 0;
        let latched_count = get_opt_u64(r)?
            .map(|v| u16::try_from(v).map_err(|_| r.bad("PIT latched count")))
            .transpose()?;
        let latched_status = byte(r, "PIT latched status")?;
        let start_ns = get_opt_u64(r)?;
        let irq = match r.u8()? {
            0 => None,
            1 => Some(ArmedTimer {
                deadline_ns: r.u64()?,
                period_ns: r.u64()?,
            }),
            t => return Err(r.bad(format!("PIT armed tag {t}"))),
        };
        *c = PitChannelState {
            mode,
            access,
            bcd,
            reload,
            pending_lsb,
            read_msb_next,
            latched_count,
            latched_status,
            start_ns,
            irq,
        };
    }
    Ok(pit)
}

/// Decodes a state written by [`encode_intc`].
pub fn decode_intc(data: &[u8]) -> Result<InterruptControllerState, CodecError> {
    let mut r = ByteReader::new(data);
    let version = r.u8()?;
    if version != INTC_VERSION {
        return Err(r.bad(format!("interrupt controller state version {version}")));
    }
    let mut lapic = LapicState::reset(0);
    lapic.id = r.u32()?;
    lapic.tpr = r.u32()?;
    lapic.ldr = r.u32()?;
    lapic.dfr = r.u32()?;
    lapic.svr = r.u32()?;
    lapic.isr = get_vectors(&mut r)?;
    lapic.tmr = get_vectors(&mut r)?;
    lapic.irr = get_vectors(&mut r)?;
    lapic.esr = r.u32()?;
    lapic.esr_pending = r.u32()?;
    if r.u32()? as usize != lapic.lvt.len() {
        return Err(r.bad("LVT count"));
    }
    for v in lapic.lvt.iter_mut() {
        *v = r.u32()?;
    }
    lapic.icr_low = r.u32()?;
    lapic.icr_high = r.u32()?;
    let initial_count = r.u32()?;
    let divide_config = r.u32()?;
    let armed = match r.u8()? {
        0 => None,
        1 => Some(ArmedTimer {
            deadline_ns: r.u64()?,
            period_ns: r.u64()?,
        }),
        t => return Err(r.bad(format!("timer armed tag {t}"))),
    };
    lapic.timer = TimerState {
        initial_count,
        divide_config,
        armed,
    };
    let mut ioapic = IoapicState {
        id: r.u32()?,
        ioregsel: r.u32()?,
        ..Default::default()
    };
    if r.u32()? as usize != ioapic.redirection.len() {
        return Err(r.bad("IOAPIC pin count"));
    }
    for e in ioapic.redirection.iter_mut() {
        *e = r.u64()?;
    }
    ioapic.asserted = r.u32()?;
    let pit = get_pit(&mut r)?;
    r.finish()?;
    Ok(InterruptControllerState { lapic, ioapic, pit })
}

impl Snapshottable for InterruptController {
    fn snapshot_id(&self) -> &'static str {
        "interrupt-controller"
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_intc(&self.state())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), MigratableError> {
        let state =
            decode_intc(data).map_err(|e| MigratableError::Decode("interrupt controller", e))?;
        InterruptController::restore(self, state);
        Ok(())
    }
}

/// Encodes the serial port's register state.
pub fn encode_serial(s: &SerialState) -> Vec<u8> {
    let mut w = ByteWriter::new();
    w.u8(SERIAL_VERSION)
        .u8(s.baud_divisor_low)
        .u8(s.baud_divisor_high)
        .u8(s.interrupt_enable)
        .u8(s.interrupt_identification)
        .u8(s.line_control)
        .u8(s.line_status)
        .u8(s.modem_control)
        .u8(s.modem_status)
        .u8(s.scratch)
        .bytes(&s.in_buffer);
    w.into_inner()
}

/// Decodes a state written by [`encode_serial`].
pub fn decode_serial(data: &[u8]) -> Result<SerialState, CodecError> {
    let mut r = ByteReader::new(data);
    let version = r.u8()?;
    if version != SERIAL_VERSION {
        return Err(r.bad(format!("serial state version {version}")));
    }
    let s = SerialState {
        baud_divisor_low: r.u8()?,
        baud_divisor_high: r.u8()?,
        interrupt_enable: r.u8()?,
        interrupt_identification: r.u8()?,
        line_control: r.u8()?,
        line_status: r.u8()?,
        modem_control: r.u8()?,
        modem_status: r.u8()?,
        scratch: r.u8()?,
        in_buffer: r.bytes()?.to_vec(),
    };
    r.finish()?;
    Ok(s)
}

impl Snapshottable for Serial {
    fn snapshot_id(&self) -> &'static str {
        "serial"
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_serial(&self.state())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), MigratableError> {
        let state = decode_serial(data).map_err(|e| MigratableError::Decode("serial", e))?;
        self.restore_state(&state)
            .map_err(|e| MigratableError::Invalid {
                device: "serial",
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::BusDevice;
    use devices::clock::ManualClock;
    use devices::irq::{IrqLine, IrqLines};
    use std::sync::Arc;

    fn w32(c: &mut InterruptController, addr: u64, v: u32) {
        assert!(c.mmio_write(addr, &v.to_le_bytes()));
    }

    /// Save, change, restore, save again, compare.
    #[test]
    fn interrupt_controller_round_trip() {
        let clock = Arc::new(ManualClock::new(1_000));
        let mut c = InterruptController::new(clock.clone());
        w32(&mut c, 0xfee0_00f0, 0x1ff); // SVR: enabled
        w32(&mut c, 0xfee0_0320, (1 << 17) | 0x40); // periodic timer
        w32(&mut c, 0xfee0_03e0, 0x3);
        w32(&mut c, 0xfee0_0380, 62_500);
        w32(&mut c, 0xfec0_0000, 0x10 + 2 * 4); // IOREGSEL: pin 4 low
        w32(&mut c, 0xfec0_0010, 0x24);
        c.deliver_msi(0xfee0_0000, 0x51);
        // PIT: channel 0 periodic (10 ms), channel 2 latched mid-count.
        assert!(c.pio_write(0x43, &[0x34]));
        assert!(c.pio_write(0x40, &[0x9c, 0x2e]));
        assert!(c.pio_write(0x43, &[0xb0]));
        assert!(c.pio_write(0x42, &[0xff]));
        assert!(c.pio_write(0x43, &[0x80]));
        let saved = Snapshottable::snapshot(&c);
        assert_eq!(decode_intc(&saved).unwrap(), c.state());

        c.acknowledge(0x51);
        c.fire_timer();
        w32(&mut c, 0xfee0_0080, 0x20); // TPR
        assert_ne!(Snapshottable::snapshot(&c), saved);
        Snapshottable::restore(&mut c, &saved).unwrap();
        assert_eq!(Snapshottable::snapshot(&c), saved);
        assert_eq!(c.timer_deadline(), Some(1_000 + 1_000_000));
        assert_eq!(c.pit().state().channels[2].pending_lsb, Some(0xff));
        assert!(c.pit().state().channels[0].irq.is_some());
        assert_eq!(c.pending_vector(), Some(0x51));

        // Garbage is refused and changes nothing.
        for cut in [0, 1, 20, saved.len() - 1] {
            assert!(Snapshottable::restore(&mut c, &saved[..cut]).is_err());
        }
        let mut bad = saved.clone();
        bad[0] = 9;
        assert!(Snapshottable::restore(&mut c, &bad).is_err());
        assert_eq!(Snapshottable::snapshot(&c), saved);
    }

    #[test]
    fn serial_round_trip() {
        let lines = IrqLines::new();
        let mut s = Serial::new(IrqLine::new(lines, 4), Box::new(std::io::sink()));
        s.write(3, &[0x03]); // LCR
        s.write(7, &[0x5a]); // scratch
        s.enqueue_input(b"hi");
        let saved = Snapshottable::snapshot(&s);
        s.write(7, &[0x00]);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_ne!(Snapshottable::snapshot(&s), saved);
        Snapshottable::restore(&mut s, &saved).unwrap();
        assert_eq!(Snapshottable::snapshot(&s), saved);
        s.read(0, &mut b);
        assert_eq!(b[0], b'h');
        assert!(Snapshottable::restore(&mut s, &saved[..5]).is_err());
        let mut too_big = decode_serial(&saved).unwrap();
        too_big.in_buffer = vec![1; 500];
        assert!(Snapshottable::restore(&mut s, &encode_serial(&too_big)).is_err());
    }
}
