// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The user-space interrupt controller: one local APIC with its timer, one
//! IOAPIC, MSI delivery, and the platform's other interrupt source with a
//! clock, the i8254 PIT on IOAPIC pin 2.
//!
//! There is no in-kernel irqchip: KVM would inject interrupts at moments the
//! host chooses, which record/replay cannot reproduce. Instead the vCPU
//! thread calls into [`InterruptController`] at every exit that concerns it
//! (MMIO in the APIC windows, device interrupt lines, MSI writes, timer
//! expiry) and injects [`InterruptController::pending_vector`] itself with
//! `KVM_INTERRUPT` when the guest can take it, then reports it with
//! [`InterruptController::acknowledge`].
//!
//! Guest-visible time comes only from the [`Clock`], and only when a guest
//! action depends on it (arming a timer, reading a current count, changing
//! the APIC timer's divider while it runs). The two timers share one
//! deadline ([`InterruptController::timer_deadline`]) and one expiry call
//! ([`InterruptController::fire_timer`], which fires the earlier one), so
//! the VMM, and record/replay, see one timer.

pub mod ioapic;
pub mod lapic;
pub mod message;
pub mod msi;
pub mod pit;

use std::collections::BTreeMap;
use std::sync::Arc;

use log::debug;

use self::ioapic::{Ioapic, IoapicState, PinOutcome};
use self::lapic::{Acceptance, Ipi, Lapic, LapicEffect, LapicState, Shorthand, TimerFire};
use self::message::{DeliveryMode, InterruptMessage};
use self::pit::{Pit, PitState};
use crate::clock::Clock;

/// Guest-physical base of the local APIC's xAPIC MMIO page.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Size of the local APIC window.
pub const LAPIC_SIZE: u64 = 0x1000;
/// Guest-physical base of the IOAPIC.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of the IOAPIC window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// APIC ID of the (only) local APIC.
pub const BSP_APIC_ID: u8 = 0;
/// IOAPIC pin of ISA IRQ 0 (the PIT), as the MADT's interrupt source
/// override says.
pub const PIT_GSI: u32 = 2;

/// The guest-visible state of the whole controller, for save/restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterruptControllerState {
    /// The local APIC.
    pub lapic: LapicState,
    /// The IOAPIC.
    pub ioapic: IoapicState,
    /// The PIT.
    pub pit: PitState,
}

/// Event counts, for `vm.counters`. Not guest-visible.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterruptCounters {
    /// Edge pulses received on IOAPIC pins.
    pub irq_pulses: u64,
    /// Level changes received on IOAPIC pins.
    pub irq_level_changes: u64,
    /// Pin events naming a pin the IOAPIC does not have.
    pub irq_invalid_pins: u64,
    /// IOAPIC messages accepted by a local APIC.
    pub ioapic_delivered: u64,
    /// Pin events dropped because the redirection entry is masked.
    pub ioapic_masked: u64,
    /// Level assertions held back by a pending remote IRR.
    pub ioapic_remote_irr_pending: u64,
    /// Level entries whose remote IRR an EOI cleared.
    pub ioapic_eoi: u64,
    /// MSIs accepted by a local APIC.
    pub msi_delivered: u64,
    /// MSIs with an address outside 0xFEExxxxx.
    pub msi_invalid: u64,
    /// IPIs accepted by a local APIC.
    pub ipi_delivered: u64,
    /// Timer expiries (masked or not).
    pub timer_fires: u64,
    /// Timer expiries suppressed by the LVT mask.
    pub timer_fires_masked: u64,
    /// PIT channel 0 expiries (each pulses IOAPIC pin 2).
    pub pit_fires: u64,
    /// Vectors the VMM injected (IRR to ISR).
    pub interrupts_injected: u64,
    /// Acknowledgements of a vector that was not pending.
    pub spurious_acknowledges: u64,
    /// EOIs that retired an in-service vector.
    pub eoi: u64,
    /// Interrupts merged with one already pending in IRR.
    pub coalesced: u64,
    /// Interrupts dropped for a vector below 16.
    pub illegal_vectors: u64,
    /// Interrupts dropped because the APIC is software-disabled.
    pub dropped_apic_disabled: u64,
    /// Messages with a delivery mode not modelled (SMI, NMI, INIT, SIPI,
    /// ExtINT): dropped.
    pub unsupported_delivery_mode: u64,
    /// Messages whose destination matched no local APIC.
    pub no_destination: u64,
}

