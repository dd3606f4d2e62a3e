// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Frame compression: one zstd stream across the frames of a log.
//!
//! Most of a checkpoint repeats what earlier frames carried (the same
//! page-table, stack and data pages, sent again a few milliseconds later
//! with a few bytes changed) or is zeros. Compressing each frame alone
//! leaves that on the table; one zstd stream over the whole log, flushed at
//! the end of every frame, finds it within its window while each frame
//! still decodes as soon as it arrives (the future logging channel sends
//! the same frames over TCP).
//!
//! A frame's codec says how its body is stored:
//! - [`Codec::Stored`]: the payload itself;
//! - [`Codec::Start`]: a reset point: the compressor starts a new stream
//!   here (no reference to earlier frames), so a reader can start at this
//!   frame;
//! - [`Codec::Continue`]: the next flushed block of the current stream,
//!   decodable only by a reader that decoded every compressed frame since
//!   the last reset point.
//!
//! The compressor starts a new stream every [`RESET_BYTES`] of payload.

use std::io;

use zstd::stream::raw::{CParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// The compressor starts a new stream (a reset point) once this many
/// payload bytes went into the current one (four windows: a reset
/// forgets the window, so frequent ones cost what the window gains).
pub const RESET_BYTES: u64 = 512 << 20;
/// zstd level: the fastest of the standard levels (recording speed first;
/// level 3 gained little on recorded logs, see `ft-backend/README.md`).
pub const LEVEL: i32 = 1;
/// log2 of the stream's window (128 MiB): how far back a frame may refer.
/// A reader needs that much memory per stream.
pub const WINDOW_LOG: u32 = 27;
/// Payloads shorter than this are stored: a zstd block header and the
/// flush cost more than they could save.
pub const MIN_COMPRESS: usize = 32;

/// Errors of the frame codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// zstd refused to set up, compress or decompress.
    #[error("zstd failed")]
    Zstd(#[source] io::Error),
    /// An unknown codec byte.
    #[error("unknown frame codec {0}")]
    UnknownCodec(u8),
    /// A compressed frame that continues a stream whose start this reader
    /// has not seen.
    #[error("a compressed frame continues a stream whose start (a reset point) was not read")]
    NoStream,
    /// The body does not decode to the announced length.
    #[error("the body decodes to {found} bytes, not the {expected} announced")]
    Length {
        /// The length in the frame.
        expected: usize,
        /// What it decoded to (at most `expected + 1`).
        found: usize,
    },
}

/// How a frame's body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The payload as it is.
    Stored,
    /// zstd, continuing the current stream.
    Continue,
    /// zstd, starting a new stream: a reset point.
    Start,
}

impl Codec {
    /// The byte in the frame.
    pub fn code(self) -> u8 {
        match self {
            Codec::Stored => 0,
            Codec::Continue => 1,
            Codec::Start => 2,
        }
    }

    /// The codec of a frame byte.
    pub fn from_code(code: u8) -> Result<Self, CodecError> {
        match code {
            0 => Ok(Codec::Stored),
            1 => Ok(Codec::Continue),
            2 => Ok(Codec::Start),
            c => Err(CodecError::UnknownCodec(c)),
        }
    }
}

/// The writing side: compresses frame payloads into one stream.
pub struct Compressor {
    encoder: Encoder<'static>,
    /// Payload bytes after which the next frame starts a new stream.
    reset_bytes: u64,
    /// Payload bytes in the current stream; `None` before the first.
    in_stream: Option<u64>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("in_stream", &self.in_stream)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor at [`LEVEL`] with a [`WINDOW_LOG`] window and long
    /// distance matching, starting a new stream every [`RESET_BYTES`].
    pub fn new() -> Result<Self, CodecError> {
        Self::with_reset_bytes(RESET_BYTES)
    }

    /// As [`new`](Self::new), starting a new stream every `reset_bytes`
    /// of payload.
    pub fn with_reset_bytes(reset_bytes: u64) -> Result<Self, CodecError> {
        let mut encoder = Encoder::new(LEVEL).map_err(CodecError::Zstd)?;
        encoder
            .set_parameter(CParameter::WindowLog(WINDOW_LOG))
            .map_err(CodecError::Zstd)?;
        encoder
            .set_parameter(CParameter::EnableLongDistanceMatching(true))
            .map_err(CodecError::Zstd)?;
        // The frame CRC covers the body; zstd's own checksum would only
        // come at the end of a stream.
        encoder
            .set_parameter(CParameter::ChecksumFlag(false))
            .map_err(CodecError::Zstd)?;
        Ok(Compressor {
            encoder,
            reset_bytes,
            in_stream: None,
        })
    }

