// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Structured fuzzing of the VM configuration as it comes in: the
//! command line (`parse_args`: `--disk path=..,readonly=..`, `--net`,
//! `--memory`, `--fault-tolerance`, ...) and the JSON body of `vm.create`
//! (`VmConfig` then `validate`). Properties: no panic, no hang, every
//! refusal a one-line message that says something; valid command lines
//! give the configuration they say, and valid configurations survive a
//! trip through JSON.

#[path = "../../ft-backend/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::path::PathBuf;

use fuzz_support::{config, within};
use proptest::prelude::*;
use serde_json::{json, Value};
use vmm::config::{parse_args, CliCommand, VmConfig};

/// A valid command line, and what its configuration must hold.
#[derive(Debug, Clone)]
struct Valid {
    args: Vec<String>,
    memory_mib: u64,
    cmdline: String,
    disks: Vec<(String, bool, Option<String>)>,
}

fn path() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9_.-]{1,12}(/[a-zA-Z0-9_.-]{1,12}){0,3}"
}

fn valid() -> impl Strategy<Value = Valid> {
    (
        path(),
        2u64..4096,
        "[ -~&&[^\"]]{0,200}",
        proptest::collection::vec(
            (
                path(),
                proptest::option::of(any::<bool>()),
                proptest::option::of("[a-z][a-z0-9_]{0,8}"),
            ),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(kernel, memory_mib, cmdline, disks, inline)| {
            let mut args = vec!["--kernel".to_string(), kernel];
            if inline {
                args.push(format!("--cmdline={cmdline}"));
            } else {
                args.extend(["--cmdline".to_string(), cmdline.clone()]);
            }
            args.extend(["--memory".to_string(), format!("size={memory_mib}M")]);
            // Disk ids must be unique.
            let mut seen = std::collections::HashSet::new();
            let disks: Vec<_> = disks
                .into_iter()
                .filter(|(_, _, id)| id.as_ref().is_none_or(|id| seen.insert(id.clone())))
                .collect();
            if !disks.is_empty() {
                args.push("--disk".into());
                for (p, ro, id) in &disks {
                    let mut v = format!("path={p}");
                    if let Some(ro) = ro {
                        v.push_str(if *ro { ",readonly=on" } else { ",readonly=off" });
                    }
                    if let Some(id) = id {
                        v.push_str(&format!(",id={id}"));
                    }
                    args.push(v);
                }
            }
            Valid {
                args,
                memory_mib,
                cmdline,
                disks: disks
                    .into_iter()
                    .map(|(p, ro, id)| (p, ro.unwrap_or(false), id))
                    .collect(),
            }
        })
}

/// Pieces command lines are made of, valid or not.
fn token() -> impl Strategy<Value = String> {
    let flag = prop_oneof![
        Just("--kernel"),
        Just("--cmdline"),
        Just("--initramfs"),
        Just("--memory"),
        Just("--cpus"),
        Just("--serial"),
        Just("--console"),
        Just("--disk"),
        Just("--net"),
        Just("--api-socket"),
        Just("--event-monitor"),
        Just("--restore"),
        Just("--fault-tolerance"),
        Just("--rng"),
        Just("--seccomp"),
        Just("--log-file"),
        Just("-v"),
        Just("--help"),
        Just("--version"),
        Just("--"),
        Just("-"),
        Just("--bogus"),
    ];
    let key = prop_oneof![
        Just("path"),
        Just("readonly"),
        Just("id"),
        Just("size"),
        Just("boot"),
        Just("tap"),
        Just("mac"),
        Just("ip"),
        Just("mask"),
        Just("mode"),
        Just("log"),
        Just("peer"),
        Just("listen"),
        Just("key"),
        Just("tiebreaker"),
        Just("max_delay_us"),
        Just("timeout_ms"),
        Just("source_url"),
        Just("resume"),
        Just("file"),
        Just("direct"),
        Just("num_queues"),
        Just("disks"),
        Just("debug_from"),
        Just("max_lag_ms"),
        Just(""),
    ];
    let value = prop_oneof![
        Just("on".to_string()),
        Just("off".to_string()),
        Just("true".to_string()),
        Just("record".to_string()),
        Just("primary".to_string()),
        Just("backup".to_string()),
        Just("tcp:127.0.0.1:7400".to_string()),
        Just("file:///tmp/x".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("1G".to_string()),
        Just("4294967296T".to_string()),
        Just("52:54:00:12:34:56".to_string()),
        Just("[a,b]".to_string()),
        Just("\"x,y\"".to_string()),
        Just("\"".to_string()),
        Just("[".to_string()),
        "\\PC{0,12}",
    ];
    prop_oneof![
        flag.prop_map(str::to_string),
        proptest::collection::vec((key, proptest::option::of(value)), 1..5).prop_map(|kv| {
            kv.into_iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        }),
        "\\PC{0,20}",
    ]
}

fn check_message(msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.trim().is_empty(), "an empty error message");
    Ok(())
}

/// Values of any JSON type, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::String),
        Just(json!("Off")),
        Just(json!("File")),
        Just(json!("Tty")),
        Just(json!("/tmp/k")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid `vm.create` body, as `tests/api.rs` sends it.
fn base_config() -> Value {
    json!({
        "payload": {"kernel": "/k", "cmdline": "console=ttyS0"},
        "memory": {"size": 134217728u64},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "serial": {"mode": "File", "file": "/tmp/serial"},
        "console": {"mode": "Off"},
        "disks": [{"path": "/d", "readonly": true}],
        "net": [{"tap": "tap0", "mac": "52:54:00:12:34:56"}],
    })
}

/// Replaces the value at a path of object keys (creating objects on the
/// way) with `v`.
fn set_at(root: &mut Value, path: &[String], v: Value) {
    let mut cur = root;
    for (i, k) in path.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = cur.as_object_mut().expect("an object");
        if i + 1 == path.len() {
            map.insert(k.clone(), v);
            return;
        }
        cur = map.entry(k.clone()).or_insert_with(|| json!({}));
    }
}

fn config_path() -> impl Strategy<Value = Vec<String>> {
    let top = prop_oneof![
        Just("payload"),
        Just("memory"),
        Just("cpus"),
        Just("serial"),
        Just("console"),
        Just("disks"),
        Just("net"),
        Just("fault_tolerance"),
        Just("rng"),
        Just("balloon"),
        Just("unknown_field"),
    ];
    let second = prop_oneof![
        Just("kernel"),
        Just("cmdline"),
        Just("initramfs"),
        Just("size"),
        Just("boot_vcpus"),
        Just("max_vcpus"),
        Just("mode"),
        Just("file"),
        Just("path"),
        Just("readonly"),
        Just("mac"),
        Just("tap"),
        Just("log"),
        Just("peer"),
        Just("key"),
        Just("src"),
        Just("hotplug_size"),
        Just("bogus"),
    ];
    (top, proptest::option::of(second)).prop_map(|(a, b)| {
        let mut v = vec![a.to_string()];
        if let Some(b) = b {
            v.push(b.to_string());
        }
        v
    })
}

/// Parses and validates a `vm.create` body as the API does.
fn create(body: &[u8]) -> Result<VmConfig, String> {
    let config: VmConfig = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

proptest! {
    #![proptest_config(config())]

    /// A valid command line gives the configuration it says.
    #[test]
    fn valid_command_lines_parse(v in valid()) {
        let args = v.args.clone();
        let parsed = within("parsing a command line", move || parse_args(args).map_err(|e| e.to_string()));
        let cmd = parsed.map_err(|e| TestCaseError::fail(format!("{:?}: {e}", v.args)))?;
        let CliCommand::Run(run) = cmd else {
            return Err(TestCaseError::fail("not a run"));
        };
        let c = run.vm_config.ok_or_else(|| TestCaseError::fail("no VM"))?;
        prop_assert_eq!(c.memory.size, v.memory_mib << 20);
        let payload = c.payload.clone().ok_or_else(|| TestCaseError::fail("no payload"))?;
        prop_assert_eq!(payload.cmdline.as_deref().unwrap_or(""), v.cmdline.as_str());
        let disks = c.disks.clone().unwrap_or_default();
        prop_assert_eq!(disks.len(), v.disks.len());
        for (d, (p, ro, id)) in disks.iter().zip(&v.disks) {
            prop_assert_eq!(d.path.as_ref(), Some(&PathBuf::from(p)));
            prop_assert_eq!(d.readonly, *ro);
            if let Some(id) = id {
                prop_assert_eq!(d.id.as_ref(), Some(id));
            }
        }
        // And the configuration survives JSON, as vm.info shows it and
        // vm.create takes it.
        let text = serde_json::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = create(text.as_bytes()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, c);
    }

    /// Any command line made of flags and option lists, valid or not:
    /// a configuration or a clear error.
    #[test]
    fn any_command_line_is_answered(tokens in proptest::collection::vec(token(), 0..10)) {
        let r = within("parsing a command line", move || parse_args(tokens).map(|_| ()).map_err(|e| e.to_string()));
        if let Err(msg) = r {
            check_message(&msg)?;
        }
    }

    /// A valid `vm.create` body with one field replaced by any JSON value:
    /// accepted or refused with a message, never a panic.
    #[test]
    fn mutated_vm_configs_are_answered(edits in proptest::collection::vec((config_path(), json_value()), 1..4)) {
        let mut v = base_config();
        for (path, value) in edits {
            set_at(&mut v, &path, value);
        }
        let body = serde_json::to_vec(&v).expect("JSON");
        let r = within("parsing a vm.create body", move || create(&body).map(|_| ()));
        if let Err(msg) = r {
            check_message(&msg)?;
        }
    }

    /// Any bytes as a `vm.create` body, and valid bodies cut or with a
    /// byte changed.
    #[test]
    fn vm_config_bytes_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..300), at in any::<usize>(), value in any::<u8>(), cut in any::<bool>()) {
        let r = within("parsing random bytes as vm.create", move || create(&bytes).map(|_| ()));
        if let Err(msg) = r {
            check_message(&msg)?;
        }
        let mut body = serde_json::to_vec(&base_config()).expect("JSON");
        let i = at % body.len();
        if cut { body.truncate(i) } else { body[i] = value }
        let r = within("parsing a damaged vm.create", move || create(&body).map(|_| ()));
        if let Err(msg) = r {
            check_message(&msg)?;
        }
    }
}

/// The base body is valid: the mutations start from an accepted config.
#[test]
fn base_config_is_valid() {
    let body = serde_json::to_vec(&base_config()).expect("JSON");
    create(&body).expect("the base vm.create body");
}
