//! The set of running captures as RX cores see it, and the budgets they draw from.
//!
//! The control side builds an immutable `ActiveSet` and publishes it with one atomic pointer swap
//! (`ArcSwap`); each RX core loads it once per burst. Packet and byte limits are shared atomics
//! drawn once per burst per capture, so the files never hold more than the limit, whichever
//! cores the packets arrive on.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;

use super::lease::{Lease, LeaseTag};
use crate::bpf::Program;
use crate::filter::{Matcher, MatcherSet};
use crate::pcap::Precision;

/// Counters of one capture. RX cores and the writer add to them once per burst or batch; the
/// writer's fields sit on their own cache line so that its updates do not stall the RX cores.
#[derive(Debug, Default)]
#[repr(C)]
pub struct CaptureCounters {
    /// Packets that matched the filter and were within the budget.
    pub matched: AtomicU64,
    /// Dropped because the writer's ring was full.
    pub dropped_ring_full: AtomicU64,
    /// Records written to the capture's files.
    pub written: CachePadded<AtomicU64>,
    /// Dropped because the writer failed (disk full, I/O error).
    pub dropped_writer_error: AtomicU64,
}

/// Remaining packets and bytes of a capture; `u64::MAX` means unlimited.
#[derive(Debug)]
pub struct Budget {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// A packet did not fit in the bytes left: the byte limit is reached.
    blocked: AtomicBool,
    /// More may be granted (a fleet capture draws its limits in chunks): not exhausted yet.
    more: AtomicBool,
    /// A packet was refused for want of budget since the last grant.
    starved: AtomicBool,
}

impl Budget {
    pub fn new(packets: Option<u64>, bytes: Option<u64>) -> Self {
        Budget {
            packets: AtomicU64::new(packets.unwrap_or(u64::MAX)),
            bytes: AtomicU64::new(bytes.unwrap_or(u64::MAX)),
            blocked: AtomicBool::new(false),
            more: AtomicBool::new(false),
            starved: AtomicBool::new(false),
        }
    }

    /// A first chunk of a limit drawn in chunks: [`Budget::grant`] adds more, and it is
    /// exhausted only after [`Budget::no_more`].
    pub fn chunked(packets: Option<u64>, bytes: Option<u64>) -> Self {
        let b = Budget::new(packets, bytes);
        b.more.store(true, Relaxed);
        b
    }

    /// Adds a chunk to the limited budgets (an unlimited one stays unlimited); a packet that did
    /// not fit may fit now.
    pub fn grant(&self, packets: u64, bytes: u64) {
        for (left, add) in [(&self.packets, packets), (&self.bytes, bytes)] {
            let _ = left.fetch_update(Relaxed, Relaxed, |l| (l != u64::MAX).then(|| l.saturating_add(add)));
        }
        self.blocked.store(false, Relaxed);
        self.starved.store(false, Relaxed);
    }

    /// Takes back what is left of the limited budgets above `keep` (packets, bytes), to return
    /// it to a fleet's pool: exactly what RX had not taken. Unlimited budgets stay unlimited
    /// (reported as 0).
    pub fn reclaim(&self, keep: (u64, u64)) -> (u64, u64) {
        let mut out = [0u64; 2];
        for (i, (left, keep)) in [(&self.packets, keep.0), (&self.bytes, keep.1)].into_iter().enumerate() {
            let update = |l: u64| (l != u64::MAX && l > keep).then_some(keep);
            if let Ok(old) = left.fetch_update(Relaxed, Relaxed, update) {
                out[i] = old - keep;
            }
        }
        (out[0], out[1])
    }

    /// Whether RX refused a packet for want of budget since the last grant.
    pub fn is_starved(&self) -> bool {
        self.starved.load(Relaxed) || self.blocked.load(Relaxed)
    }

    /// No chunk will follow: the budget is exhausted once what is left is used.
    pub fn no_more(&self) {
        self.more.store(false, Relaxed);
    }

    /// Packets and bytes left (`u64::MAX`: unlimited), and whether a packet did not fit.
    pub fn left(&self) -> (u64, u64, bool) {
        (self.packets.load(Relaxed), self.bytes.load(Relaxed), self.blocked.load(Relaxed))
    }

    /// True once a limit has been reached (and no chunk will follow): the capture is complete.
    pub fn is_exhausted(&self) -> bool {
        !self.more.load(Relaxed)
            && (self.packets.load(Relaxed) == 0 || self.bytes.load(Relaxed) == 0 || self.blocked.load(Relaxed))
    }

