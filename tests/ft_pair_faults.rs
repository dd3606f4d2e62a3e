// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The pair under faults, with real processes on two namespace "hosts":
//! the backup killed, stopped (the Output Rule) or slowed (lag
//! throttling); the logging link cut (split brain: exactly one side goes
//! on); a wrong key or another configuration refused; a tiebreaker that
//! is down (fail safe); both sides starved of CPU together (no false
//! failover).

mod common;

use std::time::{Duration, Instant};

use common::cgroup::CpuLimit;
use common::etcd::Etcd;
use common::ftpair::{
    assert_clean, ft_events, kv_setup, start_backup, start_pair, start_primary, stream_through,
    wait_exit, write_key, Setup,
};
use common::pair::{Host, PairNet, LAN_IP};
use common::{api, wait_until, TempDir};
use ft_kv_client::Connection;

fn file_tiebreaker(dir: &TempDir) -> String {
    format!("file:{}", dir.path("tiebreak").display())
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn vm_info(dir: &TempDir, name: &str) -> serde_json::Value {
    let (code, body) = api(&dir.path(&format!("{name}.sock")), "GET", "vm.info", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("vm.info JSON")
}

fn vcpu_exits(dir: &TempDir) -> u64 {
    let (code, body) = api(&dir.path("primary.sock"), "GET", "vm.counters", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("counters JSON");
    v["vcpu0"]["exits"].as_u64().expect("vcpu0 exits")
}

fn image_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).expect("read the image")
}

#[test]
fn killing_the_backup_leaves_the_primary_serving_unprotected() {
    let dir = TempDir::new("ftpair-killb");
    let net = PairNet::new();
    let names = net.names();
    let mut s = kv_setup(&dir, file_tiebreaker(&dir), false);
    s.cmdline = net.kv_cmdline();
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("kv: listening on", Duration::from_secs(60));
    let (report, _) = stream_through(&net, 3.0, Some((&mut pair.backup, 200)));
    eprintln!("ft_pair_faults: backup killed: {report}");
    assert!(!report.reset(), "reset: {report}");
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    assert!(
        pair.primary.child.running(),
        "{}",
        pair.primary.stderr_text()
    );
    let events = ft_events(&pair.events.0);
    assert_eq!(
        events,
        [
            "connected",
            "protected",
            "peer-lost",
            "tiebreak-won",
            "unprotected"
        ],
        "{events:?}"
    );
    drop(pair);
    drop(net);
    assert_clean(&names);
}

#[test]
fn the_output_rule_holds_replies_and_disk_writes_until_the_backup_has_the_log() {
    let dir = TempDir::new("ftpair-rule");
    let net = PairNet::new();
    let names = net.names();
    let mut s = kv_setup(&dir, file_tiebreaker(&dir), false);
    s.cmdline = net.kv_cmdline();
    // A stopped backup must not count as lost during this test, nor slow
    // the primary down (lag throttling has its own test).
    s.extra = ",timeout_ms=30000,max_lag_ms=60000";
    s.api = true;
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("kv: listening on", Duration::from_secs(60));
    let image = s.disks.as_ref().expect("a disk").0.clone();
    let addr = net.kv_addr();
    let mut conn = net
        .client
        .run(|| Connection::connect(addr, Duration::from_secs(20)))
        .expect("connect");
    net.client.run(|| conn.set("before", "1")).expect("a SET");
    std::thread::sleep(Duration::from_millis(300));
    let before = image_bytes(&image);
    let exits_before = vcpu_exits(&dir);
    signal(pair.backup.child.pid(), "-STOP");
    // The request reaches the guest; its reply and its log write wait.
    let stalled = net.client.run(|| {
        conn.set_timeout(Duration::from_millis(1500))
            .expect("timeout");
        conn.send(&["SET held 2"]).expect("send");
        conn.read_answer()
    });
    assert!(
        stalled.is_err(),
        "a reply left with the backup stopped: {stalled:?}"
    );
    let info = vm_info(&dir, "primary");
    let held = info["fault_tolerance"]["outputs_held"]
        .as_u64()
        .unwrap_or(0);
    assert!(held > 0, "nothing held: {info}");
    assert_eq!(image_bytes(&image), before, "the shared image was written");
    // The primary's guest kept running meanwhile.
    assert!(vcpu_exits(&dir) > exits_before + 100);
    signal(pair.backup.child.pid(), "-CONT");
    let answer = net.client.run(|| {
        conn.set_timeout(Duration::from_secs(10)).expect("timeout");
        conn.read_answer()
    });
    assert_eq!(answer.expect("the reply after SIGCONT"), "OK");
    assert!(
        wait_until(Duration::from_secs(5), || image_bytes(&image) != before),
        "the image was never written"
    );
    let got = net.client.run(|| conn.get("held")).expect("GET");
    assert_eq!(got.as_deref(), Some("2"));
    drop(pair);
    drop(net);
    assert_clean(&names);
}

#[test]
fn cutting_the_logging_link_leaves_exactly_one_side_running() {
    let dir = TempDir::new("ftpair-cut");
    let net = PairNet::new();
    let names = net.names();
    let mut s = kv_setup(&dir, file_tiebreaker(&dir), false);
    s.cmdline = net.kv_cmdline();
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("kv: listening on", Duration::from_secs(60));
    let cut = Instant::now();
    net.cut_log_link();
    let one_gone = wait_until(Duration::from_secs(20), || {
        !pair.primary.child.running() || !pair.backup.child.running()
    });
    assert!(one_gone, "both sides still run after the cut");
    std::thread::sleep(Duration::from_secs(1));
    let (p, b) = (pair.primary.child.running(), pair.backup.child.running());
    assert!(p != b, "primary running {p}, backup running {b}");
    let (loser, winner) = if p {
        (&mut pair.backup, "primary")
    } else {
        (&mut pair.primary, "backup")
    };
    let status = wait_exit(loser, Duration::from_secs(5));
    assert_eq!(status.code(), Some(3), "{}", loser.stderr_text());
    assert!(
        loser
            .stderr_text()
            .contains("this VMM stops, the other side continues"),
        "{}",
        loser.stderr_text()
    );
    eprintln!(
        "ft_pair_faults: the {winner} won {:?} after the cut",
        cut.elapsed()
    );
    // The service goes on, from whichever side won.
    let (report, _) = stream_through(&net, 1.5, None);
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    net.heal_log_link();
    drop(pair);
    drop(net);
    assert_clean(&names);
}

#[test]
fn a_wrong_key_or_another_configuration_is_refused_and_the_backup_waits_on() {
    let dir = TempDir::new("ftpair-refuse");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup {
        extra: ",timeout_ms=2000",
        ..Setup::compute("workload=ticks count=100 hz=200", file_tiebreaker(&dir))
    };
    let key = write_key(&dir);
    let mut backup = start_backup(&net, &dir, &s, &key);
    // Another key: same length, other bytes.
    let wrong = dir.path("wrong.key");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&wrong)
            .expect("key");
        std::io::Write::write_all(&mut f, &[0x5a; 32]).expect("write");
    }
    let mut p = start_primary(&net, &dir, &s, &wrong, "wrongkey");
    let st = wait_exit(&mut p, Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        p.stderr_text().contains("authentication failed"),
        "{}",
        p.stderr_text()
    );
    assert!(!p.stderr_text().contains("5a5a"), "the key leaked");
    // Another configuration (its command line).
    let other = Setup {
        cmdline: "workload=ticks count=101 hz=200".into(),
        ..s
    };
    let mut p = start_primary(&net, &dir, &other, &key, "otherconfig");
    let st = wait_exit(&mut p, Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        p.stderr_text().contains("configuration differs"),
        "{}",
        p.stderr_text()
    );
    // The backup refused both and still waits: the right primary pairs.
    assert!(backup.child.running(), "{}", backup.stderr_text());
    let s = Setup {
        cmdline: "workload=ticks count=100 hz=200".into(),
        ..other
    };
    let mut p = start_primary(&net, &dir, &s, &key, "primary");
    assert!(wait_exit(&mut p, Duration::from_secs(60)).success());
    assert!(wait_exit(&mut backup, Duration::from_secs(60)).success());
    let events = ft_events(&dir.path("events-backup.json"));
    assert!(
        events.starts_with(&["auth-failed".to_string()]),
        "{events:?}"
    );
    assert!(events.contains(&"protected".to_string()), "{events:?}");
    drop(net);
    assert_clean(&names);
}

