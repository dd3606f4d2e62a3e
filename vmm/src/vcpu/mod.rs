// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The vCPU thread: the only writer of guest-visible state.
//!
//! Each turn of the loop: act on control requests (pause, stop), deliver
//! asynchronous events (timer expiry, host input) into the device models,
//! route raised interrupt lines, inject the highest pending interrupt if the
//! guest can take it (else ask for an interrupt window), run the guest, and
//! handle the exit.

pub mod control;
pub mod counters;
pub mod exit;

use std::sync::{Arc, Mutex};

use devices::async_event::{ApplyError, AsyncEventSource};
use devices::bus::Bus;
use devices::clock::Clock;
use devices::interrupt::InterruptController;
use devices::irq::{IrqLines, MsiQueue};
use devices::legacy::Serial;
use hypervisor::{Vcpu, VmExit};

pub use control::{RunState, VcpuControl};
pub use counters::VcpuCounters;
use exit::{handle_exit, ExitAction, ExitContext, ExitError};

use crate::clock::VmClock;

/// Why the vCPU thread ended.
#[derive(Debug)]
pub enum VcpuEnd {
    /// The guest powered off.
    Shutdown,
    /// The guest asked for a reset.
    Reset,
    /// The control loop stopped it.
    Stopped,
    /// It could not go on.
    Error(VcpuError),
}

