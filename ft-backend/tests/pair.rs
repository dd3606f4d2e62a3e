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
    let l = TcpListener::bind("127.0.0.1:0").expect("test step");
    let addr = l.local_addr().expect("test step");
    let key = ChannelKey::from_bytes([9; 32]);
    let k2 = ChannelKey::from_bytes([9; 32]);
    let c = config();
    let b = thread::spawn(move || accept(&l, &k2, &Hello::new(Role::Backup, 5, vec![], 0), &c));
    let p = connect(
        addr,
        &key,
        &Hello::new(Role::Primary, 5, vec![], 7),
        &config(),
    )
    .expect("test step");
    (p, b.join().expect("test step").expect("test step"))
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
    rule.spawn_releaser(p.handle.clone()).expect("test step");
    let done = Arc::new(Mutex::new(Vec::new()));
    let submit = |at: u64, n: usize| {
        rule.set_position(at);
        let d = done.clone();
        rule.submit(Output::new(
            "_net0",
            OutputKind::NetFrame { len: 60 },
            Box::new(move || d.lock().expect("test step").push(n)),
        ));
    };
    submit(3, 1);
    submit(3, 2);
    submit(5, 3);
    thread::sleep(Duration::from_millis(100));
    assert!(
        done.lock().expect("test step").is_empty(),
        "released before any ack"
    );
    assert_eq!(rule.held(), 3);
    // The backup receives progress 4: the two outputs of exit 3 go.
    p.sender
        .send_progress(Position {
            exits: 4,
            guest_ns: 0,
        })
        .expect("test step");
    assert_eq!(
        b.receiver.recv().expect("test step"),
        Incoming::Progress(Position {
            exits: 4,
            guest_ns: 0
        })
    );
    assert!(wait(|| done.lock().expect("test step").len() == 2));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(*done.lock().expect("test step"), vec![1, 2]);
    // The peer is lost: nothing more until the decision; the winner
    // releases everything held, and later outputs at once.
    drop(b);
    assert!(wait(|| p.handle.lost().is_some()));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        done.lock().expect("test step").len(),
        2,
        "released without a decision"
    );
    rule.go_unprotected();
    assert!(wait(|| done.lock().expect("test step").len() == 3));
    submit(9, 4);
    assert!(wait(|| done.lock().expect("test step").len() == 4));
    assert_eq!(*done.lock().expect("test step"), vec![1, 2, 3, 4]);
    assert_eq!(rule.released(), 4);
}

#[test]
fn a_loser_performs_nothing_held_and_separate_disks_do_not_wait() {
    let (p, _b) = pair();
    let rule = OutputRule::new(false);
    rule.spawn_releaser(p.handle.clone()).expect("test step");
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
    assert_eq!(
        n.load(Ordering::SeqCst),
        1,
        "a separate disk's write waited"
    );
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
            .expect("test step")
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
    .expect("test step");
    w.append(&Entry::Setup(Setup::default()))
        .expect("test step");
    w.append(&Entry::ClockRead { exit: 2, value: 50 })
        .expect("test step");
    w.flush().expect("test step");
    let feed = LiveFeed::new();
    let decided = Arc::new(Mutex::new(None));
    let d = decided.clone();
    let dir = std::env::temp_dir().join(format!("ft-pair-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("test step");
    let copy = dir.join("copy.log");
    let t = spawn_receiver(
        b.receiver,
        b.handle.clone(),
        feed.clone(),
        5,
        Some(&copy),
        Box::new(move |end| {
            *d.lock().expect("test step") = Some(end);
            true
        }),
    )
    .expect("test step");
    assert_eq!(feed.wait_header(), Some(header));
    let mut r = Replayer::live(header, feed.clone());
    r.set_exit(2);
    assert_eq!(r.clock_read(), Some(50));
    // More arrives while the replay waits for it.
    let s2 = sender.clone();
    let later = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        s2.lock()
            .expect("test step")
            .send_progress(Position {
                exits: 9,
                guest_ns: 1,
            })
            .expect("test step");
    });
    r.set_exit(3);
    assert!(r.peek().is_none(), "progress 9: nothing at exit 3");
    later.join().expect("test step");
    assert_eq!(feed.progress().exits, 9);
    // The primary dies: the receiver asks, and only then ends the feed.
    drop(w);
    drop(sender);
    drop(b.sender);
    t.join().expect("test step");
    assert!(matches!(
        *decided.lock().expect("test step"),
        Some(StreamEnd::Lost(_))
    ));
    r.set_exit(9);
    assert!(r.at_live_end());
    // The copy is a log of what arrived (without an end frame).
    let bytes = std::fs::read(&copy).expect("test step");
    assert!(bytes.starts_with(b"CHFTLOG\0"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backup whose primary goes away after the handshake but before the
/// stream's header has nothing to go live with: it must not claim the
/// tiebreak (a primary that is only cut off would lose it and stop, and
/// the VM would be lost), and it ends with a clear error. Found by the
/// chaos campaign's kill-primary-seeding trials.
#[test]
fn a_backup_lost_before_the_stream_began_does_not_claim_the_tiebreak() {
    use ft_backend::pair::backup::{Backup, BackupError};
    use ft_backend::pair::{PairState, PairStatus};
    use ft_backend::tiebreak::Tiebreaker;

    let dir = std::env::temp_dir().join(format!("ft-pair-nostream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test step");
    let slot_base = dir.join("tiebreak");
    let tb: Tiebreaker = format!("file:{}", slot_base.display())
        .parse()
        .expect("test step");
    let (p, b) = pair();
    let generation = b.peer.generation;
    let status = PairStatus::new("backup", "primary".into());
    // The primary goes away without a word of its stream.
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        drop(p);
    });
    let started = Backup::start(
        b,
        status.clone(),
        tb.clone(),
        (Duration::from_millis(10), Duration::from_millis(2000)),
        0,
        None,
    );
    closer.join().expect("test step");
    assert!(
        matches!(started, Err(BackupError::NoStream(_))),
        "{started:?}"
    );
    assert_eq!(status.state(), PairState::Stopped);
    let Tiebreaker::File(file) = &tb else {
        panic!("a file tiebreaker")
    };
    assert!(
        !file.slot(generation).exists(),
        "the backup claimed the tiebreak with nothing to go live with"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
