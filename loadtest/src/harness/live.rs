//! Counters the load tasks bump as they go and the progress line and the run summary read:
//! requests done, errors, streams open now and at most, and when the last request finished.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Live {
    pub started: Instant,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub open: AtomicU64,
    pub open_peak: AtomicU64,
    /// Microseconds from `started` to the latest request completion.
    last_done_us: AtomicU64,
}

impl Live {
    pub fn new() -> Live {
        Live {
            started: Instant::now(),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            open: AtomicU64::new(0),
            open_peak: AtomicU64::new(0),
            last_done_us: AtomicU64::new(0),
        }
    }

    pub fn finished(&self, error: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = self.started.elapsed().as_micros() as u64;
        self.last_done_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Time from the start to the last completion (the run's measured length).
    pub fn active_time(&self) -> Duration {
        Duration::from_micros(self.last_done_us.load(Ordering::Relaxed))
    }

    /// Marks a stream open until the guard is dropped (also when its task is cancelled).
    pub fn open_stream(&self) -> StreamGuard<'_> {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_peak.fetch_max(now, Ordering::Relaxed);
        StreamGuard(self)
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

pub struct StreamGuard<'a>(&'a Live);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_track_open_and_peak() {
        let live = Live::new();
        {
            let _a = live.open_stream();
            let _b = live.open_stream();
            assert_eq!(live.open.load(Ordering::Relaxed), 2);
        }
        let _c = live.open_stream();
        assert_eq!(live.open.load(Ordering::Relaxed), 1);
        assert_eq!(live.open_peak.load(Ordering::Relaxed), 2);
        live.finished(true);
        live.finished(false);
        assert_eq!(live.done.load(Ordering::Relaxed), 2);
        assert_eq!(live.errors.load(Ordering::Relaxed), 1);
    }
}
