// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The state of one vCPU, read from and written to the hypervisor.
//!
//! The KVM structures are plain data; their bytes are stored as they are
//! (zerocopy), each length-prefixed, so a snapshot from this host restores
//! on a host with the same KVM ABI. The local APIC is not here: it lives in
//! user space ([`crate::devices_state`]).

use std::sync::OnceLock;

use hypervisor::{kvm_debugregs, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Vcpu};
use zerocopy::{FromBytes, IntoBytes};

use crate::codec::{ByteReader, ByteWriter, CodecError};
use crate::MigratableError;

/// Version of the encoding below.
const VCPU_STATE_VERSION: u8 = 1;

/// MSRs saved with the vCPU (those KVM knows on this host are kept): the
/// SYSENTER and SYSCALL entry points, the kernel GS base, PAT, TSC_AUX,
/// MISC_ENABLE and the APIC base. The TSC itself is left out: the guest
/// reads it natively (a known leak), restoring it would only move KVM's
/// offset.
pub const SAVED_MSRS: [u32; 12] = [
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x1a0,       // IA32_MISC_ENABLE
    0x1b,        // IA32_APIC_BASE
    0x277,       // IA32_PAT
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
];

/// The MSRs of [`SAVED_MSRS`] that this host's KVM answers for (probed once).
fn known_msrs(vcpu: &dyn Vcpu) -> &'static [u32] {
    static KNOWN: OnceLock<Vec<u32>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        SAVED_MSRS
            .iter()
            .copied()
            .filter(|&i| vcpu.get_msrs(&[i]).is_ok_and(|v| v.len() == 1))
            .collect()
    })
}

/// Everything KVM holds for a vCPU that the guest can observe.
pub struct VcpuState {
    /// General purpose registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER.
    pub sregs: kvm_sregs,
    /// FPU, SSE and extended state.
    pub xsave: kvm_xsave,
    /// XCR0.
    pub xcrs: kvm_xcrs,
    /// `(index, value)` MSR pairs.
    pub msrs: Vec<(u32, u64)>,
    /// Pending exception/interrupt/NMI, interrupt shadow.
    pub events: kvm_vcpu_events,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &self.regs.rip)
            .field("rflags", &self.regs.rflags)
            .field("cr0", &self.sregs.cr0)
            .field("msrs", &self.msrs)
            .finish_non_exhaustive()
    }
}

impl PartialEq for VcpuState {
    fn eq(&self, other: &Self) -> bool {
        self.encode() == other.encode()
    }
}

fn decode_pod<T: FromBytes>(r: &mut ByteReader<'_>, what: &str) -> Result<T, CodecError> {
    let bytes = r.bytes()?;
    T::read_from_bytes(bytes).map_err(|_| r.bad(format!("{what}: {} bytes", bytes.len())))
}

impl VcpuState {
    /// Reads the state of `vcpu`. Call on its thread, between runs.
    pub fn save(vcpu: &dyn Vcpu) -> Result<Self, MigratableError> {
        let e = |what| move |err| MigratableError::Save(what, err);
        Ok(VcpuState {
            regs: vcpu.get_regs().map_err(e("vCPU registers"))?,
            sregs: vcpu.get_sregs().map_err(e("vCPU special registers"))?,
            xsave: vcpu.get_xsave().map_err(e("vCPU XSAVE area"))?,
            xcrs: vcpu.get_xcrs().map_err(e("vCPU XCRs"))?,
            msrs: vcpu.get_msrs(known_msrs(vcpu)).map_err(e("vCPU MSRs"))?,
            events: vcpu.get_vcpu_events().map_err(e("vCPU events"))?,
            debugregs: vcpu.get_debug_regs().map_err(e("vCPU debug registers"))?,
        })
    }