    /// Grants the longest prefix of `lens` (captured bytes of each candidate, in arrival order)
    /// that fits both budgets and returns its length.
    pub fn take(&self, lens: &[u32]) -> usize {
        let want = lens.len() as u64;
        if want == 0 {
            return 0;
        }
        // Packets first.
        let mut got = 0;
        let _ = self.packets.fetch_update(Relaxed, Relaxed, |left| {
            got = if left == u64::MAX { want } else { want.min(left) };
            (left != u64::MAX && got > 0).then(|| left - got)
        });
        if got < want {
            self.starved.store(true, Relaxed);
        }
        // Then bytes, for the granted packets only.
        let mut n = got as usize;
        let _ = self.bytes.fetch_update(Relaxed, Relaxed, |left| {
            if left == u64::MAX {
                return None;
            }
            let (mut sum, mut fit) = (0u64, 0usize);
            for &l in &lens[..got as usize] {
                if sum + u64::from(l) > left {
                    break;
                }
                sum += u64::from(l);
                fit += 1;
            }
            n = fit;
            Some(left - sum)
        });
        if n < got as usize {
            self.blocked.store(true, Relaxed);
            // Give back packet grants the bytes could not cover.
            self.give_back_packets(got - n as u64);
        }
        n
    }

    fn give_back_packets(&self, n: u64) {
        let _ = self.packets.fetch_update(Relaxed, Relaxed, |left| (left != u64::MAX).then(|| left + n));
    }

    /// Returns a granted packet that could not be handed off (its writer's ring was full), so
    /// that the limits count only packets that reach the file.
    pub fn give_back(&self, caplen: u32) {
        self.give_back_packets(1);
        let _ = self.bytes.fetch_update(Relaxed, Relaxed, |left| (left != u64::MAX).then(|| left + u64::from(caplen)));
    }
}

/// One running capture, compiled for the RX cores. Built only from the `Lease` of its sink, so
/// RX tags its records with a lease a writer really issued.
#[derive(Debug, Clone)]
pub struct ActiveCapture {
    /// The lease of the capture's sink: RX tags each record with it.
    pub(super) tag: LeaseTag,
    /// Writer thread that owns this capture's sink.
    pub(super) writer: usize,
    pub matcher: Matcher,
    pub snaplen: u32,
    /// Timestamp resolution of the capture's files (RX writes the PCAP record headers).
    pub precision: Precision,
    pub budget: Arc<Budget>,
    pub counters: Arc<CaptureCounters>,
    /// A tcpdump expression the packets must match too (after `matcher`).
    pub program: Option<Arc<Program>>,
}

impl ActiveCapture {
    /// With a tcpdump expression ANDed to its filter.
    pub fn with_program(mut self, program: Option<Arc<Program>>) -> ActiveCapture {
        self.program = program;
        self
    }

    pub fn new(
        lease: &Lease,
        matcher: Matcher,
        snaplen: u32,
        precision: Precision,
        budget: Arc<Budget>,
        counters: Arc<CaptureCounters>,
    ) -> ActiveCapture {
        ActiveCapture {
            tag: lease.tag(),
            writer: lease.writer(),
            matcher,
            snaplen,
            precision,
            budget,
            counters,
            program: None,
        }
    }

    pub fn tag(&self) -> LeaseTag {
        self.tag
    }

    /// Index of the writer thread that holds the capture's sink.
    pub fn writer(&self) -> usize {
        self.writer
    }
}

/// What RX cores match against; replaced whole, never mutated.
#[derive(Debug, Default)]
pub struct ActiveSet {
    pub captures: Vec<ActiveCapture>,
    /// Set by `CaptureControl::publish` (increasing); RX cores report the version they used.
    pub(super) version: u64,
    /// False when every capture matches everything: RX then skips parsing.
    pub needs_parse: bool,
    /// The captures' filters in one pass (bit `i`: `captures[i]`).
    pub matchers: MatcherSet,
    /// Each distinct tcpdump program with the captures that use it (bit `i`: `captures[i]`):
    /// captures sharing an expression run it once per packet.
    pub programs: Vec<(Arc<Program>, u64)>,
}

impl ActiveSet {
    /// At most 64 captures run at once (RX keeps one bitmask per capture per burst, and one
    /// bit per capture per packet).
    pub const MAX_CAPTURES: usize = MatcherSet::MAX;