impl InterruptCounters {
    /// The counters as name → value.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("irq_pulses", self.irq_pulses),
            ("irq_level_changes", self.irq_level_changes),
            ("irq_invalid_pins", self.irq_invalid_pins),
            ("ioapic_delivered", self.ioapic_delivered),
            ("ioapic_masked", self.ioapic_masked),
            ("ioapic_remote_irr_pending", self.ioapic_remote_irr_pending),
            ("ioapic_eoi", self.ioapic_eoi),
            ("msi_delivered", self.msi_delivered),
            ("msi_invalid", self.msi_invalid),
            ("ipi_delivered", self.ipi_delivered),
            ("timer_fires", self.timer_fires),
            ("timer_fires_masked", self.timer_fires_masked),
            ("pit_fires", self.pit_fires),
            ("interrupts_injected", self.interrupts_injected),
            ("spurious_acknowledges", self.spurious_acknowledges),
            ("eoi", self.eoi),
            ("coalesced", self.coalesced),
            ("illegal_vectors", self.illegal_vectors),
            ("dropped_apic_disabled", self.dropped_apic_disabled),
            ("unsupported_delivery_mode", self.unsupported_delivery_mode),
            ("no_destination", self.no_destination),
        ])
    }

    fn count_acceptance(&mut self, acceptance: Acceptance) {
        match acceptance {
            Acceptance::Accepted => {}
            Acceptance::Coalesced => self.coalesced += 1,
            Acceptance::IllegalVector => self.illegal_vectors += 1,
            Acceptance::Disabled => self.dropped_apic_disabled += 1,
        }
    }
}

/// Offers `message` to the local APICs `targets` selects. Fixed messages
/// go to every selected APIC; lowest-priority ones to the selected APIC with
/// the lowest processor priority. Other delivery modes are not modelled and
/// dropped. Returns whether some APIC accepted the vector.
fn route(
    lapics: &mut [Lapic],
    counters: &mut InterruptCounters,
    message: &InterruptMessage,
    targets: &dyn Fn(usize, &Lapic) -> bool,
) -> bool {
    let lowest_priority = match message.delivery_mode {
        DeliveryMode::Fixed => false,
        DeliveryMode::LowestPriority => true,
        mode => {
            debug!("interrupt: {mode:?} message {message:?} not modelled, dropped");
            counters.unsupported_delivery_mode += 1;
            return false;
        }
    };
    let mut selected: Vec<usize> = (0..lapics.len())
        .filter(|i| lapics.get(*i).is_some_and(|l| targets(*i, l)))
        .collect();
    if lowest_priority {
        let best = selected
            .iter()
            .copied()
            .min_by_key(|i| lapics.get(*i).map(|l| l.ppr()));
        selected = best.into_iter().collect();
    }
    if selected.is_empty() {
        debug!("interrupt: no local APIC matches {message:?}");
        counters.no_destination += 1;
        return false;
    }
    let mut accepted = false;
    for (_, lapic) in lapics
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| selected.contains(i))
    {
        let acceptance = lapic.accept(message.vector, message.trigger_mode);
        counters.count_acceptance(acceptance);
        accepted |= acceptance.is_pending();
    }
    accepted
}

/// Routes `message` by its destination field.
fn route_to_destination(
    lapics: &mut [Lapic],
    counters: &mut InterruptCounters,
    message: &InterruptMessage,
) -> bool {
    route(lapics, counters, message, &|_, l| {
        l.matches_destination(message.destination_mode, message.destination)
    })
}

/// The delivery callback the IOAPIC uses: routes and counts.
fn ioapic_delivery<'a>(
    lapic: &'a mut Lapic,
    counters: &'a mut InterruptCounters,
) -> impl FnMut(&InterruptMessage) -> bool + 'a {
    move |message| {
        let accepted = route_to_destination(std::slice::from_mut(&mut *lapic), counters, message);
        if accepted {
            counters.ioapic_delivered += 1;
        }
        accepted
    }
}

/// One local APIC, one IOAPIC and MSI delivery, driven from the vCPU thread.
#[derive(Debug)]
pub struct InterruptController {
    clock: Arc<dyn Clock>,
    lapic: Lapic,
    ioapic: Ioapic,
    pit: Pit,
    counters: InterruptCounters,
}

