// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A digest of a disk image's contents, for the pair's handshake with
//! separate disks: the primary's image and the backup's copy must be equal
//! before the backup replays writes onto its copy.
//!
//! XXH3-64 of the whole file (the length is part of what is hashed), read
//! in 4 MiB chunks. It detects copies that differ, not an adversary: the
//! logging channel's handshake is what authenticates the peer.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use super::BlockError;

/// Bytes read at a time.
const CHUNK: usize = 4 << 20;

/// The XXH3-64 digest of the contents of the image at `path`.
pub fn image_digest(path: &Path) -> Result<u64, BlockError> {
    let err = |source| BlockError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(BlockError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_contents_equal_digests() {
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let a = dir.join(format!("vd-digest-a-{pid}"));
        let b = dir.join(format!("vd-digest-b-{pid}"));
        let data: Vec<u8> = (0..(CHUNK + 1000)).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&a, &data).unwrap();
        std::fs::write(&b, &data).unwrap();
        let da = image_digest(&a).unwrap();
        assert_eq!(da, image_digest(&b).unwrap());
        // The same as hashing in one piece: chunking does not matter.
        assert_eq!(da, xxhash_rust::xxh3::xxh3_64(&data));
        // One byte differs (in the second chunk).
        let mut other = data.clone();
        other[CHUNK + 10] ^= 1;
        std::fs::write(&b, &other).unwrap();
        assert_ne!(da, image_digest(&b).unwrap());
        // A trailing zero byte differs too.
        let mut longer = data;
        longer.push(0);
        std::fs::write(&b, &longer).unwrap();
        assert_ne!(da, image_digest(&b).unwrap());
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
        assert!(matches!(image_digest(&a), Err(BlockError::Read { .. })));
        assert!(matches!(
            image_digest(Path::new("/")),
            Err(BlockError::NotAFile { .. })
        ));
    }
}
