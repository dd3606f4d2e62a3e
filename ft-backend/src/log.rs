// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The log file: a header, then framed entries.
//!
//! ```text
//! header (32 bytes):
//!   magic        8 bytes  "CHFTLOG\0"
//!   version      u32 LE   4
//!   reserved     u32 LE   0
//!   config       u64 LE   digest of the kernel (and initramfs) bytes and
//!                         the guest-visible configuration
//!   max_delay_us u32 LE   the recording's forced-delivery bound
//!   crc          u32 LE   CRC-32 of the 28 bytes before it
//! frame n (n = 1, 2, ...):
//!   length       u32 LE   bytes of codec + tag + raw length + body
//!   codec        u8       0 stored, 1 zstd (the stream goes on),
//!                         2 zstd (a new stream starts: a reset point)
//!   tag          u8       1 clock read, 2 event, 3 checkpoint, 4 end,
//!                         5 setup
//!   raw length   u32 LE   bytes of the payload (see `entry`) once decoded
//!   body         length-6 bytes: the payload, stored or compressed
//!   crc          u32 LE   CRC-32 (IEEE) of codec .. body
//! ```
//!
//! All integers are little-endian; byte strings inside payloads are a u32
//! length and the bytes. Frame 1 is the `setup` frame (and only frame 1);
//! a complete recording ends with an `end` frame. Compressed frames form
//! one zstd stream, flushed at every frame and restarted at reset points
//! (see [`crate::codec`]): a reader decodes each frame as it arrives, and
//! a new reader can start at a reset point.
//! The reader validates every frame before replay starts: a frame cut off
//! by the end of the file is [`LogError::Truncated`], a CRC mismatch or a
//! payload that does not decode (or decompress) is [`LogError::Corrupt`],
//! both with the frame number; a header whose configuration digest differs
//! from the replaying VM's is [`LogError::Foreign`]. The writer refuses an
//! entry larger than a frame may be ([`LogError::TooLarge`]), so that
//! what it writes, the reader accepts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use vm_migration::ByteWriter;

use crate::codec::{Codec, Compressor};
use crate::entry::Entry;

/// The file magic.
pub const MAGIC: [u8; 8] = *b"CHFTLOG\0";
/// The format version this code writes and reads.
/// (2: the `setup` frame, first, carries the disk sizes; 3: the interrupt
/// controller's state in checkpoints includes the PIT, and timer events
/// may fire it; 4: frames carry a codec and are compressed as one zstd
/// stream; 5: checkpoints carry the digest of the registers their stretch
/// started from.)
pub const VERSION: u32 = 5;
/// Size of the header.
pub const HEADER_LEN: usize = 32;
/// Largest payload a frame may carry, decoded (a checkpoint of a whole
/// 1 GiB guest fits). The writer refuses larger entries.
pub const MAX_FRAME_LEN: u32 = 1 << 31;
/// Bytes of a frame around its body: length, codec, tag, raw length, CRC.
pub const FRAME_OVERHEAD: usize = 4 + 1 + 1 + 4 + 4;

/// The largest `length` field a reader accepts when payloads are at most
/// `max` bytes: a compressed body may be slightly longer than its payload.
pub(crate) fn max_stored_len(max: u32) -> u64 {
    let max = u64::from(max);
    max + max / 128 + 1024 + 6
}

