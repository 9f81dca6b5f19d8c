//! Gateway scale benchmark: one gateway, N simulated devices, M WHEP sessions.
//!
//! The devices are lightweight MQTT clients in this process (one rumqttc client and event-loop
//! task each): they publish a retained `online` status with an `offline` last will, subscribe to
//! their signal topic and answer every offer with a canned SDP answer. Nothing media-related
//! runs, so what is measured is the gateway (HTTP, auth, relay, grant signing, MQTT link) and
//! the broker (the gateway's embedded rumqttd, or a Mosquitto started here).
//!
//! Measured: time until the gateway lists all devices online, gateway (and Mosquitto) RSS idle
//! and after the load, WHEP sessions per second (`POST /whep/<random device>` then `DELETE`,
//! `concurrency` at a time over keep-alive connections), POST latency percentiles, the
//! gateway's own offer → answer relay latency (its `answer_latency_seconds` histogram, diffed
//! over the load), and the CPU time the gateway used during the load.
//!
//! Used by the `bench-gateway` binary (`make bench-gateway`) and the `bench_smoke` test. It
//! reports numbers; it never judges them.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrocam_protocol::DeviceId;

use crate::process::{Process, cpu_seconds, free_port, rss_mib, workspace_bin, workspace_root};

mod fleet;
mod http;
mod load;
mod stats;

use fleet::{Fleet, SimStats, spawn_device};
use http::{agent, answer_histogram, get_text, online_devices};
use load::{LoadResult, run_load};
pub use stats::{Histogram, HistogramEstimate, Percentiles, percentiles};

/// The gateway instance id the benchmark starts.
pub const INSTANCE: &str = "gw-bench";

/// Which broker the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchBroker {
    /// rumqttd inside the gateway (`--mqtt-listen`).
    Embedded,
    /// A Mosquitto started by the benchmark (`--broker mqtt://…`).
    Mosquitto,
}

impl std::str::FromStr for BenchBroker {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "mosquitto" => Ok(Self::Mosquitto),
            other => anyhow::bail!("unknown broker {other:?}: embedded or mosquitto"),
        }
    }
}

impl std::fmt::Display for BenchBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::Mosquitto => "mosquitto",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Simulated devices (`sim-00000`, `sim-00001`, …).
    pub devices: usize,
    pub broker: BenchBroker,
    /// WHEP sessions to create (each followed by its DELETE).
    pub sessions: usize,
    /// Sessions in flight at once (one keep-alive connection each).
    pub concurrency: usize,
    /// Devices connecting per second, so the broker is not stormed.
    pub connect_rate: usize,
    /// Log folder under `target/e2e-logs/`.
    pub name: String,
}

