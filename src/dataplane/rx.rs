//! The per-core poll loop: burst → timestamps → parse once → match every active capture → budget →
//! hand-off → one stats update. No allocation, lock, syscall or log line per packet; with nothing
//! to receive the loop backs off (spin, yield, then short sleeps) unless told not to.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::active::{ActiveSet, SharedActiveSet};
use super::clock::{BurstStamps, Spread, TscClock};
use super::handoff::Producer;
use super::stats::StatsWriter;
use crate::dpdk::{Burst, RxQueue, BURST};
use crate::pcap::format::Stamp;
use crate::samples::Sampler;
use crate::wire::{self, PlainV4};

/// Empty polls before yielding, and before sleeping.
const SPIN_POLLS: u32 = 256;
const YIELD_POLLS: u32 = 2048;
const IDLE_SLEEP: Duration = Duration::from_micros(20);
/// How long a core waiting for room in a ring keeps trying once asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Everything one RX lcore owns.
pub struct RxWorker {
    pub queues: Vec<RxQueue>,
    pub active: SharedActiveSet,
    /// Producer ends, indexed by writer.
    pub rings: Vec<Producer>,
    pub stats: StatsWriter,
    pub clock: TscClock,
    pub stop: Arc<AtomicBool>,
    pub idle_backoff: bool,
    /// A full writer ring pauses this core (the source can wait) instead of dropping.
    pub wait_when_full: bool,
    /// Continuous 1-in-N sampling into the sample store (the appliance), or none (one-shot).
    pub sampler: Option<Sampler>,
}

/// Per-burst scratch space, allocated once per core.
struct Scratch {
    /// Per capture: bitmask of the burst's packets it matched, then of those it takes.
    takes: Vec<u32>,
    caplens: [u32; BURST],
    /// Each packet's timestamp.
    stamps: [u64; BURST],
}

