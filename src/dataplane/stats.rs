//! Per-RX-core counters: single writer (load + store, no `lock` prefix), cache-line aligned.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Counters for one RX core, 128-byte aligned so cores never share (or co-prefetch) a line.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct CoreStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Packets taken by at least one capture.
    pub matched: AtomicU64,
    /// Bursts polled, empty or not: lets the control side see the core make progress.
    pub loops: AtomicU64,
}

/// The only handle that may write one core's counters. Not `Clone`: single writer by type.
pub struct StatsWriter {
    all: Arc<[CoreStats]>,
    idx: usize,
}

impl StatsWriter {
    /// load+store, not fetch_add: sound only with one writer, which the type guarantees.
    #[inline]
    fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn record_burst(&self, pkts: u64, bytes: u64, matched: u64) {
        let s = &self.all[self.idx];
        Self::add(&s.rx_packets, pkts);
        Self::add(&s.rx_bytes, bytes);
        Self::add(&s.matched, matched);
    }

    #[inline]
    pub fn record_loop(&self) {
        Self::add(&self.all[self.idx].loops, 1);
    }
}

/// Sum of all cores (or one core's) counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoreTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub matched: u64,
}

/// Cheap to clone; reads are Relaxed snapshots (eventually consistent).
#[derive(Clone)]
pub struct StatsReader(Arc<[CoreStats]>);

impl StatsReader {
    pub fn cores(&self) -> &[CoreStats] {
        &self.0
    }

    pub fn totals(&self) -> CoreTotals {
        self.0.iter().fold(CoreTotals::default(), |t, c| CoreTotals {
            rx_packets: t.rx_packets + c.rx_packets.load(Relaxed),
            rx_bytes: t.rx_bytes + c.rx_bytes.load(Relaxed),
            matched: t.matched + c.matched.load(Relaxed),
        })
    }
}

pub fn per_core_stats(cores: usize) -> (Vec<StatsWriter>, StatsReader) {
    let all: Arc<[CoreStats]> = (0..cores).map(|_| CoreStats::default()).collect();
    ((0..cores).map(|idx| StatsWriter { all: Arc::clone(&all), idx }).collect(), StatsReader(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_cores() {
        let (w, r) = per_core_stats(2);
        w[0].record_burst(3, 300, 1);
        w[1].record_burst(2, 100, 2);
        w[0].record_burst(1, 60, 0);
        assert_eq!(r.totals(), CoreTotals { rx_packets: 6, rx_bytes: 460, matched: 3 });
        assert_eq!(std::mem::align_of::<CoreStats>(), 128);
    }
}
