// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Host standard input for `--serial tty`: read on a host thread, queued
//! for the vCPU thread, which hands it to the serial port at an exit.

use std::io::Read;
use std::sync::{Arc, Mutex, Once};

use vmm_sys_util::terminal::Terminal;

use crate::vcpu::VcpuControl;

static TARGET: Mutex<Option<Arc<VcpuControl>>> = Mutex::new(None);
static RAW_MODE: Mutex<bool> = Mutex::new(false);

/// Sends standard input to `control`'s vCPU from now on (the reader thread
/// is started once per process and follows VM reboots).
pub fn start_stdin_reader(control: Arc<VcpuControl>) {
    *TARGET.lock().unwrap_or_else(|e| e.into_inner()) = Some(control);
    static START: Once = Once::new();
    START.call_once(|| {
        let stdin = std::io::stdin().lock();
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
            if let Err(e) = stdin.set_raw_mode() {
                log::warn!("cannot put the terminal in raw mode: {e}");
            } else {
                *RAW_MODE.lock().unwrap_or_else(|e| e.into_inner()) = true;
            }
        }
        drop(stdin);
        let r = std::thread::Builder::new()
            .name("serial-stdin".into())
            .spawn(|| {
                let mut buf = [0u8; 256];
                let mut stdin = std::io::stdin();
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let target = TARGET.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            if let Some(c) = target {
                                c.push_input(&buf[..n]);
                            }
                        }
                    }
                }
            });
        if let Err(e) = r {
            log::warn!("cannot start the serial input thread: {e}");
        }
    });
}

/// Puts the terminal back in canonical mode if this process changed it.
pub fn restore_terminal() {
    if *RAW_MODE.lock().unwrap_or_else(|e| e.into_inner()) {
        let _ = std::io::stdin().lock().set_canon_mode();
    }
}
