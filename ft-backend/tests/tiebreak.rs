// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The tiebreakers for real: racing threads on a shared directory, and a
//! real etcd (Debian's `etcd-server`) started on a loopback port with a
//! data directory of its own, both removed after the test.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ft_backend::tiebreak::{Decision, EtcdError, Outcome, TiebreakError, Tiebreaker};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ft-tiebreak-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `racers` threads claim generations 1..=generations, all starting each
/// generation together; exactly one wins each, and every loser names it.
fn race(tiebreaker: &Tiebreaker, racers: usize, generations: u64) {
    let barrier = Arc::new(Barrier::new(racers));
    let threads: Vec<_> = (0..racers)
        .map(|i| {
            let t = tiebreaker.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let me = format!("racer {i} pid {}", std::process::id());
                (1..=generations)
                    .map(|g| {
                        barrier.wait();
                        t.test_and_set(g, &me).expect("claim")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<Outcome>> = threads
        .into_iter()
        .map(|t| t.join().expect("racer"))
        .collect();
    for g in 0..generations as usize {
        let winners: Vec<usize> = (0..racers)
            .filter(|&i| results[i][g] == Outcome::Won)
            .collect();
        assert_eq!(winners.len(), 1, "generation {}: {winners:?}", g + 1);
        let name = format!("racer {} pid {}", winners[0], std::process::id());
        for (i, r) in results.iter().enumerate() {
            if i != winners[0] {
                assert_eq!(
                    r[g],
                    Outcome::Lost {
                        winner: name.clone()
                    }
                );
            }
        }
        // The winner may claim again (a retry); nobody else can.
        let g = g as u64 + 1;
        assert_eq!(
            tiebreaker.test_and_set(g, &name).expect("retry"),
            Outcome::Won
        );
        assert!(matches!(
            tiebreaker.decide(g, "late claimant"),
            Decision::NotWon { .. }
        ));
    }
}

#[test]
fn file_exactly_one_racer_wins_each_generation() {
    let dir = temp_dir("race");
    let t: Tiebreaker = format!("file:{}", dir.join("vm.tiebreak").display())
        .parse()
        .expect("parse");
    race(&t, 4, 200);
    // One slot per generation, no temporary file left.
    assert_eq!(fs::read_dir(&dir).expect("list").count(), 200);
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// Set in the children of `file_racing_processes`: "SLOT-PATH GENERATIONS
/// GO-FILE NAME".
const CHILD_ENV: &str = "FT_TIEBREAK_RACER";

#[test]
fn file_racing_processes_exactly_one_wins_each_generation() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        // A racer process: wait for the start, claim every generation,
        // print one outcome a line.
        let parts: Vec<&str> = spec.splitn(4, ' ').collect();
        let t: Tiebreaker = format!("file:{}", parts[0]).parse().expect("parse");
        let generations: u64 = parts[1].parse().expect("count");
        let go = Path::new(parts[2]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !go.exists() {
            assert!(Instant::now() < deadline, "never started");
            thread::sleep(Duration::from_millis(1));
        }
        for g in 1..=generations {
            match t.test_and_set(g, parts[3]).expect("claim") {
                Outcome::Won => println!("RESULT {g} won"),
                Outcome::Lost { winner } => println!("RESULT {g} lost {winner}"),
            }
        }
        return;
    }
    let dir = temp_dir("processes");
    let slot = dir.join("vm.tiebreak");
    let go = dir.join("go");
    let generations = 100u64;
    let racers = 4;
    let children: Vec<_> = (0..racers)
        .map(|i| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "file_racing_processes_exactly_one_wins_each_generation",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    CHILD_ENV,
                    format!(
                        "{} {generations} {} process {i}",
                        slot.display(),
                        go.display()
                    ),
                )
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn racer")
        })
        .collect();
    fs::write(&go, b"").expect("start");
    let mut won = vec![Vec::new(); generations as usize + 1];
    let mut lost_to = vec![Vec::new(); generations as usize + 1];
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("racer");
        assert!(out.status.success(), "racer {i} failed");
        let text = String::from_utf8(out.stdout).expect("utf8");
        // libtest may print its own words before the first line.
        let results: Vec<&str> = text
            .lines()
            .filter_map(|l| l.find("RESULT ").map(|at| &l[at..]))
            .collect();
        assert_eq!(results.len(), generations as usize, "racer {i}:\n{text}");
        for line in results {
            let mut words = line.splitn(4, ' ').skip(1);
            let g: usize = words.next().expect("g").parse().expect("g");
            match words.next() {
                Some("won") => won[g].push(format!("process {i}")),
                Some("lost") => lost_to[g].push(words.next().expect("winner").to_string()),
                other => panic!("bad line {line:?} ({other:?})"),
            }
        }
    }
    for g in 1..=generations as usize {
        assert_eq!(won[g].len(), 1, "generation {g}: winners {:?}", won[g]);
        assert_eq!(lost_to[g].len(), racers - 1);
        assert!(lost_to[g].iter().all(|w| *w == won[g][0]), "generation {g}");
    }
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn file_on_missing_storage_is_fail_safe() {
    let t: Tiebreaker = "file:/nonexistent-ft-shared/vm.tiebreak"
        .parse()
        .expect("parse");
    assert!(matches!(
        t.test_and_set(1, "a"),
        Err(TiebreakError::File(_))
    ));
    let Decision::NotWon { reason } = t.decide(1, "a") else {
        panic!("an unreachable tiebreaker must not be won");
    };
    assert!(reason.contains("does not exist"), "{reason}");
}

/// A private etcd on loopback.
struct Etcd {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Etcd {
    fn binary() -> Option<PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join("etcd"))
            .find(|p| p.is_file())
    }

    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn start(name: &str) -> Option<Etcd> {
        let Some(binary) = Self::binary() else {
            println!("SKIPPED: no etcd binary on PATH (apt-get install etcd-server)");
            return None;
        };
        let dir = temp_dir(&format!("etcd-{name}"));
        let (port, peer) = (Self::free_port(), Self::free_port());
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let log = fs::File::create(dir.join("etcd.log")).expect("log");
        let child = Command::new(binary)
            .arg("--name=ft-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=ft-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, dir, port };
        etcd.wait_healthy();
        Some(etcd)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut reply = String::new();
            let ok = TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
                    && s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_to_string(&mut reply).is_ok()
            });
            if ok && reply.contains("\"health\":\"true\"") {
                return;
            }
            let log = fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "etcd did not start:\n{log}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn tiebreaker(&self, prefix: &str) -> Tiebreaker {
        format!("etcd:http://127.0.0.1:{}/{prefix}", self.port)
            .parse()
            .expect("parse")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn etcd_exactly_one_racer_wins_each_generation() {
    let Some(etcd) = Etcd::start("race") else {
        return;
    };
    let t = etcd.tiebreaker("ft/test-race");
    race(&t, 6, 25);
    // Another pair's prefix has slots of its own.
    let other = etcd.tiebreaker("ft/other-vm");
    assert_eq!(other.test_and_set(1, "x").expect("claim"), Outcome::Won);
    assert_eq!(
        t.test_and_set(26, "y").expect("a fresh generation"),
        Outcome::Won
    );
}

#[test]
fn etcd_down_is_fail_safe() {
    let Some(mut etcd) = Etcd::start("down") else {
        return;
    };
    let t = etcd.tiebreaker("ft/test-down");
    assert_eq!(t.test_and_set(1, "primary").expect("claim"), Outcome::Won);
    etcd.stop();
    let err = t.test_and_set(2, "primary").expect_err("etcd is down");
    assert!(
        matches!(err, TiebreakError::Etcd(EtcdError::Request(..))),
        "{err:?}"
    );
    let Decision::NotWon { reason } = t.decide(2, "backup") else {
        panic!("an etcd that is down must not be won");
    };
    assert!(reason.contains("stopping to stay safe"), "{reason}");
    assert!(reason.contains("cannot connect"), "{reason}");

    // A server that accepts and never answers: not won, within the bound.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let Tiebreaker::Etcd(t) = format!("etcd:http://127.0.0.1:{port}/ft/x")
        .parse::<Tiebreaker>()
        .expect("parse")
    else {
        panic!("not etcd");
    };
    let t = Tiebreaker::Etcd(t.with_timeout(Duration::from_millis(300)));
    let Decision::NotWon { reason } = t.decide(1, "primary") else {
        panic!("a silent etcd must not be won");
    };
    assert!(reason.contains("within 300 ms"), "{reason}");
}
