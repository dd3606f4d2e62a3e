// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Structured fuzzing of the REST server's request parser, through the
//! socket of a real VMM (`cloud-hypervisor --api-socket` with no VM):
//! raw bytes made of request lines, headers and bodies, valid and not
//! (methods, paths, versions, bare LF line ends, Content-Length lies and
//! duplicates, `Transfer-Encoding: chunked`, huge heads and bodies,
//! pipelined requests, bytes flipped or cut). Properties: every
//! connection gets well-formed HTTP answers or is closed, within a bound;
//! the VMM never dies and still answers `vmm.ping` after every case.

mod common;
#[path = "../ft-backend/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{api, wait_until, TempDir};
use fuzz_support::{config, within};
use proptest::prelude::*;

/// The VMM every case talks to (one per test binary), killed at exit.
struct Vmm {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` so that it is killed when this test process exits: a
/// static is never dropped, so [`Vmm`]'s `Drop` does not run for the shared
/// VMM, which outlived every CI run until then. `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked exits, so the fork happens on a thread
/// that parks until the process ends.
fn spawn_for_the_whole_run(command: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    let die_with_parent = || {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
        // touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one async-signal-safe system call (prctl).
    unsafe {
        command.pre_exec(die_with_parent);
    }
    let command = std::mem::replace(command, Command::new("true"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut command = command;
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .expect("the spawning thread answers")
        .expect("spawn cloud-hypervisor")
}

fn vmm() -> &'static std::sync::Mutex<Vmm> {
    static VMM: OnceLock<std::sync::Mutex<Vmm>> = OnceLock::new();
    VMM.get_or_init(|| {
        let dir = TempDir::new("fuzz-api");
        let socket = dir.path("api.sock");
        let child = spawn_for_the_whole_run(
            Command::new(common::vmm_bin())
                .arg("--api-socket")
                .arg(format!("path={}", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "the API socket never appeared"
        );
        std::sync::Mutex::new(Vmm {
            child,
            socket,
            _dir: dir,
        })
    })
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("GET".to_string()),
        4 => Just("PUT".to_string()),
        1 => Just("POST".to_string()),
        1 => Just("DELETE".to_string()),
        1 => Just("get".to_string()),
        1 => "[A-Z]{0,12}",
        1 => "\\PC{0,8}",
    ]
}

/// Endpoint names; `vmm.shutdown` is left out (it would end the VMM the
/// cases share, on purpose).
fn path() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("vmm.ping"),
        Just("vm.create"),
        Just("vm.boot"),
        Just("vm.info"),
        Just("vm.counters"),
        Just("vm.pause"),
        Just("vm.resume"),
        Just("vm.shutdown"),
        Just("vm.reboot"),
        Just("vm.delete"),
        Just("vm.snapshot"),
        Just("vm.restore"),
        Just("vm.add-disk"),
        Just("vm.send-migration"),
        Just("vm.nope"),
        Just(""),
    ];
    prop_oneof![
        8 => name.clone().prop_map(|n| format!("/api/v1/{n}")),
        1 => name.prop_map(|n| format!("/api/v1/{n}?x=1&y")),
        1 => Just("/".to_string()),
        1 => Just("*".to_string()),
        1 => "/[ -~]{0,40}",
        1 => (1usize..20000).prop_map(|n| format!("/api/v1/{}", "a".repeat(n))),
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("HTTP/1.1".to_string()),
        2 => Just("HTTP/1.0".to_string()),
        1 => Just("HTTP/2".to_string()),
        1 => Just("HTTP/1.1 extra".to_string()),
        1 => Just(String::new()),
        1 => "[ -~]{0,10}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        2 => Just(br#"{"destination_url":"file:///nonexistent/fuzz"}"#.to_vec()),
        2 => Just(br#"{"source_url":"file:///nonexistent/fuzz"}"#.to_vec()),
        2 => Just(br#"{"payload":{"kernel":"/nonexistent/fuzz-kernel"},"memory":{"size":134217728}}"#.to_vec()),
        2 => "\\PC{0,200}".prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..600),
        1 => (900_000usize..1_200_000).prop_map(|n| {
            let mut v = b"{\"x\":\"".to_vec();
            v.resize(n, b'a');
            v.extend_from_slice(b"\"}");
            v
        }),
    ]
}

/// How the Content-Length header tells the body's length.
#[derive(Debug, Clone)]
enum Length {
    True,
    None,
    Lie(i64),
    Text(String),
    Twice(u64, u64),
    Huge,
}

fn length() -> impl Strategy<Value = Length> {
    prop_oneof![
        8 => Just(Length::True),
        2 => Just(Length::None),
        2 => (-5i64..5).prop_map(Length::Lie),
        1 => "[ -~]{0,12}".prop_map(Length::Text),
        1 => (0u64..100, 0u64..100).prop_map(|(a, b)| Length::Twice(a, b)),
        1 => Just(Length::Huge),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just(("Host".to_string(), "localhost".to_string())),
        Just(("Accept".to_string(), "*/*".to_string())),
        Just(("Content-Type".to_string(), "application/json".to_string())),
        Just(("Connection".to_string(), "close".to_string())),
        Just(("Connection".to_string(), "keep-alive".to_string())),
        Just(("Transfer-Encoding".to_string(), "chunked".to_string())),
        Just(("Expect".to_string(), "100-continue".to_string())),
        ("[A-Za-z-]{1,16}", "[ -~]{0,40}"),
        (1usize..20000).prop_map(|n| ("X-Long".to_string(), "b".repeat(n))),
        Just(("".to_string(), "empty name".to_string())),
        Just(("Bad Header".to_string(), "x".to_string())),
    ]
}

#[derive(Debug, Clone)]
struct Raw {
    method: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
    length: Length,
    body: Vec<u8>,
    bare_lf: bool,
}

fn raw() -> impl Strategy<Value = Raw> {
    (
        method(),
        path(),
        version(),
        proptest::collection::vec(header(), 0..6),
        length(),
        body(),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(method, path, version, headers, length, body, bare_lf)| Raw {
                method,
                path,
                version,
                headers,
                length,
                body,
                bare_lf,
            },
        )
}

fn encode(r: &Raw) -> Vec<u8> {
    let eol = if r.bare_lf { "\n" } else { "\r\n" };
    let mut head = format!("{} {} {}{eol}", r.method, r.path, r.version);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}{eol}"));
    }
    match &r.length {
        Length::True => head.push_str(&format!("Content-Length: {}{eol}", r.body.len())),
        Length::None => {}
        Length::Lie(d) => head.push_str(&format!(
            "Content-Length: {}{eol}",
            (r.body.len() as i64 + d).max(0)
        )),
        Length::Text(t) => head.push_str(&format!("Content-Length: {t}{eol}")),
        Length::Twice(a, b) => {
            head.push_str(&format!("Content-Length: {a}{eol}Content-Length: {b}{eol}"))
        }
        Length::Huge => head.push_str(&format!("Content-Length: 99999999999999999999{eol}")),
    }
    head.push_str(eol);
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// Damage to the encoded bytes.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        2 => (any::<usize>(), 0u8..8).prop_map(|(a, b)| Damage::Flip(a, b)),
        2 => any::<usize>().prop_map(Damage::Cut),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| Damage::Insert(a, b)),
    ]
}

