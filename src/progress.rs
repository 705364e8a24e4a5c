//! Backfill progress on stderr: on a terminal, one line per source redrawn in
//! place (pages done of total, events, rate, ETA); elsewhere (journal, cron
//! mail) a plain line every few seconds, so a long backfill shows it is alive
//! without flooding the log.

use crate::sources::SourceKind;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Off a terminal, at most one line this often.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// On a terminal, redraw at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

pub struct Progress {
    terminal: bool,
    source: Option<SourceKind>,
    started: Instant,
    last_shown: Option<Instant>,
    /// Whether a terminal line is drawn and needs ending.
    drawn: bool,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            source: None,
            started: Instant::now(),
            last_shown: None,
            drawn: false,
        }
    }

    /// After each page. `total_pages` is the server's count for the whole
    /// window (0 when unknown); `lookups` the lookup requests so far. A
    /// page's time includes its lookups, so the ETA (time per page so far,
    /// times the pages left) counts them too.
    pub fn page(
        &mut self,
        kind: SourceKind,
        pages: u64,
        total_pages: u64,
        events: u64,
        lookups: u64,
    ) {
        if self.source != Some(kind) {
            self.end_line();
            self.source = Some(kind);
            self.started = Instant::now();
            self.last_shown = None;
        }
        let every = if self.terminal {
            REDRAW_EVERY
        } else {
            PLAIN_EVERY
        };
        if self.last_shown.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last_shown = Some(Instant::now());
        let line = describe(
            kind,
            pages,
            total_pages,
            events,
            lookups,
            self.started.elapsed(),
        );
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[K{line}");
            self.drawn = true;
        } else {
            crate::info!("{line}");
        }
    }

    /// Ends a redrawn line so later messages start on their own.
    pub fn end_line(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

fn describe(
    kind: SourceKind,
    pages: u64,
    total_pages: u64,
    events: u64,
    lookups: u64,
    elapsed: Duration,
) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let rate = events as f64 / seconds;
    let mut line = if total_pages > 0 {
        format!(
            "backfill {}: page {pages}/{total_pages}, {events} events, {rate:.0}/s",
            kind.name
        )
    } else {
        format!(
            "backfill {}: page {pages}, {events} events, {rate:.0}/s",
            kind.name
        )
    };
    if lookups > 0 {
        line += &format!(", {lookups} lookups");
    }
    if total_pages > pages && pages > 0 {
        let eta = seconds / pages as f64 * (total_pages - pages) as f64;
        line += &format!(
            ", ETA {}",
            crate::timefmt::display_duration(Duration::from_secs(eta.ceil() as u64))
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_pages_events_rate_and_eta() {
        let line = describe(
            crate::sources::from_name("threats").unwrap(),
            10,
            40,
            2000,
            0,
            Duration::from_secs(5),
        );
        assert_eq!(
            line,
            "backfill threats: page 10/40, 2000 events, 400/s, ETA 15s"
        );
        let looked_up = describe(
            crate::sources::from_name("threats").unwrap(),
            10,
            40,
            2000,
            2003,
            Duration::from_secs(5),
        );
        assert_eq!(
            looked_up,
            "backfill threats: page 10/40, 2000 events, 400/s, 2003 lookups, ETA 15s"
        );
        let unknown = describe(
            crate::sources::from_name("detections").unwrap(),
            3,
            0,
            30,
            0,
            Duration::from_secs(1),
        );
        assert_eq!(unknown, "backfill detections: page 3, 30 events, 30/s");
    }
}
