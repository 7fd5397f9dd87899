//! Per-RX-core counters: single writer (load + store, no `lock` prefix), cache-line aligned.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

/// Counters for one RX core, 128-byte aligned so cores never share (or co-prefetch) a line.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct CoreStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Packets taken by at least one capture.
    pub matched: AtomicU64,
    /// Version of the capture set the core's last finished poll loop used. Stored with Release
    /// after the loop's records were published, read with Acquire (`epoch_passed`).
    finished_with: AtomicU64,
    /// The core's poll loop is running (set before its first loop, cleared when it returns or
    /// panics): a stopped core uses no capture set any more.
    polling: AtomicBool,
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

    /// Ends one poll loop, which used the capture set of version `set_version` and has
    /// published everything it handed off.
    #[inline]
    pub fn record_loop(&self, set_version: u64) {
        // Release: whoever reads this version also sees the ring publications before it.
        self.all[self.idx].finished_with.store(set_version, Release);
    }

    /// Marks the core as polling until the returned guard drops (also on a panic).
    pub fn polling(&self) -> Polling {
        self.all[self.idx].polling.store(true, Release);
        Polling { all: Arc::clone(&self.all), idx: self.idx }
    }
}

/// Clears a core's `polling` flag when its loop ends, however it ends.
pub struct Polling {
    all: Arc<[CoreStats]>,
    idx: usize,
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.all[self.idx].polling.store(false, Release);
    }
}

/// A published capture set's version. Once every polling core has finished a loop with that set
/// (or a later one), no core uses an older set any more (loops run one after another, each with
/// the set it loaded at its top), and every record handed off under older sets is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(pub u64);

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

    /// Whether every core has left the capture sets older than `e` behind: it finished a loop
    /// with set `e` or a newer one, or it is not polling (stopped, panicked, not started yet:
    /// it starts with the newest set).
    pub fn epoch_passed(&self, e: Epoch) -> bool {
        self.0.iter().all(|c| c.finished_with.load(Acquire) >= e.0 || !c.polling.load(Acquire))
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

    #[test]
    fn an_epoch_passes_once_every_polling_core_finished_a_loop_with_that_set() {
        let (w, r) = per_core_stats(2);
        let (_p0, p1) = (w[0].polling(), w[1].polling());
        w[0].record_loop(1);
        w[1].record_loop(1);
        let e = Epoch(2);
        w[0].record_loop(2);
        w[1].record_loop(1);
        assert!(!r.epoch_passed(e), "core 1 still uses set 1");
        w[1].record_loop(2);
        assert!(r.epoch_passed(e));
        let e = Epoch(3);
        drop(p1);
        w[0].record_loop(3);
        assert!(r.epoch_passed(e), "a core that stopped polling uses no set");
    }
}
