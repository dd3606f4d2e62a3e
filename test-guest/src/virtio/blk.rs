//! virtio-blk driver (virtio spec 5.2): read, write, flush and get-id,
//! batched: [`Blk::submit`] queues many requests, notifies the device once
//! and sleeps until all have completed.

use alloc::vec::Vec;

use thiserror::Error;

use super::queue::{Buffer, Virtqueue};
use super::{VirtioError, VirtioPci};
use crate::arch;
use crate::pci::Access;

/// Modern and transitional PCI device IDs of virtio-blk.
const DEVICE_ID: u16 = 0x1042;
const TRANSITIONAL_ID: u16 = 0x1001;
/// Feature bits.
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// Request status values.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Bytes per sector.
pub const SECTOR: usize = 512;
/// Length of the device ID string.
pub const ID_LEN: usize = 20;

/// A block request that failed, or a device that cannot be used.
#[derive(Debug, Error)]
pub enum BlkError {
    /// No virtio-blk device on bus 0.
    #[error("no virtio-blk device found on PCI bus 0")]
    NotFound,
    /// Transport problem.
    #[error("virtio-blk")]
    Virtio(#[source] VirtioError),
    /// The device completed a request with an error status.
    #[error("{op} at sector {sector} failed: {}", status_name(*.status))]
    Status {
        /// Operation.
        op: &'static str,
        /// First sector.
        sector: u64,
        /// The virtio status byte.
        status: u8,
    },
    /// A data length that is not a whole number of sectors.
    #[error("{0} bytes is not a multiple of the sector size")]
    Unaligned(usize),
    /// A request past the end of the disk.
    #[error("sectors {0}..{1} are past the end of the disk ({2} sectors)")]
    OutOfRange(u64, u64, u64),
    /// A batch larger than the queue.
    #[error("a batch of {0} requests does not fit the queue")]
    BatchTooLarge(usize),
}

fn status_name(status: u8) -> &'static str {
    match status {
        S_IOERR => "I/O error status",
        S_UNSUPP => "unsupported status",
        _ => "unknown status",
    }
}

