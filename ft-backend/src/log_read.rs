// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Reading a log (the format is described in [`crate::log`]): the header
//! check, the frame reader shared by files and the stream decoder, a
//! whole log in memory ([`LogReader`]), a log streamed from its file
//! ([`LogStream`]), and frame spans for tools that look at raw bytes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use vm_migration::CodecError;

use crate::codec::{Codec, Decompressor};
use crate::entry::Entry;
use crate::error_chain;
use crate::log::{
    le32, le64, max_stored_len, LogError, LogHeader, HEADER_LEN, MAGIC, MAX_FRAME_LEN, VERSION,
};

/// Reads the header from `src` and checks it (for the stream decoder).
pub(crate) fn read_stream_header(
    src: &mut impl Read,
    path: &Path,
    expected_config: Option<u64>,
) -> Result<LogHeader, LogError> {
    read_header(src, path, expected_config)
}

/// Reads the header from `src` and checks it (magic, version, CRC, and
/// the configuration digest when `expected_config` is given).
fn read_header(
    src: &mut impl Read,
    path: &Path,
    expected_config: Option<u64>,
) -> Result<LogHeader, LogError> {
    let p = || path.to_path_buf();
    let mut data = [0u8; HEADER_LEN];
    let n = read_full(src, &mut data).map_err(|source| LogError::Io { path: p(), source })?;
    if n < MAGIC.len() || data[..MAGIC.len()] != MAGIC {
        return Err(LogError::NotALog { path: p() });
    }
    if n < HEADER_LEN {
        return Err(LogError::Truncated {
            path: p(),
            frame: 0,
            offset: 0,
        });
    }
    let version = le32(&data[8..]);
    if version != VERSION {
        return Err(LogError::Version {
            path: p(),
            found: version,
        });
    }
    if crc32fast::hash(&data[..28]) != le32(&data[28..]) {
        return Err(LogError::HeaderCorrupt { path: p() });
    }
    let header = LogHeader {
        config_digest: le64(&data[16..]),
        max_delay_us: le32(&data[24..]),
    };
    if let Some(expected) = expected_config {
        if expected != header.config_digest {
            return Err(LogError::Foreign {
                path: p(),
                expected,
                found: header.config_digest,
            });
        }
    }
    Ok(header)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads the frames after the header, one at a time.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    path: PathBuf,
    pub(crate) src: R,
    offset: u64,
    frame: u64,
    ended: bool,
    max_frame_len: u32,
    /// Created at the first compressed frame.
    decompressor: Option<Decompressor>,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(path: &Path, src: R, max_frame_len: u32) -> Self {
        FrameReader {
            path: path.to_path_buf(),
            src,
            offset: HEADER_LEN as u64,
            frame: 0,
            ended: false,
            max_frame_len,
            decompressor: None,
        }
    }

    /// The next entry; `None` at the end of the input, which must come
    /// right after the end frame.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, LogError> {
        let p = || self.path.clone();
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut len = [0u8; 4];
        let n = read_full(&mut self.src, &mut len).map_err(io)?;
        let (frame, offset) = (self.frame + 1, self.offset);
        let truncated = LogError::Truncated {
            path: p(),
            frame,
            offset,
        };
        let corrupt = |reason: String| LogError::Corrupt {
            path: p(),
            frame,
            offset,
            reason,
        };
        if n == 0 {
            return if self.ended {
                Ok(None)
            } else {
                Err(LogError::NoEnd {
                    path: p(),
                    frames: self.frame,
                })
            };
        }
        if self.ended {
            return Err(corrupt("data after the end frame".into()));
        }
        if n < 4 {
            return Err(truncated);
        }
        let len = u32::from_le_bytes(len);
        if len < 6 || u64::from(len) > max_stored_len(self.max_frame_len) {
            return Err(corrupt(format!("impossible frame length {len}")));
        }
        let len = len as usize;
        // Grows with the bytes actually there: a corrupt length cannot make
        // it allocate more than the file holds.
        let mut body = Vec::new();
        (&mut self.src)
            .take(len as u64 + 4)
            .read_to_end(&mut body)
            .map_err(io)?;
        if body.len() < len + 4 {
            return Err(truncated);
        }
        let crc = le32(&body[len..]);
        if crc32fast::hash(&body[..len]) != crc {
            return Err(corrupt("CRC mismatch".into()));
        }
        let codec = Codec::from_code(body[0]).map_err(|e| corrupt(e.to_string()))?;
        let tag = body[1];
        let raw_len = le32(&body[2..]);
        if raw_len > self.max_frame_len {
            return Err(corrupt(format!(
                "a {raw_len}-byte payload exceeds the {}-byte frame limit",
                self.max_frame_len
            )));
        }
        let stored = &body[6..len];
        let payload = if codec == Codec::Stored {
            if stored.len() != raw_len as usize {
                return Err(corrupt(format!(
                    "a stored payload of {} bytes announced as {raw_len}",
                    stored.len()
                )));
            }
            std::borrow::Cow::Borrowed(stored)
        } else {
            let d = match &mut self.decompressor {
                Some(d) => d,
                None => self.decompressor.insert(
                    Decompressor::new().map_err(|e| corrupt(format!("cannot set up zstd: {e}")))?,
                ),
            };
            let out = d
                .decompress(codec, stored, raw_len as usize)
                .map_err(|e| corrupt(format!("cannot decompress: {}", error_chain(&e))))?;
            std::borrow::Cow::Owned(out)
        };
        let entry = Entry::decode(tag, &payload).map_err(|e: CodecError| corrupt(e.to_string()))?;
        match (frame, &entry) {
            (1, Entry::Setup(_)) => {}
            (1, other) => {
                return Err(corrupt(format!(
                    "the first frame must be the device setup, not a {}",
                    other.describe()
                )))
            }
            (_, Entry::Setup(_)) => return Err(corrupt("a second device setup frame".into())),
            _ => {}
        }
        self.ended = matches!(entry, Entry::End { .. });
        self.frame = frame;
        self.offset += len as u64 + 8;
        Ok(Some(entry))
    }
}

