// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `--serial tty` on a real terminal: the VMM runs with a pseudo-terminal
//! (openpty) as its standard input, output and error, as in an
//! interactive shell. On every way it can end (the guest powers off,
//! `vmm.shutdown` over the API, SIGTERM, SIGINT, an error) it must exit at
//! once without any key being pressed, and leave the terminal's settings
//! exactly as they were before it started. Typed input reaches the guest.

mod common;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{linux, TempDir};

/// How long an end may take before the VMM counts as hung. Generous (the
/// machine is shared with builds): a VMM waiting for a key never exits.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// The parts of a terminal's settings (`struct termios`) that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    iflag: libc::tcflag_t,
    oflag: libc::tcflag_t,
    cflag: libc::tcflag_t,
    lflag: libc::tcflag_t,
    cc: [libc::cc_t; libc::NCCS],
    ispeed: libc::speed_t,
    ospeed: libc::speed_t,
}

impl Settings {
    fn from_termios(t: &libc::termios) -> Self {
        Settings {
            iflag: t.c_iflag,
            oflag: t.c_oflag,
            cflag: t.c_cflag,
            lflag: t.c_lflag,
            cc: t.c_cc,
            ispeed: t.c_ispeed,
            ospeed: t.c_ospeed,
        }
    }
}

fn tcgetattr(fd: &OwnedFd) -> libc::termios {
    // SAFETY: termios is plain data; tcgetattr overwrites it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: writes into `t`, which outlives the call.
    let r = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    assert_eq!(r, 0, "tcgetattr: {}", io::Error::last_os_error());
    t
}

fn settings(fd: &OwnedFd) -> Settings {
    Settings::from_termios(&tcgetattr(fd))
}

fn set_cloexec(fd: &OwnedFd) {
    // SAFETY: F_SETFD on a descriptor this process owns.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    assert_eq!(r, 0, "fcntl: {}", io::Error::last_os_error());
}

/// A pseudo-terminal and the output read from its master side.
struct Pty {
    master: Arc<OwnedFd>,
    slave: OwnedFd,
    output: common::captured::Captured,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Pty {
    /// A new pty, set up as a user might have it: canonical mode and echo
    /// on, but `stty -isig`, so that a VMM that "restores" the terminal to
    /// canonical defaults instead of to the saved settings is caught.
    fn open() -> Pty {
        let mut master = -1;
        let mut slave = -1;
        // SAFETY: openpty writes the two descriptors; the name, termios and
        // window size pointers may be null.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor, owned by nothing else.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        // SAFETY: a fresh descriptor, owned by nothing else.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        // Other tests' VMMs must not inherit them.
        set_cloexec(&master);
        set_cloexec(&slave);
        let mut t = tcgetattr(&slave);
        t.c_lflag |= libc::ICANON | libc::ECHO;
        t.c_lflag &= !libc::ISIG;
        // SAFETY: reads `t`, which outlives the call.
        let r = unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) };
        assert_eq!(r, 0, "tcsetattr: {}", io::Error::last_os_error());

        let master = Arc::new(master);
        let output = common::captured::Captured::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, output, stop) = (master.clone(), output.clone(), stop.clone());
            std::thread::spawn(move || read_master(&master, &output, &stop))
        };
        Pty {
            master,
            slave,
            output,
            stop,
            reader: Some(reader),
        }
    }

    /// A `Stdio` on the terminal's slave side.
    fn stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("dup the pty slave"))
    }

    fn text(&self) -> String {
        self.output.text()
    }

    fn len(&self) -> usize {
        self.output.len()
    }

    fn contains_after(&self, needle: &str, from: usize) -> bool {
        self.output.contains_after(needle, from)
    }

    /// Types `keys` on the terminal.
    fn type_keys(&self, keys: &str) -> usize {
        let at = self.len();
        // SAFETY: writes keys.len() bytes from `keys`, valid for the call.
        let n = unsafe { libc::write(self.master.as_raw_fd(), keys.as_ptr().cast(), keys.len()) };
        assert_eq!(n, keys.len() as isize, "write to the pty");
        at
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Collects what the VMM writes to the terminal until `stop`.
fn read_master(master: &OwnedFd, output: &common::captured::Captured, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, 50) };
        if r <= 0 || fds[0].revents & libc::POLLIN == 0 {
            if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // No slave open right now (between two VMMs): wait.
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        // SAFETY: reads at most buf.len() bytes into `buf`.
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            output.append(&buf[..n as usize]);
        }
    }
}

/// A VMM on the terminal.
struct Vmm {
    child: Child,
    pty: Pty,
    before: Settings,
}

impl Vmm {
    fn start(args: &[String]) -> Vmm {
        let pty = Pty::open();
        let before = settings(&pty.slave);
        let child = Command::new(common::vmm_bin())
            .args(args)
            .stdin(pty.stdio())
            .stdout(pty.stdio())
            .stderr(pty.stdio())
            .spawn()
            .expect("spawn cloud-hypervisor");
        Vmm { child, pty, before }
    }

