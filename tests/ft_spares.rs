// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `spares=`: a backup that goes live after a failover restores its own
//! redundancy. Real VMMs in network namespaces, the KV test guest under
//! a verified `ft-kv-client` stream: a plain KV guest on host A is
//! protected by FT VMotion to host B, whose backup has
//! `spares=<nobody>;<a waiting VMM>`; a spare VMM waits in
//! `ft-receive-backup` on host A beside the primary (its own port; the
//! guest's tap of host A is opened only by a VMM that goes live, so the
//! spare takes it once the primary is dead). kill -9 of the primary: the
//! backup goes live, fails on the first spare (an event says so), seeds
//! the waiting one by itself and is protected again; kill -9 of that
//! ex-backup: the spare goes live. One stream runs across both failovers
//! and the seed between them: no acknowledged SET lost, no reset.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ftpair::{ft_events, kv_setup, write_key, CHANNEL_PORT};
use common::pair::{GuestVmm, Host, PairNet, LOG_A, LOG_B};
use common::vmotion::{
    add_backup, begin, file_tiebreaker, finish, info, receive_backup_with, start_empty,
    start_plain, wait_child_within,
};
use common::{api, test_guest, text, vmm_bin, wait_until, TempDir};
use ft_kv_client::{run_stream, StreamConfig, StreamControl};

/// `ch-remote ft-receive-backup` on VMM `name` in the background (it
/// answers once the backup runs), with the file tiebreaker and `extra`
/// options.
fn receive_backup(
    dir: &TempDir,
    name: &str,
    listen: &str,
    key: &Path,
    tap: &str,
    extra: &str,
) -> Child {
    receive_backup_with(dir, name, listen, key, tap, &file_tiebreaker(dir), extra)
}

/// An empty VMM `name` on host A waiting in `ft-receive-backup` on host
/// A's logging address, port `CHANNEL_PORT + 1`, beside the primary (the
/// guest's tap of host A is opened only by a VMM that goes live). Returns
/// its listen URL, the VMM and the waiting `ch-remote`.
fn wait_on_host_a(
    net: &PairNet,
    dir: &TempDir,
    key: &Path,
    name: &str,
) -> (String, GuestVmm, Child) {
    let listen = format!("tcp:{LOG_A}:{}", CHANNEL_PORT + 1);
    let vmm = start_empty(net, Host::A, dir, name);
    let recv = receive_backup(dir, name, &listen, key, &net.links(Host::A).tap, "");
    (listen, vmm, recv)
}

/// The `fault-tolerance` events of VMM `name` with `"spare": "..."`
/// fields: (event, spare).
fn spare_events(dir: &TempDir, name: &str) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(dir.path(&format!("events-{name}.json"))).unwrap_or_default();
    let field = |object: &str, k: &str| -> Option<String> {
        object
            .split(&format!("\"{k}\": \""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    };
    let mut v = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\"event\": \"spare-") {
        rest = &rest[i..];
        let object = &rest[..rest.find('}').unwrap_or(rest.len())];
        if let (Some(e), Some(s)) = (field(object, "event"), field(object, "spare")) {
            v.push((e, s));
        }
        rest = &rest[1..];
    }
    v
}

/// A plain KV guest on host A protected by FT VMotion to an empty VMM on
/// host B (`backup`) whose `ft-receive-backup` has `spares=SPARES` (the
/// `ch-remote` form: `;` between them). Returns the primary and backup.
fn protect_with_spares(
    net: &PairNet,
    dir: &TempDir,
    key: &Path,
    spares: &str,
) -> (GuestVmm, GuestVmm) {
    let s = kv_setup(dir, file_tiebreaker(dir), false);
    let disk: PathBuf = s.disks.as_ref().expect("disk").0.clone();
    let mut primary = start_plain(net, dir, &disk);
    primary.wait_serial("kv: listening on", Duration::from_secs(60));
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let backup = start_empty(net, Host::B, dir, "backup");
    let recv = receive_backup(
        dir,
        "backup",
        &listen_b,
        key,
        &net.links(Host::B).tap,
        &format!(",spares={spares}"),
    );
    let added = add_backup(dir, "primary.sock", &listen_b, key);
    assert!(
        added.status.success(),
        "ft-add-backup: {}\n{}",
        text(&added.stderr),
        primary.stderr_text()
    );
    let recv = wait_child_within(recv, Duration::from_secs(60));
    assert!(
        recv.status.success(),
        "ft-receive-backup: {}\n{}",
        text(&recv.stderr),
        backup.stderr_text()
    );
    (primary, backup)
}

