//! What a page's viewer sees, read from the page: getStats' video counters, when frames were
//! presented (for freezes by Chromium's own definition) and the glass-to-glass meter's samples.
//! Shared by the link tests and the network benchmark.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use crate::Browser;

/// getStats' video counters (bytes, frames, freezes, losses, the jitter buffer's delay and the
/// decoder's QP sums) and the meter's sample count so far.
pub async fn sample(browser: &Browser) -> anyhow::Result<Value> {
    browser
        .js_async(
            "window.ferrocam.pc.getStats().then((r) => { let s = {};
               r.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video') s = x; });
               const m = window.ferrocam.meter;
               done({ decoded: s.framesDecoded || 0, bytes: s.bytesReceived || 0,
                      freeze_s: s.totalFreezesDuration || 0, width: s.frameWidth || 0,
                      lost: s.packetsLost || 0, nack: s.nackCount || 0, pli: s.pliCount || 0,
                      jitter_s: s.jitterBufferDelay || 0, emitted: s.jitterBufferEmittedCount || 0,
                      qp: s.qpSum || 0, g2g: m ? m.samples.length : 0 }); });",
        )
        .await
}

/// Waits up to 30 s until the page's peer connection (`window.ferrocam.pc`) is connected.
pub async fn wait_connected(browser: &Browser) -> anyhow::Result<()> {
    crate::eventually("the page's peer connection", Duration::from_secs(30), || async {
        Ok(browser
            .js("return !!(window.ferrocam.pc && window.ferrocam.pc.connectionState === 'connected');")
            .await?
            .as_bool()
            .unwrap_or(false)
            .then_some(()))
    })
    .await
}

/// Waits up to 30 s until the page has decoded at least `frames` video frames.
pub async fn wait_decoded(browser: &Browser, frames: f64) -> anyhow::Result<()> {
    crate::eventually(
        &format!("{frames} decoded frames"),
        Duration::from_secs(30),
        || async { Ok((n(&sample(browser).await?, "decoded") >= frames).then_some(())) },
    )
    .await
}

pub async fn glass_to_glass(browser: &Browser, from: u64, to: u64) -> anyhow::Result<Vec<f64>> {
    let v = browser
        .js(&format!(
            "return window.ferrocam.meter.samples.slice({from}, {to});"
        ))
        .await?;
    Ok(v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default())
}

pub fn n(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

pub fn percentile(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p / 100.0) as usize]
}

/// Starts recording when each frame is presented (performance clock, ms), once per page.
pub const RECORD_PRESENTATIONS: &str = "
    if (!window.__presented) {
      window.__presented = [];
      const video = document.getElementById('video');
      const tick = (now, meta) => {
        window.__presented.push(meta.presentationTime || now);
        if (window.__presented.length > 50000) window.__presented.shift();
        video.requestVideoFrameCallback(tick);
      };
      video.requestVideoFrameCallback(tick);
    }
    return performance.now();";

/// Seconds frozen between `from` and `to` (performance clock, ms), by Chromium's definition of
/// a freeze: a gap between presented frames longer than three times the average of the last
/// 30 gaps, and at least that average plus 150 ms. Only the part of a freeze inside the window
/// counts, so a freeze that began during a step's first seconds (the adaptation itself) counts
/// only for the time it lasted after them; getStats' `totalFreezesDuration` adds a freeze only
/// when it ends, whole. A freeze still going on at `to` counts up to `to` (the picture that
/// stopped for good is the worst freeze of all), and so does a window with no frame at all.
pub fn frozen_within(presented: &[f64], from: f64, to: f64) -> f64 {
    let Some(&last) = presented.last() else {
        return (to - from).max(0.0) / 1000.0;
    };
    // The moment the window closes is where the current gap ends, if no frame came since.
    let open_gap = (last < to).then_some(to);
    let mut recent: VecDeque<f64> = VecDeque::new();
    let mut frozen_ms = 0.0;
    let ends = presented.iter().skip(1).copied().chain(open_gap);
    for (start, end) in presented.iter().copied().zip(ends) {
        let gap = end - start;
        let average = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        let is_freeze = if recent.len() >= 5 {
            gap > (3.0 * average).max(average + 150.0)
        } else {
            // Too few frames for an average (a picture that stopped at once): Chromium's
            // floor alone.
            gap > 150.0 + 33.0
        };
        if is_freeze {
            frozen_ms += (end.min(to) - start.max(from)).max(0.0);
        }
        recent.push_back(gap);
        if recent.len() > 30 {
            recent.pop_front();
        }
    }
    frozen_ms / 1000.0
}

/// When each frame was presented so far (performance clock, ms), once
/// [`RECORD_PRESENTATIONS`] ran in the page.
pub async fn presented(browser: &Browser) -> anyhow::Result<Vec<f64>> {
    Ok(browser
        .js("return window.__presented;")
        .await?
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::frozen_within;

    /// Frames every 33 ms from `from` to `to` (ms).
    fn frames(from: f64, to: f64) -> Vec<f64> {
        (0..)
            .map(|i| from + f64::from(i) * 33.0)
            .take_while(|&t| t < to)
            .collect()
    }

    #[test]
    fn a_smooth_picture_is_not_frozen() {
        assert_eq!(frozen_within(&frames(0.0, 10_000.0), 3000.0, 10_000.0), 0.0);
    }

    #[test]
    fn only_the_part_of_a_freeze_inside_the_window_counts() {
        let mut presented = frames(0.0, 2000.0);
        presented.extend(frames(5000.0, 10_000.0));
        // Frozen from ~1980 to 5000; the window starts at 3000.
        let frozen = frozen_within(&presented, 3000.0, 10_000.0);
        assert!((frozen - 2.0).abs() < 0.01, "{frozen}");
    }

    #[test]
    fn a_picture_that_stopped_is_frozen_until_the_window_ends() {
        let presented = frames(0.0, 2000.0);
        let frozen = frozen_within(&presented, 3000.0, 10_000.0);
        assert!((frozen - 7.0).abs() < 0.01, "{frozen}");
    }

    #[test]
    fn no_picture_at_all_is_frozen_throughout() {
        assert_eq!(frozen_within(&[], 3000.0, 10_000.0), 7.0);
    }
}