    /// Appends the body of a frame with `payload` to `out` and returns its
    /// codec. The body decodes on its own once the frames before it (back
    /// to the last reset point) were decoded.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<Codec, CodecError> {
        if payload.len() < MIN_COMPRESS {
            out.extend_from_slice(payload);
            return Ok(Codec::Stored);
        }
        let codec = match self.in_stream {
            Some(n) if n < self.reset_bytes => Codec::Continue,
            Some(_) => {
                self.encoder.reinit().map_err(CodecError::Zstd)?;
                Codec::Start
            }
            None => Codec::Start,
        };
        let start = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(payload.len()) + 64);
        let mut input = InBuffer::around(payload);
        loop {
            let at = out.len();
            let mut output = OutBuffer::around_pos(out, at);
            self.encoder
                .run(&mut input, &mut output)
                .map_err(CodecError::Zstd)?;
            if input.pos() == payload.len() {
                break;
            }
            out.reserve(payload.len() - input.pos() + 64);
        }
        loop {
            let at = out.len();
            let mut output = OutBuffer::around_pos(out, at);
            let left = self.encoder.flush(&mut output).map_err(CodecError::Zstd)?;
            if left == 0 {
                break;
            }
            out.reserve(left + 64);
        }
        debug_assert!(out.len() > start);
        let before = if codec == Codec::Start {
            0
        } else {
            self.in_stream.unwrap_or(0)
        };
        self.in_stream = Some(before + payload.len() as u64);
        Ok(codec)
    }
}

/// The reading side: decodes frame bodies in order.
pub struct Decompressor {
    decoder: Decoder<'static>,
    /// Whether a stream was started (a reset point was decoded).
    in_stream: bool,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("in_stream", &self.in_stream)
            .finish_non_exhaustive()
    }
}