#[test]
fn a_live_ex_backup_seeds_the_first_spare_that_answers_and_survives_a_second_failover() {
    let (dir, net, names) = begin("ftspares", "spares-two-failovers");
    let key = write_key(&dir);
    // The spare: an empty VMM on host A, waiting on its own port; and an
    // address on host A's logging link nobody listens on.
    let (listen_spare, mut spare, spare_recv) = wait_on_host_a(&net, &dir, &key, "spare");
    let nobody = format!("tcp:{LOG_A}:{}", CHANNEL_PORT + 2);
    let (mut primary, mut backup) =
        protect_with_spares(&net, &dir, &key, &format!("{nobody};{listen_spare}"));
    let b = info(&dir, "backup.sock");
    assert_eq!(b["fault_tolerance"]["role"], "backup");
    assert_eq!(
        b["fault_tolerance"]["spares"]["list"],
        serde_json::json!([nobody, listen_spare])
    );
    assert_eq!(b["fault_tolerance"]["spares"]["state"], "standby");
    assert_eq!(b["config"]["fault_tolerance"]["spares"][1], listen_spare);

    // One verified stream across both failovers and the seed between.
    let control = Arc::new(StreamControl::default());
    let mut config = StreamConfig::new(net.kv_addr());
    config.duration = Some(Duration::from_secs(240));
    config.get_every = 4;
    config.prefix = format!("sp{}", net.tag);
    config.connect_timeout = Duration::from_secs(20);
    config.control = Some(control.clone());
    let (report, timeline) = std::thread::scope(|scope| {
        let client = &net.client;
        let cfg = &config;
        let t = scope.spawn(move || client.run(|| run_stream(cfg)));
        let acked_past = |n: u64, within: Duration| {
            let ok = wait_until(within, || control.acked() >= n || t.is_finished());
            assert!(ok && !t.is_finished(), "the stream ended early");
        };
        acked_past(150, Duration::from_secs(60));
        // 1. kill -9 of the primary: the backup goes live and seeds a
        // spare by itself.
        primary.kill9();
        let killed = Instant::now();
        let seeded = wait_until(Duration::from_secs(120), || {
            spare_events(&dir, "backup")
                .iter()
                .any(|(e, _)| e == "spare-seeded")
        });
        let seed_s = killed.elapsed().as_secs_f64();
        assert!(
            seeded,
            "no spare seeded: {:?}\n{}",
            spare_events(&dir, "backup"),
            backup.stderr_text()
        );
        let b = info(&dir, "backup.sock");
        // 2. kill -9 of the ex-backup once the stream went on through the
        // protected pair: the spare goes live.
        let acked = control.acked();
        acked_past(acked + 150, Duration::from_secs(60));
        backup.kill9();
        let live = wait_until(Duration::from_secs(30), || {
            ft_events(&dir.path("events-spare.json"))
                .iter()
                .any(|e| e == "go-live")
        });
        assert!(live, "the spare did not go live: {}", spare.stderr_text());
        let acked = control.acked();
        acked_past(acked + 150, Duration::from_secs(60));
        control.stop();
        let report = t
            .join()
            .expect("stream thread")
            .unwrap_or_else(|e| panic!("stream: {e}"));
        (report, (seed_s, b))
    });
    let (seed_s, b) = timeline;
    eprintln!("ft_spares: stream across two failovers and a spare seed: {report}");
    eprintln!("ft_spares: the spare was protecting the VM {seed_s:.1} s after the kill");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);

    // The backup's events: the dead spare failed, the waiting one seeded.
    let events = spare_events(&dir, "backup");
    eprintln!("ft_spares: backup's spare events: {events:?}");
    let started = |s: &str| (String::from("spare-seed-started"), s.to_string());
    let pos = |e: &(String, String)| events.iter().position(|x| x == e);
    let first_started = pos(&started(&nobody)).expect("the first spare tried");
    let failed = pos(&("spare-seed-failed".into(), nobody.clone())).expect("it failed");
    let second_started = pos(&started(&listen_spare)).expect("the second spare tried");
    let seeded = pos(&("spare-seeded".into(), listen_spare.clone())).expect("seeded");
    assert!(first_started < failed && failed < second_started && second_started < seeded);
    let text_b = std::fs::read_to_string(dir.path("events-backup.json")).unwrap_or_default();
    let seeded_event = text_b
        .find("\"event\": \"seeded\"")
        .map(|at| &text_b[at..])
        .map(|o| &o[..o.find('}').unwrap_or(o.len())])
        .expect("a seeded event on the ex-backup");
    eprintln!(
        "ft_spares: the spare's seed: {}",
        seeded_event.replace('\n', " ")
    );
    let backup_ft = ft_events(&dir.path("events-backup.json"));
    let go_live = backup_ft
        .iter()
        .position(|e| e == "go-live")
        .expect("go-live");
    let protected_again = backup_ft
        .iter()
        .rposition(|e| e == "protected")
        .expect("protected");
    assert!(go_live < protected_again, "{backup_ft:?}");
    // vm.info while it was protected by the spare.
    let sp = &b["fault_tolerance"]["spares"];
    assert_eq!(b["fault_tolerance"]["role"], "primary", "{b}");
    assert_eq!(b["fault_tolerance"]["state"], "protected", "{b}");
    assert_eq!(sp["state"], "protected", "{sp}");
    assert_eq!(sp["in_use"], listen_spare.as_str(), "{sp}");
    assert_eq!(sp["failed_attempts"], 1, "{sp}");

    let spare_recv = wait_child_within(spare_recv, Duration::from_secs(10));
    assert!(
        spare_recv.status.success(),
        "ft-receive-backup on the spare: {}",
        text(&spare_recv.stderr)
    );
    assert!(spare.child.running(), "{}", spare.stderr_text());
    finish((primary, backup, spare), net, &names);
}

