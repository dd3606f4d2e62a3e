// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

use std::path::PathBuf;

use devices::async_event::Waker;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::block::{Block, ImageMode};
use crate::chain::testing::{desc, memory, publish, used, AVAIL, DESC, F_NEXT, F_WRITE, USED};
use crate::output::ImmediateOutput;

#[derive(Debug)]
struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

const BAR: u64 = 0xc000_0000;

struct Fixture {
    dev: VirtioPciDevice,
    msi: Arc<MsiQueue>,
    mem: GuestMemoryMmap,
    path: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fixture(tag: &str) -> Fixture {
    let path = std::env::temp_dir().join(format!("vd-tr-{tag}-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let block = Block::open(
        "_disk0",
        &path,
        ImageMode::READ_WRITE,
        None,
        Arc::new(ImmediateOutput),
        Arc::new(NoWake),
    )
    .unwrap();
    let mem = memory();
    let msi = MsiQueue::new();
    let dev =
        VirtioPciDevice::new("_disk0", Box::new(block), mem.clone(), msi.clone(), BAR).unwrap();
    Fixture {
        dev,
        msi,
        mem,
        path,
    }
}

impl Fixture {
    fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut d = vec![0u8; len];
        self.dev.bar_read(0, offset, &mut d);
        d.resize(8, 0);
        u64::from_le_bytes(d.try_into().unwrap())
    }
    fn write(&mut self, offset: u64, value: u64, len: usize) {
        self.dev.bar_write(0, offset, &value.to_le_bytes()[..len]);
    }
    fn status(&mut self) -> u8 {
        self.read(0x14, 1) as u8
    }
    /// The driver's side of initialisation, up to FEATURES_OK.
    fn negotiate(&mut self) {
        self.write(0x14, 1, 1);
        self.write(0x14, 3, 1);
        self.write(0x08, 0, 4);
        self.write(0x0c, 1 << 9, 4);
        self.write(0x08, 1, 4);
        self.write(0x0c, 1, 4);
        self.write(0x14, 0xb, 1);
        assert_eq!(self.status(), 0xb);
    }
    /// Queue 0 at the test ring addresses, vector 1; MSI-X on.
    fn setup_queue(&mut self, desc_addr: u64) {
        self.write(0x16, 0, 2);
        self.write(0x18, 8, 2);
        self.write(0x1a, 1, 2);
        self.write(0x20, desc_addr, 4);
        self.write(0x24, 0, 4);
        self.write(0x28, AVAIL, 8);
        self.write(0x30, USED, 4);
        self.write(0x1c, 1, 2);
        // MSI-X: config vector 0, queue vector 1.
        self.write(0x10, 0, 2);
        for (v, data) in [(0u64, 0x30u32), (1, 0x31)] {
            self.write(MSIX_TABLE_OFFSET + v * 16, 0xfee0_0000, 4);
            self.write(MSIX_TABLE_OFFSET + v * 16 + 8, u64::from(data), 4);
            self.write(MSIX_TABLE_OFFSET + v * 16 + 12, 0, 4);
        }
        self.dev
            .config_write(self.dev.msix_cap_reg, 2, &0x8000u16.to_le_bytes());
    }
}

fn get_id_request(mem: &GuestMemoryMmap) {
    let mut h = [0u8; 16];
    h[0] = 8;
    mem.write_slice(&h, GuestAddress(0x10000)).unwrap();
    desc(mem, 0, 0, 0x10000, 16, F_NEXT, 1);
    desc(mem, 0, 1, 0x11000, 20, F_NEXT | F_WRITE, 2);
    desc(mem, 0, 2, 0x12000, 1, F_WRITE, 0);
    publish(mem, 0, &[0]);
}

#[test]
fn identity_and_capabilities() {
    let mut f = fixture("caps");
    assert_eq!(f.dev.config_read(0), 0x1042_1af4);
    assert_eq!(f.dev.config_read(2) >> 8, 0x01_8000);
    assert_eq!(f.dev.config_read(4), BAR as u32);
    assert_eq!(
        f.dev.bars(),
        vec![Bar {
            index: 0,
            size: BAR_SIZE,
            base: BAR
        }]
    );
    // Walk the capability list.
    let mut ptr = (f.dev.config_read(13) & 0xff) as usize;
    let mut seen = Vec::new();
    while ptr != 0 {
        let head = f.dev.config_read(ptr / 4);
        let id = head & 0xff;
        if id == 0x09 {
            let kind = (head >> 24) as u8;
            let offset = f.dev.config_read(ptr / 4 + 2);
            seen.push((kind, offset));
            if kind == CAP_NOTIFY {
                assert_eq!(f.dev.config_read(ptr / 4 + 4), NOTIFY_MULTIPLIER);
            }
        } else {
            assert_eq!(id, 0x11);
            assert_eq!((head >> 16) & 0x7ff, 1, "2 MSI-X vectors");
        }
        ptr = ((head >> 8) & 0xff) as usize;
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![(1, 0), (2, 0x3000), (3, 0x1000), (4, 0x2000), (5, 0)]
    );
    assert_eq!(f.dev.config_read(100), 0);
}

#[test]
fn bar_access_through_the_pci_cfg_capability() {
    let mut f = fixture("pcicfg");
    let reg = f.dev.pci_cfg_reg;
    // Window: BAR 0, offset 0x12 (num_queues), 2 bytes.
    f.dev.config_write(reg + 1, 0, &[0]);
    f.dev.config_write(reg + 2, 0, &0x12u32.to_le_bytes());
    f.dev.config_write(reg + 3, 0, &2u32.to_le_bytes());
    assert_eq!(f.dev.config_read(reg + 4), 1);
    // Write device_status through the window.
    f.dev.config_write(reg + 2, 0, &0x14u32.to_le_bytes());
    f.dev.config_write(reg + 3, 0, &1u32.to_le_bytes());
    f.dev.config_write(reg + 4, 0, &[1, 0, 0, 0]);
    assert_eq!(f.status(), 1);
    // A bad length or BAR reads zero and writes nothing.
    f.dev.config_write(reg + 3, 0, &3u32.to_le_bytes());
    assert_eq!(f.dev.config_read(reg + 4), 0);
    f.dev.config_write(reg + 3, 0, &1u32.to_le_bytes());
    f.dev.config_write(reg + 1, 0, &[2]);
    f.dev.config_write(reg + 4, 0, &[0, 0, 0, 0]);
    assert_eq!(f.status(), 1);
}

#[test]
fn feature_negotiation() {
    let mut f = fixture("feat");
    f.write(0x00, 1, 4);
    assert_eq!(f.read(0x04, 4) & 1, 1, "VERSION_1");
    f.write(0x00, 0, 4);
    assert_eq!(f.read(0x04, 4), (1 << 9) | (1 << 2), "FLUSH, SEG_MAX");
    assert_eq!(f.read(0x12, 2), 1, "one queue");
    // A feature that is not offered: FEATURES_OK does not stick.
    f.write(0x14, 3, 1);
    f.write(0x08, 0, 4);
    f.write(0x0c, 1 << 5, 4);
    f.write(0x08, 1, 4);
    f.write(0x0c, 1, 4);
    f.write(0x14, 0xb, 1);
    assert_eq!(f.status() & status::FEATURES_OK, 0);
    // Without VERSION_1 (a legacy driver): refused too.
    f.write(0x14, 0, 1);
    f.write(0x14, 3, 1);
    f.write(0x14, 0xb, 1);
    assert_eq!(f.status() & status::FEATURES_OK, 0);
    f.write(0x14, 0, 1);
    assert_eq!(f.status(), 0);
    f.negotiate();
    f.write(0x08, 0, 4);
    assert_eq!(f.read(0x0c, 4), 1 << 9);
    // After FEATURES_OK the driver features are frozen.
    f.write(0x0c, 0, 4);
    assert_eq!(f.read(0x0c, 4), 1 << 9);
}

#[test]
fn a_request_end_to_end_with_msix() {
    let mut f = fixture("e2e");
    f.negotiate();
    f.setup_queue(DESC);
    assert_eq!(f.read(0x18, 2), 8);
    assert_eq!(f.read(0x20, 8), DESC);
    f.write(0x14, 0xf, 1);
    assert_eq!(f.status(), 0xf);
    // Queue registers are read-only once live.
    f.write(0x18, 4, 2);
    assert_eq!(f.read(0x18, 2), 8);
    get_id_request(&f.mem);
    f.write(NOTIFY_OFFSET, 0, 2);
    assert_eq!(used(&f.mem, 0), (1, vec![(0, 21)]));
    assert_eq!(f.msi.take(), vec![(0xfee0_0000, 0x31)]);
    assert_eq!(f.read(ISR_OFFSET, 1), 1);
    assert_eq!(f.read(ISR_OFFSET, 1), 0, "read clears");
    let mut id = [0u8; 6];
    f.mem.read_slice(&mut id, GuestAddress(0x11000)).unwrap();
    assert_eq!(&id, b"_disk0");
    // Device configuration: capacity 8 sectors.
    assert_eq!(f.read(DEVICE_CFG_OFFSET, 8), 8);
    // The MSI-X capability shows enable.
    assert_eq!(f.dev.config_read(f.dev.msix_cap_reg) >> 16, 0x8001);
    // With the queue vector masked, the interrupt pends in the PBA.
    f.write(MSIX_TABLE_OFFSET + 16 + 12, 1, 4);
    publish(&f.mem, 0, &[0, 0]);
    f.write(NOTIFY_OFFSET, 0, 2);
    assert!(f.msi.take().is_empty());
    assert_eq!(f.read(MSIX_PBA_OFFSET, 1), 2);
    f.write(MSIX_TABLE_OFFSET + 16 + 12, 0, 4);
    assert_eq!(f.msi.take(), vec![(0xfee0_0000, 0x31)]);
}

#[test]
fn malformed_chain_needs_reset() {
    let mut f = fixture("bad");
    f.negotiate();
    f.setup_queue(DESC);
    f.write(0x14, 0xf, 1);
    // A chain that loops.
    desc(&f.mem, 0, 0, 0x10000, 16, F_NEXT, 0);
    publish(&f.mem, 0, &[0]);
    f.write(NOTIFY_OFFSET, 0, 2);
    assert_ne!(f.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(f.msi.take(), vec![(0xfee0_0000, 0x30)], "config interrupt");
    assert_eq!(f.read(ISR_OFFSET, 1), 2);
    // The driver cannot clear it by writing status, and notifies are ignored.
    f.write(0x14, 0xf, 1);
    assert_ne!(f.status() & status::DEVICE_NEEDS_RESET, 0);
    get_id_request(&f.mem);
    f.write(NOTIFY_OFFSET, 0, 2);
    assert_eq!(used(&f.mem, 0).0, 0);
    // Reset, set up again: serving.
    f.write(0x14, 0, 1);
    assert_eq!(f.status(), 0);
    assert_eq!(f.read(0x1a, 2), u64::from(NO_VECTOR));
    f.mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
    f.negotiate();
    f.setup_queue(DESC);
    f.write(0x14, 0xf, 1);
    get_id_request(&f.mem);
    f.write(NOTIFY_OFFSET, 0, 2);
    assert_eq!(used(&f.mem, 0), (1, vec![(0, 21)]));
}

#[test]
fn driver_ok_with_a_bad_queue_needs_reset() {
    let mut f = fixture("badq");
    f.negotiate();
    // Descriptor table outside guest memory.
    f.setup_queue(0x4000_0000);
    f.write(0x14, 0xf, 1);
    assert_ne!(f.status() & status::DEVICE_NEEDS_RESET, 0);
    // Out-of-range vectors read back as NO_VECTOR.
    f.write(0x14, 0, 1);
    f.write(0x10, 7, 2);
    assert_eq!(f.read(0x10, 2), u64::from(NO_VECTOR));
    // A queue select past the queues reads size 0.
    f.write(0x16, 5, 2);
    assert_eq!(f.read(0x18, 2), 0);
    // Unknown BAR offsets and other BARs are harmless.
    f.write(0x7ff0, 1, 4);
    f.dev.bar_write(1, 0, &[1]);
    let mut d = [0xffu8; 4];
    f.dev.bar_read(1, 0, &mut d);
    assert_eq!(d, [0; 4]);
}

#[test]
fn events_apply_only_while_live() {
    let mut f = fixture("live");
    // Undecodable bytes are an error for the vCPU loop (a corrupt log).
    assert!(matches!(
        f.dev.apply_event(&[1]),
        Err(ApplyError::Malformed { .. })
    ));
    // A well-formed event for no request: nothing happens.
    f.dev
        .apply_event(&crate::block::worker::encode(3, 0, &[]))
        .unwrap();
    assert!(f.dev.poll_event().is_none());
    let block = Block::open(
        "_disk0",
        &f.path,
        ImageMode::READ_ONLY,
        None,
        Arc::new(ImmediateOutput),
        Arc::new(NoWake),
    )
    .unwrap();
    let dev =
        VirtioPciDevice::new("_disk0", Box::new(block), f.mem.clone(), f.msi.clone(), BAR).unwrap();
    let mut events = VirtioPciEvents::new(Arc::new(Mutex::new(dev)));
    assert_eq!(events.id(), "_disk0");
    assert!(events.poll_event().is_none());
    assert!(events.apply_event(&[0; 3]).is_err());
}

#[test]
fn state_round_trips_and_a_restored_device_serves_on() {
    let mut a = fixture("state-a");
    a.negotiate();
    a.setup_queue(DESC);
    a.write(0x14, 0xf, 1);
    get_id_request(&a.mem);
    a.write(NOTIFY_OFFSET, 0, 2);
    assert_eq!(a.msi.take().len(), 1);
    // A read in flight is part of the state.
    let mut h = [0u8; 16];
    h[0] = 0; // VIRTIO_BLK_T_IN
    a.mem.write_slice(&h, GuestAddress(0x13000)).unwrap();
    desc(&a.mem, 0, 3, 0x13000, 16, F_NEXT, 4);
    desc(&a.mem, 0, 4, 0x14000, 512, F_NEXT | F_WRITE, 5);
    desc(&a.mem, 0, 5, 0x15000, 1, F_WRITE, 0);
    publish(&a.mem, 0, &[0, 3]);
    a.write(NOTIFY_OFFSET, 0, 2);
    let saved = a.dev.save_state();

    // A fresh device of the same kind on a copy of guest memory.
    let mut b = fixture("state-b");
    let mut image = vec![0u8; 1 << 20];
    a.mem.read_slice(&mut image, GuestAddress(0)).unwrap();
    b.mem.write_slice(&image, GuestAddress(0)).unwrap();
    b.dev.restore_state(&saved).unwrap();
    assert_eq!(b.dev.save_state(), saved, "round trip");
    assert_eq!(b.status(), 0xf);
    assert_eq!(b.read(0x20, 8), DESC);
    // The primary's read result, applied on the restored device.
    let start = std::time::Instant::now();
    let event = loop {
        if let Some(e) = a.dev.poll_event() {
            break e;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    b.dev.apply_event(&event).unwrap();
    assert_eq!(used(&b.mem, 0), (2, vec![(0, 21), (3, 513)]));
    assert_eq!(
        b.msi.take(),
        vec![(0xfee0_0000, 0x31)],
        "restored MSI-X table"
    );
}

#[test]
fn refused_state_changes_nothing() {
    let mut f = fixture("state-bad");
    f.negotiate();
    let before = f.dev.save_state();
    assert!(f.dev.restore_state(&[]).is_err());
    assert!(f.dev.restore_state(&[9]).is_err(), "unknown version");
    let mut truncated = before.clone();
    truncated.truncate(before.len() - 1);
    assert!(f.dev.restore_state(&truncated).is_err());
    let mut trailing = before.clone();
    trailing.push(0);
    assert!(f.dev.restore_state(&trailing).is_err());
    // A net device's state does not fit a block device.
    let mut longer = before.clone();
    longer.extend_from_slice(&[0; 64]);
    let err = f.dev.restore_state(&longer).expect_err("refused");
    assert!(
        error_chain(&err).contains("_disk0"),
        "{}",
        error_chain(&err)
    );
    assert_eq!(f.dev.save_state(), before);
    assert_eq!(f.status(), 0xb);
}

#[test]
fn snapshottable_under_the_device_id() {
    use vm_migration::Snapshottable;
    let mut f = fixture("snap");
    assert_eq!(Snapshottable::snapshot_id(&f.dev), "_disk0");
    f.negotiate();
    let saved = Snapshottable::snapshot(&f.dev);
    assert_eq!(saved, f.dev.save_state());
    // Change guest-visible state: queue setup, then the status.
    f.setup_queue(DESC);
    f.write(0x14, 0xf, 1);
    assert_ne!(Snapshottable::snapshot(&f.dev), saved);
    Snapshottable::restore(&mut f.dev, &saved).unwrap();
    assert_eq!(Snapshottable::snapshot(&f.dev), saved);
    assert_eq!(f.status(), 0xb);
    let err = Snapshottable::restore(&mut f.dev, &saved[..saved.len() - 1]).expect_err("refused");
    assert!(err.to_string().contains("virtio-pci"), "{err}");
    assert!(
        error_chain(&err).contains("_disk0"),
        "{}",
        error_chain(&err)
    );
    assert_eq!(Snapshottable::snapshot(&f.dev), saved);
}
