// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The hypervisor behind traits.
//!
//! The VMM talks to [`Hypervisor`], [`Vm`] and [`Vcpu`]; the only
//! implementation is KVM ([`kvm`]). The VM is created *without* KVM's
//! in-kernel interrupt controller: interrupts are injected by the VMM with
//! [`Vcpu::inject_interrupt`] at exits, on the vCPU thread, so every
//! delivery happens at a point a record/replay log can name.

pub mod kick;
pub mod kvm;
mod vm_exit;

use std::sync::Arc;

pub use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId,
};
pub use vm_exit::VmExit;

/// Errors from the hypervisor layer; each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm")]
    Open(#[source] std::io::Error),
    /// KVM's API version is not the stable one (12).
    #[error("unsupported KVM API version {0} (expected 12)")]
    ApiVersion(i32),
    /// A capability the VMM needs is missing.
    #[error("KVM lacks a required capability: {0}")]
    MissingCapability(&'static str),
    /// An ioctl failed.
    #[error("KVM ioctl {op} failed")]
    Ioctl {
        /// Which operation.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// KVM_RUN came back with an exit reason the VMM does not know.
    #[error("unexpected KVM exit reason {0}")]
    UnknownExit(u32),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler")]
    KickSignal(#[source] std::io::Error),
}

impl HypervisorError {
    fn ioctl(op: &'static str, e: kvm_ioctls::Error) -> Self {
        HypervisorError::Ioctl {
            op,
            source: std::io::Error::from_raw_os_error(e.errno()),
        }
    }
}

/// A short alias.
pub type Result<T> = std::result::Result<T, HypervisorError>;

/// A guest memory slot to register with the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Slot number.
    pub slot: u32,
    /// Guest physical address.
    pub guest_phys_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Host virtual address of the mapping backing it.
    pub userspace_addr: u64,
    /// Log writes to it (dirty page tracking).
    pub log_dirty: bool,
}

/// The hypervisor itself.
pub trait Hypervisor: Send + Sync {
    /// Creates a VM without an in-kernel interrupt controller.
    fn create_vm(&self) -> Result<Arc<dyn Vm>>;
    /// The CPUID entries the hypervisor can virtualize.
    fn supported_cpuid(&self) -> Result<CpuId>;
}

/// A virtual machine.
pub trait Vm: Send + Sync + std::fmt::Debug {
    /// Registers guest memory.
    ///
    /// # Safety
    /// `region.userspace_addr .. + size` must stay mapped, readable and
    /// writable for as long as the VM uses the slot.
    unsafe fn set_user_memory_region(&self, region: MemoryRegion) -> Result<()>;
    /// Creates vCPU `id`.
    fn create_vcpu(&self, id: u8) -> Result<Box<dyn Vcpu>>;
    /// The bitmap of pages written since the last call, for `slot` of `size` bytes.
    fn get_dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>>;
    /// True when [`peek_dirty_log`](Self::peek_dirty_log) leaves the pages
    /// it reports writable and reported (KVM's manual re-protection), so
    /// that a reader can keep pages it expects to be written again out of
    /// the dirty-page tracking's write faults.
    fn keeps_dirty_pages(&self) -> bool {
        false
    }
    /// The bitmap of pages of `slot` written since they were last cleared.
    /// When [`keeps_dirty_pages`](Self::keeps_dirty_pages), the pages stay
    /// writable and reported until [`clear_dirty_log`](Self::clear_dirty_log)
    /// names them; otherwise this is [`get_dirty_log`](Self::get_dirty_log).
    fn peek_dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>> {
        self.get_dirty_log(slot, size)
    }
    /// Clears the pages set in `bitmap` from `slot`'s log and tracks their
    /// next write again (after [`peek_dirty_log`](Self::peek_dirty_log));
    /// does nothing when the hypervisor does not keep pages.
    fn clear_dirty_log(&self, slot: u32, size: u64, bitmap: &[u64]) -> Result<()> {
        let _ = (slot, size, bitmap);
        Ok(())
    }
    /// Makes the hypervisor drop every translation it derived from guest
    /// memory that the VMM rewrote behind the guest's back: `changed` holds
    /// the guest-physical addresses of the pages written (a restored
    /// checkpoint). Call it with the vCPUs stopped, after the writes and
    /// before the guest runs again. Afterwards no vCPU uses a translation
    /// (shadow page table entry, or guest TLB entry on hosts with two-level
    /// paging) cached from the old contents. With no address, does nothing.
    ///
    /// Pages dirtied in a slot holding one of `changed` since its last
    /// [`get_dirty_log`](Self::get_dirty_log) may be lost from its log.
    fn drop_cached_translations(&self, changed: &[u64]) -> Result<()>;
    /// Turns dirty page logging on or off for every registered slot
    /// (a flags-only change: the slots keep their mappings and KVM its
    /// translations). Turning it on starts every slot's log empty.
    fn set_dirty_logging(&self, on: bool) -> Result<()> {
        let _ = on;
        Err(HypervisorError::MissingCapability("dirty logging toggle"))
    }
}

/// A virtual CPU. Used only from the thread that runs it.
pub trait Vcpu: Send + std::fmt::Debug {
    /// Runs the guest until the next exit.
    fn run(&mut self) -> Result<VmExit>;
    /// Supplies the value of the port read that caused the last exit.
    fn complete_io_in(&mut self, data: &[u8]);
    /// Supplies the value of the MMIO read that caused the last exit.
    fn complete_mmio_read(&mut self, data: &[u8]);
    /// True when the guest can take an external interrupt at the next entry
    /// (RFLAGS.IF set, no interrupt shadow, no event pending).
    fn ready_for_interrupt(&mut self) -> bool;
    /// Queues external interrupt `vector` for the next entry.
    fn inject_interrupt(&mut self, vector: u8) -> Result<()>;
    /// Asks for (or cancels) an exit as soon as the guest can take an interrupt.
    fn request_interrupt_window(&mut self, on: bool);
    /// Sets or clears the flag that makes the next `run` return at once.
    fn set_immediate_exit(&mut self, on: bool);
    /// Registers this vCPU with the kick mechanism of the calling thread;
    /// call it on the thread that will run the vCPU.
    fn bind_kick(&mut self) -> Result<kick::Kicker>;
    /// General purpose registers.
    fn get_regs(&self) -> Result<kvm_regs>;
    /// Sets the general purpose registers.
    fn set_regs(&self, regs: &kvm_regs) -> Result<()>;
    /// Special registers.
    fn get_sregs(&self) -> Result<kvm_sregs>;
    /// Sets the special registers.
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()>;
    /// Sets the FPU state.
    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()>;
    /// Sets the CPUID the guest sees.
    fn set_cpuid(&self, cpuid: &CpuId) -> Result<()>;
    /// Sets MSRs, `(index, value)` pairs.
    fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<()>;
    /// The FPU state (legacy area).
    fn get_fpu(&self) -> Result<kvm_fpu>;
    /// Reads the MSRs `indices`; returns the `(index, value)` pairs KVM
    /// answered (in order, stopping at the first index it does not know).
    fn get_msrs(&self, indices: &[u32]) -> Result<Vec<(u32, u64)>>;
    /// The XSAVE area (FPU, SSE, AVX...).
    fn get_xsave(&self) -> Result<kvm_xsave>;
    /// Sets the XSAVE area, as read by [`get_xsave`](Self::get_xsave).
    fn set_xsave(&self, xsave: &kvm_xsave) -> Result<()>;
    /// The extended control registers (XCR0).
    fn get_xcrs(&self) -> Result<kvm_xcrs>;
    /// Sets the extended control registers.
    fn set_xcrs(&self, xcrs: &kvm_xcrs) -> Result<()>;
    /// Pending exceptions, interrupts, NMIs and the interrupt shadow.
    fn get_vcpu_events(&self) -> Result<kvm_vcpu_events>;
    /// Sets pending exceptions, interrupts, NMIs and the interrupt shadow.
    fn set_vcpu_events(&self, events: &kvm_vcpu_events) -> Result<()>;
    /// The debug registers.
    fn get_debug_regs(&self) -> Result<kvm_debugregs>;
    /// Sets the debug registers.
    fn set_debug_regs(&self, regs: &kvm_debugregs) -> Result<()>;
    /// The guest's RIP at the last exit: from KVM's sync registers when
    /// the host has them (no ioctl), else from `KVM_GET_REGS`.
    fn exit_rip(&mut self) -> Result<u64>;
    /// The guest's general-purpose registers, RIP and RFLAGS at the last
    /// exit (as [`exit_rip`](Self::exit_rip): sync registers when the host
    /// has them).
    fn exit_regs(&mut self) -> Result<kvm_regs> {
        self.get_regs()
    }
    /// Completes a pending I/O or MMIO exit without running guest code
    /// (KVM_RUN with `immediate_exit` set), so that the registers can be
    /// replaced afterwards without KVM overwriting them.
    fn flush_pending_io(&mut self) -> Result<()>;
}
