//! Wall-clock nanoseconds from the TSC: one `rdtsc` and a multiply per burst, no syscall.
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

#[cfg(test)]
mod tests {
    use super::*;

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
