// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `SIGTERM` and `SIGINT` end the VMM cleanly, as upstream: the guest is
//! stopped, the API socket removed, the terminal's settings restored, and
//! the process exits 0.
//!
//! The handler only does async-signal-safe work: it records the signal
//! and writes an eventfd. A thread waiting on that eventfd turns it into
//! a [`ControlEvent::Signal`] for the control loop. Should a second
//! signal arrive before the VMM is gone (a clean stop that does not
//! finish), the handler restores the terminal itself and exits at once
//! with status 128 + the signal number.

use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::OnceLock;

use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

use crate::ControlEvent;

/// The signals that end the VMM.
pub const HANDLED_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The first signal received (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The eventfd the handler writes; set once, before any handler is
/// installed.
static WAKE: OnceLock<EventFd> = OnceLock::new();

/// Why the handlers could not be installed.
#[derive(Debug, Error)]
pub enum SignalError {
    /// The eventfd could not be created.
    #[error("cannot create the signal eventfd")]
    EventFd(#[source] io::Error),
    /// The waiting thread could not be started.
    #[error("cannot start the signal thread")]
    Thread(#[source] io::Error),
    /// `sigaction` failed.
    #[error("cannot install the handler of signal {0}")]
    Sigaction(libc::c_int, #[source] io::Error),
    /// The handlers are installed already (one VMM per process).
    #[error("the signal handlers are installed already")]
    AlreadyInstalled,
}

/// Whether SIGTERM or SIGINT has arrived (for waits outside the control
/// loop, such as a backup waiting for its primary).
pub fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// The name of a signal this module handles.
pub fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    let first = RECEIVED
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !first {
        // A second signal: the clean stop did not finish in time for the
        // user. Leave the terminal as it was found, and go.
        crate::stdin::restore_terminal_settings();
        // SAFETY: _exit is async-signal-safe and ends the process.
        unsafe { libc::_exit(128 + signal) };
    }
    if let Some(wake) = WAKE.get() {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; it reads 8 bytes from
        // `one`, which outlives the call. A failure cannot be reported
        // here; the counter of an eventfd cannot overflow from one write.
        unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Installs the handlers of [`HANDLED_SIGNALS`]; from then on each such
/// signal reaches the control loop as a [`ControlEvent::Signal`] on
/// `events`.
pub fn install(events: Sender<ControlEvent>) -> Result<(), SignalError> {
    let wake = EventFd::new(libc::EFD_CLOEXEC).map_err(SignalError::EventFd)?;
    let wait = wake.try_clone().map_err(SignalError::EventFd)?;
    WAKE.set(wake).map_err(|_| SignalError::AlreadyInstalled)?;
    std::thread::Builder::new()
        .name("vmm-signals".into())
        .spawn(move || loop {
            match wait.read() {
                Ok(_) => {
                    let signal = RECEIVED.load(Ordering::SeqCst);
                    if events.send(ControlEvent::Signal(signal)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("signal thread: {e}");
                    return;
                }
            }
        })
        .map_err(SignalError::Thread)?;
    for signal in HANDLED_SIGNALS {
        // SAFETY: a zeroed sigaction is a valid starting value; every
        // field used is set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: installs a handler that only does async-signal-safe work
        // (atomics, write(2), tcsetattr, _exit).
        let r = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        if r != 0 {
            return Err(SignalError::Sigaction(signal, io::Error::last_os_error()));
        }
    }
    Ok(())
}
