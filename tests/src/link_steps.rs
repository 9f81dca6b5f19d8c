//! A viewer watched through a sequence of link rates: the measurement behind issue 15's floor
//! (`tests/tests/narrow_link.rs`) and `make bench-network`, which runs it on ferrocam, on
//! Chromium sending to Chromium and on Janus, so all three are judged by one piece of code.
//!
//! The caller shapes the link (a closure, so this module knows nothing about namespaces) and
//! hands over a browser whose page exposes `window.ferrocam.pc` and `window.ferrocam.meter`
//! (ferrocam's page does; the benchmark's pages alias their own object to that name).
//! Each step samples getStats once a second and reads which frames were presented and their
//! glass-to-glass times from the page.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Browser;
use crate::playback::{
    RECORD_PRESENTATIONS, frozen_within, glass_to_glass, n, percentile, presented, sample,
};

/// The first seconds after a change are the adaptation itself; the steady-state figures start
/// after them.
pub const SETTLE_SECS: usize = 3;

/// What the viewer got during one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub link_kbps: u32,
    /// Seconds into the step until one second's received bitrate was below the link.
    pub below_link_after_s: Option<usize>,
    /// Received kbit/s in each second of the step.
    pub kbps_per_second: Vec<f64>,
    /// Frame width decoded at the end of each second (0 before the first frame).
    pub width_per_second: Vec<f64>,
    /// Mean received kbit/s after the settling seconds.
    pub steady_kbps: f64,
    /// Frames decoded per second after the settling seconds.
    pub fps: f64,
    /// Seconds frozen after the settling seconds, by Chromium's definition, from the frames
    /// the page presented.
    pub frozen_s: f64,
    /// getStats' `totalFreezesDuration` over the whole step (whole freezes, when they end).
    pub stats_frozen_s: f64,
    /// Glass-to-glass p50 and p95 after the settling seconds (NaN without samples).
    pub g2g_p50_ms: f64,
    pub g2g_p95_ms: f64,
    pub g2g_frames: usize,
    /// The worst glass to glass of each second after the settling seconds (NaN for a second
    /// without samples): when in the step the latency peaks, beside what the device logged.
    pub g2g_worst_per_second: Vec<f64>,
    /// The receiver's mean jitter-buffer delay over the step (ms per frame): how much of the
    /// glass to glass is the viewer waiting rather than the path.
    pub jitter_buffer_ms: f64,
    /// The decoder's mean QP over the step: H.264's quantiser, higher is coarser. Read beside
    /// the width: at the same rate, a smaller picture is quantised less.
    pub qp: f64,
    pub lost: f64,
    pub nacks: f64,
    pub plis: f64,
}

