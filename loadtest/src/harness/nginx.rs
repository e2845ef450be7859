//! nginx as the reference proxy: a plain reverse proxy in front of the same mock, with the
//! settings a streaming API needs (`proxy_buffering off`, HTTP/1.1 keep-alive to the upstream)
//! and the gateway's worker count. The harness writes the config into a temp prefix, runs
//! nginx in the foreground as its child (never the system service) and stops it at the end.
//!
//! Request bodies are buffered in memory (`client_body_buffer_size`), as the gateway also reads
//! a whole body before forwarding; nothing touches the disk.
//!
//! For the `ws` scenario the location also passes the WebSocket upgrade on (`Upgrade` and
//! `Connection: upgrade` to the upstream, which hop-by-hop rules would otherwise drop); nginx
//! then relays the socket's bytes both ways until either side closes.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::gateway::{free_port, signal};

/// What to tell a user without nginx.
pub const INSTALL_HINT: &str = "nginx is not installed; `apt-get install nginx` adds it (the harness starts its own instance, not the system service)";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx binary: `explicit`, else `nginx` on PATH or in /usr/sbin.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// The config for `workers` workers proxying `listen` to `upstream`, with every path under
/// `prefix`. `nofile` bounds the descriptors per worker (clients plus upstreams). `websocket`
/// passes upgrades on (every request of the `ws` scenario is one).
pub fn config(
    listen: SocketAddr,
    upstream: SocketAddr,
    workers: usize,
    nofile: u64,
    prefix: &Path,
    websocket: bool,
) -> String {
    let p = prefix.display();
    // Keep-alive to the upstream clears `Connection`; a WebSocket upgrade must send it.
    let connection = if websocket {
        "proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection \"upgrade\";"
    } else {
        "proxy_set_header Connection \"\";"
    };
    // Each proxied stream is two connections; leave room for the rest.
    let conns = nofile.saturating_sub(64).max(1024);
    format!(
        "# Written by the codex-lb load harness.
worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
master_process on;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections {conns};
}}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 4m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream mock {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} reuseport backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            {connection}
            proxy_buffering off;
            proxy_request_buffering on;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"
    )
}

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    prefix: tempfile::TempDir,
}

impl Nginx {
    pub fn start(
        bin: &Path,
        upstream: SocketAddr,
        workers: usize,
        nofile: u64,
        websocket: bool,
    ) -> anyhow::Result<Nginx> {
        let prefix = tempfile::Builder::new()
            .prefix("codex-lb-loadtest-nginx-")
            .tempdir()
            .context("creating nginx's prefix")?;
        // Run as root, nginx's workers drop to `nobody`: they must be able to reach the temp
        // directories (unused unless a body outgrows the memory buffer, but checked at start).
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(prefix.path(), fs::Permissions::from_mode(0o755))?;
        for d in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
            let dir = prefix.path().join(d);
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        }
        let addr = free_port()?;
        let conf = prefix.path().join("nginx.conf");
        fs::write(
            &conf,
            config(addr, upstream, workers, nofile, prefix.path(), websocket),
        )?;
        let err_log = prefix.path().join("error.log");
        let child = Command::new(bin)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&err_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut n = Nginx {
            child,
            addr,
            prefix,
        };
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(s) = n.child.try_wait()? {
                bail!("nginx exited at start ({s}):\n{}", n.error_log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(n);
            }
            if Instant::now() > until {
                bail!(
                    "nginx did not listen within {READY_TIMEOUT:?}:\n{}",
                    n.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }

    /// Graceful stop (SIGQUIT), killed if it lingers.
    pub fn stop(mut self) {
        signal(self.child.id(), libc::SIGQUIT);
        let until = Instant::now() + EXIT_TIMEOUT;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM is nginx's fast shutdown; its workers exit with the master.
            signal(self.child.id(), libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_streams_and_stays_in_its_prefix() {
        let c = config(
            "127.0.0.1:18080".parse().unwrap(),
            "127.0.0.1:18081".parse().unwrap(),
            2,
            20_000,
            Path::new("/tmp/px"),
            false,
        );
        for line in [
            "worker_processes 2;",
            "worker_rlimit_nofile 20000;",
            "worker_connections 19936;",
            "server 127.0.0.1:18081;",
            "listen 127.0.0.1:18080 reuseport backlog=4096;",
            "proxy_buffering off;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "daemon off;",
            "pid /tmp/px/nginx.pid;",
        ] {
            assert!(c.contains(line), "missing {line:?} in\n{c}");
        }
        let paths: Vec<&str> = c
            .lines()
            .filter(|l| l.trim_start().contains("_path ") || l.trim_start().starts_with("pid "))
            .collect();
        assert!(paths.iter().all(|l| l.contains("/tmp/px/")), "{paths:?}");
        assert!(!c.contains("Upgrade"), "{c}");
    }

    #[test]
    fn websocket_config_passes_the_upgrade_on() {
        let c = config(
            "127.0.0.1:18080".parse().unwrap(),
            "127.0.0.1:18081".parse().unwrap(),
            2,
            20_000,
            Path::new("/tmp/px"),
            true,
        );
        for line in [
            "proxy_http_version 1.1;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection \"upgrade\";",
            "proxy_buffering off;",
        ] {
            assert!(c.contains(line), "missing {line:?} in\n{c}");
        }
        assert!(!c.contains("Connection \"\""), "{c}");
    }
}