/// Errors that end the vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_RUN or another vCPU ioctl failed.
    #[error("vCPU operation failed")]
    Hypervisor(#[source] hypervisor::HypervisorError),
    /// An exit the VMM cannot handle.
    #[error("vCPU stopped")]
    Exit(#[source] ExitError),
    /// A device event could not be applied.
    #[error("cannot apply a device event")]
    ApplyEvent(#[source] ApplyError),
}

/// Everything the vCPU thread owns.
#[derive(Debug)]
pub struct VcpuRunner {
    /// The vCPU.
    pub vcpu: Box<dyn Vcpu>,
    /// Port I/O devices.
    pub pio: Bus,
    /// MMIO devices.
    pub mmio: Bus,
    /// The interrupt controller.
    pub intc: InterruptController,
    /// Lines raised by devices.
    pub irq_lines: Arc<IrqLines>,
    /// MSIs sent by devices.
    pub msi_queue: Arc<MsiQueue>,
    /// Devices with host-side work to apply on this thread.
    pub async_sources: Vec<Arc<Mutex<dyn AsyncEventSource>>>,
    /// The serial port, for host input.
    pub serial: Option<Arc<Mutex<Serial>>>,
    /// The VM clock.
    pub clock: Arc<VmClock>,
    /// Requests and wake-ups from other threads.
    pub control: Arc<VcpuControl>,
    /// Exit counters.
    pub counters: Arc<VcpuCounters>,
}

impl VcpuRunner {
    /// Runs the vCPU until the guest stops or the control loop stops it.
    /// Call on the vCPU thread.
    pub fn run(mut self) -> VcpuEnd {
        let end = match self.vcpu.bind_kick() {
            Ok(kicker) => {
                self.control.set_kicker(Some(kicker.clone()));
                let end = self.run_loop();
                kicker.retire();
                end
            }
            Err(e) => VcpuEnd::Error(VcpuError::Hypervisor(e)),
        };
        self.control.mark_stopped();
        end
    }

    fn run_loop(&mut self) -> VcpuEnd {
        loop {
            let clock = self.clock.clone();
            if !self.control.checkpoint(|| clock.pause(), || clock.resume()) {
                return VcpuEnd::Stopped;
            }
            if let Err(e) = self.deliver_async_events() {
                return VcpuEnd::Error(e);
            }
            if let Err(e) = self.inject_interrupts() {
                return VcpuEnd::Error(e);
            }
            self.control.set_deadline(self.intc.timer_deadline());

            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) => return VcpuEnd::Error(VcpuError::Hypervisor(e)),
            };
            if exit == VmExit::Interrupted {
                self.vcpu.set_immediate_exit(false);
            }
            self.counters.count_exit(&exit);
            let mut ctx = ExitContext {
                pio: &self.pio,
                mmio: &self.mmio,
                intc: &mut self.intc,
            };
            let action = handle_exit(&exit, &mut ctx);
            self.route_interrupts();
            match action {
                Ok(ExitAction::Continue) | Ok(ExitAction::Kicked) => {}
                Ok(ExitAction::CompleteIoIn(data)) => self.vcpu.complete_io_in(&data),
                Ok(ExitAction::CompleteMmioRead(data)) => self.vcpu.complete_mmio_read(&data),
                Ok(ExitAction::Halt) => {
                    if let Err(e) = self.wait_for_interrupt() {
                        return VcpuEnd::Error(e);
                    }
                }
                Ok(ExitAction::Shutdown) => return VcpuEnd::Shutdown,
                Ok(ExitAction::Reset) => return VcpuEnd::Reset,
                Err(e) => return VcpuEnd::Error(VcpuError::Exit(e)),
            }
        }
    }

    /// Applies what happened outside the guest since the last exit: the
    /// timer's expiry, host input and device events. The one input seam of
    /// the VMM.
    fn deliver_async_events(&mut self) -> Result<(), VcpuError> {
        // A late VMM fires every period that passed; the extra ticks
        // coalesce in the APIC (the deadline sequence stays deterministic).
        let now = self.clock.now_ns();
        while let Some(deadline) = self.intc.timer_deadline() {
            if now < deadline {
                break;
            }
            self.intc.fire_timer();
            self.counters.count_timer_fire();
        }
        if let Some(serial) = &self.serial {
            if self.control.input_len() > 0 {
                let mut serial = serial.lock().unwrap_or_else(|e| e.into_inner());
                // Only what fits in the FIFO is taken; the rest waits in the queue.
                let bytes = self.control.take_input(serial.input_room());
                let taken = serial.enqueue_input(&bytes);
                debug_assert_eq!(taken, bytes.len());
            }
        }
        if self.control.take_events_ready() {
            for source in &self.async_sources {
                let mut source = source.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(event) = source.poll_event() {
                    source.apply_event(&event).map_err(VcpuError::ApplyEvent)?;
                }
            }
        }
        self.route_interrupts();
        Ok(())
    }

    /// Routes what devices raised (IOAPIC lines, MSIs) into the interrupt
    /// controller.
    fn route_interrupts(&mut self) {
        let lines = self.irq_lines.take();
        if lines != 0 {
            self.intc.raise_irq_lines(lines);
        }
        for (address, data) in self.msi_queue.take() {
            self.intc.deliver_msi(address, data);
        }
    }

    /// Injects the highest pending vector if the guest can take it now;
    /// otherwise asks KVM for an exit when it can.
    fn inject_interrupts(&mut self) -> Result<(), VcpuError> {
        let mut want_window = false;
        if let Some(vector) = self.intc.pending_vector() {
            if self.vcpu.ready_for_interrupt() {
                self.vcpu
                    .inject_interrupt(vector)
                    .map_err(VcpuError::Hypervisor)?;
                self.intc.acknowledge(vector);
                self.counters.count_injection();
                want_window = self.intc.pending_vector().is_some();
            } else {
                want_window = true;
            }
        }
        self.vcpu.request_interrupt_window(want_window);
        Ok(())
    }

    /// The guest executed HLT: sleep until an interrupt is pending (timer,
    /// device, input) or the control loop wants something.
    fn wait_for_interrupt(&mut self) -> Result<(), VcpuError> {
        loop {
            self.deliver_async_events()?;
            if self.intc.has_pending() {
                return Ok(());
            }
            match self.control.run_state() {
                RunState::Running => {}
                _ => return Ok(()),
            }
            let deadline = self.intc.timer_deadline();
            self.control.wait_halted(self.clock.as_ref(), deadline);
        }
    }
}
