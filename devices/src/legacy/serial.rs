// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The 16550 UART at 0x3f8 (COM1, IRQ 4), a bus wrapper around
//! `vm_superio::Serial`.
//!
//! Its interrupt is an [`IrqLine`]: raising it only marks the line, the vCPU
//! loop routes it through the IOAPIC after the exit. Host input (stdin) is
//! queued with [`Serial::enqueue_input`] on the vCPU thread, at an exit.

use std::fmt;
use std::io::Write;

use log::{debug, warn};
use vm_superio::serial::{Error as UartError, NoEvents, SerialState};

use crate::bus::{BusAction, BusDevice};
use crate::irq::IrqLine;

/// First I/O port of COM1.
pub const SERIAL_PORT_BASE: u64 = 0x3f8;
/// Number of ports.
pub const SERIAL_PORT_SIZE: u64 = 8;
/// IOAPIC pin of COM1.
pub const SERIAL_IRQ: u32 = 4;

/// The guest's output sink.
type Output = Box<dyn Write + Send>;
/// The UART model.
type Uart = vm_superio::Serial<IrqLine, NoEvents, Output>;

/// Errors building a serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The saved state could not be restored.
    #[error("cannot restore the serial state")]
    Restore(#[source] UartError<std::convert::Infallible>),
}

/// COM1.
pub struct Serial {
    uart: Uart,
    /// Whether an output error was already logged (logged once only).
    output_error_logged: bool,
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serial")
            .field("state", &self.uart.state())
            .field("output_error_logged", &self.output_error_logged)
            .finish()
    }
}

impl Serial {
    /// A UART in its reset state raising `irq` and writing the guest's
    /// output to `out`.
    pub fn new(irq: IrqLine, out: Output) -> Self {
        Serial {
            uart: vm_superio::Serial::new(irq, out),
            output_error_logged: false,
        }
    }

    /// A UART with a saved register state.
    pub fn from_state(state: &SerialState, irq: IrqLine, out: Output) -> Result<Self, SerialError> {
        let uart = vm_superio::Serial::from_state(state, irq, NoEvents, out)
            .map_err(SerialError::Restore)?;
        Ok(Serial {
            uart,
            output_error_logged: false,
        })
    }

    /// The register state (for save/restore).
    pub fn state(&self) -> SerialState {
        self.uart.state()
    }

    /// Replaces the register state in place (the interrupt line and the
    /// output sink stay). On error the device keeps its previous state.
    pub fn restore_state(&mut self, state: &SerialState) -> Result<(), SerialError> {
        let irq = self.uart.interrupt_evt().clone();
        // Validate on a throw-away UART first, so a bad state loses nothing.
        vm_superio::Serial::from_state(state, irq.clone(), NoEvents, std::io::sink())
            .map_err(SerialError::Restore)?;
        let placeholder = vm_superio::Serial::new(irq.clone(), Box::new(std::io::sink()) as Output);
        let out = std::mem::replace(&mut self.uart, placeholder).into_writer();
        match vm_superio::Serial::from_state(state, irq, NoEvents, out) {
            Ok(uart) => {
                self.uart = uart;
                Ok(())
            }
            // Unreachable: the same state was accepted just above.
            Err(e) => Err(SerialError::Restore(e)),
        }
    }