/// Errors reading or writing a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file cannot be opened, read or written.
    #[error("cannot access the fault-tolerance log {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the log magic.
    #[error("{path} is not a fault-tolerance log (bad magic)")]
    NotALog {
        /// The file.
        path: PathBuf,
    },
    /// A format version this build does not read.
    #[error(
        "{path}: log format version {found} is not supported (this build reads version {VERSION}: record it again with this build)"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The header's CRC does not match.
    #[error("{path}: the log header is corrupt (CRC mismatch)")]
    HeaderCorrupt {
        /// The file.
        path: PathBuf,
    },
    /// The log was recorded with another kernel or configuration.
    #[error("{path} was recorded with another kernel or configuration (log digest {found:#018x}, this VM {expected:#018x}): refusing to replay")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// This VM's digest.
        expected: u64,
        /// The log's digest.
        found: u64,
    },
    /// The file ends inside a frame.
    #[error("{path}: the log is truncated in frame {frame} (at byte {offset})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Frame number, from 1.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
    },
    /// A frame's CRC or content is wrong.
    #[error("{path}: frame {frame} (at byte {offset}) is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Frame number, from 1.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry too large for one frame: it was not written.
    #[error("{path}: cannot write {what}: its {len}-byte payload exceeds the {max}-byte frame limit of the log format")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The entry.
        what: String,
        /// Its payload's length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The compressor could not be set up.
    #[error("{path}: cannot set up the log compressor")]
    Codec {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::codec::CodecError,
    },
    /// The log has no end frame: the recording did not finish.
    #[error("{path}: the log has no end frame after frame {frames} (the recording did not finish): truncated")]
    NoEnd {
        /// The file.
        path: PathBuf,
        /// Frames read.
        frames: u64,
    },
}

/// The header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Digest of the kernel and configuration.
    pub config_digest: u64,
    /// The recording's forced-delivery bound, in µs.
    pub max_delay_us: u32,
}

impl LogHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = ByteWriter::new();
        w.raw(&MAGIC)
            .u32(VERSION)
            .u32(0)
            .u64(self.config_digest)
            .u32(self.max_delay_us);
        let mut b = w.into_inner();
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&b);
        out
    }
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// How a [`LogWriter`] writes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Compress frames (one zstd stream); otherwise every frame is stored.
    pub compress: bool,
    /// Largest payload accepted ([`MAX_FRAME_LEN`]; smaller in tests).
    pub max_frame_len: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compress: true,
            max_frame_len: MAX_FRAME_LEN,
        }
    }
}

/// Writes a log. Entries are buffered; [`flush`](Self::flush) writes them
/// out.
pub struct LogWriter {
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
    compressor: Option<Compressor>,
    max_frame_len: u32,
    frames: u64,
    bytes: u64,
    raw_bytes: u64,
    /// The frame being written (kept to reuse its memory).
    frame: Vec<u8>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Creates (or truncates) `path` and writes the header; frames are
    /// compressed.
    pub fn create(path: &Path, header: LogHeader) -> Result<Self, LogError> {
        Self::create_with(path, header, WriterOptions::default())
    }