    fn wait_for(&mut self, needle: &str, from: usize, timeout: Duration) {
        if !common::wait_until(timeout, || self.pty.contains_after(needle, from)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "no {needle:?} within {timeout:?}; terminal:\n{}",
                self.pty.text()
            );
        }
    }

    /// The terminal is in raw mode while the guest runs.
    fn assert_raw(&self) {
        let now = settings(&self.pty.slave);
        assert_eq!(
            now.lflag & (libc::ICANON | libc::ECHO),
            0,
            "the terminal is not in raw mode while the guest runs"
        );
    }

    /// Waits for the exit (no key is pressed meanwhile); checks it came
    /// within [`EXIT_LIMIT`] and that the terminal is as before. Returns
    /// the status and how long the exit took from `since`.
    fn expect_exit(mut self, what: &str, since: Instant) -> (ExitStatus, Duration, String) {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if since.elapsed() > EXIT_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{what}: the VMM did not exit within {EXIT_LIMIT:?} (waiting for a key?); \
                     terminal:\n{}",
                    self.pty.text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = since.elapsed();
        eprintln!("{what}: exited {status} after {:.3} s", took.as_secs_f64());
        let after = settings(&self.pty.slave);
        assert_eq!(
            after, self.before,
            "{what}: the terminal's settings were not restored"
        );
        // Let the last output drain from the pty.
        std::thread::sleep(Duration::from_millis(100));
        (status, took, self.pty.text())
    }
}

fn guest_args(cmdline: &str) -> Vec<String> {
    let guest = common::test_guest().to_str().expect("UTF-8 path");
    [
        "--kernel",
        guest,
        "--cmdline",
        cmdline,
        "--memory",
        "size=128M",
        "--serial",
        "tty",
        "--console",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An idle guest, up and running on the terminal.
fn idle_vmm(extra: &[String]) -> Vmm {
    let mut args = guest_args("workload=idle");
    args.extend_from_slice(extra);
    let mut vmm = Vmm::start(&args);
    vmm.wait_for("test-guest: ready", 0, Duration::from_secs(60));
    vmm.assert_raw();
    vmm
}

#[test]
fn guest_poweroff_exits_at_once_and_restores_the_terminal() {
    let mut vmm = Vmm::start(&guest_args("workload=ticks count=50 hz=100"));
    vmm.wait_for("test-guest: ready", 0, Duration::from_secs(60));
    vmm.assert_raw();
    vmm.wait_for("ticks=50", 0, Duration::from_secs(60));
    let (status, _, text) = vmm.expect_exit("guest power-off", Instant::now());
    assert_eq!(status.code(), Some(0), "{text}");
}

#[test]
fn vmm_shutdown_over_the_api_exits_at_once_and_restores_the_terminal() {
    let dir = TempDir::new("tty-api");
    let socket = dir.path("api.sock");
    let vmm = idle_vmm(&[
        "--api-socket".to_string(),
        format!("path={}", socket.display()),
    ]);
    let since = Instant::now();
    let (code, body) = common::api(&socket, "PUT", "vmm.shutdown", None);
    assert_eq!(code, 200, "{body}");
    let (status, _, text) = vmm.expect_exit("vmm.shutdown", since);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(!socket.exists(), "the API socket is removed");
}

fn signal_ends_the_vmm(signal: libc::c_int, name: &str) {
    let dir = TempDir::new("tty-signal");
    let socket = dir.path("api.sock");
    let vmm = idle_vmm(&[
        "--api-socket".to_string(),
        format!("path={}", socket.display()),
    ]);
    let pid = libc::pid_t::try_from(vmm.child.id()).expect("pid");
    let since = Instant::now();
    // SAFETY: sends a signal to our own child.
    let r = unsafe { libc::kill(pid, signal) };
    assert_eq!(r, 0, "kill: {}", io::Error::last_os_error());
    let (status, _, text) = vmm.expect_exit(name, since);
    // A clean stop, as upstream: status 0, not death by the signal.
    assert_eq!(status.code(), Some(0), "{status}: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!socket.exists(), "the API socket is removed");
}

#[test]
fn sigterm_exits_at_once_and_restores_the_terminal() {
    signal_ends_the_vmm(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_exits_at_once_and_restores_the_terminal() {
    signal_ends_the_vmm(libc::SIGINT, "SIGINT");
}

/// An error end: a guest reset under --fault-tolerance is refused, and the
/// VMM exits 1 with the reason.
#[test]
fn an_error_exits_at_once_and_restores_the_terminal() {
    let dir = TempDir::new("tty-error");
    let log = dir.path("run.log");
    let mut args = guest_args("workload=reset");
    args.push("--fault-tolerance".into());
    args.push(format!("mode=record,log={}", log.display()));
    let mut vmm = Vmm::start(&args);
    vmm.wait_for("test-guest: ready", 0, Duration::from_secs(60));
    vmm.wait_for("reset: requesting", 0, Duration::from_secs(60));
    let (status, _, text) = vmm.expect_exit("error", Instant::now());
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("a reboot under --fault-tolerance is not supported"),
        "{text}"
    );
}

/// Keys typed on the terminal reach the Linux guest's shell, which
/// computes an answer from them; `poweroff -f` then ends the VMM at once
/// with the terminal restored.
#[test]
fn typed_input_reaches_the_linux_guest_and_poweroff_restores_the_terminal() {
    // No TSC (clearcpuid=4): the guest's clocks then need no host
    // calibration, on any CPU vendor.
    let args = linux::boot_args("VMLINUX", "console=ttyS0 clearcpuid=4,308,151 noxsave");
    let mut vmm = Vmm::start(&args);
    vmm.wait_for("linux-guest: ready", 0, Duration::from_secs(300));
    vmm.assert_raw();
    // The answer is computed in the guest: the keys reached it.
    let at = vmm.pty.type_keys("echo typed-$((6*7))-in\n");
    vmm.wait_for("typed-42-in", at, Duration::from_secs(60));
    vmm.pty.type_keys("poweroff -f\n");
    let (status, _, text) = vmm.expect_exit("Linux poweroff -f", Instant::now());
    assert_eq!(status.code(), Some(0), "{text}");
}
