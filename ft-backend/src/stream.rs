// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The log as a stream: the logging channel carries exactly the bytes of
//! a log file (header, then frames), in chunks whose boundaries mean
//! nothing. [`StreamDecoder`] takes the chunks as they arrive and returns
//! each entry once its whole frame is there, with the same checks as a
//! log file's reader (CRC, codec, frame order, size limits): a stream and
//! a file stay one format, and the bytes a backup received, written to a
//! file, replay offline.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::entry::Entry;
use crate::log::{
    max_stored_len, read_stream_header, FrameReader, LogError, LogHeader, HEADER_LEN, MAX_FRAME_LEN,
};

/// Decodes a log arriving in chunks.
#[derive(Debug)]
pub struct StreamDecoder {
    name: PathBuf,
    expected_config: Option<u64>,
    header: Option<LogHeader>,
    frames: FrameReader<VecDeque<u8>>,
}

impl StreamDecoder {
    /// A decoder for a stream named `name` in errors; with
    /// `expected_config`, a log of another configuration is refused.
    pub fn new(name: &Path, expected_config: Option<u64>) -> Self {
        StreamDecoder {
            name: name.to_path_buf(),
            expected_config,
            header: None,
            frames: FrameReader::new(name, VecDeque::new(), MAX_FRAME_LEN),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.src.extend(bytes);
    }

    /// The header, once its bytes arrived (see [`next_entry`](Self::next_entry)).
    pub fn header(&self) -> Option<LogHeader> {
        self.header
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.frames.src.len()
    }

    /// The next entry whose frame is complete; `None` until more bytes
    /// arrive. Reads the header first. An error is final: the stream is
    /// corrupt or foreign.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, LogError> {
        let src = &mut self.frames.src;
        if self.header.is_none() {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let header = read_stream_header(src, &self.name, self.expected_config)?;
            self.header = Some(header);
        }
        let src = &self.frames.src;
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        // The reader checks the length itself; only wait for what it
        // will read (length, body, CRC).
        if src.len() < len.saturating_add(8) && len as u64 <= max_stored_len(MAX_FRAME_LEN) {
            return Ok(None);
        }
        self.frames.next_entry()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::entry::{EndReason, Event, ExitId, Setup};
    use crate::log::LogWriter;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entries() -> Vec<Entry> {
        let mut v = vec![Entry::Setup(Setup::default())];
        for i in 1..200u64 {
            v.push(Entry::ClockRead {
                exit: i,
                value: i * 77,
            });
            v.push(Entry::Event {
                exit: i,
                at: ExitId::default(),
                event: Event::SerialInput(vec![i as u8; (i % 7) as usize + 1]),
            });
        }
        v.push(Entry::End {
            exit: 200,
            reason: EndReason::Shutdown,
            digest: 5,
        });
        v
    }

    fn stream_bytes() -> Vec<u8> {
        let out = Shared::default();
        let header = LogHeader {
            config_digest: 42,
            max_delay_us: 2000,
        };
        let mut w =
            LogWriter::to_stream(Path::new("test stream"), Box::new(out.clone()), header).unwrap();
        for e in entries() {
            w.append(&e).unwrap();
        }
        w.flush().unwrap();
        let bytes = out.0.lock().unwrap().clone();
        bytes
    }

    #[test]
    fn decodes_a_stream_cut_anywhere() {
        let bytes = stream_bytes();
        for chunk in [1usize, 3, 7, 64, 1000, bytes.len()] {
            let mut d = StreamDecoder::new(Path::new("s"), Some(42));
            let mut got = Vec::new();
            for c in bytes.chunks(chunk) {
                d.push(c);
                while let Some(e) = d.next_entry().unwrap() {
                    got.push(e);
                }
            }
            assert_eq!(got, entries(), "chunks of {chunk}");
            assert_eq!(d.buffered(), 0);
            assert_eq!(d.header().unwrap().config_digest, 42);
        }
    }

    #[test]
    fn refuses_foreign_and_corrupt_streams() {
        let bytes = stream_bytes();
        let mut d = StreamDecoder::new(Path::new("s"), Some(43));
        d.push(&bytes);
        assert!(matches!(d.next_entry(), Err(LogError::Foreign { .. })));
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n / 2] ^= 0x40;
        let mut d = StreamDecoder::new(Path::new("s"), Some(42));
        d.push(&bad);
        let mut result = Ok(Some(Entry::Setup(Setup::default())));
        while let Ok(Some(_)) = result {
            result = d.next_entry();
        }
        assert!(
            matches!(result, Err(LogError::Corrupt { .. })),
            "{result:?}"
        );
        // An absurd frame length is refused at once, not waited for.
        let mut d = StreamDecoder::new(Path::new("s"), Some(42));
        d.push(&bytes[..HEADER_LEN]);
        d.push(&u32::MAX.to_le_bytes());
        assert!(matches!(d.next_entry(), Err(LogError::Corrupt { .. })));
    }
}
