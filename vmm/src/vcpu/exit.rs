// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Handling one VM exit: a plain function over the exit and the devices, so
//! it can be tested with made-up exits.

use devices::bus::{Bus, BusAction};
use devices::interrupt::InterruptController;
use hypervisor::VmExit;

/// The devices an exit may touch.
#[derive(Debug)]
pub struct ExitContext<'a> {
    /// Port I/O devices.
    pub pio: &'a Bus,
    /// MMIO devices other than the interrupt controller.
    pub mmio: &'a Bus,
    /// The user-space interrupt controller (LAPIC, IOAPIC, PIT).
    pub intc: &'a mut InterruptController,
}

/// What the vCPU loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Enter the guest again.
    Continue,
    /// Complete the pending port read with these bytes, then continue.
    CompleteIoIn(Vec<u8>),
    /// Complete the pending MMIO read with these bytes, then continue.
    CompleteMmioRead(Vec<u8>),
    /// The guest halted: wait for an interrupt.
    Halt,
    /// The guest powered off.
    Shutdown,
    /// The guest reset itself (reboot request or triple fault).
    Reset,
    /// The VMM kicked the vCPU; nothing guest-visible happened.
    Kicked,
}

/// Exits the VMM cannot continue from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExitError {
    /// KVM's emulator gave up (for example an instruction it lacks).
    #[error("unexpected exit reason on vcpu run: InternalError (suberror {suberror})")]
    InternalError {
        /// KVM's sub-error.
        suberror: u32,
    },
    /// The hardware refused to enter the guest.
    #[error("vCPU entry failed (hardware reason {reason:#x})")]
    FailEntry {
        /// Reason code.
        reason: u64,
    },
    /// An exit reason the VMM does not handle.
    #[error("unexpected exit reason on vcpu run: {0}")]
    Unexpected(u32),
}

fn action_of(bus_action: Option<BusAction>) -> ExitAction {
    match bus_action {
        Some(BusAction::Shutdown) => ExitAction::Shutdown,
        Some(BusAction::Reset) => ExitAction::Reset,
        Some(BusAction::None) | None => ExitAction::Continue,
    }
}