/// What a request does.
#[derive(Debug)]
pub enum Op<'a> {
    /// Read sectors into the buffer.
    Read(&'a mut [u8]),
    /// Write the buffer to sectors.
    Write(&'a [u8]),
    /// Make completed writes durable.
    Flush,
    /// Read the device ID string.
    GetId(&'a mut [u8; ID_LEN]),
}

/// One request of a batch.
#[derive(Debug)]
pub struct Request<'a> {
    /// First sector (ignored by flush and get-id).
    pub sector: u64,
    /// The operation and its buffer.
    pub op: Op<'a>,
}

/// The request header the device reads.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

/// A virtio-blk device.
#[derive(Debug)]
pub struct Blk {
    pci: VirtioPci,
    queue: Virtqueue,
    vector: u8,
    capacity: u64,
    read_only: bool,
    flush: bool,
}

impl Blk {
    /// Finds and initialises the first virtio-blk device; its queue
    /// interrupts arrive on IDT `vector`.
    pub fn open(access: &Access, vector: u8) -> Result<Blk, BlkError> {
        let function = super::find(access, DEVICE_ID, TRANSITIONAL_ID).ok_or(BlkError::NotFound)?;
        let pci = VirtioPci::probe(access, &function).map_err(BlkError::Virtio)?;
        let features = pci.negotiate(0, F_RO | F_FLUSH).map_err(BlkError::Virtio)?;
        let queue = pci
            .setup_queue(0, 128, 0, vector)
            .map_err(BlkError::Virtio)?;
        pci.driver_ok().map_err(BlkError::Virtio)?;
        let capacity = u64::from(pci.config32(0)) | (u64::from(pci.config32(4)) << 32);
        Ok(Blk {
            pci,
            queue,
            vector,
            capacity,
            read_only: features & F_RO != 0,
            flush: features & F_FLUSH != 0,
        })
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the device is read-only (VIRTIO_BLK_F_RO).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the device supports flush (VIRTIO_BLK_F_FLUSH).
    pub fn has_flush(&self) -> bool {
        self.flush
    }

    /// Sends a raw, possibly malformed, descriptor chain (see
    /// [`Virtqueue::push_raw`]) and notifies the device. The device should
    /// be re-opened afterwards.
    pub fn send_raw(&mut self, descriptors: &[(u64, u32, u16, u16)]) {
        self.queue.push_raw(descriptors);
        self.queue.kick_always();
    }

    /// Whether the device has returned a chain.
    pub fn has_completion(&self) -> bool {
        self.queue.has_used()
    }

    /// The device's status register.
    pub fn device_status(&self) -> u8 {
        self.pci.status()
    }

    /// Reads whole sectors at `sector` into `buf`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        self.submit(&mut [Request {
            sector,
            op: Op::Read(buf),
        }])
    }

    /// Writes whole sectors from `buf` at `sector`.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        self.submit(&mut [Request {
            sector,
            op: Op::Write(buf),
        }])
    }

    /// Makes completed writes durable. Without VIRTIO_BLK_F_FLUSH the
    /// device has no volatile cache, so there is nothing to do.
    pub fn flush(&mut self) -> Result<(), BlkError> {
        if !self.flush {
            return Ok(());
        }
        self.submit(&mut [Request {
            sector: 0,
            op: Op::Flush,
        }])
    }

    /// The device's ID string (up to 20 bytes, NUL-padded).
    pub fn get_id(&mut self) -> Result<[u8; ID_LEN], BlkError> {
        let mut id = [0u8; ID_LEN];
        self.submit(&mut [Request {
            sector: 0,
            op: Op::GetId(&mut id),
        }])?;
        Ok(id)
    }

    /// Runs a batch: every request is queued, the device is notified once,
    /// and the call returns when all have completed (the first error, if
    /// any, is returned). Requests may complete in any order; a flush
    /// covers only writes completed before it, so put a flush in a later
    /// batch than the writes it must cover.
    pub fn submit(&mut self, requests: &mut [Request<'_>]) -> Result<(), BlkError> {
        let descriptors: usize = requests
            .iter()
            .map(|r| if matches!(r.op, Op::Flush) { 2 } else { 3 })
            .sum();
        if descriptors > usize::from(self.queue.size()) {
            return Err(BlkError::BatchTooLarge(requests.len()));
        }
        // Headers and status bytes must not move while the device owns them.
        let mut headers: Vec<Header> = Vec::with_capacity(requests.len());
        let mut status: Vec<u8> = alloc::vec![0xff; requests.len()];
        let mut heads: Vec<u16> = Vec::with_capacity(requests.len());
        for request in requests.iter() {
            let (kind, len) = match &request.op {
                Op::Read(buf) => (T_IN, buf.len()),
                Op::Write(buf) => (T_OUT, buf.len()),
                Op::Flush => (T_FLUSH, 0),
                Op::GetId(_) => (T_GET_ID, 0),
            };
            if matches!(kind, T_IN | T_OUT) {
                if len % SECTOR != 0 || len == 0 {
                    return Err(BlkError::Unaligned(len));
                }
                let end = request.sector.saturating_add((len / SECTOR) as u64);
                if end > self.capacity {
                    return Err(BlkError::OutOfRange(request.sector, end, self.capacity));
                }
            }
            headers.push(Header {
                kind,
                reserved: 0,
                sector: request.sector,
            });
        }
        let count = requests.len();
        for (i, request) in requests.iter_mut().enumerate() {
            let header = Buffer {
                addr: headers.as_ptr().wrapping_add(i) as u64,
                len: size_of::<Header>() as u32,
                device_writes: false,
            };
            let status_buffer = Buffer {
                addr: status.as_mut_ptr().wrapping_add(i) as u64,
                len: 1,
                device_writes: true,
            };
            let chain: &[Buffer] = match &mut request.op {
                Op::Read(buf) => &[header, Buffer::writable(buf), status_buffer],
                Op::Write(buf) => &[header, Buffer::readable(buf), status_buffer],
                Op::GetId(id) => &[header, Buffer::writable(&mut id[..]), status_buffer],
                Op::Flush => &[header, status_buffer],
            };
            // Cannot fail: the descriptor count was checked above and the
            // queue is idle between batches.
            let head = self
                .queue
                .push(chain)
                .ok_or(BlkError::BatchTooLarge(count))?;
            heads.push(head);
        }
        self.queue.kick();
        self.wait(heads.len())?;
        for (i, request) in requests.iter().enumerate() {
            // SAFETY: the device has completed every chain (wait returned),
            // so it no longer writes `status`; read through a volatile
            // pointer because the compiler cannot see the device's write.
            let s = unsafe { core::ptr::read_volatile(status.as_ptr().wrapping_add(i)) };
            if s != S_OK {
                let op = match request.op {
                    Op::Read(_) => "read",
                    Op::Write(_) => "write",
                    Op::Flush => "flush",
                    Op::GetId(_) => "get-id",
                };
                return Err(BlkError::Status {
                    op,
                    sector: request.sector,
                    status: s,
                });
            }
        }
        drop(headers);
        Ok(())
    }

    /// Sleeps until `count` chains have come back.
    fn wait(&mut self, count: usize) -> Result<(), BlkError> {
        let mut done = 0;
        while done < count {
            if self.queue.pop_used().is_some() {
                done += 1;
                continue;
            }
            let interrupts = arch::irq_count(self.vector);
            arch::disable_interrupts();
            if self.queue.has_used() {
                arch::enable_interrupts();
                continue;
            }
            arch::wait_for_interrupt();
            if arch::irq_count(self.vector) == interrupts && !self.queue.has_used() {
                // Woken by something else (the timer): is the device stuck?
                self.pci.check_status().map_err(BlkError::Virtio)?;
            }
        }
        Ok(())
    }
}