    /// Room left in the receive FIFO: how many bytes
    /// [`enqueue_input`](Self::enqueue_input) would take now.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues host input for the guest; returns how many bytes fit (the
    /// rest must be offered again later). Raises the interrupt if the
    /// guest enabled it.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(UartError::FullFifo) => 0,
            Err(e) => {
                debug!("serial: input not queued: {e}");
                0
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match (u8::try_from(offset), data) {
            (Ok(offset), [byte]) if u64::from(offset) < SERIAL_PORT_SIZE => {
                *byte = self.uart.read(offset);
            }
            (_, data) => debug!("serial: ignored {}-byte read at {offset}", data.len()),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        let (Ok(offset), [value]) = (u8::try_from(offset), data) else {
            debug!("serial: ignored {}-byte write at {offset}", data.len());
            return BusAction::None;
        };
        if u64::from(offset) >= SERIAL_PORT_SIZE {
            return BusAction::None;
        }
        if let Err(e) = self.uart.write(offset, *value) {
            // The byte is lost, the guest carries on.
            if !self.output_error_logged {
                warn!("serial: guest output lost (further errors not logged): {e}");
                self.output_error_logged = true;
            }
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::irq::IrqLines;

    const RBR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("broken pipe"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn serial() -> (Serial, Arc<IrqLines>, SharedBuf) {
        let lines = IrqLines::new();
        let out = SharedBuf::default();
        let s = Serial::new(
            IrqLine::new(lines.clone(), SERIAL_IRQ),
            Box::new(out.clone()),
        );
        (s, lines, out)
    }

    fn rd(s: &mut Serial, offset: u64) -> u8 {
        let mut b = [0u8];
        s.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn output_reaches_sink() {
        let (mut s, lines, out) = serial();
        for b in b"hello\n" {
            assert_eq!(s.write(0, &[*b]), BusAction::None);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
        // THR-empty interrupt is not enabled: no IRQ.
        assert_eq!(lines.take(), 0);
        s.write(IER, &[0x2]);
        assert_eq!(lines.take(), 1 << SERIAL_IRQ);
    }

    #[test]
    fn input_raises_irq_when_enabled() {
        let (mut s, lines, _) = serial();
        // LSR: THR empty and idle, no data.
        assert_eq!(rd(&mut s, LSR), 0x60);
        // Input with RX interrupt disabled: no IRQ, data ready.
        assert_eq!(s.enqueue_input(b"a"), 1);
        assert_eq!(lines.take(), 0);
        assert_eq!(rd(&mut s, LSR) & 1, 1);
        // Enabling the RX interrupt with data pending raises it.
        s.write(IER, &[0x1]);
        assert_eq!(lines.take(), 1 << SERIAL_IRQ);
        assert_eq!(rd(&mut s, IIR) & 0xf, 0x4);
        assert_eq!(rd(&mut s, RBR), b'a');
        assert_eq!(rd(&mut s, LSR) & 1, 0);
        // More input with the interrupt enabled.
        assert_eq!(s.enqueue_input(b"xy"), 2);
        assert_eq!(lines.take(), 1 << SERIAL_IRQ);
        assert_eq!(rd(&mut s, RBR), b'x');
        assert_eq!(rd(&mut s, RBR), b'y');
        assert_eq!(rd(&mut s, LSR) & 1, 0);
    }

    #[test]
    fn input_beyond_fifo_is_refused() {
        let (mut s, _, _) = serial();
        let cap = s.input_room();
        let input = vec![b'z'; cap + 10];
        assert_eq!(s.enqueue_input(&input), cap);
        assert_eq!(s.enqueue_input(b"more"), 0);
        assert_eq!(s.enqueue_input(b""), 0);
        assert_eq!(s.input_room(), 0);
        rd(&mut s, RBR);
        assert_eq!(s.enqueue_input(b"more"), 1);
    }

    #[test]
    fn output_errors_do_not_stop_the_device() {
        let lines = IrqLines::new();
        let mut s = Serial::new(IrqLine::new(lines.clone(), SERIAL_IRQ), Box::new(Broken));
        s.write(IER, &[0x2]);
        lines.take();
        rd(&mut s, 2); // reading IIR acknowledges the THR-empty interrupt
        for _ in 0..3 {
            assert_eq!(s.write(0, b"x"), BusAction::None);
        }
        assert!(s.output_error_logged);
        // THR-empty still signalled so the guest driver does not stall.
        assert_eq!(lines.take(), 1 << SERIAL_IRQ);
    }

    #[test]
    fn garbage_accesses_are_ignored() {
        let (mut s, _, out) = serial();
        s.write(LCR, &[0x83]);
        assert_eq!(rd(&mut s, LCR), 0x83);
        let mut w = [0xffu8; 2];
        s.read(0, &mut w);
        assert_eq!(w, [0, 0]);
        s.write(0, b"ab");
        s.write(8, b"a");
        s.write(u64::MAX, b"a");
        s.write(0, &[]);
        assert_eq!(rd(&mut s, 8), 0);
        assert_eq!(rd(&mut s, 300), 0);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn restore_in_place_keeps_the_sink() {
        let (mut s, _, out) = serial();
        s.write(7, &[0x11]);
        let saved = s.state();
        s.write(7, &[0x22]);
        s.enqueue_input(b"abc");
        s.restore_state(&saved).unwrap();
        assert_eq!(s.state(), saved);
        let mut bad = saved.clone();
        bad.in_buffer = vec![0; 1000];
        assert!(s.restore_state(&bad).is_err());
        assert_eq!(s.state(), saved, "a refused state changes nothing");
        s.write(0, b"k");
        assert_eq!(out.0.lock().unwrap().as_slice(), b"k");
    }

    #[test]
    fn state_round_trip() {
        let (mut s, lines, _) = serial();
        s.write(7, &[0x5a]);
        s.enqueue_input(b"q");
        let state = s.state();
        let r = Serial::from_state(
            &state,
            IrqLine::new(lines, SERIAL_IRQ),
            Box::new(io::sink()),
        )
        .unwrap();
        assert_eq!(r.state(), state);
        let mut too_big = state;
        too_big.in_buffer = vec![0; 1000];
        let lines = IrqLines::new();
        assert!(Serial::from_state(
            &too_big,
            IrqLine::new(lines, SERIAL_IRQ),
            Box::new(io::sink())
        )
        .is_err());
    }
}
