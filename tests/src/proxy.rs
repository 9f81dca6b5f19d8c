//! A TCP front door for several gateways, as a load balancer or a DNS name would be: browsers
//! connect to one address, and the test decides which gateway is behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// Forwards every new connection on its port to the gateway currently chosen.
pub struct FrontDoor {
    ip: std::net::IpAddr,
    port: u16,
    target: Arc<AtomicU16>,
    accept: tokio::task::JoinHandle<()>,
}

impl FrontDoor {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1".parse()?, target).await
    }

    /// Listens on a free port of `ip` (a test namespace's host end, for a browser inside it),
    /// forwarding to `127.0.0.1:<target>`.
    pub async fn start_on(ip: std::net::IpAddr, target: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let port = listener.local_addr()?.port();
        let target = Arc::new(AtomicU16::new(target));
        let current = Arc::clone(&target);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = current.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    // A gateway that is down refuses: the browser sees its connection close,
                    // as it would behind a real balancer with no healthy backend.
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self {
            ip,
            port,
            target,
            accept,
        })
    }

    /// New connections go to `127.0.0.1:<target>` from now on; open ones stay where they are.
    pub fn switch_to(&self, target: u16) {
        self.target.store(target, Ordering::Relaxed);
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://<ip>:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}/{path}", self.ip, self.port)
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
