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
//!
//! ## Time base (leaves 0x15 and 0x16)
//! There is no HPET, RTC or kvmclock; the PIT is there (for guests without
//! a TSC, see `devices::interrupt::pit`) but calibrating against it takes a
//! tenth of a second of guest time. Instead the table *states* the
//! frequencies, as hardware does on Intel since Skylake: leaf 0x15 gives
//! the core crystal clock, which is the APIC timer's input (1 GHz before its
//! divider, [`APIC_BUS_HZ`]), and the TSC/crystal ratio; leaf 0x16 the base
//! frequency. Linux 6.1 (`native_calibrate_tsc`) then sets both `tsc_khz`
//! and the APIC timer period from CPUID alone: no calibration loop, no
//! host-time-dependent values, the same numbers on every run. The TSC rate
//! is measured once per VMM process against the host's monotonic clock (it
//! is part of the VM's configuration, like the rest of this table).
//! Linux reads these leaves only on Intel CPUs; on AMD hosts the guest needs
//! `tsc_early_khz=<kHz>` on its command line, after which it measures the
//! APIC timer against the TSC in a loop of a fixed number of APIC reads.
//! A guest booted without the TSC (`clearcpuid=4`, for record/replay)
//! measures the APIC timer against PIT ticks instead.

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

/// Input frequency of the local APIC timer before its divider, in Hz (the
/// core crystal clock of leaf 0x15). `devices::interrupt` counts at this rate.
pub const APIC_BUS_HZ: u32 = 1_000_000_000;
const INTEL_VENDOR: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e]; // "GenuineIntel"
/// `crystal_kHz * numerator` must fit in 32 bits in Linux's computation.
const MAX_TSC_NUMERATOR: u32 = u32::MAX / (APIC_BUS_HZ / 1000);

/// The TSC/crystal ratio of leaf 0x15 closest to `tsc_khz`, as
/// `(denominator, numerator)` with the numerator small enough for Linux.
fn tsc_ratio(tsc_khz: u32) -> (u32, u32) {
    let crystal_khz = u64::from(APIC_BUS_HZ / 1000);
    let mut best = (1u32, 1u32, u64::MAX);
    for den in 1..=MAX_TSC_NUMERATOR {
        let num = (u64::from(tsc_khz) * u64::from(den) + crystal_khz / 2) / crystal_khz;
        if num == 0 || num > u64::from(MAX_TSC_NUMERATOR) {
            continue;
        }
        let khz = crystal_khz * num / u64::from(den);
        let err = khz.abs_diff(u64::from(tsc_khz));
        if err < best.2 {
            best = (den, num as u32, err);
        }
    }
    (best.0, best.1)
}

/// Adds the timing leaves 0x15/0x16 (see the module docs) on Intel CPUs.
fn add_timing_leaves(entries: &mut Vec<kvm_cpuid_entry2>, tsc_khz: u32) {
    let Some(leaf0) = entries.iter_mut().find(|e| e.function == 0) else {
        return;
    };
    if [leaf0.ebx, leaf0.edx, leaf0.ecx] != INTEL_VENDOR || tsc_khz == 0 {
        return;
    }
    leaf0.eax = leaf0.eax.max(0x16);
    entries.retain(|e| e.function != 0x15 && e.function != 0x16);
    let (den, num) = tsc_ratio(tsc_khz);
    entries.push(kvm_cpuid_entry2 {
        function: 0x15,
        eax: den,
        ebx: num,
        ecx: APIC_BUS_HZ,
        ..Default::default()
    });
    let mhz = tsc_khz / 1000;
    entries.push(kvm_cpuid_entry2 {
        function: 0x16,
        eax: mhz,
        ebx: mhz,
        ecx: APIC_BUS_HZ / 1_000_000,
        ..Default::default()
    });
}

/// The host's TSC rate in kHz, measured once per process against the
/// monotonic clock over 20 ms (0 when the CPU has no TSC).
pub fn host_tsc_khz() -> u32 {
    static KHZ: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        let rdtsc = || {
            // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
            unsafe { std::arch::x86_64::_rdtsc() }
        };
        let start = std::time::Instant::now();
        let t0 = rdtsc();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t1 = rdtsc();
        let ns = start.elapsed().as_nanos().max(1);
        u32::try_from(u128::from(t1.wrapping_sub(t0)) * 1_000_000 / ns).unwrap_or(0)
    })
}

/// Filters `entries` in place for vCPU `apic_id` of `vcpu_count`, and adds
/// the timing leaves for a TSC of `tsc_khz`.
pub fn sanitize(entries: &mut Vec<kvm_cpuid_entry2>, apic_id: u8, vcpu_count: u8, tsc_khz: u32) {
    add_timing_leaves(entries, tsc_khz);
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
    let vendor_is_intel = entries
        .iter()
        .any(|e| e.function == 0 && [e.ebx, e.edx, e.ecx] == INTEL_VENDOR);
    let tsc_khz = if vendor_is_intel { host_tsc_khz() } else { 0 };
    sanitize(&mut entries, apic_id, vcpu_count, tsc_khz);
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
        sanitize(&mut v, 0, 1, 2_000_000);
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

    #[test]
    fn timing_leaves_on_intel_only() {
        let leaf0 = |ebx, edx, ecx| kvm_cpuid_entry2 {
            function: 0,
            eax: 0xd,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        let [b, d, c] = INTEL_VENDOR;
        let mut v = vec![leaf0(b, d, c), entry(0x15, 0, 7, 7)];
        sanitize(&mut v, 0, 1, 2_445_426);
        assert_eq!(v[0].eax, 0x16);
        let l15 = v.iter().find(|e| e.function == 0x15).unwrap();
        assert_eq!(l15.ecx, APIC_BUS_HZ);
        // Linux: tsc_khz = crystal_khz * ebx / eax, in 32-bit arithmetic.
        let khz = (APIC_BUS_HZ / 1000).checked_mul(l15.ebx).unwrap() / l15.eax;
        assert!(khz.abs_diff(2_445_426) < 100, "{khz}");
        assert_eq!(v.iter().filter(|e| e.function == 0x15).count(), 1);
        let l16 = v.iter().find(|e| e.function == 0x16).unwrap();
        assert_eq!(l16.eax, 2445);

        // "AuthenticAMD": Linux ignores these leaves there; leave them out.
        let mut v = vec![leaf0(0x6874_7541, 0x6974_6e65, 0x444d_4163)];
        sanitize(&mut v, 0, 1, 2_445_426);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].eax, 0xd);
    }

    #[test]
    fn tsc_ratio_fits_linux_arithmetic() {
        for khz in [1_000_000, 2_100_000, 2_445_426, 3_999_999, 4_200_000] {
            let (den, num) = tsc_ratio(khz);
            assert!(num <= MAX_TSC_NUMERATOR && den > 0);
            let got = u64::from(APIC_BUS_HZ / 1000) * u64::from(num) / u64::from(den);
            assert!(
                got.abs_diff(u64::from(khz)) * 10_000 < u64::from(khz),
                "{khz} -> {got}"
            );
        }
    }
}