impl RxWorker {
    pub fn run(mut self) {
        let mut burst = Burst::default();
        let mut sc = Scratch { takes: Vec::with_capacity(64), caplens: [0; BURST], stamps: [0; BURST] };
        let mut empty_polls: u32 = 0;
        let mut stamps = vec![BurstStamps::default(); self.queues.len()];
        // Re-reads the shared set only when it was replaced: one pointer compare per loop.
        let mut active = arc_swap::Cache::new(Arc::clone(&self.active));
        while !self.stop.load(Relaxed) {
            let set = active.load();
            let mut received = 0;
            for (qi, stamps) in stamps.iter_mut().enumerate() {
                let n = self.queues[qi].poll(&mut burst);
                let now = self.clock.now_ns();
                if n == 0 {
                    stamps.empty_poll(now);
                    continue;
                }
                received += n;
                let spread = stamps.burst(now, n);
                if let Some(s) = self.sampler.as_mut() {
                    s.burst(n, &spread, |i| (burst.packet(i).first_segment(), burst.packet(i).pkt_len()));
                }
                let (bytes, taken) = self.process_burst(set, &burst, &spread, &mut sc);
                burst.free();
                self.stats.record_burst(n as u64, bytes, taken);
            }
            // One release store per ring and loop: the writers see this loop's records.
            self.rings.iter_mut().for_each(Producer::publish);
            self.stats.record_loop(set.version);
            if received > 0 || !self.idle_backoff {
                empty_polls = 0;
                continue;
            }
            empty_polls = empty_polls.saturating_add(1);
            if empty_polls < SPIN_POLLS {
                std::hint::spin_loop();
            } else if empty_polls < YIELD_POLLS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }

    /// Matches, budgets and copies one burst's taken packets into the writers' rings. Returns
    /// (bytes received, packets taken).
    #[inline]
    fn process_burst(&mut self, set: &ActiveSet, burst: &Burst, stamps: &Spread, sc: &mut Scratch) -> (u64, u64) {
        let mut bytes = 0u64;
        sc.takes.clear();
        sc.takes.resize(set.captures.len(), 0);
        if let ([only], true) = (set.captures.as_slice(), set.needs_parse) {
            // One capture (always so for `pcapd capture`): its matches gather in a register.
            let m = &only.matcher;
            let mut take = 0u32;
            // Last packet first, each shifting the earlier ones' bits up: packet i ends at bit i.
            for p in burst.iter().rev() {
                bytes += u64::from(p.pkt_len());
                let hit = match PlainV4::of(p.first_segment()) {
                    Some(h) => m.matches_plain_v4(&h),
                    None => m.matches(&wire::parse_general(p.first_segment())),
                };
                take = take << 1 | u32::from(hit);
            }
            sc.takes[0] = take;
        } else if set.needs_parse {
            // Many captures: one pass over their filters a packet (`MatcherSet`), then each
            // capture that matched gets the packet's bit.
            for (i, p) in burst.iter().enumerate() {
                bytes += u64::from(p.pkt_len());
                let mut hits = match PlainV4::of(p.first_segment()) {
                    Some(h) => set.matchers.matches_plain_v4(&h),
                    None => set.matchers.matches(&wire::parse_general(p.first_segment())),
                };
                while hits != 0 {
                    sc.takes[hits.trailing_zeros() as usize] |= 1 << i;
                    hits &= hits - 1;
                }
            }
        } else {
            // Only match-all captures: no need to look inside the packets.
            bytes = burst.iter().map(|m| u64::from(m.pkt_len())).sum();
            let all = if burst.len() == BURST { u32::MAX } else { (1u32 << burst.len()) - 1 };
            sc.takes.iter_mut().for_each(|t| *t = all);
        }
        // tcpdump expressions, on the packets their filter_v1 kept: each distinct program runs
        // once a packet for all the captures that share it.
        for (prog, users) in &set.programs {
            let mut cand = 0u32;
            for_each_bit(*users, |c| cand |= sc.takes[c]);
            let mut pass = cand;
            for_each_bit(u64::from(cand), |i| {
                if !prog.matches(burst.packet(i)) {
                    pass &= !(1 << i);
                }
            });
            if pass != cand {
                for_each_bit(*users, |c| sc.takes[c] &= pass);
            }
        }
        // Budgets: each capture keeps the first candidates its packet and byte limits allow.
        let mut any: u32 = 0;
        for (take, cap) in sc.takes.iter_mut().zip(&set.captures) {
            let cand = *take;
            if cand == 0 {
                continue;
            }
            if cap.budget.is_exhausted() {
                *take = 0;
                continue;
            }
            let mut ncand = 0;
            let mut bits = cand;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                sc.caplens[ncand] = burst.packet(i).pkt_len().min(cap.snaplen);
                ncand += 1;
                bits &= bits - 1;
            }
            let granted = if ncand > 0 { cap.budget.take(&sc.caplens[..ncand]) } else { 0 };
            let mut mask = cand;
            for _ in granted..ncand {
                // Drop the highest remaining candidates: the first `granted` stay.
                mask &= !(1u32 << (31 - mask.leading_zeros()));
            }
            if granted > 0 {
                cap.counters.matched.fetch_add(granted as u64, Relaxed);
            }
            *take = mask;
            any |= mask;
        }
        if any != 0 {
            stamps.fill(&mut sc.stamps[..burst.len()]);
        }
        for (take, cap) in sc.takes.iter().zip(&set.captures) {
            let ring = &mut self.rings[cap.writer];
            let mut bits = *take;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                let p = burst.packet(i);
                let ts = Stamp::new(sc.stamps[i]);
                bits &= bits - 1;
                let caplen = p.pkt_len().min(cap.snaplen);
                let push = |ring: &mut Producer| {
                    ring.push(cap.tag, ts.parts(cap.precision), p.pkt_len(), caplen, p.segments())
                };
                let pushed = push(ring) || (self.wait_when_full && wait_for_room(ring, &self.stop, push));
                if !pushed {
                    cap.counters.dropped_ring_full.fetch_add(1, Relaxed);
                    cap.budget.give_back(caplen);
                }
            }
        }
        (bytes, u64::from(any.count_ones()))
    }
}

/// Calls `f` with the index of each set bit of `bits`, lowest first.
#[inline]
fn for_each_bit(mut bits: u64, mut f: impl FnMut(usize)) {
    while bits != 0 {
        f(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

/// Retries `push` (which failed: the ring is full) until the writer made room, after letting it
/// see everything so far. Once `stop` is set it keeps trying for `STOP_GRACE` only: the writer
/// drains for a while yet, and only a stuck writer loses the packet. Returns whether it got in.
fn wait_for_room(ring: &mut Producer, stop: &AtomicBool, mut push: impl FnMut(&mut Producer) -> bool) -> bool {
    ring.publish();
    let (mut tries, mut give_up) = (0u32, None);
    loop {
        if stop.load(Relaxed) && Instant::now() >= *give_up.get_or_insert_with(|| Instant::now() + STOP_GRACE) {
            return false;
        }
        tries = tries.saturating_add(1);
        if tries < SPIN_POLLS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        if push(ring) {
            return true;
        }
    }
}