impl StepReport {
    /// One line for logs and test failures.
    pub fn line(&self, step: usize) -> String {
        let kbps: Vec<String> = self
            .kbps_per_second
            .iter()
            .map(|k| format!("{k:.0}"))
            .collect();
        format!(
            "step {step} at {} kbit/s: below the link after {:?} s, {:.1} fps, {:.2} s frozen \
             ({:.2} s by getStats), glass to glass p50 {:.0} p95 {:.0} ms ({} frames), jitter \
             buffer {:.0} ms, QP {:.1}; lost {}, NACKs {}, PLIs {}; width at the end {:.0}; \
             kbit/s per second: {}; worst glass to glass per settled second: {}",
            self.link_kbps,
            self.below_link_after_s,
            self.fps,
            self.frozen_s,
            self.stats_frozen_s,
            self.g2g_p50_ms,
            self.g2g_p95_ms,
            self.g2g_frames,
            self.jitter_buffer_ms,
            self.qp,
            self.lost,
            self.nacks,
            self.plis,
            self.width_per_second.last().copied().unwrap_or(0.0),
            kbps.join(" "),
            self.g2g_worst_per_second
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// Runs `links` (kbit/s) for `step` each, calling `shape(kbps)` at the start of each, and
/// reports every step. The page must already be playing.
pub async fn run(
    browser: &Browser,
    links: &[u32],
    step: Duration,
    mut shape: impl FnMut(u32) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<StepReport>> {
    browser.js(RECORD_PRESENTATIONS).await?;
    let mut reports = Vec::new();
    for (i, &link) in links.iter().enumerate() {
        shape(link)?;
        let report = measure_step(browser, link, step).await?;
        eprintln!("{}", report.line(i));
        reports.push(report);
    }
    Ok(reports)
}

/// One second of one step.
struct Second {
    kbps: f64,
    frames: f64,
    width: f64,
    frozen_s: f64,
    /// The meter's sample count at the start and the end of the second.
    g2g: (u64, u64),
}

async fn measure_step(browser: &Browser, link: u32, step: Duration) -> anyhow::Result<StepReport> {
    let mut seconds = Vec::new();
    let mut previous = sample(browser).await?;
    let first = previous.clone();
    let start = Instant::now();
    let page_start = browser
        .js("return performance.now();")
        .await?
        .as_f64()
        .unwrap_or(0.0);
    for i in 1..=step.as_secs() {
        tokio::time::sleep_until((start + Duration::from_secs(i)).into()).await;
        let now = sample(browser).await?;
        seconds.push(Second {
            kbps: (n(&now, "bytes") - n(&previous, "bytes")) * 8.0 / 1000.0,
            frames: n(&now, "decoded") - n(&previous, "decoded"),
            width: n(&now, "width"),
            frozen_s: n(&now, "freeze_s") - n(&previous, "freeze_s"),
            g2g: (n(&previous, "g2g") as u64, n(&now, "g2g") as u64),
        });
        previous = now;
    }
    anyhow::ensure!(
        seconds.len() > SETTLE_SECS,
        "a step must outlast its settling"
    );
    let steady = &seconds[SETTLE_SECS..];
    let presented = presented(browser).await?;
    let settled = page_start + (SETTLE_SECS * 1000) as f64;
    let g2g = glass_to_glass(browser, steady[0].g2g.0, steady[steady.len() - 1].g2g.1).await?;
    let (g2g_p50_ms, g2g_p95_ms) = if g2g.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (percentile(g2g.clone(), 50.0), percentile(g2g.clone(), 95.0))
    };
    let counted = |key| n(&previous, key) - n(&first, key);
    let per = |sum: f64, count: f64| if count > 0.0 { sum / count } else { f64::NAN };
    let mean = |f: fn(&Second) -> f64| steady.iter().map(f).sum::<f64>() / steady.len() as f64;
    Ok(StepReport {
        link_kbps: link,
        below_link_after_s: seconds
            .iter()
            .position(|s| s.kbps < f64::from(link))
            .map(|i| i + 1),
        kbps_per_second: seconds.iter().map(|s| s.kbps).collect(),
        width_per_second: seconds.iter().map(|s| s.width).collect(),
        steady_kbps: mean(|s| s.kbps),
        fps: mean(|s| s.frames),
        frozen_s: frozen_within(&presented, settled, page_start + step.as_millis() as f64),
        stats_frozen_s: seconds.iter().map(|s| s.frozen_s).sum(),
        g2g_p50_ms,
        g2g_p95_ms,
        g2g_frames: g2g.len(),
        g2g_worst_per_second: steady
            .iter()
            .map(|s| {
                let from = s.g2g.0.saturating_sub(steady[0].g2g.0) as usize;
                let to = s.g2g.1.saturating_sub(steady[0].g2g.0) as usize;
                g2g.get(from..to.min(g2g.len()))
                    .and_then(|second| second.iter().copied().reduce(f64::max))
                    .unwrap_or(f64::NAN)
            })
            .collect(),
        jitter_buffer_ms: per(counted("jitter_s") * 1000.0, counted("emitted")),
        qp: per(counted("qp"), counted("decoded")),
        lost: counted("lost"),
        nacks: counted("nack"),
        plis: counted("pli"),
    })
}