/// Waits for `event` among VMM `name`'s fault-tolerance events.
fn wait_event(dir: &TempDir, name: &str, event: &str, within: Duration) -> bool {
    wait_until(within, || {
        ft_events(&dir.path(&format!("events-{name}.json")))
            .iter()
            .any(|e| e == event)
    })
}

#[test]
fn a_manual_ft_add_backup_during_the_automatic_seed_is_ordered_with_it() {
    let (dir, net, names) = begin("ftspares-manual", "spares-manual");
    let key = write_key(&dir);
    // Two spares nobody listens on: the automatic seed fails on each.
    let dead1 = format!("tcp:{LOG_A}:{}", CHANNEL_PORT + 2);
    let dead2 = format!("tcp:{LOG_A}:{}", CHANNEL_PORT + 3);
    let (mut primary, mut backup) =
        protect_with_spares(&net, &dir, &key, &format!("{dead1};{dead2}"));
    let (listen_third, third, third_recv) = wait_on_host_a(&net, &dir, &key, "third");
    primary.kill9();
    assert!(
        wait_event(&dir, "backup", "go-live", Duration::from_secs(30)),
        "{}",
        backup.stderr_text()
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            spare_events(&dir, "backup")
                .iter()
                .any(|(e, _)| e == "spare-seed-started")
        }),
        "no spare seed started: {}",
        backup.stderr_text()
    );
    // The operator's own FT VMotion while the automatic one tries its
    // spares: served between two attempts, never beside one.
    let manual = add_backup(&dir, "backup.sock", &listen_third, &key);
    assert!(
        manual.status.success(),
        "manual ft-add-backup: {}\n{}",
        text(&manual.stderr),
        backup.stderr_text()
    );
    let third_recv = wait_child_within(third_recv, Duration::from_secs(30));
    assert!(third_recv.status.success(), "{}", text(&third_recv.stderr));
    // The automatic seed notices the VM is protected and stops.
    let stopped = wait_until(Duration::from_secs(30), || {
        info(&dir, "backup.sock")["fault_tolerance"]["spares"]["state"] == "superseded"
    });
    let b = info(&dir, "backup.sock");
    assert!(stopped, "{b}");
    assert_eq!(b["fault_tolerance"]["state"], "protected", "{b}");
    assert_eq!(
        b["fault_tolerance"]["spares"]["in_use"],
        serde_json::Value::Null
    );
    assert!(b["fault_tolerance"]["spares"]["failed_attempts"].as_u64() >= Some(1));
    let events = spare_events(&dir, "backup");
    eprintln!(
        "ft_spares: spare events with a manual ft-add-backup: {events:?}, then {:?}",
        ft_events(&dir.path("events-backup.json"))
            .into_iter()
            .filter(|e| e.starts_with("spare-seed-superseded"))
            .collect::<Vec<_>>()
    );
    assert!(
        !events.iter().any(|(e, _)| e == "spare-seeded"),
        "{events:?}"
    );
    // Still protected by the manual backup: it takes over in turn.
    let (report, _) = common::ftpair::stream_through(&net, 3.0, Some((&mut backup, 150)));
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    assert!(wait_event(
        &dir,
        "third",
        "go-live",
        Duration::from_secs(10)
    ));
    finish((primary, backup, third), net, &names);
}

