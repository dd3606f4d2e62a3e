// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A scripted vCPU and a made-up VM for unit tests of the vCPU loop: the
//! vCPU returns a given sequence of exits and writes every call the loop
//! makes on it (runs, injections, interrupt-window requests, immediate
//! exits) into a trace shared with the test's devices.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypervisor::kick::{publish_immediate_exit, Kicker};
use hypervisor::{
    kvm_debugregs, kvm_fpu, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId,
    HypervisorError, MemoryRegion, Vcpu, VmExit,
};

/// What happened, in order: the vCPU's calls and the devices' events.
#[derive(Debug, Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    /// Appends a line.
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The index of the first line equal to `line`.
    pub fn find(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|l| l == line)
    }

    /// How many lines start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

/// Something the test does while the guest "runs" a step (on the vCPU
/// thread, between entry and exit): post host input, advance time...
pub type Action = Box<dyn FnOnce() + Send>;

/// One guest run.
pub struct Step {
    /// `None`: the guest computes until a kick (see [`Step::compute`]).
    exit: Option<VmExit>,
    /// How long a computing guest waits for its kick.
    limit: Duration,
    rip: u64,
    /// RAX when the run ends, if the step sets it.
    rax: Option<u64>,
    ready: bool,
    action: Option<Action>,
}

impl Step {
    /// A run that ends with `exit` at `rip`, the guest able to take an
    /// interrupt afterwards.
    pub fn exit(exit: VmExit, rip: u64) -> Self {
        Step {
            exit: Some(exit),
            limit: Duration::ZERO,
            rip,
            rax: None,
            ready: true,
            action: None,
        }
    }

    /// `out` of one byte to `port` at `rip`.
    pub fn out(port: u16, rip: u64) -> Self {
        Self::exit(
            VmExit::IoOut {
                port,
                size: 1,
                data: vec![0],
            },
            rip,
        )
    }

    /// A kick: the run was interrupted at an arbitrary instruction.
    pub fn kick(rip: u64) -> Self {
        Self::exit(VmExit::Interrupted, rip)
    }

    /// The guest computes without exiting until the VMM kicks it (the
    /// timer thread, at a deadline the loop published), for at most
    /// `limit`; the trace says `kicked` or `not kicked`.
    pub fn compute(rip: u64, limit: Duration) -> Self {
        Step {
            exit: None,
            limit,
            rip,
            rax: None,
            ready: true,
            action: None,
        }
    }

    /// The run leaves `rax` in RAX (what the guest computed).
    pub fn rax(mut self, rax: u64) -> Self {
        self.rax = Some(rax);
        self
    }

    /// Runs `f` during this run.
    pub fn with(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.action = Some(Box::new(f));
        self
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("exit", &self.exit)
            .field("rip", &self.rip)
            .finish_non_exhaustive()
    }
}

/// A vCPU that plays a script.
pub struct ScriptedVcpu {
    steps: VecDeque<Step>,
    trace: Trace,
    runs: u64,
    rip: u64,
    ready: bool,
    window: bool,
    /// `kvm_run.immediate_exit`: set by the loop or by a kick's signal
    /// handler (boxed: its address is published for the handler).
    immediate_exit: Box<u8>,
    regs: Cell<kvm_regs>,
    sregs: Cell<kvm_sregs>,
}

impl std::fmt::Debug for ScriptedVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedVcpu")
            .field("steps", &self.steps.len())
            .field("runs", &self.runs)
            .finish_non_exhaustive()
    }
}

impl ScriptedVcpu {
    /// A vCPU that plays `steps`, writing to `trace`.
    pub fn new(steps: Vec<Step>, trace: Trace) -> Self {
        ScriptedVcpu {
            steps: steps.into(),
            trace,
            runs: 0,
            rip: 0,
            ready: true,
            window: false,
            immediate_exit: Box::new(0),
            regs: Cell::new(kvm_regs::default()),
            sregs: Cell::new(kvm_sregs::default()),
        }
    }
}

impl ScriptedVcpu {
    /// Whether `immediate_exit` is set (by the loop or a kick).
    fn kicked(&self) -> bool {
        // SAFETY: the byte is owned by this vCPU; the kick handler writes it
        // on this same thread only (volatile, like KVM's kvm_run field).
        unsafe { std::ptr::read_volatile(&*self.immediate_exit) != 0 }
    }
}