#[test]
fn a_tiebreaker_that_is_down_stops_the_backup_instead_of_going_live() {
    let dir = TempDir::new("ftpair-etcddown");
    let net = PairNet::new();
    let names = net.names();
    let mut etcd = Etcd::start(&net.lan, LAN_IP, 2479, dir.path("etcd"));
    let s = Setup::compute(
        "workload=ticks count=2000 hz=200",
        etcd.tiebreaker(&format!("ft/{}", net.tag)),
    );
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("test-guest: ready", Duration::from_secs(60));
    etcd.stop();
    pair.primary.kill9();
    let st = wait_exit(&mut pair.backup, Duration::from_secs(30));
    let err = pair.backup.stderr_text();
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(err.contains("could not claim the tiebreak"), "{err}");
    assert!(!err.contains("event go-live"), "{err}");
    let events = ft_events(&pair.events.1);
    assert_eq!(
        events.last().map(String::as_str),
        Some("tiebreak-lost"),
        "{events:?}"
    );
    drop(pair);
    drop(net);
    assert_clean(&names);
}

#[test]
fn a_slow_backup_slows_the_primary_and_the_lag_stays_near_the_target() {
    let dir = TempDir::new("ftpair-lag");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup {
        extra: ",max_lag_ms=40,timeout_ms=5000",
        api: true,
        ..Setup::compute("workload=exits count=400000", file_tiebreaker(&dir))
    };
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("test-guest: ready", Duration::from_secs(60));
    // The backup runs a third of the time: 20 ms of every 60.
    let pid = pair.backup.child.pid();
    let mut lags = Vec::new();
    let mut throttled = 0.0f64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) && pair.primary.child.running() {
        signal(pid, "-STOP");
        std::thread::sleep(Duration::from_millis(40));
        signal(pid, "-CONT");
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(info) = std::panic::catch_unwind(|| vm_info(&dir, "primary")) {
            let ft = &info["fault_tolerance"];
            lags.push(ft["lag_ms"].as_f64().unwrap_or(0.0));
            throttled = throttled.max(ft["throttle"].as_f64().unwrap_or(0.0));
        }
    }
    signal(pid, "-CONT");
    lags.sort_by(f64::total_cmp);
    let p = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    eprintln!(
        "ft_pair_faults: lag p50 {:.1} ms p90 {:.1} ms max {:.1} ms over {} samples; largest throttle {throttled:.2}",
        p(0.5),
        p(0.9),
        p(1.0),
        lags.len()
    );
    assert!(lags.len() > 20);
    assert!(throttled > 0.2, "the primary never slowed down");
    // Bounded near the target: the stops themselves are 40 ms.
    assert!(p(0.9) < 250.0, "lag p90 {:.1} ms", p(0.9));
    drop(pair);
    drop(net);
    assert_clean(&names);
}