    pub fn new(captures: Vec<ActiveCapture>) -> Self {
        debug_assert!(captures.len() <= Self::MAX_CAPTURES);
        let needs_parse = captures.iter().any(|c| !c.matcher.matches_all());
        let matchers = MatcherSet::new(&captures.iter().map(|c| c.matcher).collect::<Vec<_>>());
        let mut programs: Vec<(Arc<Program>, u64)> = Vec::new();
        for (i, p) in captures.iter().enumerate().filter_map(|(i, c)| Some((i, c.program.as_ref()?))) {
            match programs.iter_mut().find(|(q, _)| Arc::ptr_eq(p, q)) {
                Some((_, users)) => *users |= 1 << i,
                None => programs.push((Arc::clone(p), 1 << i)),
            }
        }
        ActiveSet { captures, needs_parse, version: 0, matchers, programs }
    }
}

/// The published pointer. Clone the `Arc` into every RX core.
pub type SharedActiveSet = Arc<ArcSwap<ActiveSet>>;

pub fn shared(set: ActiveSet) -> SharedActiveSet {
    Arc::new(ArcSwap::from_pointee(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_grants_everything() {
        let b = Budget::new(None, None);
        assert_eq!(b.take(&[1500; 32]), 32);
        assert!(!b.is_exhausted());
    }

    #[test]
    fn packet_limit_is_exact_across_calls() {
        let b = Budget::new(Some(70), None);
        assert_eq!(b.take(&[60; 32]), 32);
        assert_eq!(b.take(&[60; 32]), 32);
        assert!(!b.is_exhausted());
        assert_eq!(b.take(&[60; 32]), 6);
        assert!(b.is_exhausted());
        assert_eq!(b.take(&[60; 32]), 0);
    }

    #[test]
    fn byte_limit_stops_at_the_first_packet_that_does_not_fit() {
        let b = Budget::new(Some(100), Some(250));
        assert_eq!(b.take(&[100, 100, 100, 10]), 2);
        assert!(b.is_exhausted());
        assert_eq!(b.packets.load(Relaxed), 98, "ungranted packets are returned");
        assert_eq!(b.take(&[50]), 1, "what is left may still be used");
        assert_eq!(b.take(&[1]), 0);
    }

    #[test]
    fn packets_that_never_reached_the_file_are_given_back() {
        let b = Budget::new(Some(3), Some(1000));
        assert_eq!(b.take(&[100, 100, 100]), 3);
        assert!(b.is_exhausted());
        b.give_back(100);
        assert!(!b.is_exhausted());
        assert_eq!(b.take(&[100, 100]), 1);
    }

    #[test]
    fn a_chunked_budget_is_exhausted_only_after_its_last_chunk() {
        let b = Budget::chunked(Some(2), Some(1000));
        assert_eq!(b.take(&[100, 100, 100]), 2);
        assert!(!b.is_exhausted(), "more may come");
        b.grant(2, 150);
        assert_eq!(b.left(), (2, 950, false));
        assert_eq!(b.take(&[100, 100]), 2);
        b.no_more();
        assert!(b.is_exhausted());
        let u = Budget::chunked(None, Some(10));
        u.grant(5, 5);
        assert_eq!(u.left(), (u64::MAX, 15, false), "an unlimited budget stays unlimited");
        assert_eq!(u.take(&[20]), 0);
        assert!(u.left().2 && !u.is_exhausted());
        u.grant(0, 10);
        assert!(!u.left().2, "a grant clears the packet that did not fit");
        assert_eq!(u.take(&[20]), 1);
        // Parked: everything taken back, and a refused packet is noticed.
        let p = Budget::chunked(Some(10), Some(1000));
        assert_eq!(p.take(&[100; 3]), 3);
        assert!(!p.is_starved());
        assert_eq!(p.reclaim((2, 100)), (5, 600), "down to what it keeps");
        assert_eq!(p.reclaim((2, 200)), (0, 0), "never below");
        assert_eq!(p.reclaim((0, 0)), (2, 100));
        assert_eq!(p.take(&[100]), 0);
        assert!(p.is_starved() && !p.is_exhausted());
        p.grant(1, 100);
        assert!(!p.is_starved());
        assert_eq!(Budget::chunked(None, Some(5)).reclaim((0, 0)), (0, 5));
    }

    #[test]
    fn exact_under_contention() {
        let b = Arc::new(Budget::new(Some(100_000), None));
        let got: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let b = Arc::clone(&b);
                    s.spawn(move || {
                        let mut n = 0;
                        while !b.is_exhausted() {
                            n += b.take(&[64; 7]) as u64;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(got, 100_000);
    }
}
