// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The published OpenAPI description (`docs/openapi/cloud-hypervisor.yaml`)
//! checked against a real VMM running the test guest: every path in the
//! description answers (a path marked `x-route-pending` may still be
//! missing), every endpoint the server routes is described, every status
//! the server answers is one the description lists, and every JSON reply
//! validates against its schema (a small validator for the subset of JSON
//! Schema the description uses: `$ref`, `allOf`, `nullable`, `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`,
//! `minimum`).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_timeout, wait_until, TempDir};
use serde_json::{json, Value};

const SPEC: &str = "docs/openapi/cloud-hypervisor.yaml";

/// Every endpoint name upstream Cloud Hypervisor or this project knows,
/// described or not: the server must answer `["Not Found"]` for those the
/// description leaves out.
const KNOWN_NAMES: &[&str] = &[
    "vmm.ping",
    "vmm.shutdown",
    "vm.create",
    "vm.boot",
    "vm.delete",
    "vm.info",
    "vm.counters",
    "vm.pause",
    "vm.resume",
    "vm.shutdown",
    "vm.reboot",
    "vm.snapshot",
    "vm.restore",
    "vm.power-button",
    "vm.nmi",
    "vm.resize",
    "vm.resize-disk",
    "vm.resize-zone",
    "vm.add-device",
    "vm.add-disk",
    "vm.add-fs",
    "vm.add-pmem",
    "vm.add-net",
    "vm.add-vdpa",
    "vm.add-vsock",
    "vm.add-user-device",
    "vm.add-generic-vhost-user",
    "vm.remove-device",
    "vm.balloon-stats",
    "vm.coredump",
    "vm.send-migration",
    "vm.receive-migration",
    "vm.ft-add-backup",
    "vm.ft-receive-backup",
    "vmm.info",
    "vm.status",
    "vm.migrate",
];

fn spec() -> Value {
    let path = common::repo_root().join(SPEC);
    let text = std::fs::read_to_string(&path).expect("the OpenAPI description");
    serde_json::from_str(&text).expect("the description parses (JSON is YAML)")
}

