//! Broker addresses as both sides take them in configuration:
//! `mqtt://[user[:password]@]host[:port]` or `mqtts://…` (TLS, port 8883 by default), and
//! comma-separated lists of them for failover across the nodes of a clustered broker.

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    /// Not `mqtt://…` or `mqtts://…`.
    #[error("broker URL {0:?} must start with mqtt:// or mqtts://")]
    Scheme(String),
    /// No host before the port.
    #[error("broker URL {0:?} has no host")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("broker URL {0:?} has a bad port")]
    Port(String),
    /// A `%` escape in the user or password is not two hex digits, or not UTF-8.
    #[error("broker URL {0:?} has a bad %-escape in its user or password")]
    Escape(String),
    /// An empty list.
    #[error("no broker URL given")]
    Empty,
}

/// A parsed broker address.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: connect with TLS.
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Never prints the password (URLs end up in logs).
impl std::fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        write!(f, "{scheme}://{user}{}:{}", self.host, self.port)
    }
}

impl BrokerAddr {
    /// Parses one URL; the port defaults to 1883 (`mqtt`) or 8883 (`mqtts`).
    pub fn parse(url: &str) -> Result<Self, BrokerUrlError> {
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(BrokerUrlError::Scheme(url.to_owned()));
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let escape = || BrokerUrlError::Escape(url.to_owned());
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (
                    Some(percent_decode(u).ok_or_else(escape)?),
                    Some(percent_decode(p).ok_or_else(escape)?),
                ),
                None => (Some(percent_decode(info).ok_or_else(escape)?), None),
            },
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| BrokerUrlError::Port(url.to_owned()))?,
            ),
            None => (hostport, default_port),
        };
        if host.is_empty() {
            return Err(BrokerUrlError::NoHost(url.to_owned()));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            username,
            password,
        })
    }

    /// Parses a comma-separated list (the nodes of one clustered broker, tried in turn).
    pub fn parse_list(urls: &str) -> Result<Vec<Self>, BrokerUrlError> {
        let list = urls
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(BrokerUrlError::Empty);
        }
        Ok(list)
    }
}

/// Decodes `%XX` escapes (so passwords may contain `@`, `:` or `,`).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        let a = BrokerAddr::parse("mqtt://broker.lan:1884").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker.lan", 1884, false)
        );
        assert_eq!(BrokerAddr::parse("mqtt://10.0.0.1/").unwrap().port, 1883);
        assert_eq!(BrokerAddr::parse("mqtts://b").unwrap().port, 8883);
        assert!(BrokerAddr::parse("mqtts://b").unwrap().tls);
    }

    #[test]
    fn parses_credentials_with_escapes_and_hides_the_password() {
        let a = BrokerAddr::parse("mqtts://cam-1:p%40ss%3Aw@broker:8884").unwrap();
        assert_eq!(a.username.as_deref(), Some("cam-1"));
        assert_eq!(a.password.as_deref(), Some("p@ss:w"));
        assert_eq!(a.to_string(), "mqtts://cam-1:***@broker:8884");
        assert!(!format!("{a:?}").contains("p@ss"));
        assert!(matches!(
            BrokerAddr::parse("mqtt://u:%zz@h"),
            Err(BrokerUrlError::Escape(_))
        ));
    }

    #[test]
    fn parses_lists() {
        let list = BrokerAddr::parse_list("mqtt://a:1, mqtt://b:2,").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].host, "b");
        assert_eq!(BrokerAddr::parse_list(" , "), Err(BrokerUrlError::Empty));
        assert!(BrokerAddr::parse_list("mqtt://a,http://b").is_err());
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
