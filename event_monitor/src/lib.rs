// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Lifecycle events in Cloud Hypervisor's `--event-monitor` format.
//!
//! Each event is one pretty-printed JSON object followed by a blank line:
//!
//! ```text
//! {
//!   "timestamp": {
//!     "secs": 0,
//!     "nanos": 29228
//!   },
//!   "source": "vm",
//!   "event": "booting",
//!   "properties": null
//! }
//!
//! ```
//!
//! `timestamp` is the time since [`set_monitor`] was called. Until a
//! monitor is set, [`event_log`] and [`event!`] do nothing.
//!
//! As upstream, the file is switched to non-blocking mode: a reader that
//! stops reading a FIFO makes events be dropped, never stalls the VMM.
//! Events are written synchronously under a lock, so they appear in the
//! order they were logged, whole, from any thread.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

/// Why the monitor could not be set.
#[derive(Debug, Error)]
pub enum Error {
    /// [`set_monitor`] was already called in this process.
    #[error("The event monitor is already set")]
    AlreadySet,
    /// The file could not be made non-blocking.
    #[error("Cannot make the event monitor file non-blocking")]
    SetNonBlocking(#[source] io::Error),
}

#[derive(Serialize)]
struct Event<'a> {
    timestamp: Duration,
    source: &'a str,
    event: &'a str,
    properties: Option<BTreeMap<&'a str, &'a str>>,
}

/// One event sink: a file and the instant timestamps count from.
#[derive(Debug)]
struct Monitor {
    file: File,
    start: Instant,
}

impl Monitor {
    fn write_event(
        &mut self,
        source: &str,
        event: &str,
        properties: Option<&HashMap<String, String>>,
    ) -> io::Result<()> {
        // Sorted keys: the same event always prints the same way.
        let properties = properties.map(|map| {
            map.iter()
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect()
        });
        let event = Event {
            timestamp: self.start.elapsed(),
            source,
            event,
            properties,
        };
        let mut text = serde_json::to_string_pretty(&event).map_err(io::Error::other)?;
        text.push_str("\n\n");
        // One write call per event, so concurrent readers see whole events.
        self.file.write_all(text.as_bytes())
    }
}

static MONITOR: OnceLock<Mutex<Monitor>> = OnceLock::new();

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor owned by `file`, which outlives the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL on the same valid descriptor, only adding O_NONBLOCK.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends all later events to `file`, with timestamps counted from now.
/// May be called once per process.
pub fn set_monitor(file: File) -> Result<(), Error> {
    if MONITOR.get().is_some() {
        return Err(Error::AlreadySet);
    }
    set_nonblocking(&file).map_err(Error::SetNonBlocking)?;
    MONITOR
        .set(Mutex::new(Monitor {
            file,
            start: Instant::now(),
        }))
        .map_err(|_| Error::AlreadySet)
}

/// Whether a monitor is set (events are being recorded).
pub fn is_enabled() -> bool {
    MONITOR.get().is_some()
}

/// Records one event; does nothing when no monitor is set. A failed
/// write (full pipe, closed reader, full disk) drops the event.
pub fn event_log(source: &str, event: &str, properties: Option<&HashMap<String, String>>) {
    if let Some(monitor) = MONITOR.get() {
        // A writer that panicked mid-event leaves nothing half-updated
        // that matters here: keep going with the inner value.
        let mut monitor = match monitor.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Events are best effort, as upstream: never fail the caller.
        let _ = monitor.write_event(source, event, properties);
    }
}