impl BenchOptions {
    pub fn new(devices: usize, broker: BenchBroker) -> Self {
        Self {
            devices,
            broker,
            sessions: 2000,
            concurrency: 16,
            connect_rate: 500,
            name: format!("bench-gateway-{devices}-{broker}"),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub devices: usize,
    pub broker: BenchBroker,
    pub sessions: usize,
    pub concurrency: usize,
    pub connect_rate: usize,
    /// Devices `GET /api/devices` listed online before the load.
    pub devices_online: usize,
    /// From the first device connecting until the gateway listed all of them online.
    pub all_online_secs: f64,
    /// Devices whose MQTT connection dropped or failed at least once (reconnects).
    pub device_connection_errors: u64,
    pub gateway_rss_idle_mib: f64,
    pub gateway_rss_after_mib: f64,
    /// Mosquitto's RSS; the embedded broker's is part of the gateway's.
    pub broker_rss_idle_mib: Option<f64>,
    pub broker_rss_after_mib: Option<f64>,
    /// Wall time of the load (all POSTs and DELETEs).
    pub load_secs: f64,
    /// Sessions created (201) per second of load.
    pub sessions_per_sec: f64,
    /// POSTs answered `201 Created`.
    pub created: u64,
    /// Other POST outcomes: status code (or `error` for a transport failure) → count.
    pub failures: BTreeMap<String, u64>,
    /// POSTs refused with 429 (the gateway's per-device offer limit).
    pub rate_limited: u64,
    /// DELETEs not answered 200.
    pub delete_failures: u64,
    /// `POST /whep/…` sent → `201` received, of the created sessions.
    pub post_ms: Percentiles,
    /// The gateway's offer relayed → answer relayed histogram over the load.
    pub relay_ms: HistogramEstimate,
    /// Gateway user + system CPU during the load.
    pub gateway_cpu_secs: f64,
    /// Mosquitto's CPU during the load.
    pub broker_cpu_secs: Option<f64>,
    /// Offers the simulated devices answered.
    pub offers_answered: u64,
}

impl BenchReport {
    /// The header of [`Self::markdown_row`].
    pub fn markdown_header() -> String {
        "| devices | broker | all online (s) | gateway RSS idle / after load (MiB) | broker RSS idle / after (MiB) | sessions/s | POST p50 / p95 / p99 (ms) | relay p50 / p99 (ms) | gateway CPU in load (s) | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|"
            .to_owned()
    }

    /// One Markdown table row.
    pub fn markdown_row(&self) -> String {
        let broker_rss = match (self.broker_rss_idle_mib, self.broker_rss_after_mib) {
            (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
            _ => "(in gateway)".to_owned(),
        };
        let mut errors: Vec<String> = self
            .failures
            .iter()
            .map(|(code, n)| format!("{n}× {code}"))
            .collect();
        if self.delete_failures > 0 {
            errors.push(format!("{} DELETE", self.delete_failures));
        }
        if self.devices_online < self.devices {
            errors.push(format!(
                "{} devices not online",
                self.devices - self.devices_online
            ));
        }
        let errors = if errors.is_empty() {
            "0".to_owned()
        } else {
            errors.join(", ")
        };
        format!(
            "| {} | {} | {:.1} | {:.1} / {:.1} | {broker_rss} | {:.0} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {errors} |",
            self.devices,
            self.broker,
            self.all_online_secs,
            self.gateway_rss_idle_mib,
            self.gateway_rss_after_mib,
            self.sessions_per_sec,
            self.post_ms.p50,
            self.post_ms.p95,
            self.post_ms.p99,
            self.relay_ms.p50,
            self.relay_ms.p99,
            self.gateway_cpu_secs,
        )
    }
}

/// Raises this process's open-file limit to the hard limit (to at least 65 536 when allowed);
/// children inherit it. Returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < 65_536 {
            let wanted = libc::rlimit {
                rlim_cur: 65_536,
                rlim_max: 65_536,
            };
            // Needs CAP_SYS_RESOURCE; without it, the hard limit below is the best we get.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return Ok(65_536);
            }
        }
        limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            limit.rlim_max
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit");
        }
    }
    Ok(limit.rlim_cur)
}

/// What a WHEP player might offer: receive-only H.264. The gateway reads only its shape and
/// the ufrag.
const OFFER_SDP: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:bnch\r\n\
a=ice-pwd:benchbenchbenchbenchbe\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

