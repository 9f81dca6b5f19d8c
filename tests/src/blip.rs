//! Connection blips as a flaky Wi-Fi link makes them: one process's TCP connection to a broker
//! is destroyed (`ss -K`, which needs root and a kernel with INET_DIAG_DESTROY) while the
//! process itself lives on, so it must notice and reconnect by itself.

use std::process::Command;

use crate::process::stdout;

/// Destroys every established TCP connection that process `pid` holds to one of `ports` on
/// loopback; returns how many there were. Both ends see the connection fail at once (the
/// kernel resets it), like a link that drops and comes back.
pub fn drop_connections(pid: u32, ports: &[u16]) -> anyhow::Result<usize> {
    let listing = stdout(Command::new("ss").args(["-tnpH", "state", "established"]))?;
    let owner = format!("pid={pid},");
    let mut dropped = 0;
    for line in listing.lines().filter(|l| l.contains(&owner)) {
        // Recv-Q Send-Q Local:Port Peer:Port Process (no State column with a state filter).
        let addresses: Vec<&str> = line
            .split_whitespace()
            .filter(|f| f.contains(':'))
            .collect();
        let (Some(local), Some(peer)) = (addresses.first(), addresses.get(1)) else {
            continue;
        };
        let port_of = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        let (Some(local_port), Some(peer_port)) = (port_of(local), port_of(peer)) else {
            continue;
        };
        if !ports.contains(&peer_port) {
            continue;
        }
        let filter = format!("sport = :{local_port} and dport = :{peer_port}");
        stdout(Command::new("ss").args(["-K", "-tnH"]).arg(&filter))?;
        dropped += 1;
    }
    Ok(dropped)
}
