// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Kicking a vCPU out of `KVM_RUN` from another thread.
//!
//! The vCPU thread publishes a pointer to its `kvm_run` area in a
//! thread-local; the kick signal's handler, which runs on that thread, sets
//! `immediate_exit` there. A kick that lands just before `KVM_RUN` is
//! therefore not lost: the next `KVM_RUN` returns at once.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock};

use crate::{HypervisorError, Result};

thread_local! {
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used for kicks.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {
    // try_with: the thread-local may already be gone on a thread being torn down.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let ptr = p.get();
        if !ptr.is_null() {
            // SAFETY: the pointer was published by `publish_immediate_exit` on
            // this thread and points into the vCPU's kvm_run mapping, which
            // outlives the registration (cleared in `Drop for Registration`).
            unsafe { std::ptr::write_volatile(ptr, 1) };
        }
    });
}

fn install_handler() -> Result<()> {
    static INSTALLED: OnceLock<i32> = OnceLock::new();
    let err = *INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid starting value; the handler
        // and flags are set before use.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_kick as *const () as usize;
        act.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
                          // SAFETY: act.sa_mask is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: installs a handler that only does an async-signal-safe
        // volatile store; `act` is fully initialised.
        let r = unsafe { libc::sigaction(kick_signal(), &act, std::ptr::null_mut()) };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL)
        }
    });
    if err == 0 {
        Ok(())
    } else {
        Err(HypervisorError::KickSignal(
            std::io::Error::from_raw_os_error(err),
        ))
    }
}

/// Publishes `ptr` (the vCPU's `kvm_run.immediate_exit`) for this thread's
/// kick handler and returns a [`Kicker`] other threads can use.
///
/// # Safety
/// `ptr` must stay valid for writes until the returned kicker is retired
/// with [`Kicker::retire`] on this same thread.
pub unsafe fn publish_immediate_exit(ptr: *mut u8) -> Result<Kicker> {
    install_handler()?;
    IMMEDIATE_EXIT.with(|p| p.set(ptr));
    // SAFETY: pthread_self has no preconditions.
    let tid = unsafe { libc::pthread_self() };
    Ok(Kicker {
        inner: Arc::new(Mutex::new(Some(tid))),
    })
}

/// A handle that kicks one vCPU thread out of the guest.
#[derive(Debug, Clone)]
pub struct Kicker {
    inner: Arc<Mutex<Option<libc::pthread_t>>>,
}

impl Kicker {
    /// Interrupts the vCPU: `KVM_RUN` returns (now or at its next call).
    /// Does nothing once the vCPU thread has retired the kicker.
    pub fn kick(&self) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tid) = *guard {
            // SAFETY: the thread is alive: it clears this slot (under the same
            // lock) before it exits, see `retire`.
            unsafe { libc::pthread_kill(tid, kick_signal()) };
        }
    }

    /// Called by the vCPU thread before it stops using the kvm_run area:
    /// later kicks do nothing.
    pub fn retire(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
    }
}