/// Runs one benchmark: starts Mosquitto (if asked) and a gateway, connects the devices, waits
/// until the gateway lists them all online, runs the load, and tears everything down.
/// Enrolls one device with the real CLI, then lists every simulated id with its public key and
/// password digest (enrolling thousands one by one would rewrite the list thousands of times).
fn enroll_fleet(creds: &crate::Credentials, devices: usize) -> anyhow::Result<fleet::SimKeys> {
    let template = creds.enroll("sim-template")?;
    let list = std::fs::read_to_string(creds.devices_file())?;
    let field = |name: &str| {
        list.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_prefix('=')?
                    .trim()
                    .strip_prefix('"')?
                    .strip_suffix('"')
            })
            .map(str::to_owned)
            .with_context(|| format!("{name} missing from the device list"))
    };
    let (public_key, digest) = (field("public_key")?, field("broker_password_sha256")?);
    let mut out = String::new();
    for i in 0..devices {
        out.push_str(&format!(
            "[[device]]\nid = \"sim-{i:05}\"\npublic_key = \"{public_key}\"\nbroker_password_sha256 = \"{digest}\"\n\n"
        ));
    }
    std::fs::write(creds.devices_file(), out)?;
    let signer =
        ferrocam_protocol::signed::Signer::from_seed_base64(template.var("FERROCAM_SIGNING_KEY"))
            .map_err(|e| anyhow::anyhow!(e))?;
    Ok(fleet::SimKeys {
        signer: Arc::new(signer),
        password: template.broker_password().to_owned(),
    })
}

