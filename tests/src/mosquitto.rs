//! Debian's Mosquitto for tests: started on a free loopback port, plain or, like a production
//! broker, with passwords, the shipped ACL and TLS.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::{Process, workspace_root};

/// Broker passwords of a `StackOptions::secure_broker` stack: user → password.
pub const GATEWAY_BROKER_USER: &str = "ferrocam-gateways";

/// The password a secure broker gives `user` in tests.
pub fn broker_password(user: &str) -> String {
    format!("pw-{user}")
}

/// Writes what a production Mosquitto has: a password file (each device's user is its id, and
/// one user for the gateways), the shipped ACL template, and a CA with a server certificate for
/// 127.0.0.1 (openssl). Returns the CA's path.
pub(crate) fn secure_broker_files(
    log_dir: &std::path::Path,
    devices: &[&str],
) -> anyhow::Result<PathBuf> {
    let dir = log_dir.join("broker");
    std::fs::create_dir_all(&dir)?;
    let passwords = dir.join("passwords");
    let _ = std::fs::remove_file(&passwords);
    for user in devices.iter().copied().chain([GATEWAY_BROKER_USER]) {
        let status = Command::new("mosquitto_passwd")
            .args(["-b"])
            .args(if passwords.exists() { None } else { Some("-c") })
            .arg(&passwords)
            .args([user, &broker_password(user)])
            .status()
            .context("mosquitto_passwd (package mosquitto)")?;
        anyhow::ensure!(status.success(), "mosquitto_passwd failed");
    }
    let acl = std::fs::read_to_string(workspace_root().join("deploy/mosquitto/ferrocam.acl"))?
        .replace(
            "user ferrocam-gateways",
            &format!("user {GATEWAY_BROKER_USER}"),
        );
    std::fs::write(dir.join("acl"), acl)?;
    let sh = format!(
        "set -e; cd {dir:?}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout ca.key -out ca.pem -days 2 -subj /CN=ferrocam-test-ca; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout server.key -out server.csr -subj /CN=127.0.0.1; \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext; \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
           -out server.pem -days 2 -extfile ext"
    );
    let out = Command::new("sh").args(["-c", &sh]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "making test certificates: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir.join("ca.pem"))
}

/// Starts a plain Mosquitto (anonymous; with `tls_port`, the secure setup
/// [`Stack::start`] prepared in `log_dir`) on `port`; returns when it accepts connections.
pub async fn start_mosquitto(
    port: u16,
    tls_port: Option<u16>,
    log_dir: &std::path::Path,
) -> anyhow::Result<Process> {
    let conf = log_dir.join("mosquitto.conf");
    // `set_tcp_nodelay`: production Mosquitto for ferrocam wants it too. Without it, a reply
    // the broker sends a gateway while the previous one is unacknowledged waits out the
    // gateway's delayed ACK (40 ms): bench-gateway measured p95 relay latency at 30-60 ms.
    let mut text = String::from(
        "per_listener_settings false\npersistence false\nset_tcp_nodelay true\n\
         log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n",
    );
    match tls_port {
        None => text.push_str(&format!(
            "allow_anonymous true\nlistener {port} 127.0.0.1\n"
        )),
        Some(tls) => {
            let dir = log_dir.join("broker");
            let d = dir.display();
            // Root in the test sandbox: keep root so the 0600 files stay readable.
            text.push_str(&format!(
                "user root\nallow_anonymous false\npassword_file {d}/passwords\nacl_file {d}/acl\n\
                 listener {port} 127.0.0.1\n\
                 listener {tls} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
            ));
        }
    }
    std::fs::write(&conf, text)?;
    let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("mosquitto not found: run scripts/setup-system.sh test")?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c").arg(&conf);
    let process = Process::spawn("mosquitto", cmd, log_dir)?;
    crate::eventually(
        "mosquitto to listen",
        Duration::from_secs(10),
        || async move {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ()))
        },
    )
    .await?;
    Ok(process)
}
