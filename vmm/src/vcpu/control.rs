// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! What other threads may ask of the vCPU thread, and how they wake it.
//!
//! Other threads never touch guest-visible state: they post a request or a
//! host input here and kick the vCPU; the vCPU thread acts on it at its next
//! exit. The timer thread kicks the vCPU when the APIC timer's deadline (as
//! published by the vCPU thread) passes.
//!
//! Wake-ups cost host CPU and latency on every request and timer tick, so
//! a kick is only as strong as it needs to be: the signal that interrupts
//! `KVM_RUN` is sent only while the vCPU is in the guest (or about to
//! enter it), a halted vCPU is woken through its own condition variable,
//! and the timer thread waits on another one, so that neither wakes the
//! other for nothing. A halted vCPU sleeps until the timer deadline by
//! itself: the timer thread does not kick it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use devices::clock::Clock;
use hypervisor::kick::Kicker;

/// What the control loop asks of a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running the guest.
    Running,
    /// Asked to pause; not yet acknowledged.
    PauseRequested,
    /// Paused at an exit.
    Paused,
    /// Asked to stop for good.
    StopRequested,
    /// The vCPU thread has ended.
    Stopped,
}

#[derive(Debug)]
struct State {
    run: RunState,
    deadline: Option<u64>,
    input: VecDeque<u8>,
    /// A device finished host work: poll event sources.
    events_ready: bool,
    /// The vCPU thread sleeps in [`VcpuControl::wait_halted`].
    halted: bool,
    /// Kicks so far, and how many of them the vCPU had seen when it last
    /// looked at pending work (see [`VcpuControl::mark_seen`]).
    posted: u64,
    seen: u64,
    /// Work for the paused vCPU thread (see [`VcpuControl::run_paused`]).
    job: Option<PausedJob>,
    /// Jobs the vCPU thread has run.
    jobs_done: u64,
}

/// Work that must run on the vCPU thread while it is paused (saving the
/// vCPU's and the devices' state for a snapshot): it gets the thread's
/// [`VcpuRunner`](super::VcpuRunner).
pub struct PausedJob(pub Box<dyn FnOnce(&mut super::VcpuRunner) + Send>);

impl std::fmt::Debug for PausedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PausedJob")
    }
}

/// Shared between the vCPU thread, its timer thread and the control loop.
#[derive(Debug)]
pub struct VcpuControl {
    state: Mutex<State>,
    /// Run-state changes (pause, resume, stop handshakes).
    cv: Condvar,
    /// Wakes the halted vCPU.
    halt_cv: Condvar,
    /// Wakes the timer thread (the deadline changed, or the vCPU stopped).
    timer_cv: Condvar,
    kicker: Mutex<Option<Kicker>>,
    /// The vCPU is in `KVM_RUN`, or past its last look at pending work on
    /// the way there. Set under the state lock; read under it by kickers.
    in_guest: AtomicBool,
}

/// How long a control-loop request waits for the vCPU to acknowledge it.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