#[test]
fn a_primary_without_a_backup_and_a_backup_without_a_primary_end_cleanly() {
    let dir = TempDir::new("ftpair-alone");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup::compute("workload=ticks count=100 hz=200", file_tiebreaker(&dir));
    let key = write_key(&dir);
    // Nobody listens: the primary gives up within its connect bound.
    let start = Instant::now();
    let mut p = start_primary(&net, &dir, &s, &key, "alone");
    let st = wait_exit(&mut p, Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        p.stderr_text().contains("cannot reach the peer"),
        "{}",
        p.stderr_text()
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(
        !p.serial_text().contains("ready"),
        "the guest ran unprotected"
    );
    // A waiting backup stops at once on SIGTERM.
    let mut b = start_backup(&net, &dir, &s, &key);
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.child.running(), "{}", b.stderr_text());
    let asked = Instant::now();
    signal(b.child.pid(), "-TERM");
    wait_exit(&mut b, Duration::from_secs(5));
    assert!(asked.elapsed() < Duration::from_secs(2));
    drop(net);
    assert_clean(&names);
}

/// A loaded host: both VMMs in one CPU cgroup whose budget (300 ms of CPU
/// per second) runs out early in every period, so every ordinary thread
/// of both sides stops for most of each second, far longer than the
/// 300 ms failure timeout, over and over. Nothing failed, so nothing may
/// fail over: the channel's threads run in the real-time class (a budget
/// of their own here), the failure detector does not count this side's
/// own stops as the peer's silence, and only the channel's real-time
/// writer writes the socket. Before that, every sender wrote under one
/// lock, and the log thread (an ordinary thread) stopped in the middle of
/// a write for the rest of the period kept the heartbeat out: "ft_log
/// wrote one record for 516 ms", and the backup declared the primary lost
/// (2 of 8 runs with ten busy loops beside the test; 0 of 20 with the
/// writer).
#[test]
fn a_pair_starved_of_cpu_does_not_fail_over() {
    let dir = TempDir::new("ftpair-starved");
    let net = PairNet::new();
    let names = net.names();
    let s = Setup {
        api: true,
        ..Setup::compute(
            "workload=compute steps=100000000000 hz=100",
            file_tiebreaker(&dir),
        )
    };
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("test-guest: ready", Duration::from_secs(60));
    let limit = CpuLimit::new(
        "ftpair-starved",
        Duration::from_millis(300),
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    limit.add(pair.backup.child.pid());
    limit.add(pair.primary.child.pid());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let both_run = pair.primary.child.running() && pair.backup.child.running();
        assert!(
            both_run,
            "a side stopped:\nprimary:\n{}\nbackup:\n{}",
            pair.primary.stderr_text(),
            pair.backup.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (times, stopped) = limit.throttled();
    drop(limit);
    eprintln!("ft_pair_faults: the pair was stopped {times} times, {stopped:?} in all");
    // The channel's own account of its slow moments (a thread that sent
    // nothing, waited or wrote for half the timeout or more).
    for (side, text) in [
        ("primary", pair.primary.stderr_text()),
        ("backup", pair.backup.stderr_text()),
    ] {
        for line in text.lines().filter(|l| l.contains("logging channel:")) {
            eprintln!("ft_pair_faults: {side}: {line}");
        }
    }
    // The starvation happened: most of each second, for several seconds.
    assert!(
        times >= 4 && stopped > Duration::from_secs(2),
        "{times} {stopped:?}"
    );
    let (code, body) = api(&dir.path("primary.sock"), "GET", "vm.counters", None);
    if code == 200 {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let ft = &v["fault_tolerance"];
        let us = |k: &str| ft[k].as_u64().unwrap_or(0);
        eprintln!(
            "ft_pair_faults: primary's channel: send_lock_us_max={} send_write_us_max={} \
             send_gap_us_max={} heartbeat_late_us_max={} rx_wait_us_max={} \
             detector_stall_us_max={} ack_rtt_us_max={} send_queue_us_max={}",
            us("send_lock_us_max"),
            us("send_write_us_max"),
            us("send_gap_us_max"),
            us("heartbeat_late_us_max"),
            us("rx_wait_us_max"),
            us("detector_stall_us_max"),
            us("ack_rtt_us_max"),
            us("send_queue_us_max"),
        );
        // The primary never went silent for the backup's timeout (its
        // writer sent at least a heartbeat in time), not merely "the
        // backup's detector did not fire".
        assert!(
            us("send_gap_us_max") < 300_000,
            "the primary sent nothing for {} us: {body}",
            us("send_gap_us_max")
        );
    }
    let info = vm_info(&dir, "primary");
    assert_eq!(info["fault_tolerance"]["state"], "protected", "{info}");
    for (side, events) in [("primary", &pair.events.0), ("backup", &pair.events.1)] {
        let events = ft_events(events);
        assert!(
            !events.iter().any(|e| e == "peer-lost"),
            "the {side} failed over: {events:?}\n{}\n{}",
            pair.primary.stderr_text(),
            pair.backup.stderr_text()
        );
    }
    drop(pair);
    drop(net);
    assert_clean(&names);
}

/// The primary's `vm.counters` fault-tolerance entry.
fn ft_counters(dir: &TempDir) -> serde_json::Value {
    let (code, body) = api(&dir.path("primary.sock"), "GET", "vm.counters", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("counters JSON");
    v["fault_tolerance"].clone()
}

/// Makes the logging link slow and lossy at both ends, as the chaos
/// campaign's `slow-link` does: a token bucket of `rate` on each end's
/// egress, and a random `loss` share of the packets arriving at each end
/// dropped (iptables `statistic`; `tc netem` is missing on these hosts).
/// Both go with the namespaces.
fn slow_lossy_log_link(net: &PairNet, rate: &str, loss: f64) {
    for host in [Host::A, Host::B] {
        let (ns, dev) = (net.host(host), &net.links(host).log);
        let (ok, out) = ns.exec(&[
            "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kbit",
            "latency", "400ms",
        ]);
        assert!(ok, "tc tbf on {dev}: {out}");
        let p = loss.to_string();
        let (ok, out) = ns.exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            dev,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ]);
        assert!(ok, "iptables on {dev} (apt-get install iptables): {out}");
    }
}

/// The chaos campaign's `slow-link` finding (seed 7007): on a logging link
/// limited to 5 Mbit/s that drops a share of its packets, TCP's loss
/// recovery holds the whole stream back, the peer's heartbeats included,
/// for its retransmission timeout (at least 200 ms, 400 ms more when the
/// resent segment is lost too) while both sides are alive; a failure
/// detector that hears only the stream (300 ms) ended such a pair. The
/// beacon (authenticated datagrams beside the stream, every 25 ms) is
/// heard through those stalls: no failover, and the stalls it bridged are
/// counted (`silences_bridged`). The stream alone still bounds a dead
/// connection (2 s).
#[test]
fn a_slow_lossy_logging_link_does_not_fail_over() {
    let dir = TempDir::new("ftpair-lossy");
    let net = PairNet::new();
    let names = net.names();
    let mut s = kv_setup(&dir, file_tiebreaker(&dir), false);
    s.cmdline = net.kv_cmdline();
    s.api = true;
    let mut pair = start_pair(&net, &dir, &s);
    pair.primary
        .wait_serial("kv: listening on", Duration::from_secs(60));
    slow_lossy_log_link(&net, "5mbit", 0.05);
    let (report, _) = stream_through(&net, 12.0, None);
    let both_run = pair.primary.child.running() && pair.backup.child.running();
    assert!(
        both_run,
        "a side stopped (a false failover):\nprimary:\n{}\nbackup:\n{}",
        pair.primary.stderr_text(),
        pair.backup.stderr_text()
    );
    for (side, events) in [("primary", &pair.events.0), ("backup", &pair.events.1)] {
        let events = ft_events(events);
        assert_eq!(
            events,
            ["connected", "protected"],
            "the {side} failed over: {events:?}\n{}\n{}",
            pair.primary.stderr_text(),
            pair.backup.stderr_text()
        );
    }
    let info = vm_info(&dir, "primary");
    assert_eq!(info["fault_tolerance"]["state"], "protected", "{info}");
    let c = ft_counters(&dir);
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    eprintln!(
        "ft_pair_faults: 5 Mbit/s, 5 % loss each way: {report}; primary: longest stream \
         silence {} us, silences bridged by the beacon {}, beacons sent {} received {} \
         refused {} send failures {}",
        n("rx_wait_us_max"),
        n("silences_bridged"),
        n("beacons_sent"),
        n("beacons_received"),
        n("beacons_refused"),
        n("beacon_send_failures")
    );
    assert!(report.ok(), "{report}: {:?}", report.bad_keys);
    assert!(!report.reset(), "reset: {report}");
    // The link was lossy (a few of the backup's beacons lost), yet the
    // beacon was heard all along and nothing forged it.
    assert!(n("beacons_received") > 100, "{c}");
    assert_eq!(n("beacons_refused"), 0, "{c}");
    drop(pair);
    drop(net);
    assert_clean(&names);
}
