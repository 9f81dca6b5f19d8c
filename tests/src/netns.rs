//! A network namespace joined to the host by a veth pair: the test's own "remote host", so
//! media can cross a link the test controls (packet loss with iptables `statistic`, since
//! `tc netem` is unavailable here). Needs root; removed on drop.

use std::process::Command;

use anyhow::{Context, bail};

/// A namespace with `host_ip` on the host's end of the link and `ns_ip` inside.
pub struct NetNs {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
    host_if: String,
    ns_if: String,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| format!("running {args:?}"))?;
    if !status.success() {
        bail!("{args:?} failed: {status}");
    }
    Ok(())
}

impl NetNs {
    /// Creates the namespace and link; `tag` keeps concurrent runs apart.
    pub fn create(tag: u16) -> anyhow::Result<Self> {
        let name = format!("fcam{tag}");
        let (host_if, ns_if) = (format!("fcam{tag}h"), format!("fcam{tag}n"));
        let subnet = 1 + (tag % 250);
        let (host_ip, ns_ip) = (format!("10.231.{subnet}.1"), format!("10.231.{subnet}.2"));
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
        };
        run(&["ip", "netns", "add", &name]).context("creating a network namespace (needs root)")?;
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        run(&["ip", "link", "set", &ns_if, "netns", &name])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &host_if,
        ])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        ns.exec(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if])?;
        ns.exec(&["ip", "link", "set", &ns_if, "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        // Everything leaves through the link, as on a real host: browsers use only the address
        // of their default route for WebRTC until a page is granted the camera (Firefox).
        ns.exec(&["ip", "route", "add", "default", "via", &host_ip])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Drops `percent` % of the UDP packets leaving the namespace.
    pub fn drop_outgoing_udp(&self, percent: u32) -> anyhow::Result<()> {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        self.exec(&[
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ])
    }

    /// Drops every UDP packet into and out of the namespace, as a firewall that allows only
    /// TCP would (MQTT and HTTP still pass).
    pub fn block_udp(&self) -> anyhow::Result<()> {
        for chain in ["OUTPUT", "INPUT"] {
            self.exec(&["iptables", "-A", chain, "-p", "udp", "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every drop rule.
    pub fn clear_drops(&self) -> anyhow::Result<()> {
        self.exec(&["iptables", "-F", "OUTPUT"])?;
        self.exec(&["iptables", "-F", "INPUT"])
    }

    /// Limits what leaves the namespace to `kbps` with a token bucket (`tc tbf`, 16 kB burst,
    /// at most 150 ms queued): a narrow uplink. Called again, it changes the rate in place.
    pub fn shape_uplink(&self, kbps: u32) -> anyhow::Result<()> {
        let shape = tbf(&self.ns_if, kbps);
        let mut inside = vec!["ip", "netns", "exec", self.name.as_str()];
        inside.extend(shape.iter().map(String::as_str));
        run(&inside)
    }

    /// Limits what enters the namespace to `kbps`, the same way on the host's end of the link:
    /// a narrow downlink for whatever runs inside (a viewer on a weak connection).
    pub fn shape_downlink(&self, kbps: u32) -> anyhow::Result<()> {
        let args = tbf(&self.host_if, kbps);
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// The `tc` command that shapes what leaves `dev` to `kbps`.
fn tbf(dev: &str, kbps: u32) -> Vec<String> {
    let rate = format!("{kbps}kbit");
    [
        "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "16kb",
        "latency", "150ms",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
