//! Wall-clock nanoseconds from the TSC: one `rdtsc` and a multiply per poll, no syscall; and
//! the stamps of a burst's packets, spread over the time since the queue's previous poll.
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dpdk;

/// TSC → ns since the Unix epoch, calibrated against CLOCK_REALTIME at creation.
#[derive(Debug, Clone, Copy)]
pub struct TscClock {
    tsc0: u64,
    ns0: u64,
    /// ns per tick in 32.32 fixed point.
    mult: u64,
}

pub fn realtime_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl TscClock {
    /// `tsc_hz` comes from the EAL's own calibration.
    pub fn new(tsc_hz: u64) -> Self {
        let (tsc0, ns0) = (dpdk::tsc(), realtime_ns());
        Self::from_parts(tsc0, ns0, tsc_hz)
    }

    fn from_parts(tsc0: u64, ns0: u64, tsc_hz: u64) -> Self {
        let mult = ((1_000_000_000u128 << 32) / u128::from(tsc_hz.max(1))) as u64;
        TscClock { tsc0, ns0, mult }
    }

    #[inline]
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let dt = tsc.wrapping_sub(self.tsc0);
        self.ns0 + ((u128::from(dt) * u128::from(self.mult)) >> 32) as u64
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.ns_at(dpdk::tsc())
    }
}

/// The longest time a burst's stamps are spread over (1 ms: 32 full-size frames at 400 Mbit/s).
const MAX_SPREAD_NS: u64 = 1_000_000;

/// Distinct, increasing stamps for the packets of each burst of one RX queue.
///
/// A burst of `n` packets taken at `now` arrived after the queue's previous poll: its packets
/// are stamped evenly over that interval, ending at `now` (the last packet) — packet `i` at
/// `now - (n-1-i)·span/n` — and never at or before the previous burst's last stamp, at least
/// 1 ns apart (so a burst that arrived within a few ns still gets distinct stamps, slightly
/// after `now`). One division per burst; per packet a multiply and a shift.
#[derive(Debug, Default, Clone)]
pub struct BurstStamps {
    /// When this queue was last polled.
    last_poll: u64,
    /// The last stamp given.
    last_stamp: u64,
}

/// The stamps of one burst: `at(i)` for packet `i`.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Packet 0's stamp.
    first: u64,
    /// ns between packets, 32.32 fixed point.
    step: u64,
}

impl BurstStamps {
    /// A poll at `now` that returned nothing.
    #[inline]
    pub fn empty_poll(&mut self, now: u64) {
        self.last_poll = now;
    }

    /// The stamps of a burst of `n` (> 0) packets polled at `now`.
    #[inline]
    pub fn burst(&mut self, now: u64, n: usize) -> Spread {
        let n = n.max(1) as u64;
        // Not longer than MAX_SPREAD: after an idle spell (or the first poll) the packets more
        // likely came just now than evenly over it.
        let start = self.last_poll.max(self.last_stamp + 1).max(now.saturating_sub(MAX_SPREAD_NS)).min(now);
        let span = now - start;
        let mut step = (u128::from(span) << 32).checked_div(u128::from(n)).unwrap_or(0) as u64;
        step = step.max(1 << 32);
        let first = now.saturating_sub((((n - 1) as u128 * u128::from(step)) >> 32) as u64);
        // Never at or before the previous burst's last stamp.
        let shift = (self.last_stamp + 1).saturating_sub(first);
        let end = now + shift;
        self.last_poll = now;
        self.last_stamp = end;
        Spread { first: first + shift, step }
    }
}

impl Spread {
    /// Every packet at `ns` (tests; sources without arrival order).
    pub fn fixed(ns: u64) -> Spread {
        Spread { first: ns, step: 0 }
    }

    /// Packet `i`'s stamp (ns since the epoch).
    #[inline]
    pub fn at(&self, i: usize) -> u64 {
        self.first + ((i as u64).wrapping_mul(self.step) >> 32)
    }

    /// The stamps of packets `0..out.len()`, the same as `at`: one add a packet.
    #[inline]
    pub fn fill(&self, out: &mut [u64]) {
        let mut acc = 0u64;
        for t in out {
            *t = self.first + (acc >> 32);
            acc = acc.wrapping_add(self.step);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the 1,000 packets of a replay shared 32 stamps (one per burst).
    #[test]
    fn packets_of_a_burst_get_distinct_increasing_stamps() {
        let mut b = BurstStamps::default();
        b.empty_poll(1_000_000);
        // 4 packets that arrived over the 400 ns since the last poll.
        let s = b.burst(1_000_400, 4);
        assert_eq!((0..4).map(|i| s.at(i)).collect::<Vec<_>>(), [1_000_100, 1_000_200, 1_000_300, 1_000_400]);
        // A full burst 10 ns later: 1 ns apart, after the previous burst's last stamp.
        let s = b.burst(1_000_410, 32);
        let v: Vec<u64> = (0..32).map(|i| s.at(i)).collect();
        assert!(v.windows(2).all(|w| w[1] == w[0] + 1), "{v:?}");
        assert_eq!(v[0], 1_000_401);
        // One packet after a long idle: stamped at its poll; two spread over 1 ms at most.
        b.empty_poll(5_000_000);
        let s = b.burst(9_000_000, 1);
        assert_eq!(s.at(0), 9_000_000);
        let s = b.burst(29_000_000, 2);
        assert_eq!((s.at(0), s.at(1)), (28_500_000, 29_000_000));
        // The first burst ever (no previous poll): within 1 ms of its poll too.
        let s = BurstStamps::default().burst(1_796_000_000_000_000_000, 32);
        assert_eq!(s.at(31), 1_796_000_000_000_000_000);
        assert!(s.at(0) >= 1_796_000_000_000_000_000 - 1_000_000);
        let mut filled = [0u64; 32];
        s.fill(&mut filled);
        assert_eq!(filled.to_vec(), (0..32).map(|i| s.at(i)).collect::<Vec<_>>(), "fill is at");
        // Increasing over many bursts of every size.
        let (mut last, mut now) = (0, 9_000_000);
        for n in (1..=32).cycle().take(500) {
            now += 37;
            let s = b.burst(now, n);
            for i in 0..n {
                assert!(s.at(i) > last, "burst of {n} at {now}: {} after {last}", s.at(i));
                last = s.at(i);
            }
        }
    }

    #[test]
    fn converts_ticks_to_ns() {
        let c = TscClock::from_parts(1000, 5_000_000_000, 2_500_000_000);
        assert_eq!(c.ns_at(1000), 5_000_000_000);
        assert!(c.ns_at(1000 + 2_500_000_000).abs_diff(6_000_000_000) <= 1, "fixed point loses < 1 ns a second");
        // one hour later, within 1 µs
        let hour = c.ns_at(1000 + 3600 * 2_500_000_000) as i64 - 5_000_000_000 - 3_600_000_000_000;
        assert!(hour.abs() < 1000, "{hour}");
    }
}
