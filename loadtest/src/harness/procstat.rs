//! CPU time and resident memory of the processes behind a target, read from `/proc`.
//!
//! A target can be a process tree (nginx's master and workers), so figures are summed over a
//! pid and its direct children, found once when a watch starts. RSS of a tree double-counts
//! shared pages (the nginx binary mapped by every worker); the per-stream figure subtracts a
//! baseline, so that constant cancels out. A [`Watch`] samples every [`SAMPLE_EVERY`] on its
//! own thread and keeps the peak.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a watch samples RSS.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': split after the
    // last ')'. Fields from there on: 3 state, 4 ppid, ... 14 utime, 15 stime.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Parent pid from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `pid` and its direct children.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            if parse_stat_ppid(&stat) == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// One reading of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub cpu_s: f64,
    pub rss_kb: u64,
}

/// Sums CPU seconds and RSS over `pids`; processes that are gone count as zero.
pub fn sample(pids: &[u32]) -> Sample {
    let tck = clock_ticks_per_sec();
    let mut s = Sample::default();
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            s.cpu_s += parse_stat_cpu_ticks(&stat).unwrap_or(0) as f64 / tck;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            s.rss_kb += parse_status_rss_kb(&status).unwrap_or(0);
        }
    }
    s
}

/// Samples a process tree until stopped; reports CPU used and RSS before and at the peak.
pub struct Watch {
    pids: Vec<u32>,
    before: Sample,
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What a watch saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_before_kb: u64,
    pub rss_peak_kb: u64,
    pub rss_after_kb: u64,
}

impl Watch {
    pub fn start(pid: u32) -> Watch {
        let pids = tree(pid);
        let before = sample(&pids);
        let peak_kb = Arc::new(AtomicU64::new(before.rss_kb));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pids, peak_kb, stop) = (pids.clone(), peak_kb.clone(), stop.clone());
            std::thread::Builder::new()
                .name("loadtest-procstat".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak_kb.fetch_max(sample(&pids).rss_kb, Ordering::Relaxed);
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                })
                .ok()
        };
        Watch {
            pids,
            before,
            peak_kb,
            stop,
            thread,
        }
    }

    pub fn finish(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let after = sample(&self.pids);
        Usage {
            cpu_s: (after.cpu_s - self.before.cpu_s).max(0.0),
            rss_before_kb: self.before.rss_kb,
            rss_peak_kb: self.peak_kb.load(Ordering::Relaxed).max(after.rss_kb),
            rss_after_kb: after.rss_kb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "4242 (nginx: worker) process)) S 4200 4242 4242 0 -1 4194560 110 0 0 0 \
                    250 37 0 0 20 0 1 0 1000 1000000 300 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        assert_eq!(parse_stat_ppid(stat), Some(4200));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_rss() {
        let status = "Name:\tcodex-lb\nVmHWM:\t   40000 kB\nVmRSS:\t   31234 kB\nThreads:\t5\n";
        assert_eq!(parse_status_rss_kb(status), Some(31234));
        assert_eq!(parse_status_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(&[std::process::id()]);
        assert!(s.rss_kb > 0);
        let w = Watch::start(std::process::id());
        let u = w.finish();
        assert!(u.rss_peak_kb >= u.rss_before_kb);
    }
}
