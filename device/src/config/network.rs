//! Flag values about the network side: ICE over TCP, and on/off switches.

use std::net::SocketAddr;

/// What `--ice-tcp` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceTcp {
    /// The IP addresses of `--ice-udp`, each on a port of the system's choosing.
    Auto,
    Off,
    Addrs(Vec<SocketAddr>),
}

impl IceTcp {
    /// The TCP addresses to listen on, given the UDP ones.
    pub fn addrs(&self, udp: &[SocketAddr]) -> Vec<SocketAddr> {
        match self {
            Self::Auto => {
                let mut addrs: Vec<SocketAddr> =
                    udp.iter().map(|a| SocketAddr::new(a.ip(), 0)).collect();
                addrs.dedup();
                addrs
            }
            Self::Off => Vec::new(),
            Self::Addrs(addrs) => addrs.clone(),
        }
    }
}

pub(super) fn parse_ice_tcp(s: &str) -> Result<IceTcp, String> {
    match s.trim() {
        "auto" => Ok(IceTcp::Auto),
        "off" | "none" => Ok(IceTcp::Off),
        list => list
            .split(',')
            .map(|a| {
                a.trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("{a:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(IceTcp::Addrs),
    }
}

pub(super) fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}
