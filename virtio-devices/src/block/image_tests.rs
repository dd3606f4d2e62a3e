// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

use std::path::PathBuf;

use super::*;

const DIRECT: ImageMode = ImageMode {
    readonly: false,
    direct: true,
};

struct Scratch(PathBuf);

impl Scratch {
    /// A file of `len` bytes, byte i = i * 7 (mod 256).
    fn new(tag: &str, len: usize) -> Self {
        let path = std::env::temp_dir().join(format!("vd-image-{tag}-{}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, data).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The image with a coarser alignment than the file system needs (4096:
/// any aligned request to it is one the file system accepts too), to run
/// the read-modify-write path on any file system.
fn open_aligned(path: &Path, offset: u64) -> Image {
    let (mut image, _) = Image::open(path, DIRECT).unwrap();
    let direct = image.direct.as_mut().unwrap();
    assert!(offset % direct.align.offset == 0);
    direct.align.offset = offset;
    image
}

#[test]
fn direct_is_open_with_o_direct_and_an_alignment() {
    let f = Scratch::new("flags", 8192);
    let (image, size) = Image::open(&f.0, DIRECT).unwrap();
    assert_eq!(size, 8192);
    assert!(image.is_direct());
    // SAFETY: F_GETFL on a descriptor the image keeps open.
    let flags = unsafe { libc::fcntl(image.file().as_raw_fd(), libc::F_GETFL) };
    assert!(flags & libc::O_DIRECT != 0, "flags {flags:#x}");
    let a = image.alignment().unwrap();
    assert!(a.memory.is_power_of_two() && a.offset.is_power_of_two());
    assert!(a.offset >= 512 && a.offset <= DEFAULT_ALIGN, "{a:?}");
    let (buffered, _) = Image::open(&f.0, ImageMode::READ_WRITE).unwrap();
    assert!(!buffered.is_direct() && buffered.alignment().is_none());
    // SAFETY: as above.
    let flags = unsafe { libc::fcntl(buffered.file().as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_DIRECT, 0);
    // A clone keeps the flag.
    assert!(image.try_clone().unwrap().is_direct());
}

#[test]
fn unaligned_requests_are_widened_and_stay_exact() {
    let f = Scratch::new("rmw", 16384);
    let mut expected = std::fs::read(&f.0).unwrap();
    let mut image = open_aligned(&f.0, 4096);
    // (offset, len): inside one block, across a boundary, from a block
    // start to mid-block, mid-block to a block end, several blocks,
    // aligned.
    let cases = [
        (512, 512),
        (3584, 1024),
        (4096, 1536),
        (6656, 1536),
        (1024, 10240),
        (8192, 4096),
        (0, 16384),
        (15872, 512),
    ];
    for (n, (offset, len)) in cases.into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|i| (i + n * 31 + 1) as u8).collect();
        image.write_at(&data, offset as u64).unwrap();
        expected[offset..offset + len].copy_from_slice(&data);
        assert_eq!(
            std::fs::read(&f.0).unwrap(),
            expected,
            "after writing {len} at {offset}"
        );
        for (o, l) in cases {
            assert_eq!(
                image.read_at(o as u64, l).unwrap(),
                &expected[o..o + l],
                "read {l} at {o}"
            );
        }
    }
    image.sync_data().unwrap();
    assert_eq!(std::fs::read(&f.0).unwrap().len(), 16384, "the file grew");
}

#[test]
fn direct_and_buffered_agree() {
    let f = Scratch::new("agree", 65536);
    let (mut direct, _) = Image::open(&f.0, DIRECT).unwrap();
    let (mut buffered, _) = Image::open(&f.0, ImageMode::READ_WRITE).unwrap();
    let data: Vec<u8> = (0..4096 + 512).map(|i| (i % 251) as u8).collect();
    direct.write_at(&data, 512 * 3).unwrap();
    assert_eq!(buffered.read_at(512 * 3, data.len()).unwrap(), data);
    buffered.write_at(&data[..512], 512 * 100).unwrap();
    buffered.sync_data().unwrap();
    assert_eq!(direct.read_at(512 * 100, 512).unwrap(), &data[..512]);
    // Past the end: an error, not a panic.
    assert!(direct.read_at(65536 - 512, 1024).is_err());
    // The largest request the device accepts.
    let big = vec![0xeeu8; 4 << 20];
    let f2 = Scratch::new("big", 8 << 20);
    let mut image = open_aligned(&f2.0, 4096);
    image.write_at(&big, 512).unwrap();
    assert_eq!(image.read_at(512, big.len()).unwrap(), big);
}

#[test]
fn direct_refuses_a_size_it_cannot_write_whole() {
    let f = Scratch::new("size", 4096 + 100);
    let err = Image::open(&f.0, DIRECT).unwrap_err();
    assert!(
        matches!(err, BlockError::DirectSize { size: 4196, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("direct=on"), "{err}");
    // Buffered, the same file opens.
    Image::open(&f.0, ImageMode::READ_WRITE).unwrap();
}

#[test]
fn widen_rounds_out_to_blocks() {
    assert_eq!(widen(512, 512, 4096).unwrap(), (0, 4096));
    assert_eq!(widen(4096, 4096, 4096).unwrap(), (4096, 4096));
    assert_eq!(widen(3584, 1024, 4096).unwrap(), (0, 8192));
    assert_eq!(widen(512, 512, 512).unwrap(), (512, 512));
    assert!(widen(u64::MAX - 10, 512, 4096).is_err());
}
