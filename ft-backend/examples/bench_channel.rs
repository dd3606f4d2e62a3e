// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Logging channel benchmark (run by `scripts/bench-channel`), side by side
//! with plain TCP on the same loopback:
//! - throughput: MiB/s of log frames from a sender thread to a receiver
//!   thread (64 KiB pieces; the channel also sends a progress every MiB),
//!   against the same bytes over a bare `TcpStream`;
//! - round trip: a progress and its ack (channel), against a 16-byte
//!   ping-pong (plain TCP), p50 and p99.
//!
//! Usage: bench_channel [MiB per run] [round trips] [runs]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ft_backend::channel::{
    accept, connect, Channel, ChannelConfig, ChannelKey, Hello, Incoming, Position, Role,
};

const PIECE: usize = 64 << 10;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn pair() -> (Channel, Channel) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let key = ChannelKey::from_bytes([7; 32]);
    let k = key.clone();
    let config = ChannelConfig::default();
    let c = config.clone();
    let backup = thread::spawn(move || {
        accept(&l, &k, &Hello::new(Role::Backup, 1, Vec::new(), 1), &c).expect("accept")
    });
    let primary = connect(
        addr,
        &key,
        &Hello::new(Role::Primary, 1, Vec::new(), 1),
        &config,
    )
    .expect("connect");
    (primary, backup.join().expect("backup"))
}

fn pos(exits: u64) -> Position {
    Position {
        exits,
        guest_ns: exits,
    }
}

fn channel_throughput(mib: usize) -> f64 {
    let (mut p, mut b) = pair();
    let data = vec![0x5au8; PIECE];
    let total = mib << 20;
    let start = Instant::now();
    let rx = thread::spawn(move || {
        let mut got = 0usize;
        while got < total {
            if let Incoming::LogFrames(f) = b.receiver.recv().expect("recv") {
                got += f.len();
            }
        }
        b
    });
    let mut sent = 0usize;
    let mut n = 0u64;
    while sent < total {
        p.sender.send_frames(&data).expect("send");
        sent += PIECE;
        if sent % (1 << 20) == 0 {
            n += 1;
            p.sender.send_progress(pos(n)).expect("progress");
        }
    }
    p.handle.wait_acked(pos(n)).expect("acked");
    let b = rx.join().expect("rx");
    eprintln!(
        "channel run: longest wait for a record: backup {} us, primary {} us",
        b.handle.counters().rx_wait_us_max,
        p.handle.counters().rx_wait_us_max
    );
    let secs = start.elapsed().as_secs_f64();
    let _ = p.sender.close();
    drop(b);
    mib as f64 / secs
}

fn plain_throughput(mib: usize) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let total = mib << 20;
    let rx = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; PIECE];
        let mut got = 0usize;
        while got < total {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed early");
            got += n;
        }
        s.write_all(&[1]).expect("done");
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let data = vec![0x5au8; PIECE];
    let start = Instant::now();
    for _ in 0..total / PIECE {
        s.write_all(&data).expect("write");
    }
    let mut done = [0u8; 1];
    s.read_exact(&mut done).expect("done");
    let secs = start.elapsed().as_secs_f64();
    rx.join().expect("rx");
    mib as f64 / secs
}

fn channel_rtts(count: usize) -> Vec<Duration> {
    let (mut p, mut b) = pair();
    let rx = thread::spawn(move || {
        while let Ok(item) = b.receiver.recv() {
            if item == Incoming::Progress(pos(count as u64)) {
                break;
            }
        }
        b
    });
    let mut rtts = Vec::with_capacity(count);
    for i in 1..=count as u64 {
        let t = Instant::now();
        p.sender.send_progress(pos(i)).expect("progress");
        p.handle.wait_acked(pos(i)).expect("acked");
        rtts.push(t.elapsed());
    }
    let b = rx.join().expect("rx");
    let _ = p.sender.close();
    drop(b);
    rtts
}

fn plain_rtts(count: usize) -> Vec<Duration> {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let echo = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 16];
        for _ in 0..count {
            s.read_exact(&mut buf).expect("read");
            s.write_all(&buf[..8]).expect("write");
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 8];
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&[3u8; 16]).expect("write");
        s.read_exact(&mut buf).expect("read");
        rtts.push(t.elapsed());
    }
    echo.join().expect("echo");
    rtts
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mib = arg(1, 256);
    let count = arg(2, 2000);
    let runs = arg(3, 3);
    let mut plain = Vec::new();
    let mut chan = Vec::new();
    let (mut plain_rtt, mut chan_rtt) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(plain_throughput(mib));
        chan.push(channel_throughput(mib));
        plain_rtt.extend(plain_rtts(count));
        chan_rtt.extend(channel_rtts(count));
    }
    let (plain, chan) = (median(plain), median(chan));
    println!(
        "logging channel vs plain TCP, loopback, {runs} runs of {mib} MiB and {count} round trips"
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "plain TCP", "channel", "ratio"
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>8.2}",
        "throughput MiB/s (median)",
        plain,
        chan,
        chan / plain
    );
    for (name, p) in [("round trip p50 us", 0.5), ("round trip p99 us", 0.99)] {
        let a = percentile(&mut plain_rtt, p);
        let b = percentile(&mut chan_rtt, p);
        println!("{name:<28} {a:>12.1} {b:>12.1} {:>8.2}", b / a);
    }
}
