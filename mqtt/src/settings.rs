//! Broker connection settings: one or more broker URLs (the nodes of a clustered broker, tried
//! in turn), credentials, and TLS for `mqtts://` with rustls.
//!
//! Both sides build their `rumqttc` options here so that the broker-facing rules (keep-alive,
//! clean sessions, packet limits, TLS roots) are the same everywhere.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrocam_protocol::MAX_SIGNAL_PAYLOAD;

use crate::BrokerAddr;
use rumqttc::{AsyncClient, EventLoop, MqttOptions, TlsConfiguration, Transport};

/// Where the broker is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Broker nodes, tried in order; a lost connection moves on to the next.
    pub urls: Vec<BrokerAddr>,
    /// PEM file of CA certificates that sign the broker's certificate (`mqtts://`). Without
    /// it, the system's roots are used.
    pub ca_file: Option<PathBuf>,
    /// File holding the broker password (kept out of the command line and the environment).
    /// Overrides a password in the URL.
    pub password_file: Option<PathBuf>,
    /// The broker password itself (from an enrolled device's config file); the file wins.
    pub password: Option<String>,
}

/// Connection settings ready to use, one per broker node.
pub struct Failover {
    nodes: Vec<MqttOptions>,
    next: usize,
}

impl BrokerSettings {
    /// Builds options for every node. `client_id` must be unique on the broker; `customize`
    /// adds per-side settings (a last will, say) to each.
    pub fn connect(
        &self,
        client_id: &str,
        customize: impl Fn(&mut MqttOptions),
    ) -> anyhow::Result<Failover> {
        let password = match &self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("reading the broker password from {}", path.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => self.password.clone(),
        };
        let tls = if self.urls.iter().any(|u| u.tls) {
            Some(self.tls_config()?)
        } else {
            None
        };
        let nodes = self
            .urls
            .iter()
            .map(|url| {
                let mut options = MqttOptions::new(client_id, url.host.clone(), url.port);
                options
                    .set_keep_alive(Duration::from_secs(10))
                    .set_clean_session(true)
                    // Room for any legal signal plus slack; bigger packets are refused by the
                    // connection itself, smaller-but-over-limit ones by the envelope decoder.
                    .set_max_packet_size(MAX_SIGNAL_PAYLOAD * 4, MAX_SIGNAL_PAYLOAD * 4);
                if let Some(user) = &url.username {
                    let pass = password.clone().or_else(|| url.password.clone());
                    options.set_credentials(user.clone(), pass.unwrap_or_default());
                }
                if url.tls
                    && let Some(config) = &tls
                {
                    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(config.clone())));
                }
                customize(&mut options);
                options
            })
            .collect();
        Ok(Failover { nodes, next: 1 })
    }

    /// A rustls client config trusting `ca_file` or the system roots.
    fn tls_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("reading broker CA {}", path.display()))?;
                for cert in certs {
                    roots
                        .add(cert.with_context(|| format!("parsing {}", path.display()))?)
                        .context("adding the broker CA")?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "no CA certificates to verify the broker with"
        );
        // ring, not the default aws-lc-rs: it is already in the build (DTLS) and cross-compiles
        // for the Pi without cmake.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

impl Failover {
    /// The first node's options, to create the client with.
    pub fn first(&self) -> MqttOptions {
        self.nodes[0].clone()
    }

    /// The next node's options (round robin), after a lost connection. With one URL this is
    /// the same node again.
    pub fn next_node(&mut self) -> MqttOptions {
        let options = self.nodes[self.next % self.nodes.len()].clone();
        self.next = (self.next + 1) % self.nodes.len();
        options
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: settings without a URL are refused by the URL parser.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// A client and its event loop for `options`, with TCP_NODELAY: signaling is small messages
/// sent back to back, and with Nagle's algorithm each one queued behind an unacknowledged one
/// waits for the broker's delayed ACK (40 ms on Linux). Measured by `bench-gateway`: that was
/// most of the relay latency under load. `capacity` bounds the request queue.
pub fn client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(options, capacity);
    let mut network = events.network_options();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    (client, events)
}

/// `host:port` of the options, for logs.
pub fn node_name(options: &MqttOptions) -> String {
    let (host, port) = options.broker_address();
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(urls: &str) -> BrokerSettings {
        BrokerSettings {
            urls: BrokerAddr::parse_list(urls).unwrap(),
            ca_file: None,
            password_file: None,
            password: None,
        }
    }

    fn login(f: &Failover) -> Option<(String, String)> {
        f.first().credentials().map(|l| (l.username, l.password))
    }

    #[test]
    fn failover_cycles_through_the_nodes() {
        let mut f = settings("mqtt://a:1,mqtt://b:2,mqtt://c:3")
            .connect("x", |_| {})
            .unwrap();
        assert_eq!(node_name(&f.first()), "a:1");
        let order: Vec<String> = (0..4).map(|_| node_name(&f.next_node())).collect();
        assert_eq!(order, ["b:2", "c:3", "a:1", "b:2"]);
    }

    #[test]
    fn credentials_come_from_the_url_or_the_password_file() {
        let f = settings("mqtt://cam:secret@a")
            .connect("x", |_| {})
            .unwrap();
        assert_eq!(login(&f), Some(("cam".into(), "secret".into())));
        let dir = std::env::temp_dir().join(format!("ferrocam-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut s = settings("mqtt://cam:secret@a");
        s.password_file = Some(file);
        let f = s.connect("x", |_| {}).unwrap();
        assert_eq!(login(&f), Some(("cam".into(), "from-file".into())));
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let mut s = settings("mqtts://a");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        let err = s.connect("x", |_| {}).err().unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
    }
}
