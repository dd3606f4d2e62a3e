// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A small little-endian byte codec: fixed-width integers and
//! length-prefixed byte strings, with a reader that never panics on short
//! or garbage input.

/// Errors decoding bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a value.
    #[error("input ends early: {wanted} more bytes wanted at offset {offset}")]
    Short {
        /// Where the value started.
        offset: usize,
        /// Bytes missing.
        wanted: usize,
    },
    /// A value is out of its range.
    #[error("bad value at offset {offset}: {what}")]
    Bad {
        /// Where.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// Bytes left after the last value.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
}

/// Appends values to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct ByteWriter {
    buf: Vec<u8>,
}

impl ByteWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a length (u32) and the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends raw bytes, without a length.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values from a byte slice.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(CodecError::Short {
                offset: self.pos,
                wanted: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// A value-range error at the current offset.
    pub fn bad(&self, what: impl Into<String>) -> CodecError {
        CodecError::Bad {
            offset: self.pos,
            what: what.into(),
        }
    }

    /// Fails if bytes are left.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut w = ByteWriter::new();
        w.u8(7)
            .u32(0xdead_beef)
            .u64(u64::MAX)
            .bytes(b"abc")
            .raw(b"z");
        let b = w.into_inner();
        let mut r = ByteReader::new(&b);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.finish(), Err(CodecError::Trailing(1)));
        assert_eq!(r.take(1).unwrap(), b"z");
        r.finish().unwrap();
        assert!(matches!(r.u8(), Err(CodecError::Short { wanted: 1, .. })));
        // A huge length never allocates or panics.
        let mut r = ByteReader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(r.bytes().is_err());
    }
}
