// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The REST API and ch-remote against a real VMM running the test guest.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{api, ch_remote, text, wait_timeout, wait_until, TempDir};
use serde_json::Value;

struct Vmm {
    child: Child,
}

impl Vmm {
    fn start(socket: &Path, events: &Path) -> Self {
        let child = Command::new(common::vmm_bin())
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .arg("--event-monitor")
            .arg(format!("path={}", events.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cloud-hypervisor");
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "API socket never appeared"
        );
        Vmm { child }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_config(kernel: &Path, cmdline: &str, serial: &Path) -> String {
    serde_json::json!({
        "payload": {"kernel": kernel, "cmdline": cmdline},
        "memory": {"size": 134217728u64},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "serial": {"mode": "File", "file": serial},
        "console": {"mode": "Off"},
    })
    .to_string()
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn state(socket: &Path) -> String {
    let (code, body) = api(socket, "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    json(&body)["state"].as_str().unwrap_or("?").to_string()
}

fn counter(socket: &Path, name: &str) -> u64 {
    let (code, body) = api(socket, "GET", "vm.counters", None);
    assert_eq!(code, 200, "{body}");
    json(&body)["vcpu0"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {body}"))
}

#[test]
fn full_lifecycle_through_the_socket() {
    let dir = TempDir::new("api");
    let socket = dir.path("api.sock");
    let events = dir.path("events.json");
    let serial = dir.path("serial.log");
    let mut vmm = Vmm::start(&socket, &events);

    // ping, before any VM exists
    let out = ch_remote(&socket, &["ping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ping = json(&text(&out.stdout));
    assert!(ping["version"].is_string(), "{ping}");
    assert_eq!(ping["pid"].as_u64(), Some(u64::from(vmm.child.id())));

    // info without a VM: 404 as upstream, and ch-remote says so
    let (code, body) = api(&socket, "GET", "vm.info", None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("VM is not created"), "{body}");
    assert!(!ch_remote(&socket, &["info"]).status.success());

    // malformed JSON and an invalid config are refused, nothing is created
    let (code, body) = api(&socket, "PUT", "vm.create", Some("{not json"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Failed to deserialize JSON"), "{body}");
    let bad = vm_config(common::test_guest(), "workload=idle", &serial)
        .replace("\"boot_vcpus\":1", "\"boot_vcpus\":2");
    let (code, body) = api(&socket, "PUT", "vm.create", Some(&bad));
    assert!((400..=500).contains(&code), "{code} {body}");
    assert!(body.contains("vCPU") || body.contains("vcpu"), "{body}");
    assert_eq!(api(&socket, "GET", "vm.info", None).0, 404);

    // create from a file with ch-remote, then boot
    let cfg = dir.path("vm.json");
    std::fs::write(
        &cfg,
        vm_config(common::test_guest(), "workload=idle", &serial),
    )
    .unwrap();
    let out = ch_remote(&socket, &["create", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state(&socket), "Created");
    let (code, body) = api(
        &socket,
        "PUT",
        "vm.create",
        Some(&std::fs::read_to_string(&cfg).unwrap()),
    );
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("already created"), "{body}");
    let out = ch_remote(&socket, &["boot"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state(&socket), "Running");
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&serial)
            .map(|s| s.contains("test-guest: ready"))
            .unwrap_or(false)
    }));

    // info carries the config in Cloud Hypervisor's shape
    let out = ch_remote(&socket, &["info"]);
    assert!(out.status.success());
    let info = json(&text(&out.stdout));
    assert_eq!(info["config"]["memory"]["size"].as_u64(), Some(134217728));
    assert_eq!(info["config"]["cpus"]["boot_vcpus"].as_u64(), Some(1));
    assert!(info["config"]["payload"]["kernel"].is_string());
    assert_eq!(info["memory_actual_size"].as_u64(), Some(134217728));
    assert!(info["device_tree"].is_object());

    // booting twice is a state error; the VM runs on
    let (code, body) = api(&socket, "PUT", "vm.boot", None);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("already"), "{body}");

    // the timer ticks: counters move
    assert!(wait_until(Duration::from_secs(10), || counter(
        &socket,
        "timer_fires"
    ) > 10));

    // pause: no progress while paused
    let out = ch_remote(&socket, &["pause"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state(&socket), "Paused");
    let a = counter(&socket, "interrupts_injected");
    let e = counter(&socket, "exits");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        counter(&socket, "interrupts_injected"),
        a,
        "ticks while paused"
    );
    assert_eq!(counter(&socket, "exits"), e, "exits while paused");
    let (code, body) = api(&socket, "PUT", "vm.pause", None);
    assert_eq!(code, 500, "pausing a paused VM: {body}");

    // resume: progress again
    let out = ch_remote(&socket, &["resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state(&socket), "Running");
    assert!(wait_until(Duration::from_secs(10), || counter(
        &socket,
        "interrupts_injected"
    ) > a + 5));

    // bad requests do not harm the running guest
    assert_eq!(api(&socket, "GET", "vm.nonsense", None).0, 404);
    let (code, _) = api(&socket, "GET", "vm.boot", None);
    assert!((400..500).contains(&code), "wrong method answered {code}");
    let (code, _) = api(&socket, "PUT", "vm.create", Some("[1,2,"));
    assert_eq!(code, 400);
    let before = counter(&socket, "timer_fires");
    assert!(wait_until(Duration::from_secs(10), || counter(
        &socket,
        "timer_fires"
    ) > before));
    assert_eq!(state(&socket), "Running");

    // shutdown, boot again, delete
    let out = ch_remote(&socket, &["shutdown"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(state(&socket), "Running");
    let out = ch_remote(&socket, &["boot"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state(&socket), "Running");
    let out = ch_remote(&socket, &["delete"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(api(&socket, "GET", "vm.info", None).0, 404);

    // the VMM itself
    let out = ch_remote(&socket, &["shutdown-vmm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = wait_timeout(&mut vmm.child, Duration::from_secs(10)).expect("VMM exits");
    assert!(status.success(), "{status:?}");

    // lifecycle events, in order
    let ev = std::fs::read_to_string(&events).unwrap();
    let mut pos = 0;
    for name in [
        "starting", "booting", "booted", "pausing", "paused", "resuming", "resumed", "shutdown",
        "deleted",
    ] {
        let needle = format!("\"{name}\"");
        match ev[pos..].find(&needle) {
            Some(i) => pos += i + needle.len(),
            None => panic!("event {name} missing or out of order in:\n{ev}"),
        }
    }
}

#[test]
fn guest_poweroff_ends_an_api_started_vmm() {
    let dir = TempDir::new("api-poweroff");
    let socket = dir.path("api.sock");
    let events = dir.path("events.json");
    let serial = dir.path("serial.log");
    let mut vmm = Vmm::start(&socket, &events);
    let cfg = vm_config(common::test_guest(), "workload=compute steps=1000", &serial);
    assert_eq!(api(&socket, "PUT", "vm.create", Some(&cfg)).0, 204);
    assert_eq!(api(&socket, "PUT", "vm.boot", None).0, 204);
    let status = wait_timeout(&mut vmm.child, Duration::from_secs(30)).expect("VMM exits");
    assert!(status.success());
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(log.contains("result=a17ac4d60a6b3f89"), "{log}");
}

#[test]
fn a_socket_path_in_use_is_refused() {
    let dir = TempDir::new("api-inuse");
    let socket = dir.path("api.sock");
    let events = dir.path("events.json");
    let _first = Vmm::start(&socket, &events);
    let out = common::run_vmm(
        &["--api-socket", &format!("path={}", socket.display())],
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("panicked"));
    // the first VMM still answers
    assert_eq!(api(&socket, "GET", "vmm.ping", None).0, 200);
}

/// Sends one request the way upstream's `api_client` crate writes it
/// (request line, `Host`, `Accept`, `Content-Length` only with a body; no
/// `Connection` header, so the connection stays open) and returns the
/// answer's exact bytes, framed by its head and `Content-Length`.
fn raw_exchange(stream: &mut UnixStream, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let mut request =
        format!("{method} /api/v1/{path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n");
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_string();
            let length = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse::<usize>().expect("length"));
            if answer.len() >= end + 4 + length {
                assert_eq!(answer.len(), end + 4 + length, "bytes past the answer");
                return answer;
            }
        }
        let n = stream.read(&mut chunk).expect("read the answer");
        assert!(n > 0, "connection closed mid-answer: {:?}", text(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// What upstream's `api_client` crate makes of an answer, following its
/// parser: the status is everything after "HTTP/1.1 " up to the line's
/// CR, trimmed, as a number (with a reason phrase, "200 OK", that fails
/// with "invalid digit found in string"); the body is read only if a
/// header spelled exactly `Content-Length: ` is present, and is then
/// everything after the blank line.
fn upstream_client_reads(answer: &[u8]) -> Result<(u16, Option<String>), String> {
    let text = text(answer);
    let at = text.find("HTTP/1.1").ok_or("missing protocol")?;
    let line_end = at + text[at..].find('\r').ok_or("no CR")?;
    let status = text[at + "HTTP/1.1 ".len()..line_end]
        .trim()
        .parse::<u16>()
        .map_err(|e| format!("Error parsing HTTP status code: {e}"))?;
    let body_at = text.find("\r\n\r\n").ok_or("no end of head")? + 4;
    let body = match text.find("Content-Length: ") {
        None => None,
        Some(h) => {
            let value =
                &text[h + "Content-Length: ".len()..h + text[h..].find('\r').ok_or("no CR")?];
            let length: usize = value.trim().parse().map_err(|e| format!("{e}"))?;
            assert_eq!(text.len(), body_at + length, "Content-Length is the body's");
            Some(text[body_at..].to_string())
        }
    };
    Ok((status, body))
}

/// One exchange: the answer must be `expected`, byte for byte, and
/// upstream's client must read its status and body from it.
fn check(s: &mut UnixStream, method: &str, path: &str, body: Option<&str>, expected: &str) {
    let answer = raw_exchange(s, method, path, body);
    assert_eq!(text(&answer), expected, "{method} {path}");
    let (status, body) = upstream_client_reads(&answer)
        .unwrap_or_else(|e| panic!("upstream's client fails on {method} {path}: {e}"));
    assert_eq!(status.to_string(), expected[9..12], "{method} {path}");
    // A 204 has no body for it (ch-remote prints nothing); every other
    // reply has one, possibly empty.
    let expected_body = expected.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    if status == 204 {
        assert_eq!(body, None, "{method} {path}");
    } else {
        assert_eq!(body, expected_body, "{method} {path}");
    }
}

/// Every kind of reply, byte for byte in upstream's form (micro-http as
/// Cloud Hypervisor uses it): `HTTP/1.1 <code> ` with no reason phrase,
/// `Server: Cloud Hypervisor API`, `Connection: keep-alive`, then
/// `Content-Type: application/json` and `Content-Length` on every reply
/// but 204 (and 100), then the body: compact JSON, error bodies a JSON
/// array from the outermost error to its cause. Upstream never answers 405
/// (a wrong method is a 400), and neither do we.
#[test]
fn replies_are_byte_for_byte_in_upstreams_form() {
    // The mirror of upstream's parser reproduces the reported failure on a
    // status line with a reason phrase (our form before).
    let old = b"HTTP/1.1 204 No Content\r\nServer: Cloud Hypervisor API\r\n\r\n";
    assert_eq!(
        upstream_client_reads(old),
        Err("Error parsing HTTP status code: invalid digit found in string".to_string())
    );

    let dir = TempDir::new("api-wire");
    let socket = dir.path("api.sock");
    let events = dir.path("events.json");
    let serial = dir.path("serial.log");
    let mut vmm = Vmm::start(&socket, &events);
    let pid = vmm.child.id();
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();

    const HEAD: &str = "Server: Cloud Hypervisor API\r\nConnection: keep-alive\r\n";
    let json_reply = |code: u16, body: &str| {
        format!(
            "HTTP/1.1 {code} \r\n{HEAD}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    // 200 with a body: the fields in upstream's order.
    let version = env!("CARGO_PKG_VERSION");
    check(
        &mut s,
        "GET",
        "vmm.ping",
        None,
        &json_reply(
            200,
            &format!(
                r#"{{"build_version":"v{version}","version":"{version}","pid":{pid},"features":["kvm"]}}"#
            ),
        ),
    );
    // 404: no VM, and an unknown path.
    check(
        &mut s,
        "GET",
        "vm.info",
        None,
        &json_reply(
            404,
            r#"["Error from API","The VM info is not available","VM is not created"]"#,
        ),
    );
    check(
        &mut s,
        "GET",
        "vm.nonsense",
        None,
        &json_reply(404, r#"["Not Found"]"#),
    );
    // 400: malformed JSON; vm.create without a body (no body, length 0);
    // a wrong method (a body from the endpoints with their own handler, none
    // from upstream's generic action handler).
    check(
        &mut s,
        "PUT",
        "vm.create",
        Some("{bogus"),
        &json_reply(
            400,
            r#"["Failed to deserialize JSON","key must be a string at line 1 column 2"]"#,
        ),
    );
    check(&mut s, "PUT", "vm.create", None, &json_reply(400, ""));
    check(
        &mut s,
        "PUT",
        "vmm.ping",
        None,
        &json_reply(400, r#"["Bad Request"]"#),
    );
    check(&mut s, "PATCH", "vm.boot", None, &json_reply(400, ""));
    // 501: an upstream endpoint we do not have yet.
    check(
        &mut s,
        "PUT",
        "vm.coredump",
        Some("{}"),
        &json_reply(
            501,
            r#"["Not Implemented","vm.coredump is not supported yet"]"#,
        ),
    );
    // 204: no Content-Type, no Content-Length, no body.
    let no_content = format!("HTTP/1.1 204 \r\n{HEAD}\r\n");
    let cfg = vm_config(common::test_guest(), "workload=idle", &serial);
    check(&mut s, "PUT", "vm.create", Some(&cfg), &no_content);
    check(&mut s, "PUT", "vm.boot", None, &no_content);
    check(&mut s, "PUT", "vm.pause", None, &no_content);
    // 500: an action in the wrong state.
    check(
        &mut s,
        "PUT",
        "vm.boot",
        None,
        &json_reply(
            500,
            r#"["Error from API","The VM could not boot","VM is already created"]"#,
        ),
    );
    check(&mut s, "PUT", "vm.resume", None, &no_content);
    // vm.info: 200, compact JSON in upstream's top-level order.
    let info = raw_exchange(&mut s, "GET", "vm.info", None);
    let info = text(&info);
    let body = info.split_once("\r\n\r\n").expect("head").1;
    assert!(
        info.starts_with(&format!(
            "HTTP/1.1 200 \r\n{HEAD}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )),
        "{info}"
    );
    assert!(body.starts_with(r#"{"config":{"#), "{body}");
    assert!(
        body.contains(r#"},"state":"Running","memory_actual_size":134217728,"device_tree":{"#),
        "{body}"
    );
    // vmm.shutdown: 200 with an empty body (Content-Length: 0), then exit.
    check(&mut s, "PUT", "vmm.shutdown", None, &json_reply(200, ""));
    let status = wait_timeout(&mut vmm.child, Duration::from_secs(10)).expect("VMM exits");
    assert!(status.success(), "{status:?}");
}
