// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The process logger: `-v` levels and `--log-file`, Cloud Hypervisor's line format.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};

/// Writes log lines to stderr or a file.
struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
    start: Instant,
}

impl Log for Logger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = self.start.elapsed();
        let thread = std::thread::current();
        let line = format!(
            "cloud-hypervisor: {:>10.6}s: <{}> {}:{}:{} -- {}\n",
            t.as_secs_f64(),
            thread.name().unwrap_or("?"),
            record.level(),
            record.file().unwrap_or("?"),
            record.line().unwrap_or(0),
            record.args()
        );
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// The level for `-v` given `verbosity` times.
pub fn level_for(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger.
pub fn init(verbosity: u8, log_file: Option<File>) -> Result<(), log::SetLoggerError> {
    let out: Box<dyn Write + Send> = match log_file {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stderr()),
    };
    log::set_boxed_logger(Box::new(Logger {
        out: Mutex::new(out),
        start: Instant::now(),
    }))?;
    log::set_max_level(level_for(verbosity));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_levels() {
        assert_eq!(level_for(0), LevelFilter::Warn);
        assert_eq!(level_for(1), LevelFilter::Info);
        assert_eq!(level_for(2), LevelFilter::Debug);
        assert_eq!(level_for(9), LevelFilter::Trace);
    }
}