/// Handles one exit.
pub fn handle_exit(exit: &VmExit, ctx: &mut ExitContext<'_>) -> Result<ExitAction, ExitError> {
    Ok(match exit {
        VmExit::IoOut { port, size, data } => {
            let size = usize::from(*size).max(1);
            if ctx.intc.pio_write(*port, data) {
                return Ok(ExitAction::Continue);
            }
            let mut action = ExitAction::Continue;
            for chunk in data.chunks(size) {
                let a = action_of(ctx.pio.write(u64::from(*port), chunk));
                if a != ExitAction::Continue {
                    action = a;
                }
            }
            if ctx.pio.resolve(u64::from(*port)).is_none() {
                log::debug!("write to unhandled port {port:#x}");
            }
            action
        }
        VmExit::IoIn { port, size, count } => {
            let size = usize::from(*size).clamp(1, 4);
            let count = (*count as usize).clamp(1, 4096);
            let mut out = vec![0xffu8; size * count];
            if ctx.intc.pio_read(*port, &mut out) {
                return Ok(ExitAction::CompleteIoIn(out));
            }
            for chunk in out.chunks_mut(size) {
                if !ctx.pio.read(u64::from(*port), chunk) {
                    chunk.fill(0xff);
                }
            }
            ExitAction::CompleteIoIn(out)
        }
        VmExit::MmioRead { addr, len } => {
            let mut out = vec![0u8; usize::from(*len).clamp(1, 8)];
            if !ctx.intc.mmio_read(*addr, &mut out) && !ctx.mmio.read(*addr, &mut out) {
                log::debug!("read from unhandled MMIO address {addr:#x}");
                out.fill(0xff);
            }
            ExitAction::CompleteMmioRead(out)
        }
        VmExit::MmioWrite { addr, data } => {
            if ctx.intc.mmio_write(*addr, data) {
                ExitAction::Continue
            } else {
                let a = ctx.mmio.write(*addr, data);
                if a.is_none() {
                    log::debug!("write to unhandled MMIO address {addr:#x}");
                }
                action_of(a)
            }
        }
        VmExit::Hlt => ExitAction::Halt,
        VmExit::IrqWindowOpen => ExitAction::Continue,
        VmExit::Interrupted => ExitAction::Kicked,
        VmExit::Shutdown => ExitAction::Reset,
        VmExit::InternalError { suberror } => {
            return Err(ExitError::InternalError {
                suberror: *suberror,
            })
        }
        VmExit::FailEntry { reason } => return Err(ExitError::FailEntry { reason: *reason }),
        VmExit::Other(r) => return Err(ExitError::Unexpected(*r)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::BusDevice;
    use devices::clock::ManualClock;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Default)]
    struct Port {
        last: Vec<u8>,
    }
    impl BusDevice for Port {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(0x40 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> BusAction {
            self.last = data.to_vec();
            if data[0] == 0x34 {
                BusAction::Shutdown
            } else {
                BusAction::None
            }
        }
    }

    fn setup() -> (Bus, Bus, InterruptController, Arc<Mutex<Port>>) {
        let port = Arc::new(Mutex::new(Port::default()));
        let mut pio = Bus::new();
        pio.insert(port.clone(), 0x600, 8).unwrap();
        let intc = InterruptController::new(Arc::new(ManualClock::new(0)));
        (pio, Bus::new(), intc, port)
    }

    #[test]
    fn port_io_reaches_devices() {
        let (pio, mmio, mut intc, port) = setup();
        let mut ctx = ExitContext {
            pio: &pio,
            mmio: &mmio,
            intc: &mut intc,
        };
        let out = VmExit::IoOut {
            port: 0x601,
            size: 1,
            data: vec![7],
        };
        assert_eq!(handle_exit(&out, &mut ctx), Ok(ExitAction::Continue));
        assert_eq!(port.lock().unwrap().last, vec![7]);
        let off = VmExit::IoOut {
            port: 0x600,
            size: 1,
            data: vec![0x34],
        };
        assert_eq!(handle_exit(&off, &mut ctx), Ok(ExitAction::Shutdown));
        let inp = VmExit::IoIn {
            port: 0x602,
            size: 2,
            count: 1,
        };
        assert_eq!(
            handle_exit(&inp, &mut ctx),
            Ok(ExitAction::CompleteIoIn(vec![0x42, 0x42]))
        );
        let nobody = VmExit::IoIn {
            port: 0x10,
            size: 1,
            count: 3,
        };
        assert_eq!(
            handle_exit(&nobody, &mut ctx),
            Ok(ExitAction::CompleteIoIn(vec![0xff; 3]))
        );
    }

    #[test]
    fn pit_ports_go_to_the_interrupt_controller() {
        let (pio, mmio, mut intc, _) = setup();
        let mut ctx = ExitContext {
            pio: &pio,
            mmio: &mmio,
            intc: &mut intc,
        };
        for (port, data) in [(0x43, vec![0x34]), (0x40, vec![0x9c]), (0x40, vec![0x2e])] {
            let out = VmExit::IoOut {
                port,
                size: 1,
                data,
            };
            assert_eq!(handle_exit(&out, &mut ctx), Ok(ExitAction::Continue));
        }
        assert!(ctx.intc.timer_deadline().is_some(), "channel 0 armed");
        let latch = VmExit::IoOut {
            port: 0x43,
            size: 1,
            data: vec![0],
        };
        assert_eq!(handle_exit(&latch, &mut ctx), Ok(ExitAction::Continue));
        let inp = VmExit::IoIn {
            port: 0x40,
            size: 1,
            count: 2,
        };
        // Clock at 0: the latched count is the full 11932 (0x2e9c).
        assert_eq!(
            handle_exit(&inp, &mut ctx),
            Ok(ExitAction::CompleteIoIn(vec![0x9c, 0x2e]))
        );
    }

    #[test]
    fn mmio_goes_to_the_apic_first() {
        let (pio, mmio, mut intc, _) = setup();
        let mut ctx = ExitContext {
            pio: &pio,
            mmio: &mmio,
            intc: &mut intc,
        };
        // LAPIC version register.
        let r = handle_exit(
            &VmExit::MmioRead {
                addr: 0xfee0_0030,
                len: 4,
            },
            &mut ctx,
        )
        .unwrap();
        let ExitAction::CompleteMmioRead(v) = r else {
            panic!("{r:?}")
        };
        assert_eq!(v[0], 0x14, "xAPIC version");
        let r = handle_exit(
            &VmExit::MmioRead {
                addr: 0xd000_0000,
                len: 4,
            },
            &mut ctx,
        )
        .unwrap();
        assert_eq!(r, ExitAction::CompleteMmioRead(vec![0xff; 4]));
    }

    #[test]
    fn fatal_and_special_exits() {
        let (pio, mmio, mut intc, _) = setup();
        let mut ctx = ExitContext {
            pio: &pio,
            mmio: &mmio,
            intc: &mut intc,
        };
        assert_eq!(handle_exit(&VmExit::Hlt, &mut ctx), Ok(ExitAction::Halt));
        assert_eq!(
            handle_exit(&VmExit::Shutdown, &mut ctx),
            Ok(ExitAction::Reset)
        );
        assert_eq!(
            handle_exit(&VmExit::Interrupted, &mut ctx),
            Ok(ExitAction::Kicked)
        );
        assert_eq!(
            handle_exit(&VmExit::InternalError { suberror: 1 }, &mut ctx),
            Err(ExitError::InternalError { suberror: 1 })
        );
        assert!(handle_exit(&VmExit::Other(99), &mut ctx).is_err());
    }
}