/// Checks `value` against `schema`; returns what does not match.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &spec["components"]["schemas"][name];
        assert!(!target.is_null(), "unresolved $ref {r}");
        return validate(spec, target, value, at, errors);
    }
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(spec, part, value, at, errors);
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("the validator does not know type {other}"),
        };
        if !ok {
            errors.push(format!("{at}: expected {t}, got {value}"));
            return;
        }
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            errors.push(format!("{at}: {value} is not one of {choices:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap_or_default();
            if !obj.contains_key(req) {
                errors.push(format!("{at}: the required {req} is missing"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(spec, s, v, &format!("{at}.{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: {k} is not in the schema"))
                    }
                    Some(s @ Value::Object(_)) => {
                        validate(spec, s, v, &format!("{at}.{k}"), errors)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(spec, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

/// One raw request; returns the status and the body.
fn request(socket: &Path, method: &str, name: &str, body: Option<&str>) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} /api/v1/{name} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send a request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

struct Checker {
    spec: Value,
    socket: std::path::PathBuf,
    checked: BTreeSet<(String, String, u16)>,
}

impl Checker {
    fn operation(&self, name: &str, method: &str) -> &Value {
        let op = &self.spec["paths"][format!("/{name}")][method];
        assert!(!op.is_null(), "{method} /{name} is not in the description");
        op
    }

    /// Sends the request and checks the answer against the description:
    /// a status it lists, and a body that validates. Returns them.
    fn call(&mut self, method: &str, name: &str, body: Option<&str>) -> (u16, String) {
        let (status, text) = request(&self.socket, &method.to_uppercase(), name, body);
        let op = self.operation(name, method).clone();
        let pending = op.get("x-route-pending").and_then(Value::as_bool) == Some(true);
        let missing = status == 404 && text.trim() == r#"["Not Found"]"#;
        let not_yet = status == 501 && text.contains("Not Implemented");
        if missing || (pending && not_yet) {
            assert!(
                pending,
                "{method} /{name}: described, but the server has no such route"
            );
            eprintln!("{method} /{name}: marked x-route-pending, answered {status} {text}");
            return (status, text);
        }
        let resp = &op["responses"][status.to_string()];
        assert!(
            !resp.is_null(),
            "{method} /{name} answered {status}, which the description does not list: {text}"
        );
        match resp["content"]["application/json"].get("schema") {
            // Upstream answers some bad requests with no body at all.
            Some(_) if status == 400 && text.is_empty() => {}
            Some(schema) => {
                let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("{method} /{name} {status}: not JSON ({e}): {text:?}")
                });
                let mut errors = Vec::new();
                validate(&self.spec, schema, &value, "$", &mut errors);
                assert!(
                    errors.is_empty(),
                    "{method} /{name} {status}: {errors:#?}\n{value}"
                );
            }
            None => assert!(
                text.is_empty(),
                "{method} /{name} {status}: an undescribed body {text:?}"
            ),
        }
        self.checked
            .insert((method.to_string(), name.to_string(), status));
        (status, text)
    }
}

struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_server_matches_its_openapi_description() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.0.3");
    let dir = TempDir::new("openapi");
    let socket = dir.path("api.sock");
    let mut vmm = Vmm(Command::new(common::vmm_bin())
        .arg("--api-socket")
        .arg(format!("path={}", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cloud-hypervisor"));
    assert!(
        wait_until(Duration::from_secs(10), || socket.exists()),
        "no API socket"
    );
    let mut c = Checker {
        spec: spec.clone(),
        socket: socket.clone(),
        checked: BTreeSet::new(),
    };

    // Without a VM.
    assert_eq!(c.call("get", "vmm.ping", None).0, 200);
    assert_eq!(c.call("get", "vm.info", None).0, 404);
    assert_eq!(c.call("get", "vm.counters", None).0, 404);
    assert_eq!(c.call("put", "vm.boot", None).0, 404);
    assert_eq!(c.call("put", "vm.create", Some("{\"memory\": 5")).0, 400);

    // A VM's whole life.
    let config = json!({
        "payload": {"kernel": common::test_guest(), "cmdline": "workload=idle"},
        "memory": {"size": 134217728u64},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "serial": {"mode": "File", "file": dir.path("serial.txt")},
        "console": {"mode": "Off"},
    })
    .to_string();
    assert_eq!(c.call("put", "vm.create", Some(&config)).0, 204);
    let (_, info) = c.call("get", "vm.info", None);
    assert!(info.contains("\"Created\""), "{info}");
    assert_eq!(c.call("put", "vm.boot", None).0, 204);
    let (_, info) = c.call("get", "vm.info", None);
    assert!(info.contains("\"Running\""), "{info}");
    assert_eq!(c.call("get", "vm.counters", None).0, 200);
    assert_eq!(c.call("put", "vm.pause", None).0, 204);
    assert_eq!(
        c.call("put", "vm.snapshot", Some(r#"{"destination_url": 5}"#))
            .0,
        400
    );
    assert_eq!(c.call("put", "vm.resume", None).0, 204);
    assert_eq!(
        c.call(
            "put",
            "vm.restore",
            Some(r#"{"source_url":"file:///nonexistent"}"#)
        )
        .0,
        500
    );

    // Every described operation answers as described. Those that would
    // end the VM or the VMM come last, in order; the others are sent a
    // body that does not deserialize (an answer all the same).
    let last = ["vm.reboot", "vm.shutdown", "vm.delete", "vmm.shutdown"];
    let paths = spec["paths"].as_object().expect("paths");
    for (path, ops) in paths {
        let name = path.trim_start_matches('/');
        if last.contains(&name) {
            continue;
        }
        for method in ops.as_object().expect("operations").keys() {
            let body = ops[method].get("requestBody").map(|_| "{\"not\": ");
            c.call(method, name, body);
        }
    }
    assert_eq!(c.call("put", "vm.reboot", None).0, 204);
    assert_eq!(c.call("put", "vm.shutdown", None).0, 204);
    assert_eq!(c.call("put", "vm.delete", None).0, 204);

    // Every endpoint the server routes is described.
    let described: BTreeSet<&str> = paths.keys().map(|p| p.trim_start_matches('/')).collect();
    for name in vmm::api::http::UNIMPLEMENTED_ENDPOINTS {
        assert!(
            described.contains(name),
            "{name} is routed (501) but not described"
        );
    }
    for name in KNOWN_NAMES.iter().filter(|n| !described.contains(*n)) {
        for method in ["GET", "PUT"] {
            let (status, body) = request(&socket, method, name, None);
            assert!(
                status == 404 && body.trim() == r#"["Not Found"]"#,
                "{method} {name} is routed ({status} {body}) but not described"
            );
        }
    }

    assert_eq!(c.call("put", "vmm.shutdown", None).0, 200);
    let status = wait_timeout(&mut vmm.0, Duration::from_secs(20)).expect("the VMM exits");
    assert!(status.success(), "{status:?}");
    eprintln!("checked {} (method, path, status) answers", c.checked.len());
}
