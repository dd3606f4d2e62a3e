// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The replaying side: serves the log's entries at the exits where they
//! were recorded, and reports divergence.
//!
//! Shared (behind a mutex) by the vCPU thread and the replay clock, both on
//! the vCPU thread.

use std::collections::VecDeque;

use std::sync::Arc;

use crate::debug::DebugEntry;
use crate::entry::{EndReason, Entry, ExitId, Setup};
use crate::live::{LiveFeed, Popped};
use crate::log::{LogError, LogHeader, LogReader, LogStream};

/// Errors while replaying: the guest did not do what the recording says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The replayed execution differs from the recorded one.
    #[error("replay diverged at exit {exit}: expected {expected}, found {found}")]
    Diverged {
        /// The exit count where it was noticed.
        exit: u64,
        /// What the log says.
        expected: String,
        /// What the replay did.
        found: String,
    },
    /// The log could not be read any more (it changed after validation).
    #[error("cannot read the log any more: {0}")]
    Log(String),
    /// A checkpoint or event from the log could not be applied.
    #[error("cannot apply {what} at exit {exit}: {reason}")]
    Apply {
        /// The exit count.
        exit: u64,
        /// The entry.
        what: String,
        /// Why.
        reason: String,
    },
}

/// The entries a replay reads, in order.
type Source = Box<dyn Iterator<Item = Result<Entry, LogError>> + Send>;

/// Where the entries come from.
enum Feed {
    /// A log file (or entries in memory): all there.
    Static(Source),
    /// A pair's logging channel: entries arrive as the primary runs.
    Live(Arc<LiveFeed>),
}

