//! Percentiles of latency samples, and quantiles estimated from a Prometheus histogram.

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Quantiles estimated from a Prometheus histogram (linear inside a bucket), in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistogramEstimate {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    /// Exact: the histogram's sum over its count.
    pub mean: f64,
}

/// Nearest-rank percentiles of `samples` (milliseconds).
pub fn percentiles(samples: &mut [f64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    Percentiles {
        count: samples.len(),
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: samples[samples.len() - 1],
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
    }
}

/// A Prometheus histogram read from the text exposition: cumulative `(le, count)` buckets
/// (the last is `+Inf`) and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Reads histogram `name` (without the `_bucket` suffix) from `text`.
    pub fn parse(text: &str, name: &str) -> Self {
        let mut h = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = || rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let Some(labels) = rest.strip_prefix("_bucket{") {
                let le = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .map(|v| {
                        if v == "+Inf" {
                            f64::INFINITY
                        } else {
                            v.parse().unwrap_or(f64::NAN)
                        }
                    });
                if let (Some(le), Some(n)) = (le, value()) {
                    h.buckets.push((le, n as u64));
                }
            } else if rest.starts_with("_sum") {
                h.sum = value().unwrap_or_default();
            } else if rest.starts_with("_count") {
                h.count = value().unwrap_or_default() as u64;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0, |(_, n)| *n)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, n.saturating_sub(before(le))))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket (in the histogram's unit).
    /// In the `+Inf` bucket, the largest finite bound.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.buckets.last().map_or(0, |b| b.1);
        if total == 0 {
            return 0.0;
        }
        let target = q * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            if n as f64 >= target && n > below {
                if le.is_infinite() {
                    return lower;
                }
                return lower + (le - lower) * (target - below as f64) / (n - below) as f64;
            }
            lower = le;
            below = n;
        }
        lower
    }

    pub fn estimate_ms(&self) -> HistogramEstimate {
        HistogramEstimate {
            count: self.count,
            p50: self.quantile(0.50) * 1000.0,
            p99: self.quantile(0.99) * 1000.0,
            mean: if self.count > 0 {
                self.sum / self.count as f64 * 1000.0
            } else {
                0.0
            },
        }
    }
}