#[test]
fn spares_that_never_answer_leave_the_vm_live_unprotected_after_the_bounded_rounds() {
    let (dir, net, names) = begin("ftspares-none", "spares-abandoned");
    let key = write_key(&dir);
    let dead = format!("tcp:{LOG_A}:{}", CHANNEL_PORT + 2);
    let (mut primary, mut backup) = protect_with_spares(&net, &dir, &key, &dead);
    let (report, _) = common::ftpair::stream_through(&net, 2.0, Some((&mut primary, 150)));
    assert!(report.ok() && !report.reset(), "{report}");
    // 3 rounds of a 3 s connect bound, 1 s and 2 s between them.
    let started = Instant::now();
    assert!(
        wait_event(
            &dir,
            "backup",
            "spare-seed-abandoned",
            Duration::from_secs(60)
        ),
        "{:?}\n{}",
        spare_events(&dir, "backup"),
        backup.stderr_text()
    );
    eprintln!(
        "ft_spares: spares abandoned {:.1} s after the failover",
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<_> = spare_events(&dir, "backup")
        .into_iter()
        .filter(|(e, _)| e == "spare-seed-failed")
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    let b = info(&dir, "backup.sock");
    let sp = &b["fault_tolerance"]["spares"];
    assert_eq!(b["fault_tolerance"]["state"], "live-unprotected", "{b}");
    assert_eq!(sp["state"], "abandoned", "{sp}");
    assert_eq!(
        (sp["round"].as_u64(), sp["failed_attempts"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(
        sp["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&dead)),
        "{sp}"
    );
    // The guest ran on throughout, and an operator can still protect it.
    let (report, _) = common::ftpair::stream_through(&net, 1.0, None);
    assert!(report.ok() && !report.reset(), "{report}");
    let (listen_third, third, third_recv) = wait_on_host_a(&net, &dir, &key, "third");
    let manual = add_backup(&dir, "backup.sock", &listen_third, &key);
    assert!(manual.status.success(), "{}", text(&manual.stderr));
    assert!(wait_child_within(third_recv, Duration::from_secs(30))
        .status
        .success());
    assert_eq!(
        info(&dir, "backup.sock")["fault_tolerance"]["state"],
        "protected"
    );
    assert!(backup.child.running(), "{}", backup.stderr_text());
    finish((primary, backup, third), net, &names);
}

#[test]
fn bad_spares_are_refused_and_the_waiting_vmm_is_unharmed() {
    let (dir, net, names) = begin("ftspares-bad", "spares-refusals");
    let key = write_key(&dir);
    let listen_b = format!("tcp:{LOG_B}:{CHANNEL_PORT}");
    let mut backup = start_empty(&net, Host::B, &dir, "backup");
    let tap = net.links(Host::B).tap.clone();
    for bad in [
        ",spares=",
        ",spares=192.168.253.1:7410",
        ",spares=tcp:192.168.253.1:7410;",
        ",spares=tcp:192.168.253.1",
    ] {
        let out = wait_child_within(
            receive_backup(&dir, "backup", &listen_b, &key, &tap, bad),
            Duration::from_secs(20),
        );
        assert!(!out.status.success(), "{bad}: accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains("spares=") && err.contains("expected tcp:HOST:PORT"),
            "{bad}: {err}"
        );
    }
    // The REST form, a list of strings: the same check.
    let (code, body) = api(
        &dir.path("backup.sock"),
        "PUT",
        "vm.ft-receive-backup",
        Some(&format!(
            r#"{{"listen":"{listen_b}","key":"{}","tiebreaker":"{}","spares":["nowhere"]}}"#,
            key.display(),
            file_tiebreaker(&dir)
        )),
    );
    // (The settings are checked by the action, answered 500 as any of
    // `vm.ft-receive-backup`'s failures.)
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("spares=nowhere: expected tcp:HOST:PORT"),
        "{body}"
    );
    // Spares are a backup's option: a boot-time primary is refused.
    let guest = test_guest().to_str().expect("utf-8").to_string();
    let out = Command::new(vmm_bin())
        .args([
            "--kernel",
            &guest,
            "--fault-tolerance",
            &format!(
                "mode=primary,peer={listen_b},key={},tiebreaker={},spares={listen_b}",
                key.display(),
                file_tiebreaker(&dir)
            ),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run the VMM");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("spares= is not an option of mode=primary"),
        "{}",
        text(&out.stderr)
    );
    // The VMM refused and waits on, unharmed.
    assert!(backup.child.running(), "{}", backup.stderr_text());
    let (code, body) = api(&dir.path("backup.sock"), "GET", "vmm.ping", None);
    assert_eq!(code, 200, "{body}");
    finish(backup, net, &names);
}
