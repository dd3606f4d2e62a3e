// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::*;
use crate::channel::{ChannelConfig, ChannelKey};
use vm_migration::migration::{BoxError, DiskSource, PageSource, Params, Phase, Progress, Rounds};

/// An image file whose writes between rounds are scripted: each read
/// of its written blocks first applies the next round's writes
/// (offset, bytes) and returns their blocks.
struct Image {
    file: std::fs::File,
    writes: Vec<Vec<(u64, Vec<u8>)>>,
}

/// The tracker's block: the digest's, as the VMM's.
const BLOCK: u64 = disk::DIGEST_BLOCK;

impl DiskSource for Image {
    fn disk_sizes(&self) -> Vec<u64> {
        vec![self.file.metadata().unwrap().len()]
    }
    fn block_size(&self) -> u64 {
        BLOCK
    }
    fn data_ranges(&self, _: usize) -> Result<Vec<(u64, u64)>, BoxError> {
        let size = self.file.metadata()?.len();
        Ok(disk::data_ranges(&self.file, size)?)
    }
    fn read_disk(&self, _: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        Ok(self.file.read_exact_at(buf, offset)?)
    }
    fn written_blocks(&mut self, _: usize) -> Result<Vec<u64>, BoxError> {
        let mut bits = vec![0u64; 64];
        if !self.writes.is_empty() {
            for (offset, data) in self.writes.remove(0) {
                self.file.write_all_at(&data, offset)?;
                for b in offset / BLOCK..=(offset + data.len() as u64 - 1) / BLOCK {
                    bits[(b / 64) as usize] |= 1 << (b % 64);
                }
            }
        }
        Ok(bits)
    }
}

/// A made-up guest of 1 MiB at 1 MiB: each read of its dirty pages
/// first applies the next round of scripted writes (page, byte) and
/// returns them.
struct Guest {
    memory: Vec<u8>,
    writes: Vec<Vec<(usize, u8)>>,
}