/// Records an event: `event!("vm", "booting")`, or with properties as
/// key/value pairs, `event!("vm", "paused", "id", vcpu_id.to_string())`.
/// Keys and values may be `&str` or `String`.
#[macro_export]
macro_rules! event {
    ($source:expr, $event:expr $(,)?) => {
        $crate::event_log($source, $event, None)
    };
    ($source:expr, $event:expr, $($key:expr, $value:expr),+ $(,)?) => {{
        let mut properties: ::std::collections::HashMap<
            ::std::string::String,
            ::std::string::String,
        > = ::std::collections::HashMap::new();
        $(
            properties.insert(($key).into(), ($value).into());
        )+
        $crate::event_log($source, $event, Some(&properties))
    }};
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        std::env::temp_dir().join(format!(
            "event-monitor-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn read_events(path: &PathBuf) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).expect("read events");
        serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .collect::<Result<_, _>>()
            .expect("events are JSON")
    }

    #[test]
    fn format_matches_upstream() {
        let path = temp_path("format");
        let mut monitor = Monitor {
            file: File::create(&path).expect("create"),
            start: Instant::now(),
        };
        monitor.write_event("vmm", "starting", None).expect("write");
        let mut properties = HashMap::new();
        properties.insert("id".to_string(), "0".to_string());
        properties.insert("a".to_string(), "b".to_string());
        monitor
            .write_event("cpu_manager", "create_vcpu", Some(&properties))
            .expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);

        assert!(text.starts_with("{\n  \"timestamp\": {\n    \"secs\": 0,\n    \"nanos\": "));
        assert!(text.contains(
            "  \"source\": \"vmm\",\n  \"event\": \"starting\",\n  \"properties\": null\n}\n\n{\n"
        ));
        assert!(text.ends_with("}\n\n"));
        let chunks: Vec<&str> = text.trim_end().split("\n\n").collect();
        assert_eq!(chunks.len(), 2);
        let second: serde_json::Value = serde_json::from_str(chunks[1]).expect("json");
        assert_eq!(second["source"], "cpu_manager");
        assert_eq!(second["event"], "create_vcpu");
        assert_eq!(second["properties"]["id"], "0");
        assert_eq!(second["properties"]["a"], "b");
        assert!(second["timestamp"]["secs"].is_u64());
        assert!(second["timestamp"]["nanos"].is_u64());
        // Sorted keys.
        assert!(chunks[1].find("\"a\"") < chunks[1].find("\"id\""));
    }

    // The only test that touches the process-wide monitor.
    #[test]
    fn global_monitor_from_many_threads() {
        // Before a monitor is set, events go nowhere (and do not panic).
        event!("vm", "ignored");
        assert!(!is_enabled());

        let path = temp_path("global");
        set_monitor(File::create(&path).expect("create")).expect("set");
        assert!(is_enabled());
        assert!(matches!(
            set_monitor(File::create(temp_path("second")).expect("create")),
            Err(Error::AlreadySet)
        ));

        event!("vmm", "starting");
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                std::thread::spawn(move || {
                    for index in 0..50 {
                        event!(
                            "vcpu",
                            "tick",
                            "thread",
                            thread.to_string(),
                            "index",
                            format!("{index}")
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
        event!("vm", "paused", "reason", "test");

        let events = read_events(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(events.len(), 1 + 8 * 50 + 1);
        assert_eq!(events[0]["event"], "starting");
        assert_eq!(events[0]["properties"], serde_json::Value::Null);
        let last = &events[events.len() - 1];
        assert_eq!(last["source"], "vm");
        assert_eq!(last["properties"]["reason"], "test");
        // Timestamps never go backwards, and each thread's events are in order.
        let stamps: Vec<(u64, u64)> = events
            .iter()
            .map(|e| {
                (
                    e["timestamp"]["secs"].as_u64().unwrap_or(0),
                    e["timestamp"]["nanos"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]));
        for thread in 0..8 {
            let indices: Vec<u64> = events
                .iter()
                .filter(|e| e["properties"]["thread"] == thread.to_string().as_str())
                .filter_map(|e| e["properties"]["index"].as_str()?.parse().ok())
                .collect();
            assert_eq!(indices, (0..50).collect::<Vec<u64>>());
        }
    }
}