impl InterruptController {
    /// A controller in its reset state, reading guest time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        InterruptController {
            clock,
            lapic: Lapic::new(BSP_APIC_ID),
            ioapic: Ioapic::new(),
            pit: Pit::new(),
            counters: InterruptCounters::default(),
        }
    }

    /// Puts the local APIC, the IOAPIC and the PIT back in their power-up
    /// state (for a guest reboot). Counters are kept.
    pub fn reset(&mut self) {
        self.lapic = Lapic::new(BSP_APIC_ID);
        self.ioapic = Ioapic::new();
        self.pit = Pit::new();
    }

    /// The guest-visible state.
    pub fn state(&self) -> InterruptControllerState {
        InterruptControllerState {
            lapic: self.lapic.state().clone(),
            ioapic: self.ioapic.state().clone(),
            pit: self.pit.state().clone(),
        }
    }

    /// Replaces the guest-visible state (counters are kept).
    pub fn restore(&mut self, state: InterruptControllerState) {
        self.lapic = Lapic::from_state(state.lapic);
        self.ioapic = Ioapic::from_state(state.ioapic);
        self.pit = Pit::from_state(state.pit);
    }

    /// The local APIC.
    pub fn lapic(&self) -> &Lapic {
        &self.lapic
    }

    /// The IOAPIC.
    pub fn ioapic(&self) -> &Ioapic {
        &self.ioapic
    }

    /// The PIT.
    pub fn pit(&self) -> &Pit {
        &self.pit
    }

    /// Port read at the PIT's ports; returns false if `port` is not one.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) -> bool {
        if !Pit::owns(port) {
            return false;
        }
        self.pit.io_read(port, data, self.clock.as_ref());
        true
    }

    /// Port write at the PIT's ports; returns false if `port` is not one.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) -> bool {
        if !Pit::owns(port) {
            return false;
        }
        self.pit.io_write(port, data, self.clock.as_ref());
        true
    }

    /// MMIO in the LAPIC or IOAPIC window; returns false if addr is not theirs.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        if let Some(offset) = window_offset(addr, LAPIC_BASE, LAPIC_SIZE) {
            self.lapic.mmio_read(offset, data, self.clock.as_ref());
            true
        } else if let Some(offset) = window_offset(addr, IOAPIC_BASE, IOAPIC_SIZE) {
            self.ioapic.mmio_read(offset, data);
            true
        } else {
            false
        }
    }

    /// MMIO write in the LAPIC or IOAPIC window; returns false if addr is
    /// not theirs.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        if let Some(offset) = window_offset(addr, LAPIC_BASE, LAPIC_SIZE) {
            match self.lapic.mmio_write(offset, data, self.clock.as_ref()) {
                LapicEffect::None => {}
                LapicEffect::Eoi { vector, level } => self.lapic_eoi(vector, level),
                LapicEffect::Ipi(ipi) => self.send_ipi(ipi),
            }
            true
        } else if let Some(offset) = window_offset(addr, IOAPIC_BASE, IOAPIC_SIZE) {
            let mut deliver = ioapic_delivery(&mut self.lapic, &mut self.counters);
            self.ioapic.mmio_write(offset, data, &mut deliver);
            true
        } else {
            false
        }
    }

    fn lapic_eoi(&mut self, vector: u8, level: bool) {
        self.counters.eoi += 1;
        if level {
            let cleared = self.ioapic.end_of_interrupt(
                vector,
                &mut ioapic_delivery(&mut self.lapic, &mut self.counters),
            );
            self.counters.ioapic_eoi += cleared as u64;
        }
    }

    fn send_ipi(&mut self, ipi: Ipi) {
        // The sender is the only APIC, index 0.
        const SENDER: usize = 0;
        let lapics = std::slice::from_mut(&mut self.lapic);
        let message = ipi.message;
        let delivered = match ipi.shorthand {
            Shorthand::None => route_to_destination(lapics, &mut self.counters, &message),
            Shorthand::SelfOnly => route(lapics, &mut self.counters, &message, &|i, _| i == SENDER),
            Shorthand::AllIncludingSelf => {
                route(lapics, &mut self.counters, &message, &|_, _| true)
            }
            Shorthand::AllExcludingSelf => {
                route(lapics, &mut self.counters, &message, &|i, _| i != SENDER)
            }
        };
        if delivered {
            self.counters.ipi_delivered += 1;
        }
    }

    fn count_pin_outcome(&mut self, outcome: Result<PinOutcome, ioapic::IoapicError>) {
        match outcome {
            Ok(PinOutcome::Masked) => self.counters.ioapic_masked += 1,
            Ok(PinOutcome::RemoteIrrPending) => self.counters.ioapic_remote_irr_pending += 1,
            Ok(PinOutcome::Sent { .. } | PinOutcome::NoChange) => {}
            Err(e) => {
                debug!("interrupt: {e}");
                self.counters.irq_invalid_pins += 1;
            }
        }
    }

    /// Edge-triggered pulses on IOAPIC pins, as a bit mask (from
    /// `devices::irq::IrqLines::take()`), handled from pin 0 upwards.
    pub fn raise_irq_lines(&mut self, mask: u32) {
        for pin in (0..32).filter(|p| mask & (1 << p) != 0) {
            self.counters.irq_pulses += 1;
            let outcome = self.ioapic.pulse(
                pin,
                &mut ioapic_delivery(&mut self.lapic, &mut self.counters),
            );
            self.count_pin_outcome(outcome);
        }
    }

    /// Level-triggered pin state (for PCI INTx).
    pub fn set_irq_level(&mut self, pin: u32, asserted: bool) {
        self.counters.irq_level_changes += 1;
        let outcome = self.ioapic.set_level(
            pin,
            asserted,
            &mut ioapic_delivery(&mut self.lapic, &mut self.counters),
        );
        self.count_pin_outcome(outcome);
    }

    /// An MSI write (address 0xFEExxxxx, data: vector + delivery mode +
    /// trigger mode). Other addresses are dropped.
    pub fn deliver_msi(&mut self, addr: u64, data: u32) {
        let message = match msi::decode_msi(addr, data) {
            Ok(m) => m,
            Err(e) => {
                debug!("interrupt: dropped MSI (data {data:#x}): {e}");
                self.counters.msi_invalid += 1;
                return;
            }
        };
        let lapics = std::slice::from_mut(&mut self.lapic);
        if route_to_destination(lapics, &mut self.counters, &message) {
            self.counters.msi_delivered += 1;
        }
    }

    /// Clock time (`Clock::now_ns` units) at which the next timer fires:
    /// the earlier of the LAPIC timer's and the PIT's deadlines. A masked
    /// timer still counts: its deadline is returned, but
    /// [`fire_timer`](Self::fire_timer) raises nothing.
    pub fn timer_deadline(&self) -> Option<u64> {
        match (self.lapic.timer_deadline(), self.pit.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Called by the VMM when [`timer_deadline`](Self::timer_deadline)
    /// passed: fires the timer that deadline belongs to (the LAPIC's on a
    /// tie). The LAPIC timer sets its vector in IRR (unless masked); the
    /// PIT pulses IOAPIC pin [`PIT_GSI`]. Periodic timers re-arm from the
    /// programmed deadline (deadline += period), one-shots disarm. Does not
    /// read the clock: the VMM decides when the deadline passed, and the
    /// choice between the timers depends only on their state.
    pub fn fire_timer(&mut self) {
        let pit_first = match (self.lapic.timer_deadline(), self.pit.deadline()) {
            (Some(l), Some(p)) => p < l,
            (None, Some(_)) => true,
            _ => false,
        };
        if pit_first {
            if self.pit.fire() {
                self.counters.pit_fires += 1;
                self.raise_irq_lines(1 << PIT_GSI);
            }
            return;
        }
        match self.lapic.fire_timer() {
            TimerFire::NotArmed => debug!("interrupt: fire_timer with no timer armed"),
            TimerFire::Masked => {
                self.counters.timer_fires += 1;
                self.counters.timer_fires_masked += 1;
            }
            TimerFire::Delivered(acceptance) => {
                self.counters.timer_fires += 1;
                self.counters.count_acceptance(acceptance);
            }
        }
    }

    /// Highest-priority vector that can be delivered now (in IRR, priority
    /// class above PPR, APIC software-enabled).
    pub fn pending_vector(&self) -> Option<u8> {
        self.lapic.pending_vector()
    }

    /// The VMM injected `vector` with KVM_INTERRUPT: moves it from IRR to
    /// ISR (which raises PPR). A vector that was not pending is ignored.
    pub fn acknowledge(&mut self, vector: u8) {
        if self.lapic.acknowledge(vector) {
            self.counters.interrupts_injected += 1;
        } else {
            debug!("interrupt: acknowledge of vector {vector:#x}, which is not pending");
            self.counters.spurious_acknowledges += 1;
        }
    }

    /// Whether anything is pending that would wake a HLT-ed vCPU.
    pub fn has_pending(&self) -> bool {
        self.pending_vector().is_some()
    }

    /// Counters for `vm.counters`, as name → value.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.counters.to_map()
    }
}

