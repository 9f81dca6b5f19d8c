//! The benchmark's view of the gateway over HTTP: a client that reports every status, and the
//! probes the run polls (devices listed online, the answer-latency histogram in `/metrics`).
//!
//! Kept apart from the run so its steps read as "start, wait, load, measure" without the
//! request plumbing.

use std::time::Duration;

use anyhow::Context;

use super::Histogram;

/// A blocking HTTP client that reports every status instead of failing on 4xx/5xx.
pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// `GET url` (with `bearer` if any) → body, off the async runtime.
pub(super) async fn get_text(
    agent: &ureq::Agent,
    url: String,
    bearer: Option<String>,
) -> anyhow::Result<String> {
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        let mut req = agent.get(&url);
        if let Some(bearer) = &bearer {
            req = req.header("authorization", bearer);
        }
        let mut resp = req.call().with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        anyhow::ensure!(status == 200, "GET {url}: {status} {body}");
        Ok(body)
    })
    .await?
}

/// How many `sim-*` devices the gateway lists online.
pub(super) async fn online_devices(
    agent: &ureq::Agent,
    base: &str,
    bearer: &str,
) -> anyhow::Result<usize> {
    let body = get_text(
        agent,
        format!("{base}/api/devices"),
        Some(bearer.to_owned()),
    )
    .await?;
    let list: serde_json::Value = serde_json::from_str(&body).context("device list JSON")?;
    Ok(list["devices"]
        .as_array()
        .context("no devices array")?
        .iter()
        .filter(|d| {
            d["online"] == true
                && d["device"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("sim-"))
        })
        .count())
}

/// The gateway's offer → answer relay latency histogram.
pub(super) const ANSWER_HISTOGRAM: &str = "ferrocam_gateway_answer_latency_seconds";

/// The gateway's answer-latency histogram as it stands now.
pub(super) async fn answer_histogram(agent: &ureq::Agent, base: &str) -> anyhow::Result<Histogram> {
    // Loopback clients need no credentials for /metrics.
    let text = get_text(agent, format!("{base}/metrics"), None).await?;
    Ok(Histogram::parse(&text, ANSWER_HISTOGRAM))
}