    /// Creates (or truncates) `path` and writes the header.
    pub fn create_with(
        path: &Path,
        header: LogHeader,
        options: WriterOptions,
    ) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let compressor = if options.compress {
            Some(Compressor::new().map_err(|source| LogError::Codec {
                path: path.to_path_buf(),
                source,
            })?)
        } else {
            None
        };
        let file = File::create(path).map_err(io)?;
        Self::to_writer(path, Box::new(file), header, compressor, options)
    }

    /// Writes the log to `out` instead of a file (the logging channel:
    /// the stream is the log, header first); `name` names it in errors.
    /// Frames are compressed.
    pub fn to_stream(
        name: &Path,
        out: Box<dyn Write + Send>,
        header: LogHeader,
    ) -> Result<Self, LogError> {
        let compressor = Compressor::new().map_err(|source| LogError::Codec {
            path: name.to_path_buf(),
            source,
        })?;
        Self::to_writer(
            name,
            out,
            header,
            Some(compressor),
            WriterOptions::default(),
        )
    }

    fn to_writer(
        path: &Path,
        out: Box<dyn Write + Send>,
        header: LogHeader,
        compressor: Option<Compressor>,
        options: WriterOptions,
    ) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = BufWriter::with_capacity(1 << 20, out);
        out.write_all(&header.encode()).map_err(io)?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            out,
            compressor,
            max_frame_len: options.max_frame_len,
            frames: 0,
            bytes: HEADER_LEN as u64,
            raw_bytes: HEADER_LEN as u64,
            frame: Vec::new(),
        })
    }

    /// Appends one entry as a frame. An entry whose payload exceeds the
    /// frame limit is refused ([`LogError::TooLarge`]) and nothing is
    /// written: the log stays readable up to the previous frame.
    pub fn append(&mut self, entry: &Entry) -> Result<(), LogError> {
        let payload = self.encode(entry)?;
        self.write_payload(entry.tag(), &payload)
    }

    /// The payload of `entry`, refused when it exceeds the frame limit.
    fn encode(&self, entry: &Entry) -> Result<Vec<u8>, LogError> {
        encode_entry(&self.path, self.max_frame_len, entry)
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The largest payload this writer accepts.
    pub(crate) fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Writes a frame with an encoded payload (within the frame limit,
    /// checked by [`encode`](Self::encode)).
    pub(crate) fn write_payload(&mut self, tag: u8, payload: &[u8]) -> Result<(), LogError> {
        let len = payload.len() as u64;
        let frame = &mut self.frame;
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        frame.push(0);
        frame.push(tag);
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        let codec = match &mut self.compressor {
            Some(c) => c.compress(payload, frame).map_err(|e| LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?,
            None => {
                frame.extend_from_slice(payload);
                Codec::Stored
            }
        };
        frame[4] = codec.code();
        let body_len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
        frame[..4].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32fast::hash(&frame[4..]);
        frame.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(frame).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.frames += 1;
        self.bytes += frame.len() as u64;
        // The size of the same frame in version 3 (length, tag, payload,
        // CRC): the uncompressed log.
        self.raw_bytes += len + 9;
        Ok(())
    }

    /// Flushes buffered frames to the file.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.out.flush().map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Frames written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes written (header included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes the same log takes uncompressed (header included), as the
    /// uncompressed framing of version 3 writes it: what compression saved.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }
}

/// The payload of `entry`, refused ([`LogError::TooLarge`]) when it
/// exceeds `max` bytes; `path` names the log in the error.
pub(crate) fn encode_entry(path: &Path, max: u32, entry: &Entry) -> Result<Vec<u8>, LogError> {
    let mut w = ByteWriter::new();
    entry.encode_payload(&mut w);
    let payload = w.into_inner();
    if payload.len() as u64 > u64::from(max) {
        return Err(LogError::TooLarge {
            path: path.to_path_buf(),
            what: entry.describe(),
            len: payload.len() as u64,
            max,
        });
    }
    Ok(payload)
}

pub use crate::log_read::{frame_spans, refresh_crc, FrameSpan, LogReader, LogStream};
pub(crate) use crate::log_read::{read_stream_header, FrameReader};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EndReason, Event, ExitId, Setup};

    fn sample_log() -> (Vec<u8>, Vec<Entry>) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ft-log-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sample.log");
        let entries = vec![
            Entry::Setup(Setup::default()),
            Entry::ClockRead { exit: 0, value: 5 },
            Entry::Event {
                exit: 3,
                at: ExitId::default(),
                event: Event::SerialInput(b"x".to_vec()),
            },
            Entry::End {
                exit: 4,
                reason: EndReason::Shutdown,
                digest: 1,
            },
        ];
        let mut w = LogWriter::create(
            &path,
            LogHeader {
                config_digest: 77,
                max_delay_us: 2000,
            },
        )
        .unwrap();
        for e in &entries {
            w.append(e).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.frames(), 4);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(w.bytes(), data.len() as u64);
        let r = LogReader::open(&path, Some(77)).unwrap();
        assert_eq!(r.entries, entries);
        assert_eq!(r.header.max_delay_us, 2000);
        let _ = std::fs::remove_dir_all(&dir);
        (data, entries)
    }

    #[test]
    fn the_stream_reads_what_the_reader_reads() {
        let (data, entries) = sample_log();
        let dir = std::env::temp_dir().join(format!("ft-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.log");
        std::fs::write(&path, &data).unwrap();
        let (header, frames, stream) = LogStream::open(&path, Some(77)).unwrap();
        assert_eq!((header.config_digest, frames), (77, 4));
        let read: Vec<Entry> = stream.map(|e| e.unwrap()).collect();
        assert_eq!(read, entries);
        // Refusals happen at open, with the frame number.
        std::fs::write(&path, &data[..data.len() - 2]).unwrap();
        assert!(matches!(
            LogStream::open(&path, None),
            Err(LogError::Truncated { frame: 4, .. })
        ));
        assert!(matches!(
            LogStream::open(&dir.join("missing"), None),
            Err(LogError::Io { .. })
        ));
        std::fs::write(&path, &data).unwrap();
        assert!(matches!(
            LogStream::open(&path, Some(1)),
            Err(LogError::Foreign { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn parse(d: &[u8], cfg: Option<u64>) -> Result<LogReader, LogError> {
        LogReader::parse(Path::new("t.log"), d, cfg)
    }

    #[test]
    fn refusals() {
        let (data, _) = sample_log();
        assert!(matches!(
            parse(&data, Some(78)),
            Err(LogError::Foreign {
                expected: 78,
                found: 77,
                ..
            })
        ));
        assert!(parse(&data, None).is_ok());
        assert!(matches!(
            parse(b"hello", None),
            Err(LogError::NotALog { .. })
        ));
        assert!(matches!(parse(&[], None), Err(LogError::NotALog { .. })));
        // Older versions are refused by version, with their CRC intact:
        // 1 (no setup frame), 2 (no PIT), 3 (uncompressed frames).
        for old in 1..VERSION {
            let mut v = data.clone();
            v[8..12].copy_from_slice(&old.to_le_bytes());
            let crc = crc32fast::hash(&v[..28]);
            v[28..32].copy_from_slice(&crc.to_le_bytes());
            match parse(&v, None) {
                Err(e @ LogError::Version { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("version {old} is not supported"))
                            && msg.contains("record it again"),
                        "{msg}"
                    );
                }
                other => panic!("version {old}: {other:?}"),
            }
        }
        let mut h = data.clone();
        h[20] ^= 1;
        assert!(matches!(
            parse(&h, None),
            Err(LogError::HeaderCorrupt { .. })
        ));
    }

    #[test]
    fn truncation_names_the_frame() {
        let (data, _) = sample_log();
        // Cut inside each frame: frame 1 (setup, no disks: a 4-byte
        // payload, stored) spans [32, 32 + 4 + 6 + 4 + 4).
        let f1_end = HEADER_LEN + FRAME_OVERHEAD + 4;
        for cut in HEADER_LEN + 1..f1_end {
            match parse(&data[..cut], None) {
                Err(LogError::Truncated { frame: 1, .. }) => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        match parse(&data[..data.len() - 1], None) {
            Err(LogError::Truncated { frame: 4, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Cut exactly between frames: no end frame.
        match parse(&data[..f1_end], None) {
            Err(e @ LogError::NoEnd { frames: 1, .. }) => {
                assert!(e.to_string().contains("truncated"))
            }
            other => panic!("{other:?}"),
        }
        match parse(&data[..HEADER_LEN - 3], None) {
            Err(LogError::Truncated { frame: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corruption_names_the_frame() {
        let (data, _) = sample_log();
        // Flip every byte after the header in turn: always an error, never a panic.
        for i in HEADER_LEN..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x40;
            let e = parse(&d, None).expect_err("flipped byte accepted");
            let s = e.to_string();
            assert!(s.contains("frame"), "{s}");
        }
        let mut d = data.clone();
        d[HEADER_LEN + 11] ^= 1;
        match parse(&d, None) {
            Err(LogError::Corrupt {
                frame: 1, reason, ..
            }) => assert!(reason.contains("CRC")),
            other => panic!("{other:?}"),
        }
        let mut extra = data.clone();
        extra.extend_from_slice(&data[HEADER_LEN..HEADER_LEN + 30]);
        assert!(matches!(
            parse(&extra, None),
            Err(LogError::Corrupt { frame: 5, .. })
        ));
    }

    #[test]
    fn the_setup_frame_comes_first_and_once() {
        let dir = std::env::temp_dir().join(format!("ft-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = LogHeader {
            config_digest: 1,
            max_delay_us: 1,
        };
        let end = Entry::End {
            exit: 1,
            reason: EndReason::Shutdown,
            digest: 0,
        };
        let setup = Entry::Setup(Setup {
            disks: vec![("_disk0".into(), 4096)],
        });
        let write = |entries: &[&Entry]| {
            let path = dir.join("s.log");
            let mut w = LogWriter::create(&path, header).unwrap();
            for e in entries {
                w.append(e).unwrap();
            }
            w.flush().unwrap();
            std::fs::read(&path).unwrap()
        };
        let good = parse(&write(&[&setup, &end]), None).unwrap();
        assert_eq!(good.entries[0], setup);
        match parse(&write(&[&end]), None) {
            Err(LogError::Corrupt {
                frame: 1, reason, ..
            }) => assert!(reason.contains("device setup"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&write(&[&setup, &setup, &end]), None),
            Err(LogError::Corrupt { frame: 2, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn checkpoint(seq: u64, pages: Vec<(u64, Vec<u8>)>, vcpu: usize) -> Entry {
        Entry::Checkpoint(Box::new(crate::entry::Checkpoint {
            exit: seq * 10,
            at: ExitId::default(),
            seq,
            pages,
            vcpu: vec![0x5a; vcpu],
            devices: vec![("serial".into(), vec![1; 40])],
            ready_for_interrupt: seq % 2 == 0,
            digest: None,
            start_registers: None,
        }))
    }

    fn write_log(path: &Path, entries: &[Entry], options: WriterOptions) -> Result<(), LogError> {
        let header = LogHeader {
            config_digest: 3,
            max_delay_us: 2000,
        };
        let mut w = LogWriter::create_with(path, header, options)?;
        for e in entries {
            w.append(e)?;
        }
        w.flush()
    }

    /// Checkpoints that repeat earlier pages with a few bytes changed, and
    /// zero pages: what recorded logs are made of.
    fn page_heavy_log() -> Vec<Entry> {
        let mut entries = vec![Entry::Setup(Setup::default())];
        let mut x = 1u64;
        let mut page: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for seq in 1..=40u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            page[(x >> 40) as usize % 4096] ^= 0x21;
            let pages = vec![(0x1000, page.clone()), (0x2000 * seq, vec![0; 4096])];
            entries.push(Entry::ClockRead {
                exit: seq * 10,
                value: x >> 20,
            });
            entries.push(checkpoint(seq, pages, 600));
        }
        entries.push(Entry::End {
            exit: 999,
            reason: EndReason::Shutdown,
            digest: 5,
        });
        entries
    }

    #[test]
    fn compressed_and_stored_logs_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("ft-codec-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let entries = page_heavy_log();
        let mut sizes = Vec::new();
        for compress in [true, false] {
            let path = dir.join(format!("c{compress}.log"));
            let options = WriterOptions {
                compress,
                ..WriterOptions::default()
            };
            write_log(&path, &entries, options).unwrap();
            let r = LogReader::open(&path, Some(3)).unwrap();
            assert_eq!(r.entries, entries);
            let (_, frames, stream) = LogStream::open(&path, Some(3)).unwrap();
            assert_eq!(frames, entries.len() as u64);
            let streamed: Vec<Entry> = stream.map(|e| e.unwrap()).collect();
            assert_eq!(streamed, entries);
            let data = std::fs::read(&path).unwrap();
            let spans = frame_spans(&data);
            assert_eq!(spans.len(), entries.len());
            let codecs: Vec<u8> = spans.iter().map(|s| s.codec).collect();
            if compress {
                // The first compressible frame starts the stream; later
                // ones go on with it; short ones are stored.
                let first = codecs.iter().position(|&c| c != 0).unwrap();
                assert_eq!(codecs[first], 2);
                assert!(codecs[first + 1..].iter().all(|&c| c != 2));
                assert!(codecs.contains(&1));
            } else {
                assert!(codecs.iter().all(|&c| c == 0));
            }
            sizes.push(data.len());
        }
        // Repeated and zero pages cost a small fraction once compressed.
        assert!(sizes[0] * 10 < sizes[1], "{sizes:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_compressed_frame_is_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("ft-codec-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        write_log(&path, &page_heavy_log(), WriterOptions::default()).unwrap();
        let data = std::fs::read(&path).unwrap();
        let spans = frame_spans(&data);
        let mut refused = 0;
        for (i, span) in spans.iter().enumerate().filter(|(_, s)| s.codec != 0) {
            for at in [span.body.start, span.body.start + span.body.len() / 2] {
                let mut bad = data.clone();
                bad[at] ^= 0x5a;
                // The CRC matches the altered bytes: only the decoder can
                // tell.
                refresh_crc(&mut bad, span);
                match parse(&bad, None) {
                    Err(LogError::Corrupt { frame, reason, .. }) => {
                        assert_eq!(frame, i as u64 + 1);
                        assert!(
                            reason.contains("decompress") || reason.contains("bytes"),
                            "{reason}"
                        );
                        refused += 1;
                    }
                    // A flip that zstd decodes to other bytes of the same
                    // length is possible; what it decodes to is then
                    // checked as a payload, or differs from the log.
                    Err(e) => assert!(e.to_string().contains("frame"), "{e}"),
                    Ok(r) => assert_ne!(r.entries, page_heavy_log()),
                }
            }
        }
        assert!(refused > 0);
        // A compressed frame that continues a stream the reader never saw
        // start: refused, not misread.
        let first = spans.iter().position(|s| s.codec == 2).unwrap();
        let mut bad = data.clone();
        bad[spans[first].offset + 4] = 1;
        refresh_crc(&mut bad, &spans[first]);
        match parse(&bad, None) {
            Err(LogError::Corrupt { frame, reason, .. }) => {
                assert_eq!(frame, first as u64 + 1);
                assert!(reason.contains("reset point"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // An unknown codec.
        let mut bad = data.clone();
        bad[spans[first].offset + 4] = 9;
        refresh_crc(&mut bad, &spans[first]);
        match parse(&bad, None) {
            Err(LogError::Corrupt { reason, .. }) => {
                assert!(reason.contains("codec 9"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The encoded payload length of a checkpoint with `vcpu` state bytes.
    fn checkpoint_len(vcpu: usize) -> usize {
        let mut w = ByteWriter::new();
        checkpoint(1, vec![(0, vec![7; 4096])], vcpu).encode_payload(&mut w);
        w.into_inner().len()
    }

    #[test]
    fn a_checkpoint_at_the_frame_limit_is_written_and_one_over_it_is_refused() {
        let dir = std::env::temp_dir().join(format!("ft-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let max: u32 = 64 << 10;
        let base = checkpoint_len(0);
        let at_limit = checkpoint(1, vec![(0, vec![7; 4096])], max as usize - base);
        let over = checkpoint(2, vec![(0, vec![7; 4096])], max as usize - base + 1);
        assert_eq!(checkpoint_len(max as usize - base), max as usize);
        for compress in [true, false] {
            let options = WriterOptions {
                compress,
                max_frame_len: max,
            };
            let path = dir.join(format!("l{compress}.log"));
            let header = LogHeader {
                config_digest: 3,
                max_delay_us: 2000,
            };
            let mut w = LogWriter::create_with(&path, header, options).unwrap();
            w.append(&Entry::Setup(Setup::default())).unwrap();
            w.append(&at_limit).unwrap();
            match w.append(&over) {
                Err(e @ LogError::TooLarge { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("{}-byte payload", max + 1))
                            && msg.contains(&format!("{max}-byte frame limit"))
                            && msg.contains("checkpoint 2"),
                        "{msg}"
                    );
                }
                other => panic!("{other:?}"),
            }
            let end = Entry::End {
                exit: 30,
                reason: EndReason::Shutdown,
                digest: 1,
            };
            w.append(&end).unwrap();
            w.flush().unwrap();
            // Nothing of the refused frame was written: the log reads
            // whole, with the frame at the limit, under the same limit.
            let data = std::fs::read(&path).unwrap();
            let r = LogReader::parse_with_limit(&path, &data, None, max).unwrap();
            assert_eq!(r.entries.len(), 3);
            assert_eq!(r.entries[1], at_limit);
            // A reader with a smaller limit refuses that frame as corrupt
            // rather than allocating for it.
            match LogReader::parse_with_limit(&path, &data, None, max - 1) {
                Err(LogError::Corrupt {
                    frame: 2, reason, ..
                }) => {
                    assert!(
                        reason.contains("frame limit") || reason.contains("length"),
                        "{reason}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
