//! A token bucket: `burst` requests at once, then `per_second` on average; and [`Keyed`], one
//! bucket per key.
//!
//! Used per connection (WebSocket offers), per session (WHEP PATCHes), per device (the relay's
//! offer and control limits), per address (logins) and per principal (REST control and
//! snapshots), so one client's flood costs only that client.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One [`TokenBucket`] per key, for at most `max_keys` keys: past that the table starts over
/// (every key gets a fresh bucket), which bounds memory whoever makes up keys.
pub struct Keyed<K> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
    burst: u32,
    per_second: f64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    pub fn new(burst: u32, per_second: f64, max_keys: usize) -> Self {
        Self {
            buckets: Mutex::default(),
            burst,
            per_second,
            max_keys,
        }
    }

    /// Takes one token from `key`'s bucket if there is one.
    pub fn allow(&self, key: &K) -> bool {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= self.max_keys && !buckets.contains_key(key) {
            buckets.clear();
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.burst, self.per_second))
            .try_take()
    }
}

#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            capacity: f64::from(burst),
            per_second,
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most one log line a second; says how many were left out in between.
#[derive(Default)]
pub struct LogThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn may_log(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keyed_buckets_are_separate_and_bounded() {
        let limiter = Keyed::new(2, 0.0, 2);
        assert!(limiter.allow(&"a") && limiter.allow(&"a"));
        assert!(!limiter.allow(&"a"), "a's burst is spent");
        assert!(limiter.allow(&"b"), "b has its own bucket");
        // A third key starts the table over: memory stays bounded.
        assert!(limiter.allow(&"c"));
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn allows_a_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0);
        bucket.last = start;
        assert!((0..3).all(|_| bucket.try_take_at(start)));
        assert!(!bucket.try_take_at(start));
        assert!(bucket.try_take_at(start + Duration::from_millis(500)));
        assert!(!bucket.try_take_at(start + Duration::from_millis(600)));
        // Long idle refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.try_take_at(later)));
        assert!(!bucket.try_take_at(later));
    }

    #[test]
    fn the_log_speaks_once_a_second_and_counts_the_rest() {
        let mut log = LogThrottle::default();
        let start = Instant::now();
        assert_eq!(log.may_log(start), Some(0));
        assert_eq!(log.may_log(start + Duration::from_millis(10)), None);
        assert_eq!(log.may_log(start + Duration::from_millis(20)), None);
        assert_eq!(log.may_log(start + Duration::from_secs(1)), Some(2));
    }
}
