// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The CPUID the guest sees: KVM's supported set, minus everything whose
//! answer the VMM could not intercept or replay.
//!
//! | hidden | where | why |
//! | --- | --- | --- |
//! | RDRAND | leaf 1 ECX bit 30 | host entropy read by an instruction: not recordable |
//! | RDSEED | leaf 7 EBX bit 18 | same |
//! | TSC-deadline timer | leaf 1 ECX bit 24 | the APIC timer is emulated in user space in one-shot/periodic modes only |
//! | x2APIC | leaf 1 ECX bit 21 | the user-space APIC is xAPIC (MMIO) only |
//! | MONITOR/MWAIT | leaf 1 ECX bit 3 | a wait the VMM cannot see; guests must use HLT |
//! | WAITPKG (UMWAIT/TPAUSE) | leaf 7 ECX bit 5 | waits timed by the TSC, invisible to the VMM |
//! | PDCM, architectural PMU | leaf 1 ECX bit 15, leaf 0xA | there is no PMU to virtualise |
//! | KVM paravirt leaves | 0x4000_0000.. | kvmclock, steal time, PV EOI, PV send-IPI: time and interrupts behind the VMM's back |
//!
//! The hypervisor-present bit (leaf 1 ECX bit 31) stays set. RDTSC/RDTSCP
//! still execute natively: a known leak of host time, caught by divergence
//! checks rather than hidden (no CPUID bit turns them off).
//! Note: on the development machines KVM does not apply CPUID to guest
//! user mode (see the shared notes); real hosts do.

use hypervisor::CpuId;
use kvm_bindings::kvm_cpuid_entry2;

/// Errors building the guest CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The hypervisor's list could not be read.
    #[error("cannot read the hypervisor's supported CPUID")]
    Supported(#[source] hypervisor::HypervisorError),
    /// The filtered list could not be rebuilt.
    #[error("cannot build the guest CPUID table")]
    Build,
}

const LEAF1_ECX_MONITOR: u32 = 1 << 3;
const LEAF1_ECX_PDCM: u32 = 1 << 15;
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_RDRAND: u32 = 1 << 30;
const LEAF7_EBX_RDSEED: u32 = 1 << 18;
const LEAF7_ECX_WAITPKG: u32 = 1 << 5;

/// Filters `entries` in place for vCPU `apic_id` of `vcpu_count`.
pub fn sanitize(entries: &mut Vec<kvm_cpuid_entry2>, apic_id: u8, vcpu_count: u8) {
    entries.retain(|e| !(0x4000_0000..0x5000_0000).contains(&e.function));
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ecx &= !(LEAF1_ECX_MONITOR
                    | LEAF1_ECX_PDCM
                    | LEAF1_ECX_X2APIC
                    | LEAF1_ECX_TSC_DEADLINE
                    | LEAF1_ECX_RDRAND);
                e.ebx = (e.ebx & 0x0000_ffff)
                    | (u32::from(apic_id) << 24)
                    | (u32::from(vcpu_count) << 16);
            }
            5 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            7 if e.index == 0 => {
                e.ebx &= !LEAF7_EBX_RDSEED;
                e.ecx &= !LEAF7_ECX_WAITPKG;
            }
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => e.edx = u32::from(apic_id),
            _ => {}
        }
    }
}

/// The guest CPUID for vCPU `apic_id`.
pub fn guest_cpuid(supported: &CpuId, apic_id: u8, vcpu_count: u8) -> Result<CpuId, CpuidError> {
    let mut entries = supported.as_slice().to_vec();
    sanitize(&mut entries, apic_id, vcpu_count);
    CpuId::from_entries(&entries).map_err(|_| CpuidError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn hides_what_cannot_be_replayed() {
        let mut v = vec![
            entry(1, 0, 0xff00_1234, u32::MAX),
            entry(7, 0, u32::MAX, u32::MAX),
            entry(7, 1, u32::MAX, u32::MAX),
            entry(0x4000_0000, 0, 1, 1),
            entry(0x4000_0001, 0, 1, 1),
            entry(0xa, 0, 5, 5),
        ];
        sanitize(&mut v, 0, 1);
        assert_eq!(v.len(), 4);
        let l1 = v[0];
        assert_eq!(l1.ecx & LEAF1_ECX_RDRAND, 0);
        assert_eq!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_eq!(l1.ecx & LEAF1_ECX_X2APIC, 0);
        assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit stays");
        assert_eq!(l1.ebx, 0x0001_1234);
        assert_eq!(v[1].ebx & LEAF7_EBX_RDSEED, 0);
        assert_eq!(v[1].ecx & LEAF7_ECX_WAITPKG, 0);
        assert_eq!(v[2].ebx, u32::MAX, "subleaf 1 untouched");
        assert_eq!(v[3].ebx, 0);
    }
}