impl VcpuControl {
    /// A control block for a running vCPU.
    pub fn new() -> Arc<Self> {
        Arc::new(VcpuControl {
            state: Mutex::new(State {
                run: RunState::Running,
                deadline: None,
                input: VecDeque::new(),
                events_ready: false,
                halted: false,
                posted: 0,
                seen: 0,
                job: None,
                jobs_done: 0,
            }),
            cv: Condvar::new(),
            halt_cv: Condvar::new(),
            timer_cv: Condvar::new(),
            kicker: Mutex::new(None),
            in_guest: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the vCPU thread's kicker.
    pub fn set_kicker(&self, kicker: Option<Kicker>) {
        *self.kicker.lock().unwrap_or_else(|e| e.into_inner()) = kicker;
    }

    /// Kicks the vCPU out of the guest and wakes it if it waits.
    pub fn kick(&self) {
        let mut s = self.lock();
        self.kick_locked(&mut s);
    }

    /// Kicks with the state lock held (the caller has just posted what the
    /// vCPU must act on): a signal only if the vCPU is in the guest, a
    /// wake-up only if it is halted. Otherwise it is between exits and
    /// sees the posted work before it enters the guest again (see
    /// [`enter_guest`](Self::enter_guest)).
    fn kick_locked(&self, s: &mut State) {
        s.posted = s.posted.wrapping_add(1);
        if self.in_guest.load(Ordering::SeqCst) {
            self.signal();
        }
        if s.halted {
            self.halt_cv.notify_one();
        }
    }

    fn signal(&self) {
        if let Some(k) = self
            .kicker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            k.kick();
        }
    }

    /// The current run state.
    pub fn run_state(&self) -> RunState {
        self.lock().run
    }

    /// Asks the vCPU to pause and waits until it has. False on timeout or if
    /// the vCPU is not running.
    pub fn pause(&self) -> bool {
        {
            let mut s = self.lock();
            if s.run != RunState::Running {
                return s.run == RunState::Paused;
            }
            s.run = RunState::PauseRequested;
            self.kick_locked(&mut s);
        }
        self.wait_for(|r| r != RunState::PauseRequested) == RunState::Paused
    }

    /// Asks a vCPU that has not run yet to pause at its first loop turn,
    /// before the guest runs (a restored VM starts paused); confirm with
    /// [`wait_paused`](Self::wait_paused) once its thread runs.
    pub fn request_pause(&self) {
        let mut s = self.lock();
        if s.run == RunState::Running {
            s.run = RunState::PauseRequested;
        }
    }

    /// Waits until a requested pause is acknowledged. False on timeout.
    pub fn wait_paused(&self) -> bool {
        self.wait_for(|r| r != RunState::PauseRequested) == RunState::Paused
    }

    /// Runs `job` on the paused vCPU thread and waits until it has run.
    /// False if the vCPU is not paused or did not take the job in time.
    pub fn run_paused(&self, job: PausedJob) -> bool {
        let target = {
            let mut s = self.lock();
            if s.run != RunState::Paused || s.job.is_some() {
                return false;
            }
            s.job = Some(job);
            s.jobs_done.wrapping_add(1)
        };
        self.cv.notify_all();
        let s = self.lock();
        let (s, _) = self
            .cv
            .wait_timeout_while(s, ACK_TIMEOUT, |s| {
                s.jobs_done != target && s.run == RunState::Paused
            })
            .unwrap_or_else(|e| e.into_inner());
        s.jobs_done == target
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self) -> bool {
        let mut s = self.lock();
        if s.run != RunState::Paused {
            return false;
        }
        s.run = RunState::Running;
        drop(s);
        self.cv.notify_all();
        true
    }

    /// Asks the vCPU thread to end and waits until it has (or timeout).
    pub fn stop(&self) -> bool {
        {
            let mut s = self.lock();
            if s.run == RunState::Stopped {
                return true;
            }
            s.run = RunState::StopRequested;
            self.kick_locked(&mut s);
        }
        self.wait_for(|r| r == RunState::Stopped) == RunState::Stopped
    }

    fn wait_for(&self, done: impl Fn(RunState) -> bool) -> RunState {
        let s = self.lock();
        let (s, _) = self
            .cv
            .wait_timeout_while(s, ACK_TIMEOUT, |s| !done(s.run))
            .unwrap_or_else(|e| e.into_inner());
        s.run
    }

    /// Queues host input bytes for the guest (serial) and wakes the vCPU.
    pub fn push_input(&self, bytes: &[u8]) {
        let mut s = self.lock();
        s.input.extend(bytes.iter().copied());
        self.kick_locked(&mut s);
    }

    /// Clears and returns the "device events ready" flag (vCPU thread).
    pub fn take_events_ready(&self) -> bool {
        std::mem::take(&mut self.lock().events_ready)
    }

    /// Whether a device has posted events not yet polled (the flag stays set).
    pub fn events_pending(&self) -> bool {
        self.lock().events_ready
    }

    /// Host input waiting for the guest.
    pub fn input_len(&self) -> usize {
        self.lock().input.len()
    }

    /// Takes up to `max` queued input bytes.
    pub fn take_input(&self, max: usize) -> Vec<u8> {
        let mut s = self.lock();
        let n = max.min(s.input.len());
        s.input.drain(..n).collect()
    }

    // ---- called by the vCPU thread ----

    /// The vCPU thread's view at a loop turn: acknowledges a pause request
    /// and blocks while paused. Returns false when the vCPU must stop.
    pub fn rendezvous(&self, on_pause: impl Fn(), on_resume: impl Fn()) -> bool {
        self.rendezvous_with_jobs(on_pause, on_resume, drop)
    }

    /// As [`rendezvous`](Self::rendezvous), running the jobs posted by
    /// [`run_paused`](Self::run_paused) with `run_job` while paused.
    pub fn rendezvous_with_jobs(
        &self,
        on_pause: impl Fn(),
        on_resume: impl Fn(),
        mut run_job: impl FnMut(PausedJob),
    ) -> bool {
        let mut s = self.lock();
        if s.run == RunState::PauseRequested {
            s.run = RunState::Paused;
            s.deadline = None;
            on_pause();
            self.cv.notify_all();
            while s.run == RunState::Paused {
                if let Some(job) = s.job.take() {
                    drop(s);
                    run_job(job);
                    s = self.lock();
                    s.jobs_done = s.jobs_done.wrapping_add(1);
                    self.cv.notify_all();
                    continue;
                }
                s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            on_resume();
        }
        s.run != RunState::StopRequested
    }

    /// Publishes the clock time at which the vCPU must be kicked (APIC timer).
    pub fn set_deadline(&self, deadline: Option<u64>) {
        let mut s = self.lock();
        if s.deadline != deadline {
            // A later deadline needs no wake-up: the timer thread finds it
            // when its current wait ends.
            let sooner = match (s.deadline, deadline) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(old), Some(new)) => new < old,
            };
            s.deadline = deadline;
            drop(s);
            if sooner {
                self.timer_cv.notify_one();
            }
        }
    }

    /// Called by the vCPU thread right before it looks at pending work
    /// (a loop turn's delivery): kicks posted until now are seen.
    pub fn mark_seen(&self) {
        let mut s = self.lock();
        s.seen = s.posted;
    }

    /// Called right before `KVM_RUN`, after the loop turn delivered what
    /// was pending: marks the vCPU as in the guest, so that kickers signal
    /// it from now on. Returns true if a kick came (or the deadline
    /// passed) since [`mark_seen`](Self::mark_seen) without a signal: the
    /// caller then makes `KVM_RUN` return at once, as that signal would
    /// have. (Work seen but left pending, as recording leaves events for
    /// a synchronous exit, does not count: the guest must run to reach it.)
    ///
    /// `deadline` is published for the timer thread as by
    /// [`set_deadline`](Self::set_deadline).
    pub fn enter_guest(&self, clock: &dyn Clock, deadline: Option<u64>) -> bool {
        self.set_deadline(deadline);
        let s = self.lock();
        self.in_guest.store(true, Ordering::SeqCst);
        // The timer thread may have passed the deadline while the vCPU was
        // not in the guest (and sent no signal): compare with the
        // vCPU's own deadline, which the timer thread does not clear.
        s.posted != s.seen || deadline.is_some_and(|d| clock.now_ns() >= d)
    }

    /// Called when `KVM_RUN` returned: kicks need no signal until the next
    /// [`enter_guest`](Self::enter_guest). (A kicker that still saw the
    /// flag set sends a signal that only ends the next `KVM_RUN` early.)
    pub fn leave_guest(&self) {
        self.in_guest.store(false, Ordering::SeqCst);
    }

    /// Blocks a halted vCPU until `deadline` (clock time), a request, or input.
    pub fn wait_halted(&self, clock: &dyn Clock, deadline: Option<u64>) {
        let mut s = self.lock();
        if s.run != RunState::Running || !s.input.is_empty() || s.events_ready {
            return;
        }
        let timeout = match deadline {
            Some(d) => Duration::from_nanos(d.saturating_sub(clock.now_ns())),
            None => Duration::from_secs(3600),
        };
        if timeout.is_zero() {
            return;
        }
        s.halted = true;
        let (mut s, _) = self
            .halt_cv
            .wait_timeout_while(s, timeout, |s| {
                s.run == RunState::Running && s.input.is_empty() && !s.events_ready
            })
            .unwrap_or_else(|e| e.into_inner());
        s.halted = false;
    }

    /// Marks the vCPU thread as ended.
    pub fn mark_stopped(&self) {
        self.lock().run = RunState::Stopped;
        self.set_kicker(None);
        self.cv.notify_all();
        self.timer_cv.notify_all();
    }

    /// The timer thread: kicks the vCPU whenever the published deadline
    /// passes while it is in the guest, until the vCPU stops. (A halted
    /// vCPU wakes at the deadline by itself, and one between exits checks
    /// the deadline before it enters the guest.)
    pub fn timer_loop(&self, clock: &dyn Clock) {
        let mut s = self.lock();
        loop {
            if s.run == RunState::Stopped {
                return;
            }
            match s.deadline {
                None => {
                    s = self.timer_cv.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                Some(d) => {
                    let now = clock.now_ns();
                    if now >= d {
                        s.deadline = None;
                        if self.in_guest.load(Ordering::SeqCst) {
                            self.signal();
                        }
                    } else {
                        let (g, _) = self
                            .timer_cv
                            .wait_timeout(s, Duration::from_nanos(d - now))
                            .unwrap_or_else(|e| e.into_inner());
                        s = g;
                    }
                }
            }
        }
    }
}

impl devices::async_event::Waker for VcpuControl {
    fn wake(&self) {
        let mut s = self.lock();
        if s.events_ready {
            // Already posted and kicked: the vCPU has not polled yet.
            return;
        }
        s.events_ready = true;
        self.kick_locked(&mut s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::clock::ManualClock;

    #[test]
    fn pause_resume_stop_handshake() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let c = VcpuControl::new();
        let turns = Arc::new(AtomicU32::new(0));
        let (c2, t2) = (c.clone(), turns.clone());
        let t = std::thread::spawn(move || {
            while c2.rendezvous(|| {}, || {}) {
                t2.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
            c2.mark_stopped();
        });
        assert!(c.pause());
        assert_eq!(c.run_state(), RunState::Paused);
        let at_pause = turns.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(turns.load(Ordering::SeqCst), at_pause, "ran while paused");
        assert!(c.resume());
        assert!(!c.resume(), "resuming a running vCPU");
        let start = std::time::Instant::now();
        while turns.load(Ordering::SeqCst) <= at_pause + 3 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no progress after resume"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(c.stop());
        t.join().unwrap();
        assert_eq!(c.run_state(), RunState::Stopped);
        assert!(!c.pause());
    }

    #[test]
    fn entering_the_guest_sees_kicks_since_the_last_look() {
        let c = VcpuControl::new();
        let clock = ManualClock::new(100);
        c.mark_seen();
        assert!(!c.enter_guest(&clock, None), "nothing posted");
        c.leave_guest();
        // Posted while the vCPU was between exits (no signal): the next
        // entry must return at once.
        c.push_input(b"x");
        assert!(
            c.enter_guest(&clock, None),
            "input posted since the last look"
        );
        c.leave_guest();
        // Seen (say, left pending by a recording at a kick): the guest runs.
        c.mark_seen();
        assert!(!c.enter_guest(&clock, Some(200)), "deadline still ahead");
        c.leave_guest();
        assert!(c.enter_guest(&clock, Some(100)), "deadline passed");
        c.leave_guest();
        assert_eq!(c.take_input(1), b"x");
    }

    #[test]
    fn input_queue() {
        let c = VcpuControl::new();
        c.push_input(b"hello");
        assert_eq!(c.input_len(), 5);
        assert_eq!(c.take_input(3), b"hel");
        assert_eq!(c.take_input(10), b"lo");
    }

    #[test]
    fn halted_wait_returns_at_deadline_or_input() {
        let c = VcpuControl::new();
        let clock = ManualClock::new(100);
        // A deadline already passed: no wait at all.
        c.wait_halted(&clock, Some(50));
        // Input pending: no wait.
        c.push_input(b"x");
        c.wait_halted(&clock, None);
        let _ = c.take_input(1);
        // A device event wakes a halted vCPU from another thread.
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            devices::async_event::Waker::wake(c2.as_ref());
        });
        let start = std::time::Instant::now();
        c.wait_halted(&clock, None);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(c.take_events_ready());
        assert!(!c.take_events_ready());
        t.join().unwrap();
    }
}