/// `addr - base` if `addr` lies in `[base, base + size)`.
fn window_offset(addr: u64, base: u64, size: u64) -> Option<u64> {
    addr.checked_sub(base).filter(|offset| *offset < size)
}

#[cfg(test)]
mod tests {
    use super::lapic::registers::*;
    use super::*;
    use crate::clock::ManualClock;

    fn controller() -> (InterruptController, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(0));
        let mut c = InterruptController::new(clock.clone());
        c.w32(LAPIC_BASE + SVR, 0x1ff);
        (c, clock)
    }

    impl InterruptController {
        fn w32(&mut self, addr: u64, value: u32) {
            assert!(self.mmio_write(addr, &value.to_le_bytes()));
        }
        fn r32(&mut self, addr: u64) -> u32 {
            let mut d = [0u8; 4];
            assert!(self.mmio_read(addr, &mut d));
            u32::from_le_bytes(d)
        }
        fn lapic_w(&mut self, reg: u64, value: u32) {
            self.w32(LAPIC_BASE + reg, value);
        }
        fn lapic_r(&mut self, reg: u64) -> u32 {
            self.r32(LAPIC_BASE + reg)
        }
        fn ioapic_w(&mut self, sel: u32, value: u32) {
            self.w32(IOAPIC_BASE, sel);
            self.w32(IOAPIC_BASE + 0x10, value);
        }
        fn ioapic_r(&mut self, sel: u32) -> u32 {
            self.w32(IOAPIC_BASE, sel);
            self.r32(IOAPIC_BASE + 0x10)
        }
        fn counter(&self, name: &str) -> u64 {
            self.counters()[name]
        }
        /// Injects the pending vector as the VMM would, returning it.
        fn inject(&mut self) -> Option<u8> {
            let v = self.pending_vector()?;
            self.acknowledge(v);
            Some(v)
        }
        fn eoi(&mut self) {
            self.lapic_w(EOI, 0);
        }
    }

    #[test]
    fn mmio_windows() {
        let (mut c, _) = controller();
        let mut d = [0u8; 4];
        assert!(!c.mmio_read(LAPIC_BASE - 1, &mut d));
        assert!(!c.mmio_read(LAPIC_BASE + LAPIC_SIZE, &mut d));
        assert!(!c.mmio_write(IOAPIC_BASE + IOAPIC_SIZE, &d));
        assert!(!c.mmio_read(0, &mut d));
        assert!(!c.mmio_read(u64::MAX, &mut d));
        assert_eq!(c.lapic_r(VERSION), 0x0005_0014);
        assert_eq!(c.ioapic_r(1), 0x0017_0020);
        assert!(c.mmio_read(LAPIC_BASE + LAPIC_SIZE - 1, &mut d));
        assert!(c.mmio_read(IOAPIC_BASE + IOAPIC_SIZE - 1, &mut d));
    }

    #[test]
    fn one_shot_timer_100hz_divide_16() {
        let (mut c, clock) = controller();
        clock.set(5_000);
        c.lapic_w(TIMER_DIVIDE, 0x3); // divide by 16
        c.lapic_w(LVT_TIMER, 0xec); // one-shot, vector 0xec
        assert_eq!(c.timer_deadline(), None);
        c.lapic_w(TIMER_INITIAL_COUNT, 625_000);
        assert_eq!(c.timer_deadline(), Some(5_000 + 10_000_000));
        assert_eq!(c.lapic_r(TIMER_INITIAL_COUNT), 625_000);
        assert_eq!(c.lapic_r(TIMER_CURRENT_COUNT), 625_000);
        clock.advance(2_500_000);
        assert_eq!(c.lapic_r(TIMER_CURRENT_COUNT), 468_750);
        clock.advance(7_500_000);
        assert_eq!(c.lapic_r(TIMER_CURRENT_COUNT), 0);
        assert_eq!(c.pending_vector(), None);
        c.fire_timer();
        assert_eq!(c.timer_deadline(), None);
        assert_eq!(c.inject(), Some(0xec));
        assert_eq!(c.counter("timer_fires"), 1);
        assert_eq!(c.counter("interrupts_injected"), 1);
        c.eoi();
        assert_eq!(c.counter("eoi"), 1);
        // A second fire with nothing armed does nothing.
        c.fire_timer();
        assert_eq!(c.pending_vector(), None);
        assert_eq!(c.counter("timer_fires"), 1);
    }

    #[test]
    fn periodic_timer_follows_programmed_grid() {
        for (divide, div) in [(0xb, 1u64), (0x0, 2), (0x3, 16), (0xa, 128)] {
            let (mut c, clock) = controller();
            clock.set(1_000);
            c.lapic_w(TIMER_DIVIDE, divide);
            c.lapic_w(LVT_TIMER, (1 << 17) | 0x30);
            let count = 10_000_000 / div as u32; // 10 ms
            c.lapic_w(TIMER_INITIAL_COUNT, count);
            let mut deadline = 1_000 + 10_000_000;
            for tick in 0..5u64 {
                assert_eq!(
                    c.timer_deadline(),
                    Some(deadline),
                    "divide {div} tick {tick}"
                );
                // The VMM gets there late, by a varying amount.
                clock.set(deadline + tick * 123_457);
                c.fire_timer();
                assert_eq!(c.inject(), Some(0x30));
                c.eoi();
                deadline += 10_000_000;
            }
            assert_eq!(c.counter("timer_fires"), 5);
            // Current count is within the current period.
            clock.set(deadline - 10_000_000 + 2_500_000);
            assert_eq!(u64::from(c.lapic_r(TIMER_CURRENT_COUNT)), 7_500_000 / div);
        }
    }

    #[test]
    fn masked_timer_counts_but_raises_nothing() {
        let (mut c, clock) = controller();
        c.lapic_w(LVT_TIMER, (1 << 17) | (1 << 16) | 0x40);
        c.lapic_w(TIMER_DIVIDE, 0xb);
        c.lapic_w(TIMER_INITIAL_COUNT, 1_000_000);
        assert_eq!(c.timer_deadline(), Some(1_000_000));
        clock.set(400_000);
        assert_eq!(c.lapic_r(TIMER_CURRENT_COUNT), 600_000);
        clock.set(1_000_000);
        c.fire_timer();
        assert_eq!(c.pending_vector(), None);
        assert_eq!(c.lapic().state().irr.highest(), None);
        assert_eq!(c.timer_deadline(), Some(2_000_000));
        assert_eq!(c.counter("timer_fires_masked"), 1);
        // Unmasked: the next expiry raises the vector.
        c.lapic_w(LVT_TIMER, (1 << 17) | 0x40);
        c.fire_timer();
        assert_eq!(c.pending_vector(), Some(0x40));
    }

    #[test]
    fn timer_stop_divide_change_and_tsc_deadline_mode() {
        let (mut c, clock) = controller();
        c.lapic_w(LVT_TIMER, 0x40);
        c.lapic_w(TIMER_DIVIDE, 0x0); // 2
        c.lapic_w(TIMER_INITIAL_COUNT, 1_000); // 2000 ns
        clock.set(1_000);
        c.lapic_w(TIMER_DIVIDE, 0x1); // 4: 500 counts left = 2000 ns
        assert_eq!(c.timer_deadline(), Some(3_000));
        assert_eq!(c.lapic_r(TIMER_CURRENT_COUNT), 500);
        c.lapic_w(TIMER_INITIAL_COUNT, 0);
        assert_eq!(c.timer_deadline(), None);
        assert_eq!(c.lapic_r(TIMER_CURRENT_COUNT), 0);
        // TSC-deadline mode is not offered: the timer stays disarmed.
        c.lapic_w(TIMER_INITIAL_COUNT, 1_000);
        c.lapic_w(LVT_TIMER, (2 << 17) | 0x40);
        assert_eq!(c.timer_deadline(), None);
        c.lapic_w(TIMER_INITIAL_COUNT, 1_000);
        assert_eq!(c.timer_deadline(), None);
        assert_eq!(c.lapic_r(TIMER_INITIAL_COUNT), 0);
    }

    #[test]
    fn clock_is_read_only_when_needed() {
        #[derive(Debug, Default)]
        struct CountingClock(std::sync::atomic::AtomicU64);
        impl Clock for CountingClock {
            fn now_ns(&self) -> u64 {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                0
            }
        }
        let clock = Arc::new(CountingClock::default());
        let mut c = InterruptController::new(clock.clone());
        let reads = || clock.0.load(std::sync::atomic::Ordering::SeqCst);
        c.lapic_w(SVR, 0x1ff);
        c.lapic_w(TIMER_DIVIDE, 0x3);
        c.lapic_r(TIMER_CURRENT_COUNT);
        c.lapic_r(TPR);
        assert_eq!(reads(), 0);
        c.lapic_w(TIMER_INITIAL_COUNT, 10);
        assert_eq!(reads(), 1);
        c.lapic_r(TIMER_CURRENT_COUNT);
        assert_eq!(reads(), 2);
        c.fire_timer();
        c.timer_deadline();
        assert_eq!(reads(), 2);
    }

    #[test]
    fn nested_interrupts_eoi_order_and_tpr() {
        let (mut c, _) = controller();
        c.deliver_msi(0xfee0_0000, 0x31);
        assert_eq!(c.inject(), Some(0x31));
        assert_eq!(c.lapic_r(PPR), 0x30);
        // Same class waits, higher class nests.
        c.deliver_msi(0xfee0_0000, 0x35);
        assert_eq!(c.pending_vector(), None);
        assert!(!c.has_pending());
        c.deliver_msi(0xfee0_0000, 0x81);
        assert_eq!(c.inject(), Some(0x81));
        assert_eq!(c.lapic_r(PPR), 0x80);
        assert_eq!(c.lapic_r(ISR + 0x10), 1 << 0x11);
        assert_eq!(c.lapic_r(ISR + 0x40), 1 << 0x01);
        c.eoi(); // retires 0x81
        assert_eq!(c.lapic_r(ISR + 0x40), 0);
        assert_eq!(c.lapic_r(PPR), 0x30);
        assert_eq!(c.pending_vector(), None);
        c.eoi(); // retires 0x31
        assert_eq!(c.lapic_r(PPR), 0);
        // TPR holds back 0x35 until lowered.
        c.lapic_w(TPR, 0x30);
        assert_eq!(c.lapic_r(PPR), 0x30);
        assert_eq!(c.pending_vector(), None);
        c.lapic_w(TPR, 0x2f);
        assert_eq!(c.inject(), Some(0x35));
        assert_eq!(c.lapic_r(PPR), 0x30);
        c.eoi();
        assert_eq!(c.lapic_r(PPR), 0x2f);
        // An acknowledge that does not match IRR changes nothing.
        c.acknowledge(0x99);
        assert_eq!(c.counter("spurious_acknowledges"), 1);
        assert_eq!(c.lapic_r(ISR + 0x90), 0);
    }

    #[test]
    fn ioapic_edge_pins() {
        let (mut c, _) = controller();
        // Masked at reset: dropped.
        c.raise_irq_lines(1 << 4);
        assert_eq!(c.pending_vector(), None);
        assert_eq!(c.counter("ioapic_masked"), 1);
        c.ioapic_w(0x10 + 2 * 4, 0x24);
        c.ioapic_w(0x11 + 2 * 4, 0);
        c.ioapic_w(0x12, 0x21); // pin 1
        c.raise_irq_lines((1 << 4) | (1 << 1) | (1 << 30));
        assert_eq!(c.counter("irq_pulses"), 4);
        assert_eq!(c.counter("irq_invalid_pins"), 1);
        assert_eq!(c.counter("ioapic_delivered"), 2);
        assert_eq!(c.inject(), Some(0x24));
        c.eoi();
        assert_eq!(c.inject(), Some(0x21));
        c.eoi();
        assert_eq!(c.lapic_r(TMR + 0x10), 0);
        // Pulses while pending coalesce.
        c.raise_irq_lines(1 << 4);
        c.raise_irq_lines(1 << 4);
        assert_eq!(c.counter("coalesced"), 1);
        // Destination 1 matches no APIC.
        c.ioapic_w(0x11 + 2 * 4, 1 << 24);
        c.raise_irq_lines(1 << 4);
        assert_eq!(c.counter("no_destination"), 1);
    }

    /// The PIT on IOAPIC pin 2 and the LAPIC timer share one deadline;
    /// `fire_timer` fires the earlier one, the LAPIC's on a tie.
    #[test]
    fn pit_ticks_reach_pin_2_and_share_the_deadline() {
        let (mut c, clock) = controller();
        c.ioapic_w(0x10 + 2 * PIT_GSI, 0x30);
        c.ioapic_w(0x11 + 2 * PIT_GSI, 0);
        assert!(!c.pio_write(0x44, &[0]));
        let mut b = [0u8];
        assert!(!c.pio_read(0x3f, &mut b));
        // Periodic, 11932 ticks (10 ms).
        assert!(c.pio_write(0x43, &[0x34]));
        assert!(c.pio_write(0x40, &[0x9c]));
        assert!(c.pio_write(0x40, &[0x2e]));
        let pit_period = c.pit().deadline().unwrap();
        assert!((9_999_000..10_001_000).contains(&pit_period));
        // LAPIC one-shot at 15 ms.
        c.lapic_w(TIMER_DIVIDE, 0xb);
        c.lapic_w(LVT_TIMER, 0x40);
        c.lapic_w(TIMER_INITIAL_COUNT, 15_000_000);
        assert_eq!(c.timer_deadline(), Some(pit_period));
        clock.set(pit_period);
        c.fire_timer();
        assert_eq!(c.counter("pit_fires"), 1);
        assert_eq!(c.counter("timer_fires"), 0);
        assert_eq!(c.inject(), Some(0x30));
        c.eoi();
        assert_eq!(c.timer_deadline(), Some(15_000_000));
        clock.set(15_000_000);
        c.fire_timer();
        assert_eq!(c.counter("timer_fires"), 1);
        assert_eq!(c.inject(), Some(0x40));
        c.eoi();
        assert_eq!(c.timer_deadline(), Some(2 * pit_period));
        // The current count is read through the port, from the clock.
        clock.set(pit_period + pit_period / 2);
        assert!(c.pio_write(0x43, &[0x00]));
        let (mut lo, mut hi) = ([0u8], [0u8]);
        assert!(c.pio_read(0x40, &mut lo) && c.pio_read(0x40, &mut hi));
        let count = u16::from_le_bytes([lo[0], hi[0]]);
        assert!((5960..=5972).contains(&count), "{count}");
        // State round trip and reset include the PIT.
        let mut other = InterruptController::new(clock.clone());
        other.restore(c.state());
        assert_eq!(other.timer_deadline(), c.timer_deadline());
        other.reset();
        assert_eq!(other.pit().deadline(), None);
    }

    #[test]
    fn ioapic_level_pin_with_remote_irr_and_eoi_broadcast() {
        let (mut c, _) = controller();
        let entry_low = 0x10 + 2 * 11;
        c.ioapic_w(entry_low, (1 << 15) | 0x5b); // level, vector 0x5b
        c.set_irq_level(11, true);
        assert_eq!(c.lapic_r(TMR + 0x20), 1 << 0x1b);
        assert_ne!(c.ioapic_r(entry_low) & (1 << 14), 0);
        assert_eq!(c.inject(), Some(0x5b));
        // Still asserted: no new message until EOI.
        c.set_irq_level(11, true);
        assert_eq!(c.counter("ioapic_remote_irr_pending"), 1);
        assert_eq!(c.pending_vector(), None);
        // EOI while asserted: remote IRR cleared and re-delivered.
        c.eoi();
        assert_eq!(c.counter("ioapic_eoi"), 1);
        assert_eq!(c.pending_vector(), Some(0x5b));
        assert_ne!(c.ioapic_r(entry_low) & (1 << 14), 0);
        assert_eq!(c.inject(), Some(0x5b));
        // The device de-asserts; EOI clears remote IRR, nothing new.
        c.set_irq_level(11, false);
        c.eoi();
        assert_eq!(c.ioapic_r(entry_low) & (1 << 14), 0);
        assert_eq!(c.pending_vector(), None);
        assert_eq!(c.counter("ioapic_delivered"), 2);
        // An edge vector's EOI does not touch the IOAPIC.
        c.deliver_msi(0xfee0_0000, 0x5b);
        c.inject();
        c.eoi();
        assert_eq!(c.counter("ioapic_eoi"), 2);
        // Level pin re-asserted; EOI through the IOAPIC EOI register.
        c.set_irq_level(11, true);
        c.inject();
        c.set_irq_level(11, false);
        c.w32(IOAPIC_BASE + 0x40, 0x5b);
        assert_eq!(c.ioapic_r(entry_low) & (1 << 14), 0);
    }

    #[test]
    fn msi_delivery() {
        let (mut c, _) = controller();
        c.deliver_msi(0xfee0_0000, 0x41);
        assert_eq!(c.pending_vector(), Some(0x41));
        assert_eq!(c.counter("msi_delivered"), 1);
        // Broadcast, and logical destination after LDR is set.
        c.deliver_msi(0xfeef_f000, 0x42);
        c.deliver_msi(0xfee0_1004, 0x43); // logical 1: no match yet
        assert_eq!(c.counter("no_destination"), 1);
        c.lapic_w(LDR, 0x0100_0000);
        c.deliver_msi(0xfee0_1004, 0x44);
        c.deliver_msi(0xfee0_1004, 0x145); // lowest priority
        assert_eq!(c.counter("msi_delivered"), 4);
        assert_eq!(c.lapic_r(IRR + 0x20), 0b110110);
        // Level-triggered MSI sets TMR.
        c.deliver_msi(0xfee0_0000, 0x8050);
        assert_eq!(c.lapic_r(TMR + 0x20), 1 << 0x10);
        // NMI / INIT / ExtINT are not modelled.
        c.deliver_msi(0xfee0_0000, 0x400);
        c.deliver_msi(0xfee0_0000, 0x500);
        c.deliver_msi(0xfee0_0000, 0x700);
        assert_eq!(c.counter("unsupported_delivery_mode"), 3);
        // Outside the MSI window.
        c.deliver_msi(0xfed0_0000, 0x41);
        assert_eq!(c.counter("msi_invalid"), 1);
        assert_eq!(c.counter("msi_delivered"), 5);
    }

    #[test]
    fn illegal_vectors_set_esr_and_drop() {
        let (mut c, _) = controller();
        c.deliver_msi(0xfee0_0000, 0x0f);
        c.ioapic_w(0x10, 0x03);
        c.raise_irq_lines(1);
        assert_eq!(c.pending_vector(), None);
        assert_eq!(c.counter("illegal_vectors"), 2);
        assert_eq!(c.counter("msi_delivered"), 0);
        c.lapic_w(ESR, 0);
        assert_eq!(c.lapic_r(ESR), ESR_RECEIVE_ILLEGAL_VECTOR);
    }

    #[test]
    fn self_ipis() {
        let (mut c, _) = controller();
        c.lapic_w(ICR_LOW, (1 << 18) | 0x50); // shorthand self
        assert_eq!(c.inject(), Some(0x50));
        c.eoi();
        c.lapic_w(ICR_HIGH, 0);
        c.lapic_w(ICR_LOW, 0x51); // physical destination 0
        assert_eq!(c.inject(), Some(0x51));
        c.eoi();
        c.lapic_w(ICR_LOW, (2 << 18) | 0x52); // all including self
        assert_eq!(c.inject(), Some(0x52));
        c.eoi();
        c.lapic_w(ICR_LOW, (3 << 18) | 0x53); // all excluding self
        assert_eq!(c.pending_vector(), None);
        c.lapic_w(ICR_HIGH, 7 << 24);
        c.lapic_w(ICR_LOW, 0x54); // APIC 7: nobody
        assert_eq!(c.pending_vector(), None);
        c.lapic_w(ICR_LOW, 0x4500); // INIT: ignored
        c.lapic_w(ICR_LOW, 0x4600 | 0x10); // SIPI: ignored
        assert_eq!(c.pending_vector(), None);
        assert_eq!(c.counter("ipi_delivered"), 3);
        assert_eq!(c.counter("unsupported_delivery_mode"), 2);
        assert_eq!(c.lapic_r(ICR_LOW) & (1 << 12), 0);
    }

    #[test]
    fn software_disabled_apic_drops_and_blocks() {
        let clock = Arc::new(ManualClock::new(0));
        let mut c = InterruptController::new(clock);
        c.deliver_msi(0xfee0_0000, 0x41);
        assert!(!c.has_pending());
        assert_eq!(c.counter("dropped_apic_disabled"), 1);
        c.lapic_w(SVR, 0x1ff);
        c.deliver_msi(0xfee0_0000, 0x41);
        assert!(c.has_pending());
        c.lapic_w(SVR, 0xff);
        assert!(!c.has_pending());
    }

    #[test]
    fn garbage_accesses_never_panic() {
        let (mut c, clock) = controller();
        c.lapic_w(LVT_TIMER, 0x40);
        c.lapic_w(TIMER_INITIAL_COUNT, 1000);
        clock.set(u64::MAX);
        for base in [LAPIC_BASE, IOAPIC_BASE] {
            for offset in (0..0x1004u64).step_by(7).chain([0xffd, 0xffe, 0xfff]) {
                for size in [0usize, 1, 2, 3, 4, 6, 8, 16] {
                    let mut d = vec![0x5au8; size];
                    c.mmio_read(base + offset, &mut d);
                    c.mmio_write(base + offset, &d);
                }
            }
        }
        for pin in [0u32, 23, 24, 31, 32, u32::MAX] {
            c.set_irq_level(pin, true);
            c.set_irq_level(pin, false);
        }
        c.raise_irq_lines(u32::MAX);
        for v in 0..=255u8 {
            c.acknowledge(v);
        }
        c.fire_timer();
        c.pending_vector();
    }

    #[test]
    fn state_save_and_restore() {
        let (mut c, clock) = controller();
        c.ioapic_w(0x10 + 2 * 5, (1 << 15) | 0x66);
        c.set_irq_level(5, true);
        c.lapic_w(LVT_TIMER, (1 << 17) | 0x40);
        c.lapic_w(TIMER_INITIAL_COUNT, 5_000_000);
        let saved = c.state();
        let mut other = InterruptController::new(clock.clone());
        assert_ne!(other.state(), saved);
        other.restore(saved.clone());
        assert_eq!(other.state(), saved);
        assert_eq!(other.timer_deadline(), c.timer_deadline());
        assert_eq!(other.inject(), Some(0x66));
        other.eoi();
        // Restored remote IRR and pin level: re-delivered on EOI.
        assert_eq!(other.pending_vector(), Some(0x66));
        other.reset();
        assert_eq!(other.state(), InterruptController::new(clock).state());
        assert_eq!(other.timer_deadline(), None);
    }
}
