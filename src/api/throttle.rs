//! Per-account token buckets for routes that cost more than a database row: bucket-ownership
//! registrations write into buckets the appliance can reach, so one account must not be able
//! to make it write (or probe) without limit. Only authenticated accounts reach a bucket, so
//! the map holds at most one entry per configured account.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// Bursts of up to `per_minute` requests, refilled at `per_minute` a minute.
    pub fn per_minute(per_minute: u32) -> Throttle {
        Throttle { per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token of `account`'s bucket, or says when the next one comes (whole seconds, >= 1).
    pub fn take(&self, account: &str, now: Instant) -> Result<(), u64> {
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let mut all = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = all.entry(account.to_string()).or_insert(Bucket { tokens: cap, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
            Err(wait.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_account() {
        let t = Throttle::per_minute(2);
        let t0 = Instant::now();
        assert!(t.take("a", t0).is_ok());
        assert!(t.take("a", t0).is_ok());
        assert_eq!(t.take("a", t0), Err(30));
        assert!(t.take("b", t0).is_ok(), "another account has its own bucket");
        assert_eq!(t.take("a", t0 + Duration::from_secs(20)), Err(10));
        assert!(t.take("a", t0 + Duration::from_secs(31)).is_ok());
    }
}
