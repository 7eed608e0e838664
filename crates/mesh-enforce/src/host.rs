//! What an agent must never block on the host it runs on: the host's own
//! addresses, and the servers it depends on (the bus, the database), named
//! by URL. Read from the system ([`own_nets`], [`resolve`]); the URL
//! parsing is pure ([`url_host`]).

use crate::model::{Allowlist, Net};
use std::net::{IpAddr, ToSocketAddrs};

/// Every address of this host's interfaces (loopback included).
pub fn own_nets() -> Result<Vec<Net>, String> {
    let ifs =
        if_addrs::get_if_addrs().map_err(|e| format!("listing this host's addresses: {e}"))?;
    let mut v: Vec<Net> = ifs.into_iter().map(|i| Net::host(i.ip())).collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// The host and port a server URL names: `nats://10.0.0.5:4222`,
/// `postgres://user:pw@db.example:5432/ben?sslmode=require`,
/// `tls://[2001:db8::5]:4222`, `127.0.0.1:4222`. `default_port` when it
/// names none. None: no host in it.
pub fn url_host(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.is_empty() {
        return None;
    }
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        // A bare IPv6 address without brackets: no port.
        Some(_) => Some((hostport.to_string(), default_port)),
        None => Some((hostport.to_string(), default_port)),
    }
}

/// The addresses the hosts of `urls` (comma-separated lists allowed)
/// resolve to.
pub fn resolve(urls: &str, default_port: u16) -> Result<Vec<IpAddr>, String> {
    let mut out = vec![];
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (host, port) =
            url_host(url, default_port).ok_or_else(|| format!("{url:?}: names no host"))?;
        let addrs = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {host:?} (from {url:?}): {e}"))?;
        out.extend(addrs.map(|a| a.ip()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The allowlist of an agent on this host: its own addresses, the
/// validators', the bus's and the database's (by URL), and `extra`
/// networks from its config.
pub fn allowlist(
    validators: &[std::net::SocketAddr],
    bus_url: Option<&str>,
    database_url: Option<&str>,
    extra: &[String],
) -> Result<Allowlist, String> {
    let mut allow = Allowlist::default();
    for n in own_nets()? {
        allow.add(n, "this host");
    }
    for a in validators {
        allow.add(Net::host(a.ip()), "validator");
    }
    if let Some(u) = bus_url.filter(|u| !u.trim().is_empty()) {
        for ip in resolve(u, 4222)? {
            allow.add(Net::host(ip), "the bus");
        }
    }
    if let Some(u) = database_url.filter(|u| !u.trim().is_empty()) {
        for ip in resolve(u, 5432)? {
            allow.add(Net::host(ip), "the database");
        }
    }
    for (i, c) in extra.iter().enumerate() {
        let n = Net::parse(c).map_err(|e| format!("allow #{}: {e}", i + 1))?;
        allow.add(n, "configured");
    }
    Ok(allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_urls() {
        let h = |u: &str| url_host(u, 9);
        assert_eq!(h("nats://10.0.0.5:4222"), Some(("10.0.0.5".into(), 4222)));
        assert_eq!(h("nats://10.0.0.5"), Some(("10.0.0.5".into(), 9)));
        assert_eq!(
            h("postgres://u:p@db.example:5432/ben?sslmode=require"),
            Some(("db.example".into(), 5432))
        );
        assert_eq!(
            h("postgres://postgres@127.0.0.1/test"),
            Some(("127.0.0.1".into(), 9))
        );
        assert_eq!(
            h("tls://[2001:db8::5]:4222"),
            Some(("2001:db8::5".into(), 4222))
        );
        assert_eq!(h("[2001:db8::5]"), Some(("2001:db8::5".into(), 9)));
        assert_eq!(h("127.0.0.1:4222"), Some(("127.0.0.1".into(), 4222)));
        assert_eq!(h("nats://"), None);
        assert_eq!(h("nats://h:port"), None);
        assert_eq!(h("tls://[2001:db8::5"), None);
    }

    /// The interfaces' addresses are the host's: each can be bound to
    /// (the kernel only lets a socket bind an address of its own), and
    /// loopback is among them.
    #[test]
    fn own_addresses_are_bindable_and_include_loopback() {
        let nets = own_nets().unwrap();
        assert!(
            nets.contains(&Net::host("127.0.0.1".parse().unwrap())),
            "{nets:?}"
        );
        for n in &nets {
            if let IpAddr::V6(a) = n.addr {
                if a.segments()[0] & 0xffc0 == 0xfe80 {
                    continue; // link-local: binding needs the interface's scope id
                }
            }
            assert!(
                std::net::UdpSocket::bind((n.addr, 0)).is_ok(),
                "{} is listed as this host's but cannot be bound",
                n.addr
            );
        }
        // An address no interface has cannot be bound.
        assert!(std::net::UdpSocket::bind(("192.0.2.123", 0)).is_err());
    }

    #[test]
    fn the_allowlist_names_why() {
        let a = allowlist(
            &["10.1.1.1:7611".parse().unwrap()],
            Some("nats://127.0.0.1:4222"),
            Some("postgres://postgres@127.0.0.2:5432/x"),
            &["198.51.100.0/24".into()],
        )
        .unwrap();
        let why = |s: &str| a.hit(&Net::parse(s).unwrap()).map(|(_, w)| w.clone());
        assert_eq!(why("10.1.1.1").as_deref(), Some("validator"));
        assert_eq!(why("127.0.0.2").as_deref(), Some("the database"));
        assert_eq!(why("198.51.100.9").as_deref(), Some("configured"));
        assert!(why("127.0.0.1").is_some());
        assert_eq!(why("203.0.113.1"), None);
        let e = allowlist(&[], None, None, &["nope".into()]).unwrap_err();
        assert!(e.contains("allow #1"), "{e}");
    }
}
