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
    unmapped(peer.ip()).is_loopback() && !FORWARDING.iter().any(|h| head.header(h).is_some())
}

/// An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; lists name it a.b.c.d.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Which header a trusted proxy names the client in. Only that one is read: a proxy that writes
/// one passes the other through as the client sent it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`, as nginx (`$proxy_add_x_forwarded_for`) and Caddy append it.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
}

/// Who a request is from, and whether a proxy's header said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub ip: IpAddr,
    /// The address came from a trusted proxy's header, not from the TCP connection.
    pub forwarded: bool,
}

/// The address a request is from. Normally the TCP peer; when the peer is one of
/// `--trusted-proxy`, the address that proxy says it forwarded for: the right-most entry of the
/// chosen header (all its lines, in order) that is not itself a trusted proxy, so a client cannot
/// name its own address by sending the header through the proxy — the proxy appends the address
/// it saw, and only entries right of the first untrusted one are believed. An entry that does not
/// parse stops the walk at the last believed address.
pub fn client_ip<'h>(
    trusted: &[IpNet],
    header: ForwardedHeader,
    peer: IpAddr,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Origin {
    let peer = unmapped(peer);
    let direct = Origin {
        ip: peer,
        forwarded: false,
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if !is_trusted(peer) {
        return direct;
    }
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let mut chain: Vec<&str> = Vec::new();
    for (_, v) in headers.filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
        let Ok(v) = std::str::from_utf8(v) else {
            return direct;
        };
        match header {
            ForwardedHeader::Forwarded => chain.extend(v.split(',').filter_map(forwarded_for)),
            ForwardedHeader::XForwardedFor => chain.extend(v.split(',')),
        }
    }
    let mut from = direct;
    for entry in chain.iter().rev() {
        match parse_hop(entry) {
            Some(ip) => {
                from = Origin {
                    ip,
                    forwarded: true,
                };
                if !is_trusted(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    from
}

/// Whether a request from `origin` passes an allow-list. A forwarded address gets no loopback
/// exemption: loopback is exempt because it is this machine, and a header is not this machine.
pub fn origin_allowed(allow: &[IpNet], origin: Origin) -> bool {
    if origin.forwarded {
        allow.is_empty() || allow.iter().any(|n| n.contains(&origin.ip))
    } else {
        allowed(allow, origin.ip)
    }
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })
}

/// One hop as proxies write it: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1`, `[2001:db8::1]:567`,
/// optionally quoted (RFC 7239).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let e = entry.trim().trim_matches('"');
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(unmapped(ip));
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(unmapped);
    }
    let (host, port) = e.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Whether `ip` may connect: loopback always, else any address when the list is empty.
pub fn allowed(allow: &[IpNet], ip: IpAddr) -> bool {
    let ip = unmapped(ip);
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

    fn from_by(
        header: ForwardedHeader,
        trusted: &[&str],
        peer: &str,
        headers: &[(&'static str, &'static str)],
    ) -> String {
        let trusted: Vec<IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        let hs = headers.iter().map(|(n, v)| (*n, v.as_bytes()));
        client_ip(&trusted, header, peer.parse().unwrap(), hs)
            .ip
            .to_string()
    }

    fn from(trusted: &[&str], peer: &str, headers: &[(&'static str, &'static str)]) -> String {
        from_by(ForwardedHeader::XForwardedFor, trusted, peer, headers)
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let xff = |v| vec![("X-Forwarded-For", v)];
        // An untrusted peer's header is ignored.
        assert_eq!(from(&[], "203.0.113.9", &xff("10.0.0.1")), "203.0.113.9");
        assert_eq!(
            from(&["127.0.0.1/32"], "10.9.9.9", &xff("10.0.0.1")),
            "10.9.9.9"
        );
        // A trusted proxy: the right-most untrusted hop, so a client's own forged entry (left of
        // what the proxy appended) is not believed.
        let t = ["127.0.0.1/32", "10.0.0.0/24"];
        assert_eq!(from(&t, "127.0.0.1", &xff("198.51.100.7")), "198.51.100.7");
        assert_eq!(
            from(
                &t,
                "::ffff:127.0.0.1",
                &xff("1.1.1.1, 198.51.100.7, 10.0.0.5")
            ),
            "198.51.100.7"
        );
        assert_eq!(
            from(
                &t,
                "127.0.0.1",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.7")
                ]
            ),
            "198.51.100.7"
        );
        // Everything trusted: the left-most hop; garbage stops at the last believed address.
        assert_eq!(
            from(&t, "127.0.0.1", &xff("10.0.0.3, 10.0.0.4")),
            "10.0.0.3"
        );
        assert_eq!(
            from(&t, "127.0.0.1", &xff("1.2.3.4, not-an-ip, 10.0.0.4")),
            "10.0.0.4"
        );
        assert_eq!(from(&t, "127.0.0.1", &xff("unknown")), "127.0.0.1");
        assert_eq!(from(&t, "127.0.0.1", &[]), "127.0.0.1");
        // Ports and brackets as proxies write them.
        assert_eq!(
            from(&t, "127.0.0.1", &xff("198.51.100.7:4711")),
            "198.51.100.7"
        );
        assert_eq!(
            from(&t, "127.0.0.1", &xff("[2001:db8::7]:4711")),
            "2001:db8::7"
        );
        assert_eq!(from(&t, "127.0.0.1", &xff("2001:db8::7")), "2001:db8::7");
        // Only the chosen header is read: a Forwarded-writing proxy passes a client's own
        // X-Forwarded-For through, and that must not count.
        let both = [
            ("X-Forwarded-For", "127.0.0.1"),
            (
                "Forwarded",
                r#"for=6.6.6.6, for="[2001:db8::9]:80";proto=https"#,
            ),
        ];
        assert_eq!(
            from_by(ForwardedHeader::Forwarded, &t, "127.0.0.1", &both),
            "2001:db8::9"
        );
        assert_eq!(from(&t, "127.0.0.1", &both[1..]), "127.0.0.1");
    }

    #[test]
    fn a_forwarded_loopback_address_is_not_exempt_from_allow_lists() {
        let allow: Vec<IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        let o = |ip: &str, forwarded| Origin {
            ip: ip.parse().unwrap(),
            forwarded,
        };
        assert!(origin_allowed(&allow, o("127.0.0.1", false)));
        assert!(!origin_allowed(&allow, o("127.0.0.1", true)));
        assert!(origin_allowed(&allow, o("198.51.100.4", true)));
        assert!(origin_allowed(&[], o("127.0.0.1", true)));
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
