//! Targets: where load goes (an address, a Host header, a path), whether each request carries
//! an account's credentials or a proxy API key, and which process's CPU and memory stand behind
//! it.
//!
//! Only plain `http://` URLs that resolve to a loopback address are accepted: the harness is a
//! local measuring tool and must never aim its load at another machine.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Serialize;

/// The Codex turn route on the mock, the gateway and any compatible gateway.
pub const RESPONSES_PATH: &str = "/backend-api/codex/responses";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The mock upstream itself: the baseline.
    Direct,
    /// codex-lb, started by the harness.
    Gateway,
    /// nginx as a plain reverse proxy in front of the mock.
    Nginx,
    /// Anything given with `--target`.
    External,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub url: String,
    #[serde(skip)]
    pub addr: SocketAddr,
    #[serde(skip)]
    pub host: String,
    #[serde(skip)]
    pub path: String,
    /// Process (and its children) whose CPU and RSS are sampled.
    #[serde(skip)]
    pub pid: Option<u32>,
    /// Whether requests carry `Authorization` and `ChatGPT-Account-ID` (the mock and nginx
    /// need them; a gateway adds its own).
    #[serde(skip)]
    pub account_headers: bool,
    /// A proxy API key sent as `Authorization: Bearer` (a gateway started with key auth); never
    /// together with `account_headers`.
    #[serde(skip)]
    pub api_key: Option<String>,
}

impl Target {
    pub fn new(name: &str, kind: TargetKind, url: &HttpUrl, pid: Option<u32>) -> Target {
        Target {
            name: name.to_string(),
            kind,
            url: format!("http://{}{}", url.host, url.path),
            addr: url.addr,
            host: url.host.clone(),
            path: url.path.clone(),
            pid,
            account_headers: matches!(kind, TargetKind::Direct | TargetKind::Nginx),
            api_key: None,
        }
    }
}

/// A parsed `http://host:port/path` on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// `host:port` as written, for the Host header.
    pub host: String,
    /// Path, `/` when none was given.
    pub path: String,
}

pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!(
                "{url}: https targets are not supported; the harness speaks plain HTTP on loopback"
            )
        } else {
            format!("{url}: expected http://HOST:PORT[/PATH]")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {authority}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .copied()
        .find(|a| a.ip().is_loopback() && a.is_ipv4())
        .or_else(|| addrs.iter().copied().find(|a| a.ip().is_loopback()))
        .ok_or_else(|| {
            format!(
                "{url}: {authority} is not a loopback address; the harness only loads this machine"
            )
        })?;
    Ok(HttpUrl {
        addr,
        host: with_port,
        path: path.to_string(),
    })
}

/// `NAME=URL` or `URL`; the name defaults to `host:port`.
pub fn parse_named_target(spec: &str) -> Result<(String, HttpUrl), String> {
    let (name, url) = match spec.split_once('=') {
        Some((n, u)) if !n.contains('/') && !n.is_empty() => (Some(n), u),
        _ => (None, spec),
    };
    let mut parsed = parse_http_url(url)?;
    if parsed.path == "/" {
        parsed.path = RESPONSES_PATH.to_string();
    }
    let name = name.map_or_else(|| parsed.host.clone(), str::to_string);
    Ok((name, parsed))
}

/// The mock's `/backend-api` base from `http://HOST:PORT` or `http://HOST:PORT/backend-api`.
pub fn parse_upstream(url: &str) -> Result<HttpUrl, String> {
    let mut u = parse_http_url(url.trim_end_matches('/'))?;
    u.path = match u.path.trim_end_matches('/') {
        "" => "/backend-api".to_string(),
        p => p.to_string(),
    };
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_targets() {
        let (name, u) = parse_named_target("http://127.0.0.1:2455").unwrap();
        assert_eq!(name, "127.0.0.1:2455");
        assert_eq!(u.path, RESPONSES_PATH);
        assert_eq!(u.addr, "127.0.0.1:2455".parse().unwrap());
        let (name, u) = parse_named_target("other=http://localhost:9000/v1/x").unwrap();
        assert_eq!((name.as_str(), u.path.as_str()), ("other", "/v1/x"));
        assert!(u.addr.ip().is_loopback());
        assert_eq!(u.host, "localhost:9000");
        let u = parse_http_url("http://127.0.0.1").unwrap();
        assert_eq!(u.addr.port(), 80);
    }

    #[test]
    fn refuses_remote_and_tls() {
        assert!(parse_http_url("http://10.1.2.3:80")
            .unwrap_err()
            .contains("loopback"));
        assert!(parse_http_url("https://127.0.0.1:443")
            .unwrap_err()
            .contains("https"));
        assert!(parse_http_url("127.0.0.1:80").is_err());
        assert!(parse_http_url("http:///x").is_err());
    }

    #[test]
    fn upstream_base_forms() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:8080").unwrap().path,
            "/backend-api"
        );
        assert_eq!(
            parse_upstream("http://127.0.0.1:8080/backend-api/")
                .unwrap()
                .path,
            "/backend-api"
        );
    }

    #[test]
    fn only_mock_and_nginx_get_account_headers() {
        let u = parse_http_url("http://127.0.0.1:1/").unwrap();
        assert!(Target::new("d", TargetKind::Direct, &u, None).account_headers);
        assert!(Target::new("n", TargetKind::Nginx, &u, None).account_headers);
        assert!(!Target::new("g", TargetKind::Gateway, &u, None).account_headers);
        assert!(!Target::new("x", TargetKind::External, &u, None).account_headers);
    }
}
