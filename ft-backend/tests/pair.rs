// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The pair's pieces over a real channel on loopback: the Output Rule
//! holds outputs until the backup acknowledges the primary's progress and
//! releases them in order; the live feed replays a recorder's stream as it
//! arrives; the receiver ends the feed only after the tiebreak decision.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ft_backend::channel::{
    accept, connect, Channel, ChannelConfig, ChannelKey, Hello, Incoming, Position, Role,
};
use ft_backend::live::{spawn_receiver, LiveFeed, StreamEnd};
use ft_backend::pair::OutputRule;
use ft_backend::{Entry, LogHeader, LogWriter, Replayer, Setup};
use virtio_devices::{Output, OutputKind, OutputSink};

fn config() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(2000),
        ..ChannelConfig::default()
    }
}

fn pair() -> (Channel, Channel) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let key = ChannelKey::from_bytes([9; 32]);
    let k2 = ChannelKey::from_bytes([9; 32]);
    let c = config();
    let b = thread::spawn(move || accept(&l, &k2, &Hello::new(Role::Backup, 5, vec![], 0), &c));
    let p = connect(addr, &key, &Hello::new(Role::Primary, 5, vec![], 7), &config()).unwrap();
    (p, b.join().unwrap().unwrap())
}

fn wait(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn outputs_wait_for_the_backup_and_leave_in_order() {
    let (mut p, mut b) = pair();
    let rule = OutputRule::new(true);
    rule.spawn_releaser(p.handle.clone()).unwrap();
    let done = Arc::new(Mutex::new(Vec::new()));
    let submit = |at: u64, n: usize| {
        rule.set_position(at);
        let d = done.clone();
        rule.submit(Output::new(
            "_net0",
            OutputKind::NetFrame { len: 60 },
            Box::new(move || d.lock().unwrap().push(n)),
        ));
    };
    submit(3, 1);
    submit(3, 2);
    submit(5, 3);
    thread::sleep(Duration::from_millis(100));
    assert!(done.lock().unwrap().is_empty(), "released before any ack");
    assert_eq!(rule.held(), 3);
    // The backup receives progress 4: the two outputs of exit 3 go.
    p.sender
        .send_progress(Position {
            exits: 4,
            guest_ns: 0,
        })
        .unwrap();
    assert_eq!(
        b.receiver.recv().unwrap(),
        Incoming::Progress(Position {
            exits: 4,
            guest_ns: 0
        })
    );
    assert!(wait(|| done.lock().unwrap().len() == 2));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(*done.lock().unwrap(), vec![1, 2]);
    // The peer is lost: nothing more until the decision; the winner
    // releases everything held, and later outputs at once.
    drop(b);
    assert!(wait(|| p.handle.lost().is_some()));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(done.lock().unwrap().len(), 2, "released without a decision");
    rule.go_unprotected();
    assert!(wait(|| done.lock().unwrap().len() == 3));
    submit(9, 4);
    assert!(wait(|| done.lock().unwrap().len() == 4));
    assert_eq!(*done.lock().unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(rule.released(), 4);
}

#[test]
fn a_loser_performs_nothing_held_and_separate_disks_do_not_wait() {
    let (p, _b) = pair();
    let rule = OutputRule::new(false);
    rule.spawn_releaser(p.handle.clone()).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let out = |kind| {
        let n = n.clone();
        Output::new(
            "_x",
            kind,
            Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }),
        )
    };
    rule.submit(out(OutputKind::DiskWrite {
        offset: 0,
        len: 512,
    }));
    assert_eq!(n.load(Ordering::SeqCst), 1, "a separate disk's write waited");
    rule.set_position(4);
    rule.submit(out(OutputKind::NetFrame { len: 60 }));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(n.load(Ordering::SeqCst), 1);
    rule.drop_all();
    rule.submit(out(OutputKind::NetFrame { len: 60 }));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(n.load(Ordering::SeqCst), 1, "a loser performed an output");
}

#[derive(Clone)]
struct ToChannel(Arc<Mutex<ft_backend::channel::ChannelSender>>);

impl std::io::Write for ToChannel {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .send_frames(buf)
            .map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_feed_replays_a_stream_as_it_arrives_and_ends_only_when_told() {
    let (p, b) = pair();
    let sender = Arc::new(Mutex::new(p.sender));
    let header = LogHeader {
        config_digest: 5,
        max_delay_us: 2000,
    };
    let mut w = LogWriter::to_stream(
        std::path::Path::new("test"),
        Box::new(ToChannel(sender.clone())),
        header,
    )
    .unwrap();
    w.append(&Entry::Setup(Setup::default())).unwrap();
    w.append(&Entry::ClockRead { exit: 2, value: 50 }).unwrap();
    w.flush().unwrap();
    let feed = LiveFeed::new();
    let decided = Arc::new(Mutex::new(None));
    let d = decided.clone();
    let dir = std::env::temp_dir().join(format!("ft-pair-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("copy.log");
    let t = spawn_receiver(
        b.receiver,
        b.handle.clone(),
        feed.clone(),
        5,
        Some(&copy),
        Box::new(move |end| {
            *d.lock().unwrap() = Some(end);
            true
        }),
    )
    .unwrap();
    assert_eq!(feed.wait_header(), Some(header));
    let mut r = Replayer::live(header, feed.clone());
    r.set_exit(2);
    assert_eq!(r.clock_read(), Some(50));
    // More arrives while the replay waits for it.
    let s2 = sender.clone();
    let later = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        s2.lock()
            .unwrap()
            .send_progress(Position {
                exits: 9,
                guest_ns: 1,
            })
            .unwrap();
    });
    r.set_exit(3);
    assert!(r.peek().is_none(), "progress 9: nothing at exit 3");
    later.join().unwrap();
    assert_eq!(feed.progress().exits, 9);
    // The primary dies: the receiver asks, and only then ends the feed.
    drop(w);
    drop(sender);
    drop(b.sender);
    t.join().unwrap();
    assert!(matches!(*decided.lock().unwrap(), Some(StreamEnd::Lost(_))));
    r.set_exit(9);
    assert!(r.at_live_end());
    // The copy is a log of what arrived (without an end frame).
    let bytes = std::fs::read(&copy).unwrap();
    assert!(bytes.starts_with(b"CHFTLOG\0"));
    let _ = std::fs::remove_dir_all(&dir);
}
