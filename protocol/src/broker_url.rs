//! Broker addresses as both sides take them in configuration: `mqtt://host[:port]`.

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    /// Not `mqtt://…` (TLS `mqtts://` arrives with the security work).
    #[error("broker URL {0:?} must start with mqtt://")]
    Scheme(String),
    /// No host before the port.
    #[error("broker URL {0:?} has no host")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("broker URL {0:?} has a bad port")]
    Port(String),
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

impl BrokerAddr {
    /// Parses `mqtt://host[:port]`; the port defaults to 1883.
    pub fn parse(url: &str) -> Result<Self, BrokerUrlError> {
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| BrokerUrlError::Scheme(url.to_owned()))?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| BrokerUrlError::Port(url.to_owned()))?,
            ),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(BrokerUrlError::NoHost(url.to_owned()));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        let a = BrokerAddr::parse("mqtt://broker.lan:1884").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("broker.lan", 1884));
        assert_eq!(BrokerAddr::parse("mqtt://10.0.0.1/").unwrap().port, 1883);
    }

    #[test]
    fn refuses_other_schemes_missing_hosts_and_bad_ports() {
        assert!(matches!(
            BrokerAddr::parse("http://x"),
            Err(BrokerUrlError::Scheme(_))
        ));
        assert!(matches!(
            BrokerAddr::parse("mqtt://:1"),
            Err(BrokerUrlError::NoHost(_))
        ));
        assert!(matches!(
            BrokerAddr::parse("mqtt://h:0"),
            Err(BrokerUrlError::Port(_))
        ));
        assert!(matches!(
            BrokerAddr::parse("mqtt://h:x"),
            Err(BrokerUrlError::Port(_))
        ));
    }
}
