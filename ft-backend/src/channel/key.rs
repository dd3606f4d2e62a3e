// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The pair's shared key: the Noise pre-shared key of the logging channel.
//!
//! A key file holds exactly 32 bytes of key, either raw (32 bytes, as
//! `head -c 32 /dev/urandom` writes them) or as 64 hexadecimal digits
//! (an optional trailing newline allowed). It must not be readable or
//! writable by group or others: generate one with
//!
//! ```sh
//! (umask 077 && head -c 32 /dev/urandom > pair.key)
//! ```
//!
//! or with [`ChannelKey::generate_file`]. The key never appears in a
//! message: [`ChannelKey`]'s `Debug` prints `ChannelKey(..)`, and the
//! errors name only the file and what is wrong with it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes of key.
pub const KEY_LEN: usize = 32;

/// The largest key file read (a hex key with some whitespace): anything
/// larger is refused without reading it all.
const MAX_KEY_FILE: u64 = 128;

/// Loading or generating a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be opened, inspected or read.
    #[error("cannot read the key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error("the key file {path} is accessible by group or others (mode {mode:03o}): make it private with `chmod 600`")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a regular file.
    #[error("the key file {path} is not a regular file")]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// Neither 32 raw bytes nor 64 hexadecimal digits.
    #[error("the key file {path} holds {len} bytes: a key is 32 raw bytes or 64 hexadecimal digits (generate one with `head -c 32 /dev/urandom`)")]
    Format {
        /// The key file.
        path: PathBuf,
        /// The file's size.
        len: u64,
    },
    /// A key of all zero bytes (an empty or zeroed file, not a key).
    #[error("the key file {path} holds an all-zero key")]
    Zero {
        /// The key file.
        path: PathBuf,
    },
    /// Writing a new key file failed (it exists already, or the directory
    /// is not writable).
    #[error("cannot create the key file {path}")]
    Create {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The pair's shared key. Its `Debug` does not show it; it is zeroed when
/// dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelKey([u8; KEY_LEN]);

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelKey(..)")
    }
}

impl Drop for ChannelKey {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keep the compiler from dropping the store as dead.
        std::hint::black_box(&self.0);
    }
}

impl ChannelKey {
    /// A key from its bytes (tests, or a key handed over by other means).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ChannelKey(bytes)
    }

    /// The key bytes, for the Noise handshake only.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Reads a key file: refuses one that group or others may read or
    /// write, one that is not a regular file, and one that is neither 32
    /// raw bytes nor 64 hexadecimal digits.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let format = || KeyError::Format {
            path: path.to_path_buf(),
            len: meta.len(),
        };
        if meta.len() > MAX_KEY_FILE {
            return Err(format());
        }
        let mut data = Vec::with_capacity(MAX_KEY_FILE as usize);
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut data)
            .map_err(io)?;
        let key = parse_key(&data);
        data.fill(0);
        let key = key.ok_or_else(format)?;
        if key.0.iter().all(|b| *b == 0) {
            return Err(KeyError::Zero {
                path: path.to_path_buf(),
            });
        }
        Ok(key)
    }

    /// Writes a new key file of 32 random bytes (from the kernel's
    /// generator), mode 0600; refuses to overwrite an existing file.
    pub fn generate_file(path: &Path) -> Result<Self, KeyError> {
        let create = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; KEY_LEN];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(create)?;
        let key = ChannelKey(bytes);
        bytes.fill(0);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        file.write_all(&key.0)
            .and_then(|()| file.sync_all())
            .map_err(create)?;
        Ok(key)
    }
}

/// 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
fn parse_key(data: &[u8]) -> Option<ChannelKey> {
    if data.len() == KEY_LEN {
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(data);
        return Some(ChannelKey(key));
    }
    let text = data.trim_ascii();
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0])?;
        let lo = hex_digit(pair[1])?;
        key[i] = hi << 4 | lo;
    }
    Some(ChannelKey(key))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ft-key-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn write_mode(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).expect("write key");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn raw_and_hex_keys_load() {
        let dir = temp_dir("formats");
        let raw: Vec<u8> = (1..=32).collect();
        write_mode(&dir.join("raw"), &raw, 0o600);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        write_mode(&dir.join("hex"), format!("{hex}\n").as_bytes(), 0o400);
        let a = ChannelKey::load(&dir.join("raw")).expect("raw key");
        let b = ChannelKey::load(&dir.join("hex")).expect("hex key");
        assert_eq!(a, b);
        assert_eq!(a.bytes()[..], raw[..]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let dir = temp_dir("mode");
        let raw = [7u8; 32];
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            let path = dir.join(format!("k{mode:o}"));
            write_mode(&path, &raw, mode);
            let err = ChannelKey::load(&path).expect_err("mode must be refused");
            assert!(matches!(err, KeyError::Permissions { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn wrong_sizes_and_formats_are_refused() {
        let dir = temp_dir("size");
        let cases: [&[u8]; 6] = [
            b"",
            &[1u8; 31],
            &[1u8; 33],
            &[1u8; 64],
            b"zz00000000000000000000000000000000000000000000000000000000000000",
            &[b'a'; 200],
        ];
        for (i, data) in cases.iter().enumerate() {
            let path = dir.join(format!("k{i}"));
            write_mode(&path, data, 0o600);
            let err = ChannelKey::load(&path).expect_err("format must be refused");
            assert!(matches!(err, KeyError::Format { .. }), "{i}: {err}");
        }
        write_mode(&dir.join("zero"), &[0u8; 32], 0o600);
        assert!(matches!(
            ChannelKey::load(&dir.join("zero")),
            Err(KeyError::Zero { .. })
        ));
        assert!(matches!(
            ChannelKey::load(&dir),
            Err(KeyError::NotAFile { .. })
        ));
        assert!(matches!(
            ChannelKey::load(&dir.join("missing")),
            Err(KeyError::Io { .. })
        ));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let dir = temp_dir("secret");
        let path = dir.join("key");
        let key = ChannelKey::generate_file(&path).expect("generate");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ChannelKey::load(&path).expect("load"), key);
        let shown = format!("{key:?}");
        assert_eq!(shown, "ChannelKey(..)");
        let hex: String = key.bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex[..8]));
        // Refusing to overwrite, and a world-readable copy: neither error
        // shows the key.
        let err = ChannelKey::generate_file(&path).expect_err("exists");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err2 = ChannelKey::load(&path).expect_err("mode");
        for text in [format!("{err:?} {err}"), format!("{err2:?} {err2}")] {
            assert!(!text.contains(&hex[..8]), "{text}");
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