fn apply(mut b: Vec<u8>, d: &Damage) -> Vec<u8> {
    if b.is_empty() {
        return b;
    }
    match d {
        Damage::None => {}
        Damage::Flip(at, bit) => {
            let i = at % b.len();
            b[i] ^= 1 << bit;
        }
        Damage::Cut(at) => b.truncate(at % b.len()),
        Damage::Insert(at, bytes) => {
            let i = at % b.len();
            b.splice(i..i, bytes.iter().copied());
        }
    }
    b
}

/// Sends `bytes` on a new connection, closes the sending side, and reads
/// everything the server answers until it closes.
fn exchange(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(25))).ok();
    s.set_write_timeout(Some(Duration::from_secs(25))).ok();
    // The server may answer and close before it read everything (a head
    // too large): a failed write is fine.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        assert!(
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
            "the server neither answered nor closed within 25 s: hung"
        );
    }
    out
}

/// Checks that `bytes` is a sequence of well-formed responses: a status
/// line, headers, and as many body bytes as Content-Length says (JSON
/// when there are any). Returns the statuses.
fn check_responses(mut bytes: &[u8]) -> Result<Vec<u16>, String> {
    let mut statuses = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| {
                format!(
                    "a response without the end of its head: {:?}",
                    String::from_utf8_lossy(bytes)
                )
            })?;
        let head = std::str::from_utf8(&bytes[..end])
            .map_err(|_| "a head that is not UTF-8".to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
        let mut length = 0usize;
        for line in lines {
            let (k, v) = line
                .split_once(": ")
                .ok_or_else(|| format!("a bad header line {line:?}"))?;
            if k.eq_ignore_ascii_case("content-length") {
                length = v
                    .parse()
                    .map_err(|_| format!("a bad Content-Length {v:?}"))?;
            }
        }
        let rest = &bytes[end + 4..];
        if rest.len() < length {
            return Err(format!(
                "a body shorter ({}) than its Content-Length ({length})",
                rest.len()
            ));
        }
        if length > 0 {
            serde_json::from_slice::<serde_json::Value>(&rest[..length]).map_err(|e| {
                format!(
                    "a body that is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&rest[..length])
                )
            })?;
        }
        statuses.push(status);
        bytes = &rest[length..];
    }
    Ok(statuses)
}

