// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The backup's side of the stream: what the logging channel delivered,
//! decoded, waiting for the replay.
//!
//! A receiving thread ([`spawn_receiver`]) takes the channel's log bytes
//! and progress positions in their order, decodes the entries
//! ([`StreamDecoder`]) and queues entries and progress marks in one
//! [`LiveFeed`]; it also writes the bytes to the backup's copy of the log
//! (`log=FILE`), which is a log file that replays offline. The replay
//! ([`crate::Replayer::live`]) takes them at the exits they name, and
//! waits at an exit until the next entry is there or the primary's
//! progress shows none can still come for it.
//!
//! When the channel is lost, the receiving thread asks its caller's
//! `on_lost` what to do (the tiebreak): when this side won, the feed is
//! ended: the replay applies what is left, then goes live. A stream that
//! reached the recording's end frame needs no tiebreak.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::channel::{ChannelHandle, ChannelReceiver, Incoming, Position};
use crate::entry::Entry;
use crate::error_chain;
use crate::log::LogHeader;
use crate::stream::StreamDecoder;

/// What the replay takes from the feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Popped {
    /// The next entry.
    Entry(Entry),
    /// The primary's progress: every entry of an earlier exit is here.
    Progress(Position),
    /// Nothing yet (only when not waiting).
    Empty,
    /// Nothing more will come.
    Ended,
}

#[derive(Debug)]
enum Item {
    Entry(Entry),
    Progress(Position),
}

/// Bytes of decoded entries the feed holds before the receiving thread
/// waits (and with it the channel, then the primary: flow control).
pub const MAX_FEED_BYTES: usize = 64 << 20;

/// The memory an item takes, roughly.
fn cost(item: &Item) -> usize {
    match item {
        Item::Entry(Entry::Checkpoint(c)) => {
            c.pages.len() * 4100
                + c.vcpu.len()
                + c.devices.iter().map(|(_, d)| d.len() + 32).sum::<usize>()
                + 64
        }
        Item::Entry(Entry::Event { event, .. }) => match event {
            crate::entry::Event::SerialInput(b) => b.len() + 64,
            crate::entry::Event::Device { data, .. } => data.len() + 64,
            crate::entry::Event::TimerFire => 64,
        },
        _ => 64,
    }
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// What `items` take.
    bytes: usize,
    header: Option<LogHeader>,
    ended: Option<String>,
    /// Entries and progress marks received.
    received: u64,
    /// The last progress received.
    progress: Position,
}

/// Entries received and not yet replayed.
#[derive(Debug, Default)]
pub struct LiveFeed {
    state: Mutex<State>,
    cv: Condvar,
}

