// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Host standard input for `--serial tty`: read on a host thread, queued
//! for the vCPU thread, which hands it to the serial port at an exit.
//!
//! Nothing here takes the standard library's stdin lock, so nothing can
//! wait on a reader blocked in `read(0)`:
//! - the reader thread `poll()`s descriptor 0 together with a stop
//!   eventfd and reads descriptor 0 with `read(2)` only when it is
//!   readable, so [`restore_terminal`] can stop and join it at once;
//! - the terminal's settings are saved (`tcgetattr`) before raw mode and
//!   restored from that copy (`tcsetattr`), exactly as they were. The
//!   restore needs no lock and is async-signal-safe, so a signal handler
//!   can use it too ([`restore_terminal_settings`]).

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::VcpuControl;

/// Where input goes: the current VM's vCPU (replaced on reboot).
static TARGET: Mutex<Option<Arc<VcpuControl>>> = Mutex::new(None);
/// The terminal's settings before this process changed them, if it did.
static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();
/// The running reader, if any.
static READER: Mutex<Option<Reader>> = Mutex::new(None);

/// The reader thread and the eventfd that stops it.
#[derive(Debug)]
struct Reader {
    stop: EventFd,
    thread: JoinHandle<()>,
}

/// Sends standard input to `control`'s vCPU from now on. The reader thread
/// is started on the first call and follows VM reboots; on the first call
/// a terminal on standard input is put in raw mode (no line editing, echo
/// or signal keys: they all go to the guest, as upstream).
pub fn start_stdin_reader(control: Arc<VcpuControl>) {
    *TARGET.lock().unwrap_or_else(|e| e.into_inner()) = Some(control);
    let mut reader = READER.lock().unwrap_or_else(|e| e.into_inner());
    if reader.is_some() {
        return;
    }
    if let Err(e) = enter_raw_mode() {
        log::warn!("cannot put the terminal in raw mode: {e}");
    }
    let stop = match EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) {
        Ok(stop) => stop,
        Err(e) => {
            log::warn!("cannot start the serial input thread: eventfd: {e}");
            return;
        }
    };
    let stop_fd = match stop.try_clone() {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("cannot start the serial input thread: eventfd: {e}");
            return;
        }
    };
    match std::thread::Builder::new()
        .name("serial-stdin".into())
        .spawn(move || read_loop(libc::STDIN_FILENO, &stop_fd, deliver))
    {
        Ok(thread) => *reader = Some(Reader { stop, thread }),
        Err(e) => log::warn!("cannot start the serial input thread: {e}"),
    }
}

/// Saves the terminal's settings and clears `ICANON`, `ECHO` and `ISIG`,
/// if standard input is a terminal.
fn enter_raw_mode() -> io::Result<()> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Ok(());
    }
    // SAFETY: termios is plain data; all zeroes is a valid value, and
    // tcgetattr overwrites it.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into `saved`, which outlives the call.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut raw = saved;
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
    // Saved first, so that a signal arriving in between restores it.
    if SAVED_TERMIOS.set(saved).is_err() {
        // Raw mode was entered before in this process: the first saved
        // settings are the ones to restore.
        log::debug!("terminal settings were saved already");
    }
    // SAFETY: tcsetattr reads `raw`, which outlives the call.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hands input to the current VM's vCPU.
fn deliver(bytes: &[u8]) {
    let target = TARGET.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(control) = target {
        control.push_input(bytes);
    }
}

/// Reads `fd` until end of file, an error, or `stop`, handing what it
/// reads to `deliver`.
fn read_loop(fd: RawFd, stop: &EventFd, deliver: impl Fn(&[u8])) {
    let mut buf = [0u8; 256];
    loop {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::warn!("serial input: poll failed: {error}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let revents = fds[0].revents;
        if revents & libc::POLLNVAL != 0 {
            return;
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
            continue;
        }
        // SAFETY: reads at most buf.len() bytes into `buf`, which outlives
        // the call.
        let count = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match count {
            0 => return,
            n if n > 0 => {
                // Positive and at most buf.len(): the conversion is exact.
                let n = usize::try_from(n).unwrap_or(0);
                deliver(&buf[..n]);
            }
            _ => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    // EIO: the terminal hung up.
                    _ => {
                        log::debug!("serial input: read failed: {error}");
                        return;
                    }
                }
            }
        }
    }
}

/// Stops the reader thread (at once: it never blocks outside `poll()`)
/// and puts the terminal's settings back as they were, if this process
/// changed them. Called on every way out of the VMM.
pub fn restore_terminal() {
    let reader = READER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(reader) = reader {
        if let Err(e) = reader.stop.write(1) {
            log::warn!("cannot stop the serial input thread: {e}");
        } else if reader.thread.join().is_err() {
            log::warn!("the serial input thread panicked");
        }
    }
    *TARGET.lock().unwrap_or_else(|e| e.into_inner()) = None;
    restore_terminal_settings();
}

/// Writes back the terminal settings saved before raw mode, if any.
/// Async-signal-safe: no lock, no allocation, one `tcsetattr`.
pub fn restore_terminal_settings() {
    if let Some(saved) = SAVED_TERMIOS.get() {
        // SAFETY: tcsetattr reads `saved`, a valid termios in a static.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::io::FromRawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A pipe: (read end, write end).
    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor, owned by nothing else.
        let read = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        // SAFETY: a fresh descriptor, owned by nothing else.
        let write = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        (read, write)
    }

    fn reader_on(fd: RawFd) -> (EventFd, mpsc::Receiver<Vec<u8>>, JoinHandle<()>) {
        let stop = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let stop_fd = stop.try_clone().expect("eventfd");
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            read_loop(fd, &stop_fd, |bytes| {
                let _ = tx.send(bytes.to_vec());
            })
        });
        (stop, rx, thread)
    }

    /// The root cause of a VMM that waited for a key: a reader blocked
    /// with nothing to read must stop when asked.
    #[test]
    fn a_waiting_reader_stops_when_asked() {
        let (read, mut write) = pipe();
        let (stop, rx, thread) = reader_on(read.as_raw_fd());
        write.write_all(b"abc").expect("write");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("input"),
            b"abc"
        );
        // Nothing more to read: the reader waits; stopping it is prompt.
        stop.write(1).expect("stop");
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(thread.join().is_ok());
        });
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        drop(write);
    }

    #[test]
    fn the_reader_ends_at_end_of_file() {
        let (read, write) = pipe();
        let (_stop, rx, thread) = reader_on(read.as_raw_fd());
        drop(write);
        thread.join().expect("reader");
        assert!(rx.try_recv().is_err());
    }
}
