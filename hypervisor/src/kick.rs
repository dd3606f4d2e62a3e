// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Kicking a vCPU out of `KVM_RUN` from another thread.
//!
//! The vCPU thread publishes a pointer to its `kvm_run` area in a
//! thread-local; the kick signal's handler, which runs on that thread, sets
//! `immediate_exit` there. A kick that lands just before `KVM_RUN` is
//! therefore not lost: the next `KVM_RUN` returns at once.
//!
//! The handler acts only while the thread has declared itself in the
//! guest ([`set_in_guest`]): a kick meant for a vCPU that is between exits
//! or halted must not cut its next guest run short (the VMM checks for
//! pending work after declaring itself in the guest, so none is lost).
//!
//! A kick can also come from the kernel at a deadline: each kicker owns a
//! POSIX timer that sends the kick signal to the vCPU thread itself
//! ([`Kicker::arm`]), so that a timer deadline costs no other thread a
//! wake-up.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::{HypervisorError, Result};

thread_local! {
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
    static IN_GUEST: Cell<bool> = const { Cell::new(false) };
}

/// Declares whether the calling vCPU thread is in the guest (or on its way
/// into `KVM_RUN`): only then does a kick set `immediate_exit`. Set it
/// before the last check for pending work ahead of `KVM_RUN`.
pub fn set_in_guest(on: bool) {
    IN_GUEST.with(|g| g.set(on));
    // The handler runs on this thread: order the flag with the checks
    // around it as the program orders them.
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// The signal used for kicks.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {
    // try_with: the thread-local may already be gone on a thread being torn down.
    let in_guest = IN_GUEST.try_with(|g| g.get()).unwrap_or(false);
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let ptr = p.get();
        if in_guest && !ptr.is_null() {
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
    let timer = KickTimer::new()?;
    IMMEDIATE_EXIT.with(|p| p.set(ptr));
    // SAFETY: pthread_self has no preconditions.
    let tid = unsafe { libc::pthread_self() };
    Ok(Kicker {
        inner: Arc::new(Mutex::new(Some(Target { tid, timer }))),
    })
}

/// A POSIX timer (CLOCK_MONOTONIC) whose expiry sends the kick signal to
/// the thread that created it.
#[derive(Debug)]
struct KickTimer(libc::timer_t);

// SAFETY: a timer_t is a process-wide timer id; timer_settime and
// timer_delete may be called on it from any thread.
unsafe impl Send for KickTimer {}

impl KickTimer {
    fn new() -> Result<Self> {
        // SAFETY: a zeroed sigevent is a valid starting value; the fields
        // used are set below.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `sev` and `id` are valid for the call; the kernel fills `id`.
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) };
        if r != 0 {
            return Err(HypervisorError::KickTimer(std::io::Error::last_os_error()));
        }
        Ok(KickTimer(id))
    }

    /// Fires once after `after` (at least 1 ns), or never with `None`.
    fn set(&self, after: Option<Duration>) {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = after.map_or(zero, |d| {
            let d = d.max(Duration::from_nanos(1));
            libc::timespec {
                tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(d.subsec_nanos()),
            }
        });
        let spec = libc::itimerspec {
            it_interval: zero,
            it_value: value,
        };
        // SAFETY: the timer is alive (deleted only on drop) and `spec` is
        // valid; the old value is not wanted. It cannot fail for a valid
        // timer and timespec.
        unsafe { libc::timer_settime(self.0, 0, &spec, std::ptr::null_mut()) };
    }
}

impl Drop for KickTimer {
    fn drop(&mut self) {
        // SAFETY: the timer was created by timer_create and is deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

#[derive(Debug)]
struct Target {
    tid: libc::pthread_t,
    timer: KickTimer,
}

/// A handle that kicks one vCPU thread out of the guest.
#[derive(Debug, Clone)]
pub struct Kicker {
    inner: Arc<Mutex<Option<Target>>>,
}

impl Kicker {
    /// Interrupts the vCPU: `KVM_RUN` returns (now or at its next call).
    /// Does nothing once the vCPU thread has retired the kicker.
    pub fn kick(&self) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = guard.as_ref() {
            // SAFETY: the thread is alive: it clears this slot (under the same
            // lock) before it exits, see `retire`.
            unsafe { libc::pthread_kill(t.tid, kick_signal()) };
        }
    }

    /// Kicks the vCPU after `after` (replacing an earlier deadline), from
    /// the kernel's timer; `None` cancels. Does nothing once retired.
    pub fn arm(&self, after: Option<Duration>) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = guard.as_ref() {
            t.timer.set(after);
        }
    }

    /// Called by the vCPU thread before it stops using the kvm_run area:
    /// later kicks do nothing.
    pub fn retire(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping the target deletes its timer: no signal comes later.
        *guard = None;
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
        IN_GUEST.with(|g| g.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(ptr: *mut u8) -> u8 {
        // SAFETY: `ptr` points at the test's live byte.
        unsafe { std::ptr::read_volatile(ptr) }
    }

    fn clear(ptr: *mut u8) {
        // SAFETY: `ptr` points at the test's live byte.
        unsafe { std::ptr::write_volatile(ptr, 0) }
    }

    #[test]
    fn kicks_and_the_timer_act_only_in_the_guest() {
        let mut byte = Box::new(0u8);
        let ptr: *mut u8 = &mut *byte;
        // SAFETY: `byte` outlives the kicker, retired below on this thread.
        let kicker = unsafe { publish_immediate_exit(ptr) }.unwrap();

        // A kick to a thread that is not in the guest changes nothing (a
        // signal to the calling thread is handled before pthread_kill
        // returns).
        kicker.kick();
        assert_eq!(flag(ptr), 0, "a kick outside the guest set immediate_exit");
        set_in_guest(true);
        kicker.kick();
        assert_eq!(
            flag(ptr),
            1,
            "a kick in the guest did not set immediate_exit"
        );

        // The timer kicks this thread at its deadline (the sleep is
        // interrupted by the signal and goes on).
        clear(ptr);
        kicker.arm(Some(Duration::from_millis(5)));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(flag(ptr), 1, "the kick timer did not fire");

        // Disarmed, or fired outside the guest: nothing.
        clear(ptr);
        kicker.arm(Some(Duration::from_millis(20)));
        kicker.arm(None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(flag(ptr), 0, "a disarmed kick timer fired");
        set_in_guest(false);
        kicker.arm(Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            flag(ptr),
            0,
            "a timer kick outside the guest set immediate_exit"
        );

        kicker.retire();
        kicker.kick();
        kicker.arm(Some(Duration::from_millis(1)));
        drop(byte);
    }
}