impl Vcpu for ScriptedVcpu {
    fn run(&mut self) -> hypervisor::Result<VmExit> {
        if self.kicked() {
            self.trace.push("run: immediate exit");
            return Ok(VmExit::Interrupted);
        }
        let Some(step) = self.steps.pop_front() else {
            self.trace.push("run: script exhausted");
            return Err(HypervisorError::UnknownExit(u32::MAX));
        };
        self.runs += 1;
        if let Some(action) = step.action {
            action();
        }
        self.rip = step.rip;
        self.ready = step.ready;
        let mut regs = self.regs.get();
        regs.rip = step.rip;
        if let Some(rax) = step.rax {
            regs.rax = rax;
        }
        self.regs.set(regs);
        let exit = match step.exit {
            Some(exit) => {
                self.trace
                    .push(format!("run {}: {}", self.runs, exit.kind()));
                exit
            }
            None => {
                let start = Instant::now();
                while !self.kicked() && start.elapsed() < step.limit {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let what = if self.kicked() {
                    "kicked"
                } else {
                    "not kicked"
                };
                self.trace.push(format!("run {}: {what}", self.runs));
                VmExit::Interrupted
            }
        };
        Ok(exit)
    }

    fn complete_io_in(&mut self, _data: &[u8]) {}

    fn complete_mmio_read(&mut self, _data: &[u8]) {}

    fn ready_for_interrupt(&mut self) -> bool {
        self.ready
    }

    fn inject_interrupt(&mut self, vector: u8) -> hypervisor::Result<()> {
        self.trace.push(format!("inject {vector:#x}"));
        Ok(())
    }

    fn request_interrupt_window(&mut self, on: bool) {
        if on != self.window {
            self.trace
                .push(format!("window {}", if on { "on" } else { "off" }));
        }
        self.window = on;
    }

    fn set_immediate_exit(&mut self, on: bool) {
        if on {
            self.trace.push("immediate exit on");
        }
        // SAFETY: see `run`.
        unsafe { std::ptr::write_volatile(&mut *self.immediate_exit, u8::from(on)) };
    }

    fn bind_kick(&mut self) -> hypervisor::Result<Kicker> {
        let ptr: *mut u8 = &mut *self.immediate_exit;
        // SAFETY: the byte is boxed, so it stays where it is while this
        // vCPU lives; the loop retires the kicker before it drops the vCPU.
        unsafe { publish_immediate_exit(ptr) }
    }

    fn get_regs(&self) -> hypervisor::Result<kvm_regs> {
        Ok(self.regs.get())
    }

    fn set_regs(&self, regs: &kvm_regs) -> hypervisor::Result<()> {
        self.regs.set(*regs);
        Ok(())
    }

    fn get_sregs(&self) -> hypervisor::Result<kvm_sregs> {
        Ok(self.sregs.get())
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> hypervisor::Result<()> {
        self.sregs.set(*sregs);
        Ok(())
    }

    fn set_fpu(&self, _fpu: &kvm_fpu) -> hypervisor::Result<()> {
        Ok(())
    }

    fn set_cpuid(&self, _cpuid: &CpuId) -> hypervisor::Result<()> {
        Ok(())
    }

    fn set_msrs(&self, _msrs: &[(u32, u64)]) -> hypervisor::Result<()> {
        Ok(())
    }

    fn get_fpu(&self) -> hypervisor::Result<kvm_fpu> {
        Ok(kvm_fpu::default())
    }

    fn get_msrs(&self, indices: &[u32]) -> hypervisor::Result<Vec<(u32, u64)>> {
        Ok(indices.iter().map(|i| (*i, 0)).collect())
    }

    fn get_xsave(&self) -> hypervisor::Result<kvm_xsave> {
        Ok(kvm_xsave::default())
    }

    fn set_xsave(&self, _xsave: &kvm_xsave) -> hypervisor::Result<()> {
        Ok(())
    }

    fn get_xcrs(&self) -> hypervisor::Result<kvm_xcrs> {
        Ok(kvm_xcrs::default())
    }

    fn set_xcrs(&self, _xcrs: &kvm_xcrs) -> hypervisor::Result<()> {
        Ok(())
    }

    fn get_vcpu_events(&self) -> hypervisor::Result<kvm_vcpu_events> {
        Ok(kvm_vcpu_events::default())
    }

    fn set_vcpu_events(&self, _events: &kvm_vcpu_events) -> hypervisor::Result<()> {
        Ok(())
    }

    fn get_debug_regs(&self) -> hypervisor::Result<kvm_debugregs> {
        Ok(kvm_debugregs::default())
    }

    fn set_debug_regs(&self, _regs: &kvm_debugregs) -> hypervisor::Result<()> {
        Ok(())
    }

    fn exit_rip(&mut self) -> hypervisor::Result<u64> {
        Ok(self.rip)
    }

    fn flush_pending_io(&mut self) -> hypervisor::Result<()> {
        Ok(())
    }
}

/// A VM whose guest writes no page between checkpoints.
#[derive(Debug, Default)]
pub struct CleanVm;

impl hypervisor::Vm for CleanVm {
    unsafe fn set_user_memory_region(&self, _region: MemoryRegion) -> hypervisor::Result<()> {
        Ok(())
    }

    fn create_vcpu(&self, _id: u8) -> hypervisor::Result<Box<dyn Vcpu>> {
        Err(HypervisorError::MissingCapability("vCPUs of a made-up VM"))
    }

    fn get_dirty_log(&self, _slot: u32, size: u64) -> hypervisor::Result<Vec<u64>> {
        Ok(vec![
            0;
            usize::try_from(size.div_ceil(4096 * 64)).unwrap_or(0)
        ])
    }

    fn drop_cached_translations(&self, _changed: &[u64]) -> hypervisor::Result<()> {
        Ok(())
    }
}
