//! The sample store: a continuous 1-in-N sample of all traffic, truncated to a snaplen, kept in
//! time-bucketed segment files for the look-back window of simple captures.
//!
//! RX side (`Sampler`, per core, no allocation): every `one_in`-th packet, within a per-core
//! share of `max_per_second`, is copied (truncated) into a fixed-size `SampleRec` and pushed on
//! the core's ring; a full ring drops and counts. Store side (`store`): one thread appends the
//! records to `samples/<segment start secs>.pcap` files and enforces retention. Queries (`query`)
//! read only the segments that overlap a window.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::dataplane::clock::Spread;

pub mod query;
mod repair;
pub mod store;

/// Most bytes a sample keeps (the configured snaplen is at most this).
pub const MAX_SNAPLEN: usize = 256;

/// One sampled packet: fixed size, so the ring needs no allocation.
#[derive(Clone)]
pub struct SampleRec {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub caplen: u16,
    pub data: [u8; MAX_SNAPLEN],
}

/// Counters of the sampler and the store, read by /metrics.
#[derive(Debug, Default)]
pub struct SampleStats {
    /// Sampled on RX and queued.
    pub sampled: AtomicU64,
    /// Sampled but dropped: ring full.
    pub dropped_ring_full: AtomicU64,
    /// Skipped because the per-second cap was reached.
    pub over_rate: AtomicU64,
    /// Records written to segments.
    pub stored: AtomicU64,
    /// Bytes in segment files now.
    pub bytes: AtomicU64,
    /// Timestamp (ns) of the oldest segment's start, 0 when empty.
    pub oldest_ns: AtomicU64,
    /// Segments deleted by retention.
    pub segments_expired: AtomicU64,
    /// Segments deleted early to keep `min_free_bytes` free or after the disk filled up.
    pub segments_dropped_for_space: AtomicU64,
    /// Samples not stored because the data dir's file system was full (or below the headroom
    /// even after dropping every older segment) or a segment could not be written.
    pub dropped_disk_full: AtomicU64,
    /// Samples not stored because of another write error (logged, at most once per 5 s).
    pub dropped_write_error: AtomicU64,
    /// Since when (ns since the epoch) the store has been unable to write for lack of space; 0
    /// while it writes normally. Read it with `disk_full_since_ns()`.
    pub disk_full_since_ns: AtomicU64,
}

impl SampleStats {
    /// `Some(t)`: since `t` (ns since the epoch) samples are dropped because the data dir's file
    /// system is full or below `samples.min_free_bytes`; `None` while the store writes. Cheap (one
    /// atomic load), for /readyz and /metrics.
    pub fn disk_full_since_ns(&self) -> Option<u64> {
        match self.disk_full_since_ns.load(Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// The RX-core side of sampling. One per RX core (not `Clone`).
pub struct Sampler {
    one_in: u32,
    countdown: u32,
    snaplen: usize,
    /// This core's share of `max_per_second`.
    per_second: u64,
    second: u64,
    used_this_second: u64,
    ring: Arc<ArrayQueue<SampleRec>>,
    stats: Arc<SampleStats>,
}

impl Sampler {
    pub fn new(
        one_in: u32,
        per_second: u64,
        snaplen: usize,
        ring: Arc<ArrayQueue<SampleRec>>,
        stats: Arc<SampleStats>,
    ) -> Self {
        Sampler {
            one_in: one_in.max(1),
            countdown: 0,
            snaplen: snaplen.min(MAX_SNAPLEN),
            per_second,
            second: 0,
            used_this_second: 0,
            ring,
            stats,
        }
    }

    /// Looks at a burst of `n` packets; `data(i)` gives packet `i`'s first segment and length.
    /// The first packet ever seen is sampled, then every `one_in`-th.
    #[inline]
    pub fn burst<'a>(&mut self, n: usize, stamps: &Spread, data: impl Fn(usize) -> (&'a [u8], u32)) {
        if n <= self.countdown as usize {
            self.countdown -= n as u32;
            return;
        }
        let second = stamps.at(n - 1) / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.used_this_second = 0;
        }
        let mut i = self.countdown as usize;
        let (mut pushed, mut dropped, mut over) = (0, 0, 0);
        while i < n {
            if self.used_this_second >= self.per_second {
                over += 1;
            } else {
                let (bytes, orig_len) = data(i);
                let caplen = bytes.len().min(self.snaplen).min(orig_len as usize);
                let ts_ns = stamps.at(i);
                let mut rec = SampleRec { ts_ns, orig_len, caplen: caplen as u16, data: [0; MAX_SNAPLEN] };
                rec.data[..caplen].copy_from_slice(&bytes[..caplen]);
                self.used_this_second += 1;
                if self.ring.push(rec).is_ok() {
                    pushed += 1;
                } else {
                    dropped += 1;
                }
            }
            i += self.one_in as usize;
        }
        self.countdown = (i - n) as u32;
        if pushed > 0 {
            self.stats.sampled.fetch_add(pushed, Relaxed);
        }
        if dropped > 0 {
            self.stats.dropped_ring_full.fetch_add(dropped, Relaxed);
        }
        if over > 0 {
            self.stats.over_rate.fetch_add(over, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(one_in: u32, per_second: u64) -> (Sampler, Arc<ArrayQueue<SampleRec>>) {
        let ring = Arc::new(ArrayQueue::new(1024));
        (Sampler::new(one_in, per_second, 160, Arc::clone(&ring), Arc::default()), ring)
    }

    #[test]
    fn every_nth_packet_across_bursts() {
        let (mut s, ring) = sampler(10, u64::MAX);
        let pkts: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 300]).collect();
        // 100 packets in bursts of 7: packets 0, 10, 20, ... 90.
        for start in (0..100).step_by(7) {
            let n = 7.min(100 - start);
            s.burst(n, &Spread::fixed(5_000_000_000), |i| (&pkts[start + i][..], 300));
        }
        let got: Vec<u8> = std::iter::from_fn(|| ring.pop()).map(|r| r.data[0]).collect();
        assert_eq!(got, (0..100).step_by(10).map(|i| i as u8).collect::<Vec<_>>());
    }

    #[test]
    fn truncates_to_snaplen_and_keeps_orig_len() {
        let (mut s, ring) = sampler(1, u64::MAX);
        let p = vec![7u8; 1500];
        s.burst(1, &Spread::fixed(1), |_| (&p[..], 1500));
        let r = ring.pop().unwrap();
        assert_eq!((r.caplen, r.orig_len), (160, 1500));
    }

    #[test]
    fn per_second_cap() {
        let (mut s, ring) = sampler(1, 5);
        let p = [1u8; 64];
        s.burst(32, &Spread::fixed(1_000_000_000), |_| (&p[..], 64));
        s.burst(32, &Spread::fixed(1_500_000_000), |_| (&p[..], 64));
        assert_eq!(ring.len(), 5);
        s.burst(32, &Spread::fixed(2_000_000_000), |_| (&p[..], 64));
        assert_eq!(ring.len(), 10, "a new second refills the budget");
        assert_eq!(s.stats.over_rate.load(Relaxed), 27 + 32 + 27);
    }
}