impl LiveFeed {
    /// An empty feed.
    pub fn new() -> Arc<Self> {
        Arc::new(LiveFeed::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }

    /// Queues an item, waiting while the feed is full (unless it is
    /// empty: one item always fits) and not ended.
    fn push(&self, item: Item) {
        let c = cost(&item);
        let mut s = self.lock();
        while !s.items.is_empty() && s.bytes + c > MAX_FEED_BYTES && s.ended.is_none() {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.received += 1;
        s.bytes += c;
        if let Item::Progress(p) = &item {
            s.progress = s.progress.max(*p);
        }
        s.items.push_back(item);
        drop(s);
        self.cv.notify_all();
    }

    /// Queues an entry (waits while the feed is full).
    pub fn push_entry(&self, entry: Entry) {
        self.push(Item::Entry(entry));
    }

    /// Queues a progress mark (waits while the feed is full).
    pub fn push_progress(&self, position: Position) {
        self.push(Item::Progress(position));
    }

    /// The stream's header arrived.
    pub fn set_header(&self, header: LogHeader) {
        self.with(|s| s.header = Some(header));
    }

    /// Nothing more will come (`why`, for the log). The first call wins.
    pub fn end(&self, why: String) {
        self.with(|s| {
            if s.ended.is_none() {
                s.ended = Some(why);
            }
        });
    }

    /// Why the feed ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.lock().ended.clone()
    }

    /// The last progress position received.
    pub fn progress(&self) -> Position {
        self.lock().progress
    }

    /// Items waiting for the replay.
    pub fn queued(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether the stream's header has arrived (the replay can start).
    pub fn has_header(&self) -> bool {
        self.lock().header.is_some()
    }

    /// Waits for the stream's header; `None` if the feed ended first.
    pub fn wait_header(&self) -> Option<LogHeader> {
        let mut s = self.lock();
        loop {
            if let Some(h) = s.header {
                return Some(h);
            }
            if s.ended.is_some() {
                return None;
            }
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The next item; with `block`, waits until there is one or the feed
    /// ended.
    pub fn pop(&self, block: bool) -> Popped {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                s.bytes = s.bytes.saturating_sub(cost(&item));
                drop(s);
                // A receiver waiting for room.
                self.cv.notify_all();
                return match item {
                    Item::Entry(e) => Popped::Entry(e),
                    Item::Progress(p) => Popped::Progress(p),
                };
            }
            if s.ended.is_some() {
                return Popped::Ended;
            }
            if !block {
                return Popped::Empty;
            }
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Errors starting the receiving thread.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The thread could not be started.
    #[error("cannot start the stream receiver")]
    Spawn(#[source] std::io::Error),
    /// The copy of the stream could not be created.
    #[error("cannot create the copy of the log {path}")]
    Copy {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the stream ended, for `on_lost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The recording's end frame arrived: the primary's guest ended.
    Complete,
    /// The channel was lost (why).
    Lost(String),
}

/// Starts the thread that feeds `feed` from `receiver`. `expected_config`
/// is this VM's configuration digest (a stream of another is refused);
/// `copy` the file keeping the received stream. When the stream stops,
/// `on_lost` is called with how; if it returns true the feed ends (the
/// replay goes live after what it has), otherwise the feed is left open
/// (the caller stops the VMM).
pub fn spawn_receiver(
    mut receiver: ChannelReceiver,
    handle: ChannelHandle,
    feed: Arc<LiveFeed>,
    expected_config: u64,
    copy: Option<&Path>,
    on_lost: Box<dyn FnOnce(StreamEnd) -> bool + Send>,
) -> Result<JoinHandle<()>, LiveError> {
    let mut copy = match copy {
        Some(p) => Some(File::create(p).map_err(|source| LiveError::Copy {
            path: p.to_path_buf(),
            source,
        })?),
        None => None,
    };
    std::thread::Builder::new()
        .name("ft_feed".into())
        .spawn(move || {
            let mut decoder =
                StreamDecoder::new(Path::new("the logging channel"), Some(expected_config));
            let mut complete = false;
            let why = loop {
                match receiver.recv() {
                    Ok(Incoming::LogFrames(bytes)) => {
                        if let Some(f) = copy.as_mut() {
                            if let Err(e) = f.write_all(&bytes) {
                                log::warn!("fault tolerance: the copy of the log stops: {e}");
                                copy = None;
                            }
                        }
                        decoder.push(&bytes);
                        if let Err(why) = decode(&mut decoder, &feed, &mut complete) {
                            // Authenticated but not a log: the peer is
                            // broken; nothing of the bad frame is applied.
                            handle.shut_down();
                            break why;
                        }
                    }
                    Ok(Incoming::Progress(p)) => feed.push_progress(p),
                    Err(e) => break error_chain(&e),
                }
            };
            if let Some(mut f) = copy.take() {
                let _ = f.flush();
            }
            let end = if complete {
                StreamEnd::Complete
            } else {
                StreamEnd::Lost(why.clone())
            };
            if on_lost(end) {
                feed.end(why);
            }
        })
        .map_err(LiveError::Spawn)
}

/// Queues every complete entry the decoder holds.
fn decode(decoder: &mut StreamDecoder, feed: &LiveFeed, complete: &mut bool) -> Result<(), String> {
    loop {
        match decoder.next_entry() {
            Ok(Some(e)) => {
                publish_header(decoder, feed);
                *complete |= matches!(e, Entry::End { .. });
                feed.push_entry(e);
            }
            Ok(None) => {
                publish_header(decoder, feed);
                return Ok(());
            }
            Err(e) => {
                return Err(format!(
                    "the primary's stream is not a valid log: {}",
                    error_chain(&e)
                ))
            }
        }
    }
}

/// Hands the stream's header to the feed once the decoder has it.
fn publish_header(decoder: &StreamDecoder, feed: &LiveFeed) {
    let known = feed.lock().header.is_some();
    if let (Some(h), false) = (decoder.header(), known) {
        feed.set_header(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EndReason, Event, ExitId};
    use crate::replayer::Replayer;

    fn header() -> LogHeader {
        LogHeader {
            config_digest: 1,
            max_delay_us: 2000,
        }
    }

    #[test]
    fn a_full_feed_holds_the_receiver_until_the_replay_takes() {
        let feed = LiveFeed::new();
        fn big() -> Entry {
            let page = vec![0u8; 4096];
            Entry::Checkpoint(Box::new(crate::Checkpoint {
                exit: 1,
                at: ExitId::default(),
                seq: 1,
                pages: (0..(MAX_FEED_BYTES / 4100 / 3) as u64)
                    .map(|i| (i * 4096, page.clone()))
                    .collect(),
                vcpu: vec![],
                devices: vec![],
                ready_for_interrupt: true,
                digest: None,
                start_registers: None,
            }))
        }
        feed.push_entry(big());
        feed.push_entry(big());
        let f = feed.clone();
        let t = std::thread::spawn(move || f.push_entry(big()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!t.is_finished(), "a full feed took more");
        assert_eq!(feed.queued(), 2);
        assert!(matches!(feed.pop(false), Popped::Entry(_)));
        t.join().expect("the receiver went on");
        assert_eq!(feed.queued(), 2);
    }

    #[test]
    fn the_replay_waits_for_what_it_needs_and_no_more() {
        let feed = LiveFeed::new();
        feed.push_entry(Entry::Setup(crate::Setup::default()));
        let mut r = Replayer::live(header(), feed.clone());
        // Nothing known about exit 0 yet: a non-waiting look finds nothing.
        assert!(!r.at_live_end());
        // Progress 3: exits 0..3 have no more entries; the replay may run.
        feed.push_progress(Position {
            exits: 3,
            guest_ns: 0,
        });
        r.set_exit(1);
        assert!(r.peek().is_none());
        r.set_exit(2);
        assert!(r.next_input(ExitId::default).is_none());
        // At exit 3 the replay must wait: an entry arrives from another thread.
        r.set_exit(3);
        let f = feed.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            f.push_entry(Entry::ClockRead { exit: 3, value: 99 });
        });
        assert_eq!(r.clock_read(), Some(99));
        t.join().unwrap();
        feed.push_entry(Entry::Event {
            exit: 3,
            at: ExitId::default(),
            event: Event::TimerFire,
        });
        assert!(matches!(
            r.next_input(ExitId::default),
            Some(Entry::Event { .. })
        ));
        // The primary is lost and this side won: the replay goes live here.
        feed.end("peer lost".into());
        assert_eq!(r.clock_read(), None);
        assert!(r.at_live_end());
        r.check().unwrap();
        // A complete stream ends as a log does.
        let feed = LiveFeed::new();
        feed.push_entry(Entry::Setup(crate::Setup::default()));
        feed.push_entry(Entry::End {
            exit: 0,
            reason: EndReason::Shutdown,
            digest: 4,
        });
        let mut r = Replayer::live(header(), feed);
        assert_eq!(r.end_here(), Some((EndReason::Shutdown, 4)));
        r.finish(EndReason::Shutdown, 4).unwrap();
    }
}