pub async fn run(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        options.devices > 0 && options.devices <= 100_000,
        "1–100000 devices"
    );
    anyhow::ensure!(
        options.concurrency > 0 && options.connect_rate > 0,
        "concurrency and connect rate must be positive"
    );
    let log_dir = workspace_root().join("target/e2e-logs").join(&options.name);
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let creds = crate::Credentials::create(&log_dir.join("auth"))?;
    let keys = enroll_fleet(&creds, options.devices)?;
    let bearer = creds.bearer();
    let (mqtt_port, http_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{http_port}");

    let mosquitto = match options.broker {
        BenchBroker::Mosquitto => {
            Some(crate::stack::start_mosquitto(mqtt_port, None, &log_dir).await?)
        }
        BenchBroker::Embedded => None,
    };
    let mut cmd = Command::new(workspace_bin("ferrocam-gateway")?);
    cmd.args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(["--instance", INSTANCE])
        .arg("--auth-config")
        .arg(&creds.auth_config)
        // The gateway's own default log filter, as in production.
        .env_remove("RUST_LOG");
    match options.broker {
        BenchBroker::Embedded => cmd.args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")]),
        BenchBroker::Mosquitto => cmd.args(["--broker", &format!("mqtt://127.0.0.1:{mqtt_port}")]),
    };
    let gateway = Process::spawn("gateway", cmd, &log_dir)?;
    let gateway_pid = gateway.pid();
    let http = agent();
    crate::eventually("the gateway to serve", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{base}/healthz"));
        async move { Ok(get_text(&http, url, None).await.ok().map(|_| ())) }
    })
    .await
    .with_context(|| gateway.log_tail(3000))?;

    // Devices connect at a bounded rate, a batch every 100 ms.
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let stats = Arc::new(SimStats::default());
    let mut fleet = Fleet {
        tasks: Vec::with_capacity(options.devices),
        stats: Arc::clone(&stats),
    };
    let started = Instant::now();
    let per_tick = options.connect_rate.div_ceil(10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for first in (0..options.devices).step_by(per_tick) {
        tick.tick().await;
        for i in first..(first + per_tick).min(options.devices) {
            let id = DeviceId::parse(&format!("sim-{i:05}"))?;
            fleet.tasks.push(spawn_device(
                id,
                mqtt_port,
                epoch,
                Arc::clone(&stats),
                keys.clone(),
            ));
        }
    }

    // Until the gateway lists all of them online.
    let patience = Duration::from_secs(60)
        + Duration::from_secs_f64(3.0 * options.devices as f64 / options.connect_rate as f64);
    let mut devices_online;
    loop {
        devices_online = online_devices(&http, &base, &bearer).await.unwrap_or(0);
        if devices_online >= options.devices || started.elapsed() > patience {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_online_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} devices, {}: {devices_online} online after {all_online_secs:.1} s",
        options.devices, options.broker
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let broker_pid = mosquitto.as_ref().map(Process::pid);
    let gateway_rss_idle_mib = rss_mib(gateway_pid)?;
    let broker_rss_idle_mib = broker_pid.map(rss_mib).transpose()?;

    // The load.
    let histogram_before = answer_histogram(&http, &base).await?;
    let cpu_before = cpu_seconds(gateway_pid)?;
    let broker_cpu_before = broker_pid.map(cpu_seconds).transpose()?;
    let load_started = Instant::now();
    let load = {
        let (base, bearer) = (base.clone(), bearer.clone());
        let (devices, sessions, concurrency) =
            (options.devices, options.sessions, options.concurrency);
        tokio::task::spawn_blocking(move || {
            run_load(&base, &bearer, devices, sessions, concurrency)
        })
        .await?
    };
    let load_secs = load_started.elapsed().as_secs_f64();
    let gateway_cpu_secs = cpu_seconds(gateway_pid)? - cpu_before;
    let broker_cpu_secs = match (broker_pid, broker_cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let relay = answer_histogram(&http, &base)
        .await?
        .since(&histogram_before);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gateway_rss_after_mib = rss_mib(gateway_pid)?;
    let broker_rss_after_mib = broker_pid.map(rss_mib).transpose()?;

    let LoadResult {
        mut post_ms,
        failures,
        delete_failures,
    } = load;
    let created = post_ms.len() as u64;
    let report = BenchReport {
        devices: options.devices,
        broker: options.broker,
        sessions: options.sessions,
        concurrency: options.concurrency,
        connect_rate: options.connect_rate,
        devices_online,
        all_online_secs,
        device_connection_errors: fleet.stats.errors.load(Ordering::Relaxed),
        gateway_rss_idle_mib,
        gateway_rss_after_mib,
        broker_rss_idle_mib,
        broker_rss_after_mib,
        load_secs,
        sessions_per_sec: created as f64 / load_secs,
        created,
        rate_limited: failures.get("429").copied().unwrap_or(0),
        failures,
        delete_failures,
        post_ms: percentiles(&mut post_ms),
        relay_ms: relay.estimate_ms(),
        gateway_cpu_secs,
        broker_cpu_secs,
        offers_answered: fleet.stats.answered.load(Ordering::Relaxed),
    };
    if fleet.stats.dropped.load(Ordering::Relaxed) > 0 {
        eprintln!(
            "warning: {} answers found the device's MQTT queue full",
            fleet.stats.dropped.load(Ordering::Relaxed)
        );
    }
    // Gateway first, so the devices' last wills do not keep it busy; then the broker.
    drop(gateway);
    drop(mosquitto);
    drop(fleet);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::http::ANSWER_HISTOGRAM;
    use super::*;

    const EXPOSITION: &str = "# TYPE ferrocam_gateway_answer_latency_seconds histogram\n\
ferrocam_gateway_answer_latency_seconds_sum 0.05\n\
ferrocam_gateway_answer_latency_seconds_count 10\n\
ferrocam_gateway_answer_latency_seconds_bucket{le=\"0.001\"} 0\n\
ferrocam_gateway_answer_latency_seconds_bucket{le=\"0.002\"} 4\n\
ferrocam_gateway_answer_latency_seconds_bucket{le=\"0.004\"} 9\n\
ferrocam_gateway_answer_latency_seconds_bucket{le=\"+Inf\"} 10\n";

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let h = Histogram::parse(EXPOSITION, ANSWER_HISTOGRAM);
        assert_eq!(h.count, 10);
        assert_eq!(h.buckets.len(), 4);
        // 5th of 10 lies in (0.002, 0.004], the first of its 5 observations.
        assert!(
            (h.quantile(0.5) - 0.0024).abs() < 1e-9,
            "{}",
            h.quantile(0.5)
        );
        // The 10th is in +Inf: reported as the largest finite bound.
        assert_eq!(h.quantile(0.99), 0.004);
        let none = h.since(&h);
        assert_eq!((none.count, none.quantile(0.5)), (0, 0.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut samples);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
    }
}