    /// Writes this state into `vcpu`. A pending I/O completion is flushed
    /// first so that KVM does not apply it over the restored registers.
    pub fn restore(&self, vcpu: &mut dyn Vcpu) -> Result<(), MigratableError> {
        let e = |what| move |err| MigratableError::Restore(what, err);
        vcpu.flush_pending_io().map_err(e("pending I/O"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(e("vCPU special registers"))?;
        vcpu.set_regs(&self.regs).map_err(e("vCPU registers"))?;
        vcpu.set_xcrs(&self.xcrs).map_err(e("vCPU XCRs"))?;
        vcpu.set_xsave(&self.xsave).map_err(e("vCPU XSAVE area"))?;
        vcpu.set_msrs(&self.msrs).map_err(e("vCPU MSRs"))?;
        vcpu.set_vcpu_events(&self.events)
            .map_err(e("vCPU events"))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(e("vCPU debug registers"))?;
        Ok(())
    }

    /// The bytes that identify the architectural register state (general,
    /// special), for divergence digests.
    pub fn register_bytes(regs: &kvm_regs, sregs: &kvm_sregs) -> Vec<u8> {
        let mut v = regs.as_bytes().to_vec();
        v.extend_from_slice(sregs.as_bytes());
        v
    }

    /// Encodes the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = ByteWriter::new();
        w.u8(VCPU_STATE_VERSION)
            .bytes(self.regs.as_bytes())
            .bytes(self.sregs.as_bytes())
            .bytes(self.xsave.as_bytes())
            .bytes(self.xcrs.as_bytes())
            .bytes(self.events.as_bytes())
            .bytes(self.debugregs.as_bytes());
        w.u32(u32::try_from(self.msrs.len()).unwrap_or(u32::MAX));
        for (i, v) in &self.msrs {
            w.u32(*i).u64(*v);
        }
        w.into_inner()
    }

    /// Decodes a state written by [`encode`](Self::encode).
    pub fn decode(data: &[u8]) -> Result<Self, MigratableError> {
        Self::decode_inner(data).map_err(|e| MigratableError::Decode("vCPU", e))
    }

    fn decode_inner(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data);
        let version = r.u8()?;
        if version != VCPU_STATE_VERSION {
            return Err(r.bad(format!("vCPU state version {version}")));
        }
        let regs = decode_pod(&mut r, "kvm_regs")?;
        let sregs = decode_pod(&mut r, "kvm_sregs")?;
        let xsave = decode_pod(&mut r, "kvm_xsave")?;
        let xcrs = decode_pod(&mut r, "kvm_xcrs")?;
        let events = decode_pod(&mut r, "kvm_vcpu_events")?;
        let debugregs = decode_pod(&mut r, "kvm_debugregs")?;
        let n = r.u32()?;
        if n as usize > SAVED_MSRS.len() {
            return Err(r.bad(format!("{n} MSRs")));
        }
        let mut msrs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            msrs.push((r.u32()?, r.u64()?));
        }
        r.finish()?;
        Ok(VcpuState {
            regs,
            sregs,
            xsave,
            xcrs,
            msrs,
            events,
            debugregs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::kvm::KvmHypervisor;
    use hypervisor::Hypervisor;

    fn kvm_vcpu() -> Option<(std::sync::Arc<dyn hypervisor::Vm>, Box<dyn Vcpu>)> {
        let hv = KvmHypervisor::new().ok()?;
        let vm = hv.create_vm().ok()?;
        let vcpu = vm.create_vcpu(0).ok()?;
        let cpuid = hv.supported_cpuid().ok()?;
        vcpu.set_cpuid(&cpuid).ok()?;
        Some((vm, vcpu))
    }

    #[test]
    fn encode_decode_and_garbage() {
        let Some((_vm, vcpu)) = kvm_vcpu() else {
            eprintln!("no /dev/kvm: skipped");
            return;
        };
        let s = VcpuState::save(vcpu.as_ref()).unwrap();
        let bytes = s.encode();
        let d = VcpuState::decode(&bytes).unwrap();
        assert!(d == s);
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(VcpuState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert!(VcpuState::decode(&bad).is_err());
        let mut long = bytes;
        long.push(0);
        assert!(VcpuState::decode(&long).is_err());
    }

    /// Save, change, restore, save again, compare (on real KVM).
    #[test]
    fn round_trip_through_kvm() {
        let Some((_vm, mut vcpu)) = kvm_vcpu() else {
            eprintln!("no /dev/kvm: skipped");
            return;
        };
        let mut regs = vcpu.get_regs().unwrap();
        regs.rax = 0x1234_5678;
        regs.rip = 0xfff0;
        regs.rflags = 0x2;
        vcpu.set_regs(&regs).unwrap();
        vcpu.set_msrs(&[(0x174, 0x10), (0xc000_0082, 0xffff_8000_0000_1000)])
            .unwrap();
        let saved = VcpuState::save(vcpu.as_ref()).unwrap();
        assert!(saved.msrs.contains(&(0x174, 0x10)), "{saved:?}");

        // Change everything we can reach.
        regs.rax = 0;
        regs.rbx = 0xdead;
        regs.rip = 0x1000;
        vcpu.set_regs(&regs).unwrap();
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.cr2 = 0xabcd_0000;
        vcpu.set_sregs(&sregs).unwrap();
        vcpu.set_msrs(&[(0x174, 0x20), (0xc000_0082, 0)]).unwrap();
        let mut dr = vcpu.get_debug_regs().unwrap();
        dr.db[0] = 0x5000;
        vcpu.set_debug_regs(&dr).unwrap();
        let mut xsave = vcpu.get_xsave().unwrap();
        xsave.region[40] ^= 0x5a5a_5a5a; // an XMM register byte range
        vcpu.set_xsave(&xsave).unwrap();
        let changed = VcpuState::save(vcpu.as_ref()).unwrap();
        assert!(changed != saved);

        // Restore from the encoded bytes and compare.
        let decoded = VcpuState::decode(&saved.encode()).unwrap();
        decoded.restore(vcpu.as_mut()).unwrap();
        let again = VcpuState::save(vcpu.as_ref()).unwrap();
        assert_eq!(again.regs.rax, 0x1234_5678);
        assert_eq!(again.regs.rbx, saved.regs.rbx);
        assert_eq!(again.sregs.cr2, saved.sregs.cr2);
        assert_eq!(again.debugregs.db[0], saved.debugregs.db[0]);
        assert_eq!(again.msrs, saved.msrs);
        assert!(again.xsave.region[..] == saved.xsave.region[..]);
        assert!(again == saved, "{again:?} vs {saved:?}");
    }
}