impl Decompressor {
    /// A decompressor; it accepts windows up to zstd's default limit
    /// (128 MiB), so a corrupt frame cannot make it allocate more.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Decompressor {
            decoder: Decoder::new().map_err(CodecError::Zstd)?,
            in_stream: false,
        })
    }

    /// Decodes the body of a frame stored with `codec`, which must give
    /// exactly `len` bytes.
    pub fn decompress(
        &mut self,
        codec: Codec,
        body: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, CodecError> {
        match codec {
            Codec::Stored => {
                if body.len() != len {
                    return Err(CodecError::Length {
                        expected: len,
                        found: body.len(),
                    });
                }
                return Ok(body.to_vec());
            }
            Codec::Start => {
                self.decoder.reinit().map_err(CodecError::Zstd)?;
                self.in_stream = true;
            }
            Codec::Continue if !self.in_stream => return Err(CodecError::NoStream),
            Codec::Continue => {}
        }
        let result = self.decode_block(body, len);
        if result.is_err() {
            // The stream's state is unknown now: later frames of it are
            // refused until the next reset point.
            self.in_stream = false;
        }
        result
    }

    fn decode_block(&mut self, body: &[u8], len: usize) -> Result<Vec<u8>, CodecError> {
        // One byte of room past `len` shows a body that decodes to more.
        let mut out: Vec<u8> = Vec::with_capacity(len + 1);
        let mut input = InBuffer::around(body);
        loop {
            let before = (input.pos(), out.len());
            let at = out.len();
            let mut output = OutBuffer::around_pos(&mut out, at);
            self.decoder
                .run(&mut input, &mut output)
                .map_err(CodecError::Zstd)?;
            if out.len() > len {
                return Err(CodecError::Length {
                    expected: len,
                    found: out.len(),
                });
            }
            if (input.pos(), out.len()) == before {
                break;
            }
        }
        if out.len() != len || input.pos() != body.len() {
            return Err(CodecError::Length {
                expected: len,
                found: out.len(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator for property-style tests.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        /// A payload like a log's: zeros, repeats of earlier payloads with
        /// a few bytes changed, random bytes, or short.
        fn payload(&mut self, earlier: &[Vec<u8>]) -> Vec<u8> {
            match self.next() % 5 {
                0 => vec![0; (self.next() % 9000) as usize],
                1 if !earlier.is_empty() => {
                    let mut p = earlier[(self.next() as usize) % earlier.len()].clone();
                    for _ in 0..self.next() % 8 {
                        if !p.is_empty() {
                            let i = (self.next() as usize) % p.len();
                            p[i] ^= self.next() as u8 | 1;
                        }
                    }
                    p
                }
                2 => (0..self.next() % 40).map(|_| self.next() as u8).collect(),
                _ => (0..self.next() % 20000)
                    .map(|_| self.next() as u8)
                    .collect(),
            }
        }
    }

    fn round_trip(seed: u64, frames: usize) -> (u64, u64) {
        let mut g = Lcg(seed);
        let mut c = Compressor::new().unwrap();
        let mut d = Decompressor::new().unwrap();
        let mut earlier = Vec::new();
        let (mut raw, mut coded) = (0, 0);
        for i in 0..frames {
            let p = g.payload(&earlier);
            let mut body = Vec::new();
            let codec = c.compress(&p, &mut body).unwrap();
            if i == 0 && p.len() >= MIN_COMPRESS {
                assert_eq!(codec, Codec::Start);
            }
            assert_eq!(codec == Codec::Stored, p.len() < MIN_COMPRESS);
            let back = d.decompress(codec, &body, p.len()).unwrap();
            assert_eq!(back, p, "seed {seed} frame {i}");
            raw += p.len() as u64;
            coded += body.len() as u64;
            earlier.push(p);
        }
        (raw, coded)
    }

    #[test]
    fn payloads_round_trip() {
        for seed in 0..8 {
            round_trip(seed, 60);
        }
        // A fifth of the payloads are random bytes, which do not
        // compress; repeats and zeros do.
        let (raw, coded) = round_trip(99, 200);
        assert!(coded * 10 < raw * 9, "{coded} of {raw}");
    }

    #[test]
    fn the_stream_resets_and_a_new_reader_starts_there() {
        const RESET: u64 = 8 << 20;
        let mut c = Compressor::with_reset_bytes(RESET).unwrap();
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut frames = Vec::new();
        let mut total = 0u64;
        // Enough frames to pass a reset point.
        while total < RESET + (4 << 20) {
            let mut p = Vec::new();
            for k in 0..256u32 {
                p.extend_from_slice(&page);
                p.extend_from_slice(&k.to_le_bytes());
            }
            let mut body = Vec::new();
            let codec = c.compress(&p, &mut body).unwrap();
            total += p.len() as u64;
            frames.push((codec, body, p));
        }
        let starts: Vec<usize> = (0..frames.len())
            .filter(|&i| frames[i].0 == Codec::Start)
            .collect();
        assert_eq!(starts[0], 0);
        assert_eq!(starts.len(), 2, "one reset after {RESET} bytes");
        // A reader starting at the reset point decodes from there on...
        let mut late = Decompressor::new().unwrap();
        for (codec, body, p) in &frames[starts[1]..] {
            assert_eq!(&late.decompress(*codec, body, p.len()).unwrap(), p);
        }
        // ...but not from a frame that continues an earlier stream.
        let mut lost = Decompressor::new().unwrap();
        let (codec, body, p) = &frames[1];
        assert!(matches!(
            lost.decompress(*codec, body, p.len()),
            Err(CodecError::NoStream)
        ));
    }

    #[test]
    fn corrupt_bodies_are_errors_never_panics() {
        let mut g = Lcg(7);
        let mut c = Compressor::new().unwrap();
        let mut frames = Vec::new();
        let mut earlier = Vec::new();
        for _ in 0..12 {
            let p = g.payload(&earlier);
            let mut body = Vec::new();
            let codec = c.compress(&p, &mut body).unwrap();
            frames.push((codec, body, p.clone()));
            earlier.push(p);
        }
        for i in 0..frames.len() {
            let (codec, body, p) = &frames[i];
            if *codec == Codec::Stored {
                continue;
            }
            for (at, flip) in [
                (0usize, 0xffu8),
                (body.len() / 2, 0x10),
                (body.len() - 1, 1),
            ] {
                let mut d = Decompressor::new().unwrap();
                for (c, b, q) in &frames[..i] {
                    d.decompress(*c, b, q.len()).unwrap();
                }
                let mut bad = body.clone();
                bad[at] ^= flip;
                // Either zstd refuses it or the length check does; a body
                // that still decodes to the same length is caught by the
                // frame CRC in the log reader.
                if let Ok(out) = d.decompress(*codec, &bad, p.len()) {
                    assert_eq!(out.len(), p.len());
                }
            }
            // A wrong announced length is always refused.
            let mut d = Decompressor::new().unwrap();
            for (c, b, q) in &frames[..i] {
                d.decompress(*c, b, q.len()).unwrap();
            }
            let mut d2 = Decompressor::new().unwrap();
            for (c, b, q) in &frames[..i] {
                d2.decompress(*c, b, q.len()).unwrap();
            }
            assert!(matches!(
                d.decompress(*codec, body, p.len() + 1),
                Err(CodecError::Length { .. })
            ));
            if !p.is_empty() {
                assert!(d2.decompress(*codec, body, p.len() - 1).is_err());
            }
        }
        assert!(matches!(
            Codec::from_code(3),
            Err(CodecError::UnknownCodec(3))
        ));
        let mut d = Decompressor::new().unwrap();
        assert!(d.decompress(Codec::Stored, b"abc", 4).is_err());
        assert!(d.decompress(Codec::Start, b"not zstd at all", 10).is_err());
    }
}
