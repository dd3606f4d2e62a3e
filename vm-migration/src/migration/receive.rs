// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The destination's end of a migration.

use std::io::{Read, Write};

use super::precopy::{MigrationError, MigrationSink};
use super::protocol::{
    self, decode_config, decode_ranges, read_message, MessageType, ProtocolError, PAGE_SIZE,
};

/// Tells the source why we refuse (best effort) and returns the error.
fn refuse(w: &mut dyn Write, e: MigrationError) -> MigrationError {
    let text = match &e {
        MigrationError::Vmm(what, source) => format!("{what}: {}", error_chain(source.as_ref())),
        e => error_chain(e),
    };
    let _ = protocol::write_message(w, MessageType::Error, &[text.as_bytes()]);
    let _ = w.flush();
    e
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Receives a migration from the source at the other end of `r`/`w` into
/// `sink`. Returns once the guest runs here ([`MigrationSink::finish`]
/// succeeded and the source was told), or with the reason it was refused
/// or abandoned (the source was told, if it can still hear).
pub fn receive(
    r: &mut dyn Read,
    w: &mut dyn Write,
    sink: &mut dyn MigrationSink,
) -> Result<(), MigrationError> {
    if let Err(e) = protocol::read_preamble(r) {
        // Answer with our own preamble so that a source of another
        // version learns ours, then say why.
        let _ = protocol::write_preamble(w);
        return Err(refuse(w, e.into()));
    }
    protocol::write_preamble(w)?;
    let mut buf = Vec::new();
    match read_message(r, &mut buf) {
        Ok(MessageType::Config) => {}
        Ok(other) => {
            return Err(refuse(
                w,
                MigrationError::Unexpected {
                    expected: "Config",
                    found: other.name(),
                },
            ))
        }
        Err(e) => return Err(refuse(w, e.into())),
    }
    let prepared = decode_config(&buf)
        .map_err(MigrationError::from)
        .and_then(|(json, ranges)| {
            sink.prepare(json, &ranges)
                .map_err(|e| MigrationError::Vmm("cannot prepare the VM", e))
        });
    if let Err(e) = prepared {
        return Err(refuse(w, e));
    }
    protocol::write_message(w, MessageType::Ok, &[])?;
    w.flush().map_err(ProtocolError::Io)?;
    loop {
        let t = match read_message(r, &mut buf) {
            Ok(t) => t,
            Err(e) => return Err(refuse(w, e.into())),
        };
        let step = match t {
            MessageType::Pages => apply_pages(&buf, sink),
            MessageType::Zeros => apply_zeros(&buf, sink),
            MessageType::State => match sink.finish(&buf) {
                Ok(()) => {
                    protocol::write_message(w, MessageType::Ok, &[])?;
                    w.flush().map_err(ProtocolError::Io)?;
                    return Ok(());
                }
                Err(e) => Err(MigrationError::Vmm("cannot restore the VM", e)),
            },
            MessageType::Abandon => {
                return Err(MigrationError::Abandoned(
                    String::from_utf8_lossy(&buf).into_owned(),
                ))
            }
            other => Err(MigrationError::Unexpected {
                expected: "Pages, Zeros or State",
                found: other.name(),
            }),
        };
        if let Err(e) = step {
            return Err(refuse(w, e));
        }
    }
}

fn apply_pages(payload: &[u8], sink: &mut dyn MigrationSink) -> Result<(), MigrationError> {
    let (ranges, mut data) = decode_ranges("Pages", payload)?;
    let total: u64 = ranges.iter().map(|r| u64::from(r.pages)).sum();
    if total * PAGE_SIZE as u64 != data.len() as u64 {
        return Err(ProtocolError::Malformed {
            what: "Pages",
            reason: format!("{total} pages announced, {} bytes sent", data.len()),
        }
        .into());
    }
    for r in ranges {
        let len = r.pages as usize * PAGE_SIZE;
        let (now, rest) = data.split_at(len);
        sink.write_memory(r.gpa, now)
            .map_err(|e| MigrationError::Vmm("cannot write guest memory", e))?;
        data = rest;
    }
    Ok(())
}

fn apply_zeros(payload: &[u8], sink: &mut dyn MigrationSink) -> Result<(), MigrationError> {
    let (ranges, rest) = decode_ranges("Zeros", payload)?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed {
            what: "Zeros",
            reason: format!("{} bytes after the ranges", rest.len()),
        }
        .into());
    }
    for r in ranges {
        sink.zero_memory(r.gpa, u64::from(r.pages) * PAGE_SIZE as u64)
            .map_err(|e| MigrationError::Vmm("cannot write guest memory", e))?;
    }
    Ok(())
}
