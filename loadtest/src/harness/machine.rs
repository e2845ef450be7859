//! What the results were measured on (cores, CPU, memory, kernel, open-file limit, date), read
//! from `/proc` so the JSON and tuning.md can say it without anyone copying it by hand.

use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub mem_gib: f64,
    pub kernel: String,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub started: String,
}

impl Machine {
    pub fn read(nofile: (u64, u64)) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: cores(),
            cpu: field(&cpuinfo, "model name").unwrap_or_default(),
            mem_gib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            nofile_soft: nofile.0,
            nofile_hard: nofile.1,
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "machine: {} cores ({}), {} GiB, Linux {}, RLIMIT_NOFILE {}/{}; started {}",
            self.cores,
            self.cpu,
            self.mem_gib,
            self.kernel,
            self.nofile_soft,
            self.nofile_hard,
            self.started
        )
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The value of `name:` in a `/proc` key-value file.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n";
        assert_eq!(field(text, "model name").as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(field(text, "model"), None);
        let m = Machine::read((1024, 4096));
        assert!(m.cores >= 1 && m.line().contains("RLIMIT_NOFILE 1024/4096"));
    }
}
