// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! KVM, through kvm-ioctls, with no in-kernel interrupt controller.

mod dirty;
mod translations;
mod vcpu;

use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Cap, Kvm, VmFd};

pub use vcpu::KvmVcpu;

use crate::{CpuId, HypervisorError, MemoryRegion, Result, Vcpu, Vm};

/// Where KVM puts the TSS it needs for real-mode emulation on Intel: three
/// pages just below the IOAPIC... placed above the 32-bit MMIO devices.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// The KVM hypervisor (`/dev/kvm`).
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks the capabilities the VMM relies on.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new()
            .map_err(|e| HypervisorError::Open(std::io::Error::from_raw_os_error(e.errno())))?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(HypervisorError::ApiVersion(version));
        }
        if !kvm.check_extension(Cap::ImmediateExit) {
            return Err(HypervisorError::MissingCapability("KVM_CAP_IMMEDIATE_EXIT"));
        }
        if !kvm.check_extension(Cap::UserMemory) {
            return Err(HypervisorError::MissingCapability("KVM_CAP_USER_MEMORY"));
        }
        Ok(KvmHypervisor { kvm })
    }
}

impl crate::Hypervisor for KvmHypervisor {
    fn create_vm(&self) -> Result<Arc<dyn Vm>> {
        let fd = self
            .kvm
            .create_vm()
            .map_err(|e| HypervisorError::ioctl("KVM_CREATE_VM", e))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_TSS_ADDR", e))?;
        let sync_regs = self.kvm.check_extension(Cap::SyncRegs);
        let manual_protect = dirty::enable_manual_protect(&fd);
        Ok(Arc::new(KvmVm {
            fd,
            sync_regs,
            manual_protect,
            slots: Mutex::new(Vec::new()),
        }))
    }

    fn supported_cpuid(&self) -> Result<CpuId> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| HypervisorError::ioctl("KVM_GET_SUPPORTED_CPUID", e))
    }
}

/// A KVM VM.
#[derive(Debug)]
pub struct KvmVm {
    fd: VmFd,
    sync_regs: bool,
    /// `KVM_GET_DIRTY_LOG` only reports; `KVM_CLEAR_DIRTY_LOG` re-arms
    /// (see `dirty.rs`).
    manual_protect: bool,
    /// The registered memory slots, to register them again.
    slots: Mutex<Vec<kvm_userspace_memory_region>>,
}

impl KvmVm {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<kvm_userspace_memory_region>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Vm for KvmVm {
    unsafe fn set_user_memory_region(&self, region: MemoryRegion) -> Result<()> {
        let r = kvm_userspace_memory_region {
            slot: region.slot,
            flags: if region.log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.size,
            userspace_addr: region.userspace_addr,
        };
        // SAFETY: the caller guarantees the host mapping outlives the slot.
        unsafe { self.fd.set_user_memory_region(r) }
            .map_err(|e| HypervisorError::ioctl("KVM_SET_USER_MEMORY_REGION", e))?;
        let mut slots = self.slots();
        slots.retain(|s| s.slot != r.slot);
        if r.memory_size != 0 {
            slots.push(r);
            slots.sort_by_key(|s| s.slot);
        }
        Ok(())
    }

    fn create_vcpu(&self, id: u8) -> Result<Box<dyn Vcpu>> {
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(|e| HypervisorError::ioctl("KVM_CREATE_VCPU", e))?;
        Ok(Box::new(KvmVcpu::new(fd, self.sync_regs)))
    }

    fn get_dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>> {
        let bitmap = self.peek_dirty_log(slot, size)?;
        self.clear_dirty_log(slot, size, &bitmap)?;
        Ok(bitmap)
    }

    fn keeps_dirty_pages(&self) -> bool {
        self.manual_protect
    }

    fn peek_dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>> {
        let bytes = usize::try_from(size).unwrap_or(usize::MAX);
        self.fd
            .get_dirty_log(slot, bytes)
            .map_err(|e| HypervisorError::ioctl("KVM_GET_DIRTY_LOG", e))
    }

    fn clear_dirty_log(&self, slot: u32, size: u64, bitmap: &[u64]) -> Result<()> {
        if self.manual_protect {
            dirty::clear(&self.fd, slot, size, bitmap)
        } else {
            Ok(())
        }
    }

    fn set_dirty_logging(&self, on: bool) -> Result<()> {
        let mut slots = self.slots();
        for r in slots.iter_mut() {
            let mut updated = *r;
            updated.flags = if on {
                r.flags | KVM_MEM_LOG_DIRTY_PAGES
            } else {
                r.flags & !KVM_MEM_LOG_DIRTY_PAGES
            };
            if updated.flags == r.flags {
                continue;
            }
            // SAFETY: the same mapping as registered by the caller of
            // `set_user_memory_region`, which keeps it alive for as long
            // as the slot exists; only the flags change.
            unsafe { self.fd.set_user_memory_region(updated) }
                .map_err(|e| HypervisorError::ioctl("KVM_SET_USER_MEMORY_REGION", e))?;
            *r = updated;
        }
        Ok(())
    }

    fn drop_cached_translations(&self, changed: &[u64]) -> Result<()> {
        let slots = self.slots();
        for region in translations::slots_holding(&slots, changed) {
            translations::reregister(&self.fd, region)?;
        }
        Ok(())
    }
}
