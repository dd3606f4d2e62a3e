// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The minimal Linux guest's command lines and VMM options, one place for
//! every test that boots it.

use std::time::{Duration, Instant};

use super::linux_guest_paths;

/// The command line for a recorded, replayed or paired guest: Linux must
/// not read the TSC, which KVM cannot trap for a VMM, so `clearcpuid=4`
/// hides it; Linux then keeps time with the PIT (boot), the APIC timer and
/// jiffies, and (with the build script's fourth edit) takes entropy from
/// jiffies. Nor may it execute RDRAND or RDSEED (158, 306): this host's
/// KVM shows the guest kernel the host's CPUID bits whatever the VMM's
/// table says, and Linux mixes their values into its entropy pool, which
/// changes memory with no exit changing. SMAP (308) and POPCNT (151) are
/// not emulated at CPL0 here, nor is XSAVE's XRSTOR (`noxsave`).
/// `norandmaps` keeps user-space addresses fixed.
pub const REPLAYABLE_CMDLINE: &str =
    "console=ttyS0 clearcpuid=4,158,306,308,151 noxsave norandmaps";

/// Whether the host CPU is an Intel one (Linux reads the TSC and APIC timer
/// frequencies from CPUID leaf 0x15 there, which the VMM provides).
pub fn host_is_intel() -> bool {
    let r = std::arch::x86_64::__cpuid(0);
    [r.ebx, r.edx, r.ecx] == [0x756e_6547, 0x4965_6e69, 0x6c65_746e]
}

/// The TSC rate in kHz, measured against the monotonic clock.
pub fn tsc_khz() -> u64 {
    // SAFETY: RDTSC has no memory effects.
    let rdtsc = || unsafe { std::arch::x86_64::_rdtsc() };
    let start = Instant::now();
    let t0 = rdtsc();
    std::thread::sleep(Duration::from_millis(50));
    let t1 = rdtsc();
    (t1 - t0) * 1_000_000 / start.elapsed().as_nanos() as u64
}

/// The command line of a guest that may use the TSC: the serial console,
/// this host's CPU gaps (SMAP and POPCNT are not emulated at CPL0, nor is
/// XSAVE's XRSTOR), and on non-Intel hosts the TSC rate, which Linux reads
/// from CPUID only on Intel CPUs.
pub fn tsc_cmdline() -> String {
    let mut c = String::from("console=ttyS0 clearcpuid=308,151 noxsave");
    if !host_is_intel() {
        c.push_str(&format!(" tsc_early_khz={}", tsc_khz()));
    }
    c
}

/// The VMM's options for booting the kernel `kernel_key` of
/// `scripts/build-linux-guest` (`VMLINUX` or `BZIMAGE`) with its initramfs,
/// `cmdline`, 256 MiB and the serial console on standard input and output.
pub fn boot_args(kernel_key: &str, cmdline: &str) -> Vec<String> {
    let paths = linux_guest_paths();
    [
        "--kernel",
        paths[kernel_key].to_str().expect("UTF-8 path"),
        "--initramfs",
        paths["INITRAMFS"].to_str().expect("UTF-8 path"),
        "--cmdline",
        cmdline,
        "--memory",
        "size=256M",
        "--serial",
        "tty",
        "--console",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
