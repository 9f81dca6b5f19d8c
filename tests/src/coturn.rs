//! A real coturn for the TURN tests, with the `use-auth-secret` credentials the gateway mints.

use std::net::IpAddr;
use std::process::Command;

use crate::{Process, free_port};

/// The shared secret between the test coturn and the gateway (`--turn-secret`).
pub const SECRET: &str = "test-turn-secret";

/// Starts coturn listening (UDP and TCP) on `ip`:`port` and relaying from `ip`, logging into
/// `log_dir`. Peers on loopback are allowed: the tests' cameras live there.
pub fn start(ip: IpAddr, port: u16, log_dir: &std::path::Path) -> anyhow::Result<Process> {
    let relay_min = free_port();
    let mut cmd = Command::new("turnserver");
    cmd.arg("-n")
        .arg(format!("--listening-ip={ip}"))
        .arg(format!("--relay-ip={ip}"))
        .arg(format!("--listening-port={port}"))
        .arg(format!("--min-port={relay_min}"))
        .arg(format!("--max-port={}", relay_min.saturating_add(50)))
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
        ])
        .args([
            "--realm=ferrocam.test",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--fingerprint",
        ])
        .args([
            "--allow-loopback-peers",
            "--log-file=stdout",
            "--simple-log",
        ]);
    Process::spawn("coturn", cmd, log_dir)
}
