// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What the fuzz tests of every crate share (`ft-backend`, `vm-migration`
//! and `vmm` include this file): the proptest configuration and the hang
//! watchdog.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use proptest::test_runner::Config;

/// Cases per property in the default test run: a few, so that the whole
/// fuzz suite takes seconds. `PROPTEST_CASES` (set by `scripts/fuzz`)
/// overrides it.
pub const DEFAULT_CASES: u32 = 32;

/// A decoder that has not answered after this long is hung. Generous:
/// the machine running the tests may be loaded; a decoder of the inputs
/// fuzzed here answers in milliseconds.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

/// The proptest configuration of the fuzz tests.
pub fn config() -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
        // The default run is the same every time (a regression run: a
        // failure there is reproducible); the soaks (`scripts/fuzz`, which
        // sets PROPTEST_CASES) draw fresh cases, and PROPTEST_RNG_SEED
        // picks another seed.
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            c.rng_seed = proptest::test_runner::RngSeed::Fixed(DEFAULT_SEED);
        }
    }
    c
}

/// The default run's seed.
const DEFAULT_SEED: u64 = 20261130;

/// Runs `f` on a thread of its own and returns its result; fails the test
/// (naming `what`) if `f` panics or does not return within [`HANG_LIMIT`].
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("a thread for the fuzz case");
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(v) => {
            let _ = worker.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The sender dropped without sending: `f` panicked.
            let cause = worker
                .join()
                .err()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_default();
            panic!("{what} panicked: {cause}")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not answer within {HANG_LIMIT:?}: hung")
        }
    }
}
