// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A KVM vCPU.

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_interrupt, kvm_msr_entry, kvm_regs, kvm_run, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::kick::{self, Kicker};
use crate::{CpuId, HypervisorError, Result, Vcpu, VmExit};

const KVMIO: u32 = 0xAE;
ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// A KVM vCPU fd and its `kvm_run` area.
#[derive(Debug)]
pub struct KvmVcpu {
    fd: VcpuFd,
    /// KVM copies the registers into `kvm_run` at each exit.
    sync_regs: bool,
}

impl KvmVcpu {
    pub(crate) fn new(mut fd: VcpuFd, sync_regs: bool) -> Self {
        if sync_regs {
            fd.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
        }
        KvmVcpu { fd, sync_regs }
    }

    fn run_area(&mut self) -> &mut kvm_run {
        self.fd.get_kvm_run()
    }
}

fn to_vm_exit(exit: VcpuExit<'_>) -> VmExit {
    match exit {
        VcpuExit::IoOut(port, data) => VmExit::IoOut {
            port,
            size: 0, // filled in by the caller from kvm_run.io
            data: data.to_vec(),
        },
        VcpuExit::IoIn(port, data) => VmExit::IoIn {
            port,
            size: 0,
            count: u32::try_from(data.len()).unwrap_or(u32::MAX),
        },
        VcpuExit::MmioRead(addr, data) => VmExit::MmioRead {
            addr,
            len: u8::try_from(data.len()).unwrap_or(8),
        },
        VcpuExit::MmioWrite(addr, data) => VmExit::MmioWrite {
            addr,
            data: data.to_vec(),
        },
        VcpuExit::Hlt => VmExit::Hlt,
        VcpuExit::IrqWindowOpen => VmExit::IrqWindowOpen,
        VcpuExit::Shutdown => VmExit::Shutdown,
        VcpuExit::Intr => VmExit::Interrupted,
        VcpuExit::InternalError => VmExit::InternalError { suberror: 0 },
        VcpuExit::FailEntry(reason, _) => VmExit::FailEntry { reason },
        VcpuExit::Unsupported(r) => VmExit::Other(r),
        _ => VmExit::Other(u32::MAX),
    }
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> Result<VmExit> {
        let exit = match self.fd.run() {
            Ok(exit) => to_vm_exit(exit),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(VmExit::Interrupted)
            }
            Err(e) => return Err(HypervisorError::ioctl("KVM_RUN", e)),
        };
        let run = self.run_area();
        Ok(match exit {
            VmExit::IoOut { port, data, .. } => {
                // SAFETY: the exit reason was KVM_EXIT_IO, so `io` is the live union member.
                let io = unsafe { run.__bindgen_anon_1.io };
                VmExit::IoOut {
                    port,
                    size: io.size,
                    data,
                }
            }
            VmExit::IoIn { port, .. } => {
                // SAFETY: the exit reason was KVM_EXIT_IO, so `io` is the live union member.
                let io = unsafe { run.__bindgen_anon_1.io };
                VmExit::IoIn {
                    port,
                    size: io.size,
                    count: io.count,
                }
            }
            VmExit::InternalError { .. } => {
                // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so
                // `internal` is the live union member.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                VmExit::InternalError { suberror }
            }
            other => other,
        })
    }

    fn complete_io_in(&mut self, data: &[u8]) {
        let run = self.run_area();
        // SAFETY: called after a KVM_EXIT_IO exit, so `io` is the live union member.
        let io = unsafe { run.__bindgen_anon_1.io };
        let len = (usize::from(io.size) * io.count as usize).min(data.len());
        let base = run as *mut kvm_run as *mut u8;
        // SAFETY: KVM places the I/O data `data_offset` bytes into the
        // kvm_run mapping, so the offset stays inside that mapping.
        let dst = unsafe { base.add(io.data_offset as usize) };
        // SAFETY: the mapping holds `size * count` bytes at `dst`; `len` is at
        // most that and at most `data.len()`, and the regions are distinct.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, len) };
    }

    fn complete_mmio_read(&mut self, data: &[u8]) {
        let run = self.run_area();
        // SAFETY: called after a KVM_EXIT_MMIO read, so `mmio` is the live union member.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let len = (mmio.len as usize).min(data.len()).min(mmio.data.len());
        mmio.data[..len].copy_from_slice(&data[..len]);
    }

    fn ready_for_interrupt(&mut self) -> bool {
        let run = self.run_area();
        run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<()> {
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads a kvm_interrupt from the given pointer,
        // which is valid for the call; the fd is a vCPU fd.
        let ret = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
        if ret == 0 {
            Ok(())
        } else {
            Err(HypervisorError::Ioctl {
                op: "KVM_INTERRUPT",
                source: std::io::Error::last_os_error(),
            })
        }
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.run_area().request_interrupt_window = u8::from(on);
    }

    fn set_immediate_exit(&mut self, on: bool) {
        self.fd.set_kvm_immediate_exit(u8::from(on));
    }

    fn bind_kick(&mut self) -> Result<Kicker> {
        let ptr = std::ptr::addr_of_mut!(self.run_area().immediate_exit);
        // SAFETY: the kvm_run mapping lives as long as this vCPU; the VMM
        // retires the kicker on this thread before dropping the vCPU.
        unsafe { kick::publish_immediate_exit(ptr) }
    }

    fn get_regs(&self) -> Result<kvm_regs> {
        self.fd
            .get_regs()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_REGS", e))
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd
            .set_regs(regs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_REGS", e))
    }

    fn get_sregs(&self) -> Result<kvm_sregs> {
        self.fd
            .get_sregs()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_SREGS", e))
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd
            .set_sregs(sregs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_SREGS", e))
    }

    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd
            .set_fpu(fpu)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_FPU", e))
    }

    fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_CPUID2", e))
    }

    fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<()> {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| HypervisorError::Ioctl {
            op: "KVM_SET_MSRS",
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        let n = self
            .fd
            .set_msrs(&msrs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_MSRS", e))?;
        if n != entries.len() {
            log::warn!("KVM accepted {n} of {} MSRs", entries.len());
        }
        Ok(())
    }

    fn get_fpu(&self) -> Result<kvm_fpu> {
        self.fd
            .get_fpu()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_FPU", e))
    }

    fn get_msrs(&self, indices: &[u32]) -> Result<Vec<(u32, u64)>> {
        let entries: Vec<kvm_msr_entry> = indices
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| HypervisorError::Ioctl {
            op: "KVM_GET_MSRS",
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        let n = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(|e| HypervisorError::ioctl("KVM_GET_MSRS", e))?;
        Ok(msrs
            .as_slice()
            .iter()
            .take(n)
            .map(|e| (e.index, e.data))
            .collect())
    }

    fn get_xsave(&self) -> Result<kvm_xsave> {
        self.fd
            .get_xsave()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_XSAVE", e))
    }

    fn set_xsave(&self, xsave: &kvm_xsave) -> Result<()> {
        // SAFETY: the VMM never enables KVM_CAP_XSAVE2 (no AMX state), so
        // KVM reads exactly the 4096-byte kvm_xsave it is given.
        unsafe { self.fd.set_xsave(xsave) }.map_err(|e| HypervisorError::ioctl("KVM_SET_XSAVE", e))
    }

    fn get_xcrs(&self) -> Result<kvm_xcrs> {
        self.fd
            .get_xcrs()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_XCRS", e))
    }

    fn set_xcrs(&self, xcrs: &kvm_xcrs) -> Result<()> {
        self.fd
            .set_xcrs(xcrs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_XCRS", e))
    }

    fn get_vcpu_events(&self) -> Result<kvm_vcpu_events> {
        self.fd
            .get_vcpu_events()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_VCPU_EVENTS", e))
    }

    fn set_vcpu_events(&self, events: &kvm_vcpu_events) -> Result<()> {
        self.fd
            .set_vcpu_events(events)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_VCPU_EVENTS", e))
    }

    fn get_debug_regs(&self) -> Result<kvm_debugregs> {
        self.fd
            .get_debug_regs()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_DEBUGREGS", e))
    }

    fn set_debug_regs(&self, regs: &kvm_debugregs) -> Result<()> {
        self.fd
            .set_debug_regs(regs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_DEBUGREGS", e))
    }

    fn exit_rip(&mut self) -> Result<u64> {
        if self.sync_regs {
            Ok(self.fd.sync_regs().regs.rip)
        } else {
            Ok(self.get_regs()?.rip)
        }
    }

    fn exit_regs(&mut self) -> Result<kvm_regs> {
        if self.sync_regs {
            Ok(self.fd.sync_regs().regs)
        } else {
            self.get_regs()
        }
    }

    fn flush_pending_io(&mut self) -> Result<()> {
        self.fd.set_kvm_immediate_exit(1);
        let r = match self.fd.run() {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
            Err(e) => Err(HypervisorError::ioctl("KVM_RUN", e)),
        };
        self.fd.set_kvm_immediate_exit(0);
        r
    }
}