/// Serves a validated log, one entry ahead.
pub struct Replayer {
    header: LogHeader,
    setup: Setup,
    source: Feed,
    next: Option<Entry>,
    /// Live: every entry of an exit before this one has arrived (the
    /// primary's last progress).
    horizon: u64,
    /// Live: the stream ended (the primary is gone and this side won the
    /// tiebreak): what is here is all there will be.
    live_ended: bool,
    exit: u64,
    error: Option<ReplayError>,
    /// Debug records read ahead of `next` (they precede it in the log),
    /// for the debug comparison; they never drive replay.
    debug: VecDeque<DebugEntry>,
    saw_debug: bool,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("header", &self.header)
            .field("next", &self.next.as_ref().map(Entry::describe))
            .field("exit", &self.exit)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Replayer {
    /// Replays a log read into memory.
    pub fn new(log: LogReader) -> Self {
        Self::with_source(
            log.header,
            Feed::Static(Box::new(log.entries.into_iter().map(Ok))),
        )
    }

    /// Replays a log streamed from its file.
    pub fn from_stream(header: LogHeader, stream: LogStream) -> Self {
        Self::with_source(header, Feed::Static(Box::new(stream)))
    }

    /// Replays a pair's stream as it arrives (`header` is the stream's).
    /// Waits for the first entry (the setup).
    pub fn live(header: LogHeader, feed: Arc<LiveFeed>) -> Self {
        Self::with_source(header, Feed::Live(feed))
    }

    fn with_source(header: LogHeader, source: Feed) -> Self {
        let mut r = Replayer {
            header,
            setup: Setup::default(),
            source,
            next: None,
            horizon: 0,
            live_ended: false,
            exit: 0,
            error: None,
            debug: VecDeque::new(),
            saw_debug: false,
        };
        if r.is_live() {
            r.fill(true);
        } else {
            r.advance();
        }
        if let Some(Entry::Setup(setup)) = &r.next {
            r.setup = setup.clone();
            r.advance();
        }
        r
    }

    /// Moves to the next entry of the source (live: only if it is
    /// there; see [`fill`](Self::fill)).
    /// Debug records are set aside for [`take_debug`](Self::take_debug).
    fn advance(&mut self) {
        self.next = None;
        if let Feed::Live(_) = self.source {
            self.fill(false);
            return;
        }
        let Feed::Static(source) = &mut self.source else {
            return;
        };
        self.next = loop {
            match source.next() {
                Some(Ok(Entry::Debug(d))) => {
                    self.saw_debug = true;
                    self.debug.push_back(d);
                }
                Some(Ok(e)) => break Some(e),
                Some(Err(e)) => {
                    self.fail(ReplayError::Log(e.to_string()));
                    break None;
                }
                None => break None,
            }
        };
    }

    /// The next debug record (a recording with `debug_from`) up to and
    /// including exit `exit` for which `wanted` holds; records of earlier
    /// exits that are not wanted are dropped on the way.
    pub fn take_debug(
        &mut self,
        exit: u64,
        wanted: impl Fn(&DebugEntry) -> bool,
    ) -> Option<DebugEntry> {
        while let Some(d) = self.debug.front() {
            if d.exit() > exit {
                return None;
            }
            let d = self.debug.pop_front()?;
            if wanted(&d) {
                return Some(d);
            }
        }
        None
    }

    /// Live: makes the next entry known if it matters at this exit. With
    /// `wait`, blocks until the next entry is there, or the primary's
    /// progress shows no entry of this exit can still come, or the
    /// stream ended. Without, takes only what has arrived.
    fn fill(&mut self, wait: bool) {
        let Feed::Live(feed) = &self.source else {
            return;
        };
        let feed = feed.clone();
        while self.next.is_none() && !self.live_ended {
            let block = wait && self.horizon <= self.exit;
            match feed.pop(block) {
                Popped::Entry(Entry::Debug(d)) => {
                    self.saw_debug = true;
                    self.debug.push_back(d);
                }
                Popped::Entry(e) => self.next = Some(e),
                Popped::Progress(p) => self.horizon = self.horizon.max(p.exits),
                Popped::Empty => return,
                Popped::Ended => self.live_ended = true,
            }
        }
    }

    /// Live: whether the stream ended with nothing left to apply here:
    /// the replay goes live at this point.
    pub fn at_live_end(&mut self) -> bool {
        self.fill(false);
        self.live_ended && self.next.is_none()
    }

    /// Live: whether entries come from a pair's stream.
    pub fn is_live(&self) -> bool {
        matches!(self.source, Feed::Live(_))
    }

    /// Live: the exit up to which the primary's progress says the log is
    /// complete.
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// Whether the log carried debug records so far.
    pub fn has_debug(&self) -> bool {
        self.saw_debug
    }

    /// The recording's device setup (its first frame; empty when the
    /// entries had none).
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Sets the count of guest-caused exits so far.
    pub fn set_exit(&mut self, exit: u64) {
        self.exit = exit;
    }

    /// The count of guest-caused exits so far.
    pub fn exit(&self) -> u64 {
        self.exit
    }

    /// The next entry, if any (live: waits until it is known whether
    /// one comes at this exit).
    pub fn peek(&mut self) -> Option<&Entry> {
        self.fill(true);
        self.next.as_ref()
    }

    /// Records a divergence (the first one wins).
    pub fn fail(&mut self, error: ReplayError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// Fails with the first divergence seen, if any.
    pub fn check(&mut self) -> Result<(), ReplayError> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn diverged(&mut self, expected: String, found: String) {
        let exit = self.exit;
        self.fail(ReplayError::Diverged {
            exit,
            expected,
            found,
        });
    }

    /// A device reads guest-visible time: the next entry must be a clock
    /// read at this exit. On divergence returns 0 and remembers the error.
    /// `None`: a live stream ended here, the clock goes live.
    pub fn clock_read(&mut self) -> Option<u64> {
        self.fill(true);
        if self.live_ended && self.next.is_none() {
            return None;
        }
        Some(match &self.next {
            Some(Entry::ClockRead { exit, value }) if *exit == self.exit => {
                let v = *value;
                self.advance();
                v
            }
            other => {
                let expected = other
                    .as_ref()
                    .map_or("the end of the log".into(), Entry::describe);
                self.diverged(expected, "a clock read".into());
                0
            }
        })
    }

    /// The next event or checkpoint recorded after the current exit, if
    /// the log has one here; its exit identity is checked against `at`
    /// (a mismatch is a divergence and returns None).
    pub fn next_input(&mut self, at: impl FnOnce() -> ExitId) -> Option<Entry> {
        self.fill(true);
        let (logged_at, exit) = match self.next.as_ref()? {
            Entry::Event { exit, at, .. } => (*at, *exit),
            Entry::Checkpoint(c) => (c.at, c.exit),
            _ => return None,
        };
        if exit != self.exit {
            return None;
        }
        let here = at();
        if here != logged_at {
            self.diverged(format!("exit {logged_at}"), format!("exit {here}"));
            return None;
        }
        let e = self.next.take();
        self.advance();
        e
    }

    /// After a guest exit: every entry of an earlier exit must have been
    /// consumed, and the guest must not run past the end of the recording.
    pub fn check_progress(&mut self) {
        self.fill(false);
        let Some(next) = &self.next else {
            return;
        };
        if next.exit() < self.exit {
            let expected = next.describe();
            self.diverged(expected, "the guest went on without it".into());
        } else if let Entry::End { exit, reason, .. } = next {
            if self.exit > *exit && *reason != EndReason::Stopped {
                let expected = next.describe();
                self.diverged(expected, "the guest still running".into());
            }
        }
    }

    /// The recording's end, if the next entry is it and it is at the
    /// current exit or earlier.
    pub fn end_here(&mut self) -> Option<(EndReason, u64)> {
        self.fill(false);
        match &self.next {
            Some(Entry::End {
                exit,
                reason,
                digest,
            }) if *exit <= self.exit => Some((*reason, *digest)),
            _ => None,
        }
    }

    /// The guest ended (`reason`) in replay with state digest `digest`:
    /// checks it against the recording's end.
    pub fn finish(&mut self, reason: EndReason, digest: u64) -> Result<(), ReplayError> {
        self.check()?;
        self.fill(true);
        let exit = self.exit;
        match &self.next {
            Some(Entry::End {
                exit: e,
                reason: r,
                digest: d,
            }) => {
                if *e != exit || *r != reason {
                    return Err(ReplayError::Diverged {
                        exit,
                        expected: format!("{r:?} at exit {e}"),
                        found: format!("{reason:?} at exit {exit}"),
                    });
                }
                if *r != EndReason::Stopped && *d != digest {
                    return Err(ReplayError::Diverged {
                        exit,
                        expected: format!("final state digest {d:016x}"),
                        found: format!("final state digest {digest:016x}"),
                    });
                }
                Ok(())
            }
            other => Err(ReplayError::Diverged {
                exit,
                expected: other.as_ref().map_or("more log".into(), Entry::describe),
                found: format!("{reason:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Event;

    fn replayer(entries: Vec<Entry>) -> Replayer {
        Replayer::new(LogReader {
            header: LogHeader {
                config_digest: 0,
                max_delay_us: 0,
            },
            entries,
        })
    }

    const AT: ExitId = ExitId {
        kind: 2,
        addr: 0x3f8,
        rip: 0x100,
    };

    #[test]
    fn serves_entries_at_their_exit() {
        let setup = Setup {
            disks: vec![("_disk0".into(), 1024)],
        };
        let mut r = replayer(vec![
            Entry::Setup(setup.clone()),
            Entry::ClockRead { exit: 0, value: 7 },
            Entry::Event {
                exit: 2,
                at: AT,
                event: Event::TimerFire,
            },
            Entry::End {
                exit: 3,
                reason: EndReason::Shutdown,
                digest: 11,
            },
        ]);
        assert_eq!(r.setup(), &setup);
        assert_eq!(r.setup().disk_size("_disk0"), Some(1024));
        assert_eq!(r.setup().disk_size("_disk1"), None);
        assert_eq!(r.clock_read(), Some(7));
        r.set_exit(1);
        r.check_progress();
        assert!(r.next_input(|| AT).is_none());
        r.set_exit(2);
        assert!(matches!(r.next_input(|| AT), Some(Entry::Event { .. })));
        r.set_exit(3);
        r.check_progress();
        r.check().unwrap();
        assert_eq!(r.end_here(), Some((EndReason::Shutdown, 11)));
        r.finish(EndReason::Shutdown, 11).unwrap();
        assert!(r.finish(EndReason::Shutdown, 12).is_err());
    }

    #[test]
    fn divergences_name_the_exit() {
        // A clock read the log does not have.
        let mut r = replayer(vec![Entry::End {
            exit: 9,
            reason: EndReason::Shutdown,
            digest: 0,
        }]);
        r.set_exit(4);
        assert_eq!(r.clock_read(), Some(0));
        let e = r.check().unwrap_err();
        assert!(e.to_string().contains("exit 4"), "{e}");

        // Another exit identity.
        let mut r = replayer(vec![Entry::Event {
            exit: 1,
            at: AT,
            event: Event::TimerFire,
        }]);
        r.set_exit(1);
        let other = ExitId { rip: 0x104, ..AT };
        assert!(r.next_input(|| other).is_none());
        let e = r.check().unwrap_err().to_string();
        assert!(
            e.contains("exit 1") && e.contains("rip 0x100") && e.contains("rip 0x104"),
            "{e}"
        );

        // Skipped past an event.
        let mut r = replayer(vec![Entry::Event {
            exit: 1,
            at: AT,
            event: Event::TimerFire,
        }]);
        r.set_exit(2);
        r.check_progress();
        assert!(r.check().is_err());

        // Ran past the end.
        let mut r = replayer(vec![Entry::End {
            exit: 1,
            reason: EndReason::Shutdown,
            digest: 0,
        }]);
        r.set_exit(2);
        r.check_progress();
        assert!(r.check().is_err());
        // Ended elsewhere.
        let mut r = replayer(vec![Entry::End {
            exit: 5,
            reason: EndReason::Shutdown,
            digest: 0,
        }]);
        r.set_exit(4);
        assert!(r.finish(EndReason::Shutdown, 0).is_err());
    }
}
