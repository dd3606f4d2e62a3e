// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Making KVM forget translations cached from guest memory that the VMM
//! rewrote (a restored checkpoint).
//!
//! # Why
//! KVM caches what it derived from guest page tables: on hosts without
//! two-level paging (and on the nested, shadow-paging hosts the project
//! runs on) as *shadow page tables*, which it keeps in sync by
//! write-protecting the guest's page-table pages and trapping the guest's
//! own writes and TLB flushes. A write by the VMM through its mapping of
//! guest RAM is neither: KVM keeps the old shadow entries, and guest code
//! at CPL3 keeps using the old translation. `scripts/probes/stale_translation.py`
//! shows it in isolation. Reloading CR3, toggling CR4.PGE with
//! `KVM_SET_SREGS` or toggling a slot's dirty-log flag do not help there:
//! shadow pages are looked up by the guest page-table frame and reused,
//! stale entries included.
//!
//! On hosts with EPT/NPT there are no shadow pages, but the guest TLB
//! (tagged by VPID/ASID and kept across VM exits) may hold a translation
//! whose page-table entry a checkpoint changed: the guest flushed it in
//! the stretch of execution the checkpoint replaces, which replay skips.
//!
//! # How
//! The slots holding a changed page are deleted and registered again
//! (`KVM_SET_USER_MEMORY_REGION` with `memory_size` 0, then the same
//! region). KVM behaviour relied on (Documentation/virt/kvm/api.rst,
//! `KVM_SET_USER_MEMORY_REGION` and `KVM_X86_QUIRK_SLOT_ZAP_ALL`;
//! arch/x86/kvm/mmu/mmu.c, `kvm_arch_flush_shadow_memslot`):
//! - with the quirk `KVM_X86_QUIRK_SLOT_ZAP_ALL` enabled (the default for
//!   the default VM type, and the only behaviour before Linux 6.12), a
//!   deleted slot makes KVM invalidate every SPTE of every slot
//!   (`kvm_mmu_zap_all_fast`): all roots become obsolete, every vCPU
//!   reloads its MMU root before it enters the guest again, and loading a
//!   root flushes the current guest TLB context (`kvm_mmu_load` ends with
//!   `flush_tlb_current`: INVEPT of the EPTP's context on VMX, which covers
//!   the combined linear mappings; a flush of the ASID on SVM);
//! - with the quirk disabled (the VMM never disables it), KVM zaps the
//!   shadow pages that shadow guest page tables *in the deleted slot*
//!   (Linux commit 58a20a9435aa, "Zap only SPs that shadow gPTEs when
//!   deleting memslot") and the leaf SPTEs of the slot, with a remote TLB
//!   flush: the changed page-table pages are in the deleted slots, so this
//!   is still enough for shadow paging. On EPT/NPT hosts this narrower zap
//!   would not be a guest TLB flush, hence the quirk must stay enabled.
//!
//! Cost: two `KVM_SET_USER_MEMORY_REGION` calls per slot, most of it KVM
//! waiting for its SRCU readers, so it grows with the host's load (0.7 ms
//! per call measured in a Linux replay here, 0.4 ms on a quiet machine in
//! the probe), plus the refaults of the dropped shadow pages when the
//! guest runs again. A Linux boot replay drops translations at 4378 of
//! its 4440 checkpoints (the others changed no page) and takes about 10 %
//! longer (`scripts/probes/drop_translations_cost.sh`). Cheaper operations
//! tried with the probe (`KVM_SET_SREGS` with another CR3 or CR4.PGE,
//! dirty-log flag changes, `KVM_SET_NR_MMU_PAGES`) leave the stale entry.
//!
//! A deleted slot loses its dirty log: the trait documents it.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

use crate::{HypervisorError, Result};

/// The slots of `slots` that hold one of the guest-physical addresses
/// `changed`, in slot order, each once.
pub(super) fn slots_holding<'a>(
    slots: &'a [kvm_userspace_memory_region],
    changed: &[u64],
) -> Vec<&'a kvm_userspace_memory_region> {
    slots
        .iter()
        .filter(|s| {
            changed
                .iter()
                .any(|&gpa| gpa >= s.guest_phys_addr && gpa - s.guest_phys_addr < s.memory_size)
        })
        .collect()
}

/// Deletes `region` and registers it again.
pub(super) fn reregister(fd: &VmFd, region: &kvm_userspace_memory_region) -> Result<()> {
    let deleted = kvm_userspace_memory_region {
        memory_size: 0,
        ..*region
    };
    // SAFETY: deleting a slot leaves no guest access to the host mapping.
    unsafe { fd.set_user_memory_region(deleted) }
        .map_err(|e| HypervisorError::ioctl("KVM_SET_USER_MEMORY_REGION (delete)", e))?;
    // SAFETY: `region` was registered before with the same host mapping,
    // which its registrant guaranteed stays mapped while the VM uses it.
    unsafe { fd.set_user_memory_region(*region) }
        .map_err(|e| HypervisorError::ioctl("KVM_SET_USER_MEMORY_REGION (re-add)", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(slot: u32, gpa: u64, size: u64) -> kvm_userspace_memory_region {
        kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: 0,
        }
    }

    #[test]
    fn only_the_slots_holding_a_changed_page() {
        let slots = [
            region(0, 0, 0x1000_0000),
            region(1, 0x1_0000_0000, 0x1000_0000),
        ];
        let pick = |changed: &[u64]| -> Vec<u32> {
            slots_holding(&slots, changed)
                .iter()
                .map(|s| s.slot)
                .collect()
        };
        assert_eq!(pick(&[]), Vec::<u32>::new());
        assert_eq!(pick(&[0x5000, 0x0fff_f000]), vec![0]);
        assert_eq!(pick(&[0x1_0000_0000]), vec![1]);
        assert_eq!(pick(&[0x1000_0000]), Vec::<u32>::new());
        assert_eq!(pick(&[0x1_0fff_f000, 0]), vec![0, 1]);
    }
}
