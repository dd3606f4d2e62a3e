// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! KVM's dirty log with manual re-protection
//! (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`).
//!
//! # Why
//! By default `KVM_GET_DIRTY_LOG` returns a slot's bitmap and write-protects
//! every page it reports, so the guest's next write to each of them traps
//! into KVM again. On the project's hosts (nested, shadow paging) that
//! trap costs about 40 us per page, against under 2 us for the write
//! itself (`scripts/probes/dirty_refault.c`): a recording that reads the
//! log at every micro-checkpoint pays it for every page the guest keeps
//! writing. With the capability enabled, `KVM_GET_DIRTY_LOG` only reports;
//! the pages stay writable and stay reported until `KVM_CLEAR_DIRTY_LOG`
//! names them, which clears their bits and write-protects them. A reader
//! can then leave pages it expects to be written again writable (and must
//! treat them as written at every read, which they are: their bits stay
//! set).
//!
//! # Contract kept
//! [`crate::Vm::get_dirty_log`] keeps its meaning (read and re-arm
//! everything reported): with the capability it is a read followed by a
//! clear of what was read, while the vCPUs of a recording are stopped or
//! under the same lock as before (the caller's).

use kvm_bindings::{
    kvm_clear_dirty_log, kvm_clear_dirty_log__bindgen_ty_1, kvm_enable_cap,
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iowr_nr;

use crate::{HypervisorError, Result};

const KVMIO: u32 = 0xAE;
ioctl_iowr_nr!(KVM_CLEAR_DIRTY_LOG, KVMIO, 0xc0, kvm_clear_dirty_log);

/// Turns manual re-protection on for `fd` when the host offers it; true
/// when it is on.
pub(super) fn enable_manual_protect(fd: &VmFd) -> bool {
    let offered = fd.check_extension_raw(u64::from(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
    if offered & i32::try_from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE).unwrap_or(0) == 0 {
        return false;
    }
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        ..Default::default()
    };
    cap.args[0] = u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    match fd.enable_cap(&cap) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 offered but not enabled: {e}");
            false
        }
    }
}

/// Clears the bits of `bitmap` (page 0 = the slot's first page) from
/// slot `slot`'s dirty log and write-protects those pages again.
pub(super) fn clear(fd: &VmFd, slot: u32, size: u64, bitmap: &[u64]) -> Result<()> {
    let pages = size.div_ceil(4096);
    if (bitmap.len() as u64) < pages.div_ceil(64) {
        return Err(HypervisorError::Ioctl {
            op: "KVM_CLEAR_DIRTY_LOG",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    if bitmap.iter().all(|&w| w == 0) {
        return Ok(());
    }
    let arg = kvm_clear_dirty_log {
        slot,
        num_pages: u32::try_from(pages).unwrap_or(u32::MAX),
        first_page: 0,
        __bindgen_anon_1: kvm_clear_dirty_log__bindgen_ty_1 {
            dirty_bitmap: bitmap.as_ptr().cast_mut().cast(),
        },
    };
    // SAFETY: KVM_CLEAR_DIRTY_LOG reads a kvm_clear_dirty_log and, through
    // it, `num_pages` bits of the bitmap, which `bitmap` holds (checked
    // above) and which outlives the call; KVM only reads the bitmap (its
    // pointer is `*mut` in the ABI only). The fd is a VM fd.
    let ret = unsafe { ioctl_with_ref(fd, KVM_CLEAR_DIRTY_LOG(), &arg) };
    if ret == 0 {
        Ok(())
    } else {
        Err(HypervisorError::Ioctl {
            op: "KVM_CLEAR_DIRTY_LOG",
            source: std::io::Error::last_os_error(),
        })
    }
}
