//! The test harness's own network namespaces. A run killed before its clean-up (a timeout, a
//! Ctrl-C) leaves its veth behind, still routing its subnet on the host. A later namespace given
//! the same subnet would send its traffic into the dead one: the browser driver, the device's
//! broker connection and every connection test fail together, for no reason in the product.
//! CI once lost a whole test binary this way. A new namespace must take a free slot instead.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;

use ferrocam_tests::netns::NetNs;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ip").args(args).status()?;
    anyhow::ensure!(status.success(), "ip {args:?}: {status}");
    Ok(())
}

/// A veth standing in for a killed run's leftover; removed (both ends) on drop.
struct Leftover(String);

impl Drop for Leftover {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn a_leftover_subnet_is_skipped_and_the_new_link_carries_traffic() -> anyhow::Result<()> {
    let tag = (std::process::id() % 10_000) as u16;
    // The slot this tag would be given first (see `NetNs::create`).
    let slot = 1 + tag % 250;
    let leftover = Leftover(format!("fcleft{slot}"));
    let peer = format!("{}p", leftover.0);
    ip(&[
        "link",
        "add",
        &leftover.0,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("10.231.{slot}.1/24"),
        "dev",
        &leftover.0,
    ])?;
    ip(&["link", "set", &leftover.0, "up"])?;

    let ns = NetNs::create(tag)?;
    assert_ne!(
        ns.host_ip,
        format!("10.231.{slot}.1"),
        "the leftover's subnet was handed out again"
    );

    // A TCP connection from inside the namespace reaches the host's end of the new link.
    let listener = TcpListener::bind((ns.host_ip.as_str(), 0))?;
    let port = listener.local_addr()?.port();
    let script = format!("echo reached > /dev/tcp/{}/{port}", ns.host_ip);
    let connect = std::thread::spawn({
        let name = ns.name.clone();
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &name, "timeout", "5", "bash", "-c", &script,
                ])
                .status()
        }
    });
    // The kernel completes the handshake without `accept`, so the sender finishes first and
    // a failure shows as its exit status rather than an `accept` that never returns.
    let sent = connect.join().expect("connect thread")?;
    assert!(
        sent.success(),
        "no connection from inside the namespace: {sent}"
    );
    let (mut stream, _) = listener.accept()?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    assert_eq!(text.trim(), "reached");
    Ok(())
}
