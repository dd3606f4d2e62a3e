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
pub mod ft;
pub mod mode;

use std::sync::{Arc, Mutex};

use devices::async_event::{ApplyError, AsyncEventSource};
use devices::bus::Bus;
use devices::clock::Clock;
use devices::interrupt::InterruptController;
use devices::irq::{IrqLines, MsiQueue};
use devices::legacy::Serial;
use ft_backend::{EndReason, Entry, Event};
use hypervisor::{Vcpu, VmExit};

pub use control::{PausedJob, RunState, VcpuControl};
pub use counters::VcpuCounters;
use exit::{handle_exit, ExitAction, ExitContext, ExitError};
pub use ft::{open_pair, DeviceState, FtContext, FtDevices, FtError, PairStart};
use mode::{Delivery, ModeChange, Seam};

use crate::clock::VmClock;
use ft_backend::error_chain;

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
    /// Record/replay failed (log, divergence, checkpoint).
    #[error("fault tolerance")]
    Ft(#[source] FtError),
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
    /// Record/replay.
    pub ft: FtContext,
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
        let result = self.run_guest();
        self.ft.debug_finish(&match &result {
            Ok(_) => "the replay ended as the recording did".to_string(),
            Err(e) => error_chain(e),
        });
        match result {
            Ok(end) => end,
            Err(e) => {
                if let VcpuError::Ft(ft) = &e {
                    self.ft.report_divergence(ft);
                }
                if let VcpuError::Ft(FtError::Replay(_) | FtError::Reset) = &e {
                    // Nothing more to log: the end was logged or checked.
                } else if self.ft.active() {
                    let _ = self
                        .ft
                        .finish(EndReason::Error, self.vcpu.as_mut(), &self.intc);
                }
                VcpuEnd::Error(e)
            }
        }
    }

    /// Ends the run for `reason`: the final state digest is logged
    /// (record) or checked (replay).
    fn end(&mut self, reason: EndReason) -> Result<VcpuEnd, VcpuError> {
        self.ft
            .finish(reason, self.vcpu.as_mut(), &self.intc)
            .map_err(VcpuError::Ft)?;
        Ok(match reason {
            EndReason::Shutdown => VcpuEnd::Shutdown,
            EndReason::Reset if self.ft.active() => {
                return Err(VcpuError::Ft(FtError::Reset));
            }
            EndReason::Reset => VcpuEnd::Reset,
            EndReason::Stopped | EndReason::Error => VcpuEnd::Stopped,
        })
    }

    fn run_guest(&mut self) -> Result<VcpuEnd, VcpuError> {
        loop {
            let clock = self.clock.clone();
            let control = self.control.clone();
            if !control.rendezvous_with_jobs(
                || clock.pause(),
                || clock.resume(),
                |job| (job.0)(self),
            ) {
                return self.end(EndReason::Stopped);
            }
            self.control.mark_seen();
            self.deliver_async_events()?;
            match self.ft.turn().map_err(VcpuError::Ft)? {
                ModeChange::Same => {}
                ModeChange::Stop => return Ok(VcpuEnd::Stopped),
                ModeChange::Unprotected | ModeChange::WentLive => {
                    // From here on a plain VM: host events at every turn.
                    self.deliver_async_events()?;
                }
            }
            if self.ft.replay_end_here() == Some(EndReason::Stopped) {
                // The recording was stopped by its VMM at a kick after this
                // exit: replay is complete, and the VMM exits as on power-off.
                log::info!("fault tolerance: replay reached the end of a stopped recording");
                self.end(EndReason::Stopped)?;
                return Ok(VcpuEnd::Shutdown);
            }
            self.inject_interrupts()?;
            self.ft.fresh_exit = false;
            if self.ft.replay_checkpoint_next() {
                // The recording ran the guest to a kick here: the checkpoint
                // replaces that run.
                continue;
            }
            self.ft.before_entry(self.clock.as_ref());
            // Kicks from now on signal the vCPU; one that came since
            // `mark_seen` without a signal ends this run at once.
            if self
                .control
                .enter_guest(self.clock.as_ref(), self.kick_deadline())
            {
                self.vcpu.set_immediate_exit(true);
            }
            let exit = self.vcpu.run();
            self.control.leave_guest();
            let exit = exit.map_err(VcpuError::Hypervisor)?;
            if exit == VmExit::Interrupted {
                self.vcpu.set_immediate_exit(false);
            }
            self.counters.count_exit(&exit);
            self.ft
                .note_exit(&exit, self.vcpu.as_mut())
                .map_err(VcpuError::Ft)?;
            self.ft
                .debug_exit(self.vcpu.as_ref(), &self.clock)
                .map_err(VcpuError::Ft)?;
            let mut ctx = ExitContext {
                pio: &self.pio,
                mmio: &self.mmio,
                intc: &mut self.intc,
            };
            let action = handle_exit(&exit, &mut ctx);
            self.route_interrupts();
            self.ft.check().map_err(VcpuError::Ft)?;
            match action.map_err(VcpuError::Exit)? {
                ExitAction::Continue | ExitAction::Kicked => {}
                ExitAction::CompleteIoIn(data) => self.vcpu.complete_io_in(&data),
                ExitAction::CompleteMmioRead(data) => self.vcpu.complete_mmio_read(&data),
                ExitAction::Halt => self.wait_for_interrupt()?,
                ExitAction::Shutdown => return self.end(EndReason::Shutdown),
                ExitAction::Reset => return self.end(EndReason::Reset),
            }
        }
    }

    /// When the timer thread must kick the vCPU: the mode decides from
    /// the APIC timer's deadline (see [`mode::ExecMode::kick_deadline`]).
    fn kick_deadline(&self) -> Option<u64> {
        let clock = &self.clock;
        self.ft
            .mode()
            .kick_deadline(self.intc.timer_deadline(), &|| clock.now_ns())
    }

    /// Applies what happened outside the guest since the last exit: the
    /// timer's expiry, host input and device events. The one input seam of
    /// the VMM; the mode decides what passes it
    /// ([`mode::ExecMode::at_input_seam`]).
    ///
    /// Plain runs deliver at every loop turn. Recording delivers only at a
    /// synchronous point (no guest entry since its last exit) and logs each
    /// event; at a kick it delivers only when an event waited longer than
    /// `max_delay_us`, after a micro-checkpoint. Replay applies the log's
    /// events recorded at this exit, and nothing from the host.
    fn deliver_async_events(&mut self) -> Result<(), VcpuError> {
        let mut seam = LoopSeam {
            at_sync: self.ft.at_sync,
            window_exit: self.ft.window_exit,
            clock: &self.clock,
            intc: &self.intc,
            control: &self.control,
            vcpu: self.vcpu.as_mut(),
        };
        match self.ft.mode_mut().at_input_seam(&mut seam) {
            Delivery::Host => self.deliver_host_events(),
            Delivery::Replayed => self.deliver_replayed_events(),
            Delivery::Nothing => Ok(()),
            Delivery::CheckpointThenHost => {
                // Forced delivery: checkpoint the state at this arbitrary
                // instruction, then deliver as at a synchronous exit.
                let cp = self
                    .ft
                    .take_checkpoint(self.vcpu.as_mut(), &self.intc)
                    .map_err(VcpuError::Ft)?;
                self.counters.count_checkpoint(cp.pages.len() as u64);
                let seq = cp.seq;
                self.ft.mode_mut().log_checkpoint(cp);
                self.ft.debug_checkpoint_taken(seq, &self.clock);
                self.ft.at_sync = true;
                self.deliver_host_events()
            }
        }
    }

    /// Takes the host's events (timer, serial input, device events),
    /// applies them and, when recording, logs them.
    pub(crate) fn deliver_host_events(&mut self) -> Result<(), VcpuError> {
        // A late VMM fires every period that passed; the extra ticks
        // coalesce in the APIC (the deadline sequence stays deterministic).
        let now = self.clock.now_ns();
        while let Some(deadline) = self.intc.timer_deadline() {
            if now < deadline {
                break;
            }
            self.apply_event(Event::TimerFire)?;
        }
        if self.serial.is_some() && self.control.input_len() > 0 {
            let room = self.serial.as_ref().map_or(0, |s| {
                s.lock().unwrap_or_else(|e| e.into_inner()).input_room()
            });
            // Only what fits in the FIFO is taken; the rest waits in the queue.
            let bytes = self.control.take_input(room);
            if !bytes.is_empty() {
                self.apply_event(Event::SerialInput(bytes))?;
            }
        }
        if self.control.take_events_ready() {
            for i in 0..self.async_sources.len() {
                loop {
                    let (id, event) = {
                        let mut source = self.async_sources[i]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        match source.poll_event() {
                            Some(ev) => (source.id().to_string(), ev),
                            None => break,
                        }
                    };
                    self.apply_event(Event::Device { id, data: event })?;
                }
            }
        }
        self.route_interrupts();
        Ok(())
    }

    /// Applies one event (from the host or the log), logs it when
    /// recording, and routes the interrupts it raised.
    fn apply_event(&mut self, event: Event) -> Result<(), VcpuError> {
        match &event {
            Event::TimerFire => {
                self.intc.fire_timer();
                self.counters.count_timer_fire();
            }
            Event::SerialInput(bytes) => {
                if let Some(serial) = &self.serial {
                    let taken = serial
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .enqueue_input(bytes);
                    debug_assert_eq!(taken, bytes.len());
                }
            }
            Event::Device { id, data } => {
                let source = self
                    .async_sources
                    .iter()
                    .find(|s| s.lock().unwrap_or_else(|e| e.into_inner()).id() == id.as_str());
                match source {
                    Some(s) => s
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .apply_event(data)
                        .map_err(VcpuError::ApplyEvent)?,
                    None => {
                        return Err(VcpuError::ApplyEvent(ApplyError::Malformed {
                            device: id.clone(),
                            reason: "no such device in this VM".into(),
                        }))
                    }
                }
            }
        }
        self.ft.log_event(event);
        self.route_interrupts();
        Ok(())
    }

    /// Replay: applies the events and checkpoints the log holds for the
    /// current exit, in their recorded order.
    fn deliver_replayed_events(&mut self) -> Result<(), VcpuError> {
        if !self.ft.at_sync {
            return Ok(());
        }
        let mut first = true;
        loop {
            if self.ft.replay_checkpoint_next() && (self.ft.fresh_exit || !first) {
                // A checkpoint starts a loop turn of its own, as in the
                // recording (after the injection of this one).
                break;
            }
            first = false;
            let last_id = self.ft.last_id;
            let next = self.ft.mode_mut().replayed_entry(last_id);
            match next {
                Some(Entry::Event { event, .. }) => self.apply_event(event)?,
                Some(Entry::Checkpoint(cp)) => {
                    let applied = self
                        .ft
                        .apply_checkpoint(&cp, self.vcpu.as_mut(), &self.intc);
                    // Also when the checkpoint's state digest did not
                    // match: the debug records then say where memory differs.
                    self.ft.debug_checkpoint_applied(&cp, applied.is_ok());
                    applied.map_err(VcpuError::Ft)?;
                    self.counters.count_checkpoint(cp.pages.len() as u64);
                }
                Some(_) | None => break,
            }
        }
        self.ft.check().map_err(VcpuError::Ft)
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
    /// otherwise asks KVM for an exit when it can. Under record/replay only
    /// at synchronous points (or right after a checkpoint, with the
    /// recorded decision): a kick lands at an arbitrary instruction.
    fn inject_interrupts(&mut self) -> Result<(), VcpuError> {
        if !self.ft.mode().may_inject(self.ft.at_sync) {
            if self.ft.window_exit {
                // Not used (replay, or nothing left to inject): asking
                // again would only bring the same exit back.
                self.vcpu.request_interrupt_window(false);
            }
            return Ok(());
        }
        let override_ready = self.ft.ready_override.take();
        let mut want_window = false;
        if let Some(vector) = self.intc.pending_vector() {
            let ready = override_ready.unwrap_or_else(|| self.vcpu.ready_for_interrupt());
            if ready {
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
    /// device, input) or the control loop wants something. In replay the
    /// log's events for this exit are all there is.
    fn wait_for_interrupt(&mut self) -> Result<(), VcpuError> {
        loop {
            self.deliver_async_events()?;
            if self.intc.has_pending() || !self.ft.mode().waits_for_host() {
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

/// What the input seam shows a mode, read when it asks.
struct LoopSeam<'a> {
    at_sync: bool,
    window_exit: bool,
    clock: &'a VmClock,
    intc: &'a InterruptController,
    control: &'a VcpuControl,
    vcpu: &'a mut dyn Vcpu,
}

impl Seam for LoopSeam<'_> {
    fn at_sync(&self) -> bool {
        self.at_sync
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    fn timer_due(&self, now: u64) -> Option<u64> {
        self.intc.timer_deadline().filter(|d| *d <= now)
    }

    fn host_waiting(&self) -> bool {
        self.control.input_len() > 0 || self.control.events_pending()
    }

    fn window_pending(&mut self) -> bool {
        self.window_exit && self.intc.pending_vector().is_some() && self.vcpu.ready_for_interrupt()
    }

    fn guest_ready(&mut self) -> bool {
        self.vcpu.ready_for_interrupt()
    }
}

#[cfg(test)]
mod tests;
