//! Step 4, at accept: who may connect, and how many connections one address may hold. Checked
//! on the worker that accepted, before any byte is read: a refused peer costs one small write.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Why a connection is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is outside `--allow-cidr`.
    Forbidden,
    /// The worker is at `--max-connections-per-worker`.
    WorkerFull,
    /// This address holds `--max-connections-per-client` on this worker.
    ClientFull,
}

impl Refusal {
    /// Status, error type, code and message of the answer written before closing.
    pub fn answer(self) -> (u16, &'static str, &'static str, &'static str) {
        match self {
            Refusal::Forbidden => (
                403,
                "access_error",
                "ip_forbidden",
                "this address may not use the gateway (see --allow-cidr)",
            ),
            Refusal::WorkerFull => (
                503,
                "server_error",
                "too_many_connections",
                "the gateway is at its connection limit; retry shortly",
            ),
            Refusal::ClientFull => (
                503,
                "server_error",
                "too_many_client_connections",
                "this address holds as many connections as one client may; reuse them or retry shortly",
            ),
        }
    }
}

/// Whether `ip` may connect: loopback always, else any address when the list is empty.
/// Whether a request comes from a user of this machine: a loopback peer (IPv4-mapped too) that
/// does not say it was forwarded. A reverse proxy on this machine connects from loopback on behalf
/// of anyone; its forwarding headers mark such requests, and they get no loopback privilege (no
/// key-less proxy use, no open dashboard).
pub fn from_this_machine(
    peer: std::net::SocketAddr,
    head: &crate::http::request::RequestHead,
) -> bool {
    const FORWARDING: [&str; 5] = [
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "true-client-ip",
        "cf-connecting-ip",
    ];
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() && !FORWARDING.iter().any(|h| head.header(h).is_some())
}

pub fn allowed(allow: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

/// Open connections per client address on one worker.
#[derive(Debug, Default)]
pub struct ClientCounts {
    open: HashMap<IpAddr, u32>,
}

impl ClientCounts {
    /// Counts a new connection from `ip` unless it already holds `cap`.
    pub fn admit(&mut self, ip: IpAddr, cap: usize) -> bool {
        let n = self.open.entry(ip).or_insert(0);
        if *n as usize >= cap {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&ip);
            }
        }
    }

    pub fn holding(&self, ip: IpAddr) -> u32 {
        self.open.get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_and_loopback() {
        let nets: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()];
        assert!(allowed(&nets, "10.1.2.3".parse().unwrap()));
        assert!(!allowed(&nets, "10.2.0.1".parse().unwrap()));
        assert!(allowed(&nets, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&nets, "::1".parse().unwrap()));
        assert!(allowed(&nets, "::ffff:10.1.9.9".parse().unwrap()));
        assert!(allowed(&nets, "fd12::1".parse().unwrap()));
        assert!(allowed(&[], "203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn per_client_counts() {
        let mut c = ClientCounts::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(c.admit(a, 2) && c.admit(a, 2));
        assert!(!c.admit(a, 2));
        assert!(c.admit("10.0.0.2".parse().unwrap(), 2));
        c.release(a);
        assert_eq!(c.holding(a), 1);
        assert!(c.admit(a, 2));
        c.release(a);
        c.release(a);
        assert_eq!(c.holding(a), 0);
        assert!(!c.open.contains_key(&a), "no entry kept for a gone client");
    }
}
