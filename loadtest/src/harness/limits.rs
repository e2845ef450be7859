//! The open-file limit: raised to the hard limit at start (children inherit it, so the gateway,
//! the mock and nginx get it too), and the arithmetic of how many streams fit under it.
//!
//! A proxied stream holds two sockets in the proxy (client side and upstream side); the load
//! generator and the mock hold one each. The proxy is therefore the first to run out.

/// File descriptors a process needs besides its streams (listeners, database, epoll/io_uring,
/// log files, pipes).
pub const FD_OVERHEAD: u64 = 100;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft, hard) after the attempt.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (1024, 1024);
        }
        // An unlimited hard limit still cannot pass the kernel's per-process ceiling.
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(lim.rlim_max);
        let target = lim.rlim_max.min(ceiling);
        if lim.rlim_cur < target {
            let want = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = target;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Descriptors a proxy needs to relay `streams` streams at once.
pub fn proxy_fds(streams: u64) -> u64 {
    2 * streams + FD_OVERHEAD
}

/// The most streams a proxy can relay under a limit of `nofile` descriptors.
pub fn max_proxied_streams(nofile: u64) -> u64 {
    nofile.saturating_sub(FD_OVERHEAD) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arithmetic() {
        assert_eq!(proxy_fds(10_000), 20_100);
        assert_eq!(max_proxied_streams(20_000), 9_950);
        assert!(proxy_fds(max_proxied_streams(20_000)) <= 20_000);
        assert_eq!(max_proxied_streams(50), 0);
    }

    #[test]
    fn raising_never_lowers() {
        let (soft, hard) = raise_nofile();
        assert!(soft <= hard && soft >= 1);
    }
}
