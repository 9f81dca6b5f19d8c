//! The load itself: WHEP sessions created (`POST /whep/<random device>`) and deleted on
//! `concurrency` threads, each over one keep-alive connection, with every POST's latency and
//! every failure recorded.
//!
//! ureq is blocking, so the workers are scoped threads; the run calls this through
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::OFFER_SDP;
use super::http::agent;

/// What the load workers collected.
#[derive(Default)]
pub(super) struct LoadResult {
    pub(super) post_ms: Vec<f64>,
    pub(super) failures: BTreeMap<String, u64>,
    pub(super) delete_failures: u64,
}

/// xorshift64*: cheap, deterministic device picks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `sessions` POST + DELETE cycles on `concurrency` threads, one keep-alive connection each.
pub(super) fn run_load(
    base: &str,
    bearer: &str,
    devices: usize,
    sessions: usize,
    concurrency: usize,
) -> LoadResult {
    let next = AtomicUsize::new(0);
    let total = Mutex::new(LoadResult::default());
    std::thread::scope(|scope| {
        for worker in 0..concurrency {
            let (next, total) = (&next, &total);
            scope.spawn(move || {
                let agent = agent();
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((worker as u64 + 1) << 32));
                let mut mine = LoadResult::default();
                while next.fetch_add(1, Ordering::Relaxed) < sessions {
                    let device = format!("sim-{:05}", rng.next() % devices as u64);
                    let url = format!("{base}/whep/{device}");
                    let started = Instant::now();
                    let reply = agent
                        .post(&url)
                        .header("authorization", bearer)
                        .header("content-type", "application/sdp")
                        .send(OFFER_SDP);
                    let mut resp = match reply {
                        Ok(resp) => resp,
                        Err(e) => {
                            *mine.failures.entry(format!("error ({e})")).or_default() += 1;
                            continue;
                        }
                    };
                    let status = resp.status().as_u16();
                    let location = resp
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = resp.body_mut().read_to_string();
                    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                    match (status, location) {
                        (201, Some(location)) => {
                            mine.post_ms.push(elapsed);
                            let deleted = agent
                                .delete(&format!("{base}{location}"))
                                .header("authorization", bearer)
                                .call()
                                .map(|mut r| {
                                    let _ = r.body_mut().read_to_string();
                                    r.status().as_u16()
                                });
                            if !matches!(deleted, Ok(200)) {
                                mine.delete_failures += 1;
                            }
                        }
                        (status, _) => *mine.failures.entry(status.to_string()).or_default() += 1,
                    }
                }
                let mut total = total.lock().expect("load result lock");
                total.post_ms.extend(mine.post_ms);
                total.delete_failures += mine.delete_failures;
                for (k, n) in mine.failures {
                    *total.failures.entry(k).or_default() += n;
                }
            });
        }
    });
    total.into_inner().expect("load result lock")
}
