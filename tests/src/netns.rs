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

/// Held while a slot is chosen and claimed, so two test binaries never pick the same one.
const SLOT_LOCK: &str = "/tmp/ferrocam-netns.lock";

/// Output of a command, or empty when it fails (a missing namespace list, say).
fn output(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The first free slot at or after `1 + tag % 250`. A slot `s` is the namespace `fcam{s}`, its
/// links `fcam{s}h`/`fcam{s}n` and the subnet 10.231.s.0/24; it is free only when none of those
/// exists. Something left behind by a killed run is skipped, never reused: a namespace whose
/// subnet is still routed on the host would swallow the new one's traffic.
fn free_slot(tag: u16) -> anyhow::Result<u16> {
    let namespaces = output(&["ip", "netns", "list"]);
    let links = output(&["ip", "-o", "link", "show"]);
    let addresses = output(&["ip", "-o", "-4", "addr", "show"]);
    let first = 1 + tag % 250;
    (0..250)
        .map(|step| 1 + (first - 1 + step) % 250)
        .find(|slot| {
            let name = format!("fcam{slot}");
            let in_use = |text: &str, needle: &str| text.split_whitespace().any(|w| w == needle);
            !in_use(&namespaces, &name)
                && !in_use(&links, &format!("{name}h:"))
                && !links.contains(&format!(" {name}h@"))
                && !addresses.contains(&format!(" 10.231.{slot}."))
        })
        .context("all 250 test network slots are in use (stale fcam* namespaces?)")
}

impl NetNs {
    /// Creates the namespace and link in a free slot; `tag` is where the search for one starts,
    /// so concurrent runs usually find theirs at the first try.
    pub fn create(tag: u16) -> anyhow::Result<Self> {
        let lock = std::fs::File::create(SLOT_LOCK).context("creating the slot lock")?;
        lock.lock().context("taking the slot lock")?;
        let slot = free_slot(tag)?;
        let name = format!("fcam{slot}");
        let (host_if, ns_if) = (format!("fcam{slot}h"), format!("fcam{slot}n"));
        let (host_ip, ns_ip) = (format!("10.231.{slot}.1"), format!("10.231.{slot}.2"));
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