proptest! {
    #![proptest_config(config())]

    /// One or two requests (pipelined), possibly damaged.
    #[test]
    fn raw_requests_get_well_formed_answers(first in raw(), second in proptest::option::of(raw()), damage in damage()) {
        let vmm = vmm().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut bytes = encode(&first);
        if let Some(second) = &second {
            bytes.extend_from_slice(&encode(second));
        }
        let bytes = apply(bytes, &damage);
        let socket = vmm.socket.clone();
        let answer = within("a request to the API", move || exchange(&socket, &bytes));
        let statuses = check_responses(&answer).map_err(TestCaseError::fail)?;
        for (i, s) in statuses.iter().enumerate() {
            // `Expect: 100-continue` may get an interim 100 (Continue),
            // which a final answer must follow.
            let interim = *s == 100 && statuses.get(i + 1).is_some_and(|n| *n >= 200);
            prop_assert!(
                interim || matches!(s, 200 | 204 | 400 | 404 | 405 | 413 | 431 | 500 | 501 | 503),
                "unexpected status {} in {:?}", s, statuses
            );
        }
        // The VMM is alive and answers.
        let (status, body) = api(&vmm.socket, "GET", "vmm.ping", None);
        prop_assert_eq!(status, 200, "vmm.ping after the case: {}", body);
    }
}

/// Regression cases kept from the fuzzing (and the classic ones).
#[test]
fn known_hostile_requests() {
    let vmm = vmm()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cases: &[&[u8]] = &[
        b"",
        b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
        b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
        b"PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
        b"GET /api/v1/vmm.ping HTTP/1.1\nHost: x\n\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\n\xff\xfe: \x00\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ];
    for case in cases {
        let answer = exchange(&vmm.socket, case);
        check_responses(&answer)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(case)));
        let (status, _) = api(&vmm.socket, "GET", "vmm.ping", None);
        assert_eq!(status, 200, "after {:?}", String::from_utf8_lossy(case));
    }
}
