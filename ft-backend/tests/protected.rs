// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! "Protected" means the backup can take over: a backup without the
//! stream's header does not claim the tiebreak (it has nothing to go live
//! with), so a primary reports the pair protected only once the backup
//! acknowledged the header and setup frame. Before that a primary lost
//! loses the VM, and saying "protected" would be a lie.

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ft_backend::channel::{
    accept_established, connect, open_established, ChannelConfig, ChannelKey, Hello, Role,
};
use ft_backend::pair::primary::Primary;
use ft_backend::pair::{PairState, PairStatus};
use ft_backend::tiebreak::Tiebreaker;
use ft_backend::{LogHeader, Setup};

fn config() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(3000),
        ..ChannelConfig::default()
    }
}

#[test]
fn a_primary_is_protected_only_once_the_backup_acknowledged_the_stream_header() {
    let dir = std::env::temp_dir().join(format!("ft-protected-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test step");
    let tb: Tiebreaker = format!("file:{}", dir.join("tiebreak").display())
        .parse()
        .expect("test step");
    let l = TcpListener::bind("127.0.0.1:0").expect("test step");
    let addr = l.local_addr().expect("test step");
    let key = ChannelKey::from_bytes([3; 32]);
    let k2 = ChannelKey::from_bytes([3; 32]);
    // The backup completes the handshake, then reads nothing until told
    // (a backup still building its VM, or a link that stalls).
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let backup = thread::spawn(move || {
        let est = accept_established(&l, &k2, &Hello::new(Role::Backup, 5, vec![], 0), &config())
            .expect("test step");
        go_rx.recv().expect("test step");
        let ch = open_established(est, &config()).expect("test step");
        done_rx.recv().expect("test step");
        drop(ch);
    });
    let ch = connect(
        addr,
        &key,
        &Hello::new(Role::Primary, 5, vec![], 11),
        &config(),
    )
    .expect("test step");
    let status = PairStatus::new("primary", addr.to_string());
    let primary = Primary::start(ch, status.clone(), 11, false, tb).expect("test step");
    // Connected, not protected: the stream has not even begun.
    assert_eq!(status.state(), PairState::Connecting);
    let ack = primary.stream_ack();
    let _recorder = primary
        .recorder(
            LogHeader {
                config_digest: 5,
                max_delay_us: 2000,
            },
            Setup::default(),
        )
        .expect("test step");
    // Sent, but the backup has not read it: still not protected.
    let early = ack.wait(Duration::from_millis(400));
    assert!(early.is_err(), "{early:?}");
    assert!(
        early.unwrap_err().contains("did not acknowledge"),
        "a timeout, not a loss"
    );
    assert_eq!(status.state(), PairState::Connecting);
    // The backup reads and acknowledges: now it could take over.
    go_tx.send(()).expect("test step");
    ack.wait(Duration::from_secs(5)).expect("acknowledged");
    status.protected(&[("generation", "11".into())]);
    assert_eq!(status.state(), PairState::Protected);
    assert_eq!(status.info()["state"], "protected");
    done_tx.send(()).expect("test step");
    drop(primary);
    backup.join().expect("test step");
    let _ = std::fs::remove_dir_all(&dir);
}
