// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A disk on a backup: its own copy of the image while replaying
//! (`disks=separate`), and going live.
//!
//! With a copy ([`Block::backup_separate`]) every write and flush the
//! replaying guest issues is performed on the copy at once, on the vCPU
//! thread (pwrite, fdatasync), so that at go-live the copy holds what the
//! primary's disk holds; reads are not performed, and no completion comes
//! from the copy: completions come only from the log. The copy is opened
//! as the disk's configuration says (`O_DIRECT` with `direct=on`).
//!
//! At go-live ([`VirtioDevice::go_live`](crate::VirtioDevice::go_live)) the
//! device opens its image (the copy, or the shared image by its path),
//! starts its disk thread, sends its outputs to the new sink and issues
//! again, in their original order and under the same request ids, every
//! request that was issued and has no completion yet. A completion of such
//! a request completes it once: the request leaves the pending map at its
//! first completion and a later one for the same id is ignored. Writing
//! again a write the copy already holds is harmless (same data, same
//! offset).

use std::path::Path;
use std::sync::Arc;

use super::image::{Image, ImageMode};
use super::worker::{self, Op, VIRTIO_BLK_S_IOERR};
use super::{Block, BlockError};
use crate::go_live::{GoLive, GoLiveError};
use crate::output::OutputSink;

impl Block {
    /// A backup's disk with its own copy of the image at `path`
    /// (`disks=separate`): opened now as `mode` says, and
    /// refused unless its size is `recorded_size`, the primary's. While
    /// replaying, writes and flushes are performed on the copy when the
    /// guest issues them; outputs still go to `sink` (which drops them)
    /// and completions come only from events applied to the device.
    pub fn backup_separate(
        id: &str,
        path: &Path,
        mode: ImageMode,
        serial: Option<&str>,
        recorded_size: u64,
        sink: Arc<dyn OutputSink>,
    ) -> Result<Self, BlockError> {
        let (image, found) = Image::open(path, mode)?;
        if found != recorded_size {
            return Err(BlockError::SizeMismatch {
                path: path.to_path_buf(),
                recorded: recorded_size,
                found,
            });
        }
        let mut block = Self::without_backend(id, path, recorded_size, mode, serial, sink);
        block.copy = Some(image);
        Ok(block)
    }

    /// Whether the device writes its own copy of the image while it has
    /// no backend.
    pub fn has_copy(&self) -> bool {
        self.copy.is_some()
    }

    /// On a backup with its own copy, performs a write or flush on it now.
    /// A failure is logged and remembered: the device then refuses to go
    /// live (its copy no longer equals the primary's disk).
    pub(super) fn perform_on_copy(&mut self, op: &Op) {
        let Some(copy) = &mut self.copy else {
            return;
        };
        let result = match op {
            Op::Read { .. } => return,
            Op::Write { offset, data } => copy.write_at(data, *offset),
            Op::Flush => copy.sync_data(),
        };
        if let Err(e) = result {
            log::error!(
                "{}: the copy {} of the disk image failed a write or flush: {e}",
                self.id,
                self.path.display()
            );
            if self.copy_error.is_none() {
                self.copy_error = Some((e.kind(), e.to_string()));
            }
        }
    }

    /// Goes live: see the module's documentation.
    pub(super) fn attach(&mut self, live: &GoLive) -> Result<(), GoLiveError> {
        if self.has_backend() {
            return Err(GoLiveError::AlreadyLive(self.id.clone()));
        }
        self.open_for_live(live)
            .map_err(|source| GoLiveError::Disk {
                id: self.id.clone(),
                source,
            })?;
        // The copy is the live image now, written by the disk thread.
        self.copy = None;
        self.sink = live.sink.clone();
        let in_flight: Vec<(u64, Option<Op>)> = self
            .pending
            .iter()
            .map(|(id, p)| (*id, p.op.clone()))
            .collect();
        let mut failed = false;
        for (id, op) in in_flight {
            match op {
                Some(op) => self.issue(id, op),
                None => {
                    // Restored from a state this device did not issue
                    // itself: what to do again is unknown. The guest gets
                    // an I/O error rather than a request that never ends.
                    log::warn!(
                        "{}: request {id} cannot be issued again: I/O error",
                        self.id
                    );
                    self.done
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(worker::encode(id, VIRTIO_BLK_S_IOERR, &[]));
                    failed = true;
                }
            }
        }
        if failed {
            live.waker.wake();
        }
        Ok(())
    }

    /// The image for the disk thread: the copy, or the image at the path,
    /// which must have the size the guest was given.
    fn open_for_live(&mut self, live: &GoLive) -> Result<(), BlockError> {
        if let Some((kind, message)) = &self.copy_error {
            return Err(BlockError::Copy {
                path: self.path.clone(),
                source: std::io::Error::new(*kind, message.clone()),
            });
        }
        let image = match &self.copy {
            Some(copy) => copy.try_clone().map_err(|source| BlockError::Open {
                path: self.path.clone(),
                mode: "duplicate",
                source,
            })?,
            None => {
                let (image, found) = Image::open(&self.path, self.mode)?;
                if found != self.size {
                    return Err(BlockError::SizeMismatch {
                        path: self.path.clone(),
                        recorded: self.size,
                        found,
                    });
                }
                image
            }
        };
        self.start(image, live.waker.clone())
    }
}