/// Where one frame sits in a log's bytes (for tools and tests that look
/// at the raw format; [`frame_spans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpan {
    /// Byte offset of the frame (its length field).
    pub offset: usize,
    /// The codec byte.
    pub codec: u8,
    /// The entry tag.
    pub tag: u8,
    /// The payload's decoded length.
    pub raw_len: u32,
    /// The body (stored or compressed payload).
    pub body: std::ops::Range<usize>,
}

impl FrameSpan {
    /// The bytes the frame's CRC covers (codec to the end of the body).
    pub fn crc_covered(&self) -> std::ops::Range<usize> {
        self.offset + 4..self.body.end
    }
}

/// The frames of a log's bytes, by their length fields alone (no CRC or
/// payload check); stops at the first frame cut by the end of `data`.
pub fn frame_spans(data: &[u8]) -> Vec<FrameSpan> {
    let mut v = Vec::new();
    let mut pos = HEADER_LEN;
    while pos + 10 <= data.len() {
        let len = le32(&data[pos..]) as usize;
        let end = pos.saturating_add(4).saturating_add(len);
        if len < 6 || end.saturating_add(4) > data.len() {
            break;
        }
        v.push(FrameSpan {
            offset: pos,
            codec: data[pos + 4],
            tag: data[pos + 5],
            raw_len: le32(&data[pos + 6..]),
            body: pos + 10..end,
        });
        pos = end + 4;
    }
    v
}

/// Sets the CRC of frame `span` in `data` to match its bytes (for tests
/// that alter a frame on purpose).
pub fn refresh_crc(data: &mut [u8], span: &FrameSpan) {
    let crc = crc32fast::hash(&data[span.crc_covered()]);
    data[span.body.end..span.body.end + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A whole log, read and validated, in memory.
#[derive(Debug)]
pub struct LogReader {
    /// The header.
    pub header: LogHeader,
    /// The entries, in order.
    pub entries: Vec<Entry>,
}

impl LogReader {
    /// Reads and validates `path`. With `expected_config`, a log recorded
    /// with another configuration digest is refused.
    pub fn open(path: &Path, expected_config: Option<u64>) -> Result<Self, LogError> {
        let data = std::fs::read(path).map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &data, expected_config)
    }

    /// Validates and decodes log bytes (`path` only names the log in errors).
    pub fn parse(path: &Path, data: &[u8], expected_config: Option<u64>) -> Result<Self, LogError> {
        Self::parse_with_limit(path, data, expected_config, MAX_FRAME_LEN)
    }

    /// As [`parse`](Self::parse), accepting payloads up to `max_frame_len`
    /// bytes (a smaller limit than the format's, for tests).
    pub fn parse_with_limit(
        path: &Path,
        data: &[u8],
        expected_config: Option<u64>,
        max_frame_len: u32,
    ) -> Result<Self, LogError> {
        let mut src = data;
        let header = read_header(&mut src, path, expected_config)?;
        let mut frames = FrameReader::new(path, src, max_frame_len);
        let mut entries = Vec::new();
        while let Some(e) = frames.next_entry()? {
            entries.push(e);
        }
        Ok(LogReader { header, entries })
    }
}

/// A log read one frame at a time (memory bounded by the largest frame),
/// validated whole when opened.
#[derive(Debug)]
pub struct LogStream {
    frames: FrameReader<BufReader<File>>,
    done: bool,
}

impl LogStream {
    /// Opens `path`, checks its header (refusing another configuration
    /// when `expected_config` is given) and validates every frame without
    /// keeping them, so that a truncated or corrupt log is refused before
    /// anything runs. Returns the header, the number of frames and the
    /// stream of entries.
    pub fn open(
        path: &Path,
        expected_config: Option<u64>,
    ) -> Result<(LogHeader, u64, LogStream), LogError> {
        let open = || {
            File::open(path)
                .map(|f| BufReader::with_capacity(1 << 20, f))
                .map_err(|source| LogError::Io {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let mut src = open()?;
        let header = read_header(&mut src, path, expected_config)?;
        let mut check = FrameReader::new(path, src, MAX_FRAME_LEN);
        while check.next_entry()?.is_some() {}
        let frames = check.frame;
        let mut src = open()?;
        read_header(&mut src, path, expected_config)?;
        Ok((
            header,
            frames,
            LogStream {
                frames: FrameReader::new(path, src, MAX_FRAME_LEN),
                done: false,
            },
        ))
    }
}

impl LogStream {
    /// Opens `path` and checks its header, but not its frames: the stream
    /// yields the entries up to the first truncated or corrupt frame (or
    /// the end of an unfinished log), then that error as its last item.
    /// For tools that show what a damaged log still holds (`ft-log`);
    /// replay uses [`LogStream::open`].
    pub fn open_partial(path: &Path) -> Result<(LogHeader, LogStream), LogError> {
        let mut src = File::open(path)
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .map_err(|source| LogError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let header = read_header(&mut src, path, None)?;
        Ok((
            header,
            LogStream {
                frames: FrameReader::new(path, src, MAX_FRAME_LEN),
                done: false,
            },
        ))
    }
}

impl Iterator for LogStream {
    type Item = Result<Entry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.frames.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
