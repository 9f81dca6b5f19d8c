//! Who a request comes from, for per-address limits and logs.
//!
//! Behind a reverse proxy every request arrives from the proxy's address, so limiting logins
//! per address would lock out everyone at once. The proxy names the real client in
//! `X-Forwarded-For`, but so can any client that talks to the gateway directly, so the header
//! is believed only when the connection comes from a proxy the operator listed
//! (`--trusted-proxies`), and then read from the right: the last address a trusted proxy did
//! not add is the client (earlier entries are whatever the client claimed).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// One `--trusted-proxies` entry: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0–{max}"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 clients) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry no trusted proxy added.
pub fn address(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| canonical(p.ip()));
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the right: skip what trusted proxies added. An entry that is not a bare address
    // (`ip:port`, `unknown`, garbage) ends the walk: nothing left of it can be trusted, and
    // the last trusted hop is what is known for sure.
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>().map(canonical) else {
            return client;
        };
        if !is_trusted(ip) {
            return ip;
        }
        client = ip;
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn cidr_blocks_match_their_addresses() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains("10.200.1.1".parse().unwrap()));
        assert!(lan.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.lan").is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxy = Cidr::parse("127.0.0.1").unwrap();
        let from = |peer: &str| Some(SocketAddr::new(peer.parse().unwrap(), 1234));
        // From the proxy: the right-most address it did not add.
        assert_eq!(
            address(
                from("127.0.0.1"),
                &headers("6.6.6.6, 203.0.113.9"),
                &[proxy]
            ),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A client talking directly cannot choose its address.
        assert_eq!(
            address(from("198.51.100.4"), &headers("203.0.113.9"), &[proxy]),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        // Nothing trusted configured: the peer, always.
        assert_eq!(
            address(from("127.0.0.1"), &headers("203.0.113.9"), &[]),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        // The proxy without a header, or with garbage: the proxy itself.
        assert_eq!(
            address(from("127.0.0.1"), &headers("not an address"), &[proxy]),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        // Garbage right of a client's claim: the claim is not believed.
        assert_eq!(
            address(from("127.0.0.1"), &headers("6.6.6.6, unknown"), &[proxy]),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
