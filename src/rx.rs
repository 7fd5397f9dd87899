//! The per-core poll loop: burst → timestamp → parse once → match every active capture → budget →
//! hand-off → one stats update. No allocation, lock, syscall or log line per packet; with nothing
//! to receive the loop backs off (spin, yield, then short sleeps) unless told not to.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::active::SharedActiveSet;
use crate::clock::TscClock;
use crate::dpdk::{FreeBatch, Mbuf, RxQueue, BURST};
use crate::handoff::{Record, Ring};
use crate::stats::StatsWriter;
use crate::wire::{self, PacketKey};

/// Empty polls before yielding, and before sleeping.
const SPIN_POLLS: u32 = 256;
const YIELD_POLLS: u32 = 2048;
const IDLE_SLEEP: Duration = Duration::from_micros(20);

/// Everything one RX lcore owns.
pub struct RxWorker {
    pub queues: Vec<RxQueue>,
    pub active: SharedActiveSet,
    /// Producer ends, indexed by writer.
    pub rings: Vec<Arc<Ring>>,
    pub stats: StatsWriter,
    pub clock: TscClock,
    pub stop: Arc<AtomicBool>,
    pub idle_backoff: bool,
}

impl RxWorker {
    pub fn run(mut self) {
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        let mut keys = [PacketKey::default(); BURST];
        let mut caplens = [0u32; BURST];
        // Per capture: bitmask of the burst's packets it takes.
        let mut takes: Vec<u32> = Vec::with_capacity(64);
        let mut free = FreeBatch::with_capacity(BURST * 2);
        let mut empty_polls: u32 = 0;
        while !self.stop.load(Relaxed) {
            let set = self.active.load();
            let mut received = 0;
            for q in &mut self.queues {
                let n = q.poll(&mut burst);
                if n == 0 {
                    continue;
                }
                received += n;
                let ts_ns = self.clock.now_ns();
                let mut bytes = 0u64;
                for (i, m) in burst.iter().enumerate() {
                    keys[i] = wire::parse(m.first_segment());
                    bytes += u64::from(m.pkt_len());
                }
                takes.clear();
                let mut any: u32 = 0;
                for cap in &set.captures {
                    let mut cand: u32 = 0;
                    let mut ncand = 0;
                    for (i, k) in keys[..n].iter().enumerate() {
                        if cap.matcher.matches(k) {
                            cand |= 1 << i;
                            caplens[ncand] = burst[i].pkt_len().min(cap.snaplen);
                            ncand += 1;
                        }
                    }
                    let mut granted = 0;
                    if ncand > 0 && !cap.budget.is_exhausted() {
                        granted = cap.budget.take(&caplens[..ncand]);
                    }
                    // Keep the first `granted` candidates.
                    let mut mask = 0u32;
                    let mut left = granted;
                    while left > 0 {
                        let bit = cand & cand.wrapping_neg();
                        mask |= bit;
                        cand &= !bit;
                        left -= 1;
                    }
                    if granted > 0 {
                        cap.counters.matched.fetch_add(granted as u64, Relaxed);
                    }
                    takes.push(mask);
                    any |= mask;
                }
                for (i, m) in burst.drain(..).enumerate() {
                    let bit = 1u32 << i;
                    if any & bit == 0 {
                        free.push(m);
                        continue;
                    }
                    // Every taker but the last gets a shared reference; the last gets `m`.
                    let last = takes.iter().rposition(|t| t & bit != 0).unwrap_or(0);
                    let mut own = Some(m);
                    for (ci, cap) in set.captures.iter().enumerate().take(last + 1) {
                        if takes[ci] & bit == 0 {
                            continue;
                        }
                        let mbuf = if ci == last { own.take() } else { own.as_ref().map(Mbuf::share) };
                        let Some(mbuf) = mbuf else { break };
                        if let Err(rec) = self.rings[cap.writer].push(Record { slot: cap.slot, ts_ns, mbuf }) {
                            cap.counters.dropped_ring_full.fetch_add(1, Relaxed);
                            free.push(rec.mbuf);
                        }
                    }
                }
                free.flush();
                self.stats.record_burst(n as u64, bytes, u64::from(any.count_ones()), ts_ns);
            }
            self.stats.record_loop();
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
}