impl PageSource for Guest {
    fn memory_ranges(&self) -> Vec<(u64, u64)> {
        vec![(0x10_0000, 1 << 20)]
    }
    fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        let at = gpa as usize - 0x10_0000;
        buf.copy_from_slice(&self.memory[at..at + buf.len()]);
        Ok(())
    }
    fn dirty_pages(&mut self) -> Result<Vec<(u64, Vec<u64>)>, BoxError> {
        let mut bits = vec![0u64; 4];
        if !self.writes.is_empty() {
            for (page, v) in self.writes.remove(0) {
                self.memory[page * PAGE..(page + 1) * PAGE].fill(v);
                bits[page / 64] |= 1 << (page % 64);
            }
        }
        Ok(vec![(0x10_0000, bits)])
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn a_seed_arrives_whole_and_a_refusal_is_reported() {
    let addr = free_addr();
    let key = ChannelKey::from_bytes([9; 32]);
    let channel = ChannelConfig::default();
    let dir = std::env::temp_dir().join(format!("ft-seed-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("a.img");
    let copy = dir.join("b.img");
    // Data, a hole, data and a short last block; writes during the
    // rounds (one beyond the first round's data, one over it).
    let image_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    let size = (1 << 20) + 1000;
    image_file.set_len(size).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    image_file.write_all_at(&data, 0).unwrap();
    image_file.write_all_at(&[3; 100], size - 100).unwrap();
    let mut disk_source = Image {
        file: image_file,
        writes: vec![
            vec![(600_000, vec![7; 70_000]), (10, vec![0; 5000])],
            vec![(300_000, vec![8; 4096])],
        ],
    };
    std::fs::write(&copy, b"stale").unwrap();
    let (k, c, cp) = (key.clone(), channel.clone(), copy.clone());
    let backup = std::thread::spawn(move || {
        // The first primary is refused; the second one seeds.
        let mut r = SeedReceiver::accept(addr, &k, &c, &|| false).unwrap();
        let (digest, config) = r.offer().unwrap();
        assert_eq!((digest, config.as_slice()), (7, &b"bad"[..]));
        r.refuse("another configuration");
        let mut r = SeedReceiver::accept(addr, &k, &c, &|| false).unwrap();
        let (digest, config) = r.offer().unwrap();
        assert_eq!((digest, config.as_slice()), (8, &b"{}"[..]));
        r.accept_offer(vec![cp]).unwrap();
        let mut memory = vec![0u8; 1 << 20];
        let mut state = Vec::new();
        loop {
            match r.next_item().unwrap() {
                SeedItem::Memory { gpa, data } => {
                    let at = gpa as usize - 0x10_0000;
                    memory[at..at + data.len()].copy_from_slice(&data);
                }
                SeedItem::Zeros { gpa, len } => {
                    let at = gpa as usize - 0x10_0000;
                    memory[at..at + len as usize].fill(0);
                }
                SeedItem::State(s) => state.extend_from_slice(&s),
                SeedItem::End => break,
            }
        }
        r.finish().unwrap();
        (memory, state)
    });
    let connect = || loop {
        match SeedSender::connect(addr, &key, 1, 5, &channel) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut s = connect();
    let e = s.offer(7, b"bad").unwrap_err();
    assert!(e.to_string().contains("another configuration"), "{e}");
    let mut s = connect();
    s.offer(8, b"{}").unwrap();
    let mut memory = vec![0u8; 1 << 20];
    memory[5] = 1;
    memory[300_000..300_100].fill(7);
    memory[(1 << 20) - 1] = 9;
    // The guest writes between the rounds: a run longer than one item,
    // a page that becomes zero again, pages written in two rounds.
    let mut source = Guest {
        memory,
        writes: vec![
            vec![(0, 0xaa), (1, 0xaa), (2, 0xaa), (3, 0xab)],
            vec![(0, 0), (40, 1), (41, 2)]
                .into_iter()
                .chain((100..140).map(|p| (p, p as u8)))
                .collect(),
            vec![(41, 3), (200, 4)],
        ],
    };
    let params = Params {
        downtime_ms: 0,
        timeout_s: 60,
        max_iterations: 1,
    };
    let mut rounds = Rounds::new(
        params,
        std::time::Instant::now(),
        Progress::new(Phase::Setup),
    );
    let mut seen = 0;
    rounds
        .live_with_disks(&mut source, &mut disk_source, &mut s, &mut |p| {
            seen = p.bytes_sent
        })
        .unwrap();
    // Round 0: three non-zero pages (and their headers), not a MiB;
    // then the pages written meanwhile.
    assert!(seen > 0);
    rounds.last(&mut source, &mut s, &mut |_| {}).unwrap();
    rounds
        .last_disks(&mut disk_source, &mut s, &mut |_| {})
        .unwrap();
    assert_eq!(rounds.progress().iteration, 2);
    // Round 0 sent the blocks with data (the hole left out), later
    // rounds the written ones.
    let h = rounds.disk_rounds().to_vec();
    // Round 0 (a MiB image and a short last block: 200,000 bytes and 100
    // bytes of data), two live rounds (blocks 9 and 10, and 0; then 4) and
    // the pause's (none).
    assert_eq!(h.len(), 4, "{h:?}");
    assert!(h[0].bytes < 400_000, "{h:?}");
    assert_eq!(h[1].blocks, 3, "{h:?}");
    assert_eq!(h[2].blocks, 1, "{h:?}");
    assert_eq!(h[3].blocks, 0, "{h:?}");
    let memory = source.memory.clone();
    s.disks_done().unwrap();
    // The digest from the table of blocks as sent is the image's read
    // whole.
    let digest = rounds.disk_digests().unwrap()[0];
    assert_eq!(digest, disk::image_digest(&disk_source.file).unwrap());
    let state: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
    s.send_state(&state).unwrap();
    s.finish(&[digest]).unwrap();
    let disk = std::fs::read(&image).unwrap();
    let (got_memory, got_state) = backup.join().unwrap();
    assert!(got_memory == memory);
    assert!(got_state == state);
    assert!(std::fs::read(&copy).unwrap() == disk);
    let _ = std::fs::remove_dir_all(&dir);
}
