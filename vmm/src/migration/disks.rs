// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A running VM's disk images as the pre-copy rounds read them
//! ([`vm_migration::migration::DiskSource`]), for FT VMotion with
//! `disks=separate`: each image read through a descriptor of its own, its
//! holes found with `SEEK_DATA`/`SEEK_HOLE`, and the blocks its disk
//! thread wrote since the last read from a reader of the device's
//! [`WrittenBlocks`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_devices::block::written::{WrittenBlocks, WrittenReader, BLOCK_SIZE};
use vm_migration::migration::{BoxError, DiskSource};

/// One image.
#[derive(Debug)]
struct Image {
    path: PathBuf,
    file: File,
    size: u64,
    written: WrittenReader,
}

/// A VM's disk images and the blocks written in them.
#[derive(Debug, Default)]
pub struct VmDisks {
    images: Vec<Image>,
}

impl VmDisks {
    /// The images at `paths` with their devices' trackers (in the same
    /// order); the writes are tracked from now on.
    pub fn new(disks: &[(PathBuf, Arc<WrittenBlocks>)]) -> std::io::Result<Self> {
        let mut images = Vec::with_capacity(disks.len());
        for (path, written) in disks {
            // Registered before the image is read: a write that completes
            // after this is in a later round.
            let written = written.register();
            let file = File::open(path)?;
            let size = file.metadata()?.len();
            images.push(Image {
                path: path.clone(),
                file,
                size,
                written,
            });
        }
        Ok(VmDisks { images })
    }

    /// The image files, in order, with their paths.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &File)> {
        self.images.iter().map(|i| (i.path.as_path(), &i.file))
    }
}

impl DiskSource for VmDisks {
    fn disk_sizes(&self) -> Vec<u64> {
        self.images.iter().map(|i| i.size).collect()
    }

    fn block_size(&self) -> u64 {
        BLOCK_SIZE
    }

    fn data_ranges(&self, disk: usize) -> Result<Vec<(u64, u64)>, BoxError> {
        let i = self.images.get(disk).ok_or("no such disk")?;
        Ok(ft_backend::pair::seed::disk::data_ranges(&i.file, i.size)?)
    }

    fn read_disk(&self, disk: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        let i = self.images.get(disk).ok_or("no such disk")?;
        Ok(i.file.read_exact_at(buf, offset)?)
    }

    fn written_blocks(&mut self, disk: usize) -> Result<Vec<u64>, BoxError> {
        let i = self.images.get(disk).ok_or("no such disk")?;
        Ok(i.written.take())
    }
}
