//! The key-value service's line protocol (`workload=kv`):
//!
//! - `SET <key> <value>\n` → `OK\n` once the record is on the disk (flushed)
//! - `GET <key>\n` → `VALUE <value>\n` or `NONE\n`
//! - `RANDOM\n` → `RANDOM <16 hex digits>\n`: a number from the CPU's
//!   RDRAND, executed in user mode, where a VMM cannot intercept it: a
//!   deliberate nondeterminism a recording does not capture (a pair's
//!   backup replays it with another number and diverges; the divergence
//!   repair test uses it)
//! - anything else → `ERR <reason>\n`
//!
//! Keys (1..=64 bytes) and values (1..=512 bytes) are printable ASCII
//! without spaces (0x21..=0x7e). A `\r` before the `\n` is accepted.

use thiserror::Error;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 512;
/// Longest request line the service reads (longer ones are refused).
pub const MAX_LINE: usize = 4 + MAX_KEY + 1 + MAX_VALUE + 1;

/// A well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Store `value` under `key`.
    Set {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Look `key` up.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Draw a hardware random number.
    Random,
}

/// Why a request line was refused; the `Display` text is the reason sent
/// after `ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// An empty line.
    #[error("empty request")]
    Empty,
    /// A command other than SET or GET.
    #[error("unknown command (expected SET or GET)")]
    UnknownCommand,
    /// Wrong number of words.
    #[error("{0} needs {1}")]
    Arguments(&'static str, &'static str),
    /// A key outside 1..=64 bytes.
    #[error("key longer than 64 bytes")]
    KeyTooLong,
    /// A value outside 1..=512 bytes.
    #[error("value longer than 512 bytes")]
    ValueTooLong,
    /// A byte outside 0x21..=0x7e in a key or value.
    #[error("keys and values must be printable ASCII without spaces")]
    NotPrintable,
    /// A line longer than [`MAX_LINE`].
    #[error("line too long")]
    LineTooLong,
}

/// Parses one request line (without its `\n`).
pub fn parse(line: &[u8]) -> Result<Request<'_>, ProtoError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(ProtoError::LineTooLong);
    }
    if line.is_empty() {
        return Err(ProtoError::Empty);
    }
    let mut words = line.split(|&b| b == b' ');
    let command = words.next().unwrap_or_default();
    let args: [Option<&[u8]>; 3] = [words.next(), words.next(), words.next()];
    match command {
        b"SET" => match args {
            [Some(key), Some(value), None] if !key.is_empty() && !value.is_empty() => {
                check(key, MAX_KEY, ProtoError::KeyTooLong)?;
                check(value, MAX_VALUE, ProtoError::ValueTooLong)?;
                Ok(Request::Set { key, value })
            }
            _ => Err(ProtoError::Arguments("SET", "a key and a value")),
        },
        b"GET" => match args {
            [Some(key), None, None] if !key.is_empty() => {
                check(key, MAX_KEY, ProtoError::KeyTooLong)?;
                Ok(Request::Get { key })
            }
            _ => Err(ProtoError::Arguments("GET", "one key")),
        },
        b"RANDOM" => match args {
            [None, None, None] => Ok(Request::Random),
            _ => Err(ProtoError::Arguments("RANDOM", "no arguments")),
        },
        _ => Err(ProtoError::UnknownCommand),
    }
}

fn check(word: &[u8], max: usize, too_long: ProtoError) -> Result<(), ProtoError> {
    if word.len() > max {
        return Err(too_long);
    }
    if !word.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ProtoError::NotPrintable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse(b"SET foo bar"),
            Ok(Request::Set {
                key: b"foo",
                value: b"bar"
            })
        );
        assert_eq!(parse(b"GET foo\r"), Ok(Request::Get { key: b"foo" }));
        assert_eq!(parse(b"RANDOM"), Ok(Request::Random));
        assert_eq!(
            parse(b"RANDOM 1"),
            Err(ProtoError::Arguments("RANDOM", "no arguments"))
        );
        let key = [b'k'; 64];
        let value = [b'~'; 512];
        let line = [&b"SET "[..], &key, b" ", &value].concat();
        assert_eq!(
            parse(&line),
            Ok(Request::Set {
                key: &key,
                value: &value
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse(b""), Err(ProtoError::Empty));
        assert_eq!(parse(b"\r"), Err(ProtoError::Empty));
        assert_eq!(parse(b"DEL foo"), Err(ProtoError::UnknownCommand));
        assert_eq!(parse(b"set foo bar"), Err(ProtoError::UnknownCommand));
        assert_eq!(
            parse(b"SET foo"),
            Err(ProtoError::Arguments("SET", "a key and a value"))
        );
        assert_eq!(
            parse(b"SET foo bar baz"),
            Err(ProtoError::Arguments("SET", "a key and a value"))
        );
        assert_eq!(
            parse(b"SET  foo bar"),
            Err(ProtoError::Arguments("SET", "a key and a value"))
        );
        assert_eq!(parse(b"GET"), Err(ProtoError::Arguments("GET", "one key")));
        assert_eq!(
            parse(b"GET a b"),
            Err(ProtoError::Arguments("GET", "one key"))
        );
        assert_eq!(
            parse(&[&b"GET "[..], &[b'k'; 65]].concat()),
            Err(ProtoError::KeyTooLong)
        );
        assert_eq!(
            parse(&[&b"SET k "[..], &[b'v'; 513]].concat()),
            Err(ProtoError::ValueTooLong)
        );
        assert_eq!(parse(b"SET k v\tx"), Err(ProtoError::NotPrintable));
        assert_eq!(parse(b"GET \xff"), Err(ProtoError::NotPrintable));
        assert_eq!(parse(&[b'x'; MAX_LINE + 1]), Err(ProtoError::LineTooLong));
        assert_eq!(
            ProtoError::Arguments("GET", "one key").to_string(),
            "GET needs one key"
        );
    }
}
