//! The progress line: once a second on stderr, the run's elapsed time, requests done, the last
//! second's request rate, errors and open streams. On a terminal it is rewritten in place;
//! in a log (CI) it is one line per second.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::live::Live;

const EVERY: Duration = Duration::from_secs(1);
/// How often the thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tty: bool,
}

/// One progress line.
pub fn line(
    label: &str,
    elapsed: Duration,
    done: u64,
    rate: f64,
    errors: u64,
    open: u64,
) -> String {
    format!(
        "[{label}] {:>6.1}s  done {done:>8}  {rate:>8.0} req/s  errors {errors:>6}  open {open:>6}",
        elapsed.as_secs_f64()
    )
}

impl Progress {
    pub fn start(label: String, live: Arc<Live>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("loadtest-progress".into())
            .spawn(move || {
                let mut last_done = 0;
                let mut next = live.started + EVERY;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    if std::time::Instant::now() < next {
                        continue;
                    }
                    next += EVERY;
                    let done = live.done.load(Ordering::Relaxed);
                    let text = line(
                        &label,
                        live.started.elapsed(),
                        done,
                        (done - last_done) as f64 / EVERY.as_secs_f64(),
                        live.errors.load(Ordering::Relaxed),
                        live.open.load(Ordering::Relaxed),
                    );
                    last_done = done;
                    let mut err = std::io::stderr().lock();
                    let _ = if tty {
                        write!(err, "\r{text}\x1b[K")
                    } else {
                        writeln!(err, "{text}")
                    };
                    let _ = err.flush();
                }
            })
            .ok();
        Progress { stop, thread, tty }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_every_figure() {
        let l = line(
            "gateway r1",
            Duration::from_millis(2500),
            1234,
            617.4,
            3,
            64,
        );
        assert!(l.starts_with("[gateway r1]    2.5s"), "{l}");
        for part in ["done     1234", "617 req/s", "errors      3", "open     64"] {
            assert!(l.contains(part), "{l} lacks {part}");
        }
    }
}
