//! RX → writer hand-off: one bounded single-producer single-consumer ring per (RX core, writer).
//! The RX core writes each packet a capture takes (cut to its snaplen) into the ring as a whole
//! PCAP record and frees the mbuf right away, on its own core; the writer hands runs of records
//! to the kernel straight from the ring. A full ring refuses the record (the caller drops and
//! counts, or waits); RX never blocks inside.
//!
//! Why copies and not mbuf references (DESIGN.md allows "a purpose-built ring"): measured with
//! `scripts/bench`, an mbuf freed on the writer's core comes back to the RX core's mempool cold,
//! which cost the RX core ~70 ns per handed-off packet, and one shared-index update per record
//! another cache-line round trip. Copying bytes the PMD has just written (still in the RX core's
//! cache) is cheaper, the producer publishes once per burst, and the writer copies nothing.
//!
//! Layout: a data ring of `cap` bytes holds PCAP records back to back, exactly as they go into
//! the file; a small run ring says whose they are: each run is `(lease tag, bytes)`, a stretch of one
//! capture's records, contiguous in the data ring. A record never wraps: when it does not fit
//! before the end, a `PAD` run skips the rest and the record starts at offset 0. Positions are
//! counts that only grow (bytes for data, runs for the run ring).
use std::cell::UnsafeCell;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;

use super::lease::LeaseTag;
use crate::pcap::format::{record_header_of, RECORD_HEADER_LEN};

const PAD: u16 = u16::MAX;
/// The smallest ring: every record (at most 16 + 262,144 bytes) must fit several times.
pub const MIN_RING_BYTES: usize = 1 << 20;
/// Runs the run ring holds (8 bytes each). Live traffic at low rates makes a run of one record
/// per poll: this many let the data ring, not the run ring, bound what a slow writer may owe.
const RUNS: usize = 1 << 16;

#[repr(align(64))]
struct Position(AtomicUsize);

struct Shared {
    data: Box<[UnsafeCell<u8>]>,
    runs: Box<[UnsafeCell<u64>]>,
    /// Data bytes and runs the consumer is done with (written by the consumer only).
    data_head: Position,
    runs_head: Position,
    /// Runs the producer has published (written by the producer only); their bytes follow
    /// `data_head` in order.
    runs_tail: Position,
}

// SAFETY: data bytes and run slots are only written by the one `Producer`, outside what the
// consumer may read (published runs not yet consumed, and their bytes), and only read by the one
// `Consumer` inside it. The producer publishes runs with a Release store after writing them and
// their bytes; the consumer reads `runs_tail` with Acquire, and publishes its heads with Release
// stores after it is done with the memory, which the producer reads with Acquire before reuse.
// So no byte is accessed by both threads without a happens-before edge between the accesses.
unsafe impl Sync for Shared {}
// SAFETY: as above; the buffers are plain memory owned by `Shared`.
unsafe impl Send for Shared {}

impl Shared {
    /// Asks the kernel to back the data ring with transparent huge pages (where THP is "always" or
    /// "madvise"), before its pages are first touched: RX and writer both walk all of it, and
    /// with 4 KiB pages every 4 KiB costs each core a TLB miss. Measured with interleaved runs:
    /// 64-byte match-all +3 % records/s and steadier (no slow runs); mixed sizes within noise.
    /// Only the 2 MiB-aligned interior can be huge (the allocation is not aligned); a kernel
    /// without THP keeps 4 KiB pages.
    fn advise_huge_pages(&self) {
        const HUGE: usize = 2 << 20;
        let base = self.base() as usize;
        let (start, end) = (base.next_multiple_of(HUGE), (base + self.cap()) / HUGE * HUGE);
        if end <= start {
            return;
        }
        // SAFETY: `[start, end)` lies inside the data buffer this struct owns, and MADV_HUGEPAGE
        // changes only how the kernel backs those pages, never what they hold.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            tracing::debug!("ring stays on 4 KiB pages: madvise: {}", std::io::Error::last_os_error());
        }
    }

    /// Touches every page now, on the thread that builds the ring: zeroed allocations are mapped
    /// lazily, and a page fault on the RX core costs microseconds in which the NIC queue fills.
    fn prefault(&self) {
        const PAGE: usize = 4096;
        for cell in self.data.iter().step_by(PAGE) {
            // SAFETY: a valid, aligned byte no other thread can see yet; volatile so that the
            // compiler cannot drop the store of the zero the allocation already holds.
            unsafe { std::ptr::write_volatile(cell.get(), 0) };
        }
        for cell in self.runs.iter().step_by(PAGE / 8) {
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(cell.get(), 0) };
        }
    }

    #[inline]
    fn cap(&self) -> usize {
        self.data.len()
    }

    #[inline]
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.data.as_ptr())
    }

    /// # Safety
    /// `[at, at + len)` must lie inside the data ring and belong to the caller's side (see
    /// `Sync` above) for as long as the slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)] // the ring protocol, not the borrow, makes the range exclusive
    unsafe fn bytes_mut(&self, at: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + len <= self.cap());
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base().wrapping_add(at), len) }
    }

    /// # Safety
    /// As `bytes_mut`, for the consumer's side.
    #[inline]
    unsafe fn bytes(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at + len <= self.cap());
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts(self.base().wrapping_add(at), len) }
    }

    /// Run slot `i` (a position; wrapped here).
    #[inline]
    fn run(&self, i: usize) -> *mut u64 {
        UnsafeCell::raw_get(&self.runs[i & (RUNS - 1)])
    }
}

/// A run in the run ring: `bytes` (< 2^32: rings hold at most 1 GiB), `records`, `slot`.
#[inline]
fn run_word(slot: u16, bytes: usize, records: u16) -> u64 {
    bytes as u64 | u64::from(records) << 32 | u64::from(slot) << 48
}

/// Creates a ring of `cap` data bytes (a power of two, at least `MIN_RING_BYTES`).
pub fn ring(cap: usize) -> (Producer, Consumer) {
    assert!(cap.is_power_of_two() && cap >= MIN_RING_BYTES, "ring size {cap} must be a power of two >= 1 MiB");
    let shared = Arc::new(Shared {
        // Zeroed by the allocator (calloc: fresh pages the kernel maps on first touch), so that
        // `advise_huge_pages` comes before any page is backed.
        // SAFETY: all-zero bytes are a valid `UnsafeCell<u8>`.
        data: unsafe { Box::<[UnsafeCell<u8>]>::new_zeroed_slice(cap).assume_init() },
        runs: (0..RUNS).map(|_| UnsafeCell::new(0)).collect(),
        data_head: Position(AtomicUsize::new(0)),
        runs_head: Position(AtomicUsize::new(0)),
        runs_tail: Position(AtomicUsize::new(0)),
    });
    shared.advise_huge_pages();
    shared.prefault();
    let producer = Producer {
        ring: Arc::clone(&shared),
        data_tail: 0,
        runs_tail: 0,
        open: None,
        data_head: 0,
        runs_head: 0,
        published: 0,
        prefetched: 0,
    };
    (producer, Consumer { ring: shared, data_head: 0, runs_head: 0 })
}

/// The RX core's end.
pub struct Producer {
    ring: Arc<Shared>,
    /// Where the next record goes.
    data_tail: usize,
    /// Runs written to the run ring (published up to `published`).
    runs_tail: usize,
    /// The run being filled: (slot, bytes, records). Written to the run ring when it closes.
    open: Option<(u16, usize, u16)>,
    /// The consumer's positions as last read: stale values only make the ring look fuller.
    data_head: usize,
    runs_head: usize,
    published: usize,
    /// Data bytes up to here have been prefetched for writing (see `publish`).
    prefetched: usize,
}

/// How far ahead of the next record `publish` asks for ring lines in exclusive state.
const PREFETCH_AHEAD: usize = 32 << 10;

impl Producer {
    /// Appends one PCAP record: timestamp `ts` as (seconds, fraction in the file's precision),
    /// `caplen` bytes taken from the start of `data` (which must hold at least that many).
    /// Returns false, writing nothing, when the ring is full. Visible after the next `publish`.
    #[inline]
    pub fn push<'a>(
        &mut self,
        tag: LeaseTag,
        ts: (u32, u32),
        orig_len: u32,
        caplen: u32,
        data: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        let slot = tag.raw();
        debug_assert_ne!(slot, PAD);
        let cap = self.ring.cap();
        let len = RECORD_HEADER_LEN + caplen as usize;
        let at = self.data_tail & (cap - 1);
        let pad = if len > cap - at { cap - at } else { 0 };
        // Runs this record may close: the open one, and a pad run; the one it opens is written
        // later (by `publish` or the next slot change), which this reserve also covers.
        let runs_needed = 3;
        if !self.has_room(pad + len, runs_needed) {
            self.data_head = self.ring.data_head.0.load(Acquire);
            self.runs_head = self.ring.runs_head.0.load(Acquire);
            if !self.has_room(pad + len, runs_needed) {
                return false;
            }
        }
        if pad > 0 {
            self.close_run();
            self.write_run(PAD, pad, 0);
            self.data_tail += pad;
        }
        let at = self.data_tail & (cap - 1);
        if at == 0 {
            // A run never wraps: the writer gets each as one slice.
            self.close_run();
        }
        match self.open {
            Some((s, ref mut bytes, ref mut records)) if s == slot && *records < u16::MAX => {
                *bytes += len;
                *records += 1;
            }
            _ => {
                self.close_run();
                self.open = Some((slot, len, 1));
            }
        }
        // SAFETY: `[data_tail, data_tail + len)` is free (checked against the consumer's
        // position) and does not cross the end of the buffer (a pad run moved it to 0 otherwise).
        let rec = unsafe { self.ring.bytes_mut(at, len) };
        let (header, body) = rec.split_at_mut(RECORD_HEADER_LEN);
        header.copy_from_slice(&record_header_of(ts, caplen, orig_len));
        let mut done = 0;
        for seg in data {
            let n = seg.len().min(body.len() - done);
            body[done..done + n].copy_from_slice(&seg[..n]);
            done += n;
            if done == body.len() {
                break;
            }
        }
        debug_assert_eq!(done, body.len(), "data shorter than caplen");
        if done < body.len() {
            // Never hand the writer stale bytes should `data` fall short.
            body[done..].fill(0);
        }
        self.data_tail += len;
        true
    }

    #[inline]
    fn has_room(&self, bytes: usize, runs: usize) -> bool {
        self.data_tail + bytes - self.data_head <= self.ring.cap() && self.runs_tail + runs - self.runs_head <= RUNS
    }

    #[inline]
    fn close_run(&mut self) {
        if let Some((slot, bytes, records)) = self.open.take() {
            self.write_run(slot, bytes, records);
        }
    }

    #[inline]
    fn write_run(&mut self, slot: u16, bytes: usize, records: u16) {
        // SAFETY: run slot `runs_tail` is free: `has_room` checked it against the consumer's
        // position before this record, and publish/push keep `runs_tail - runs_head <= RUNS`.
        unsafe { self.ring.run(self.runs_tail).write(run_word(slot, bytes, records)) };
        self.runs_tail += 1;
    }

    /// Makes every record pushed so far visible to the consumer (one store; call once per
    /// burst). Then asks for the lines the next records will go to in exclusive state: the
    /// consumer's core read them last, and waiting for each line's ownership while copying a
    /// packet cost the RX core more than the copy itself. The requests overlap with the next
    /// receive.
    #[inline]
    pub fn publish(&mut self) {
        if self.open.is_none() && self.runs_tail == self.published && self.prefetched != 0 {
            return;
        }
        self.close_run();
        self.ring.runs_tail.0.store(self.runs_tail, Release);
        self.published = self.runs_tail;
        let (cap, base) = (self.ring.cap(), self.ring.base());
        let from = self.prefetched.max(self.data_tail) & !63;
        // Only lines the consumer is done with (as far as we know): never steal ones it reads.
        let to = (self.data_tail + PREFETCH_AHEAD.min(cap / 2)).min(self.data_head + cap);
        let mut at = from;
        while at < to {
            prefetch_write(base.wrapping_add(at & (cap - 1)));
            at += 64;
        }
        self.prefetched = to;
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.publish();
    }
}

/// Hints that the line at `p` will be written soon (PREFETCHW; a NOP on CPUs without it).
#[inline(always)]
fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW only hints the cache; it reads no memory and cannot fault.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The writer's end.
pub struct Consumer {
    ring: Arc<Shared>,
    data_head: usize,
    runs_head: usize,
}

/// A run as the writer sees it: `count` whole PCAP records of one capture, back to back.
pub struct Run<'a> {
    pub tag: LeaseTag,
    pub records: &'a [u8],
    pub count: u64,
}

/// The published runs of one `drain`, in order.
pub struct Runs<'a> {
    ring: &'a Shared,
    data: usize,
    run: usize,
    tail: usize,
    end_after: usize,
}

impl<'a> Iterator for Runs<'a> {
    type Item = Run<'a>;

    /// The next run, merged with the runs right after it while they are the same capture's
    /// and follow it in memory: the writer gets long stretches to write at once.
    fn next(&mut self) -> Option<Run<'a>> {
        let mask = self.ring.cap() - 1;
        let mut found: Option<(u16, usize, usize, u64)> = None; // (slot, start offset, bytes, records)
        while self.run != self.tail && self.data < self.end_after {
            // SAFETY: runs before `tail` were written before the producer's Release store of
            // `runs_tail` (read with Acquire in `drain`); it reuses them only after we publish.
            let w = unsafe { self.ring.run(self.run).read() };
            let (slot, bytes, records) = ((w >> 48) as u16, w as u32 as usize, u64::from((w >> 32) as u16));
            let at = self.data & mask;
            match found {
                None if slot == PAD => {}
                None => found = Some((slot, at, bytes, records)),
                Some((s, start, ref mut len, ref mut count)) if s == slot && start + *len == at => {
                    *len += bytes;
                    *count += records;
                }
                Some(_) => break,
            }
            self.run += 1;
            self.data += bytes;
        }
        found.map(|(slot, at, bytes, count)| {
            // SAFETY: as above, for the runs' bytes, which never cross the end of the ring.
            let records = unsafe { self.ring.bytes(at, bytes) };
            Run { tag: LeaseTag::from_raw(slot), records, count }
        })
    }
}

impl Consumer {
    /// Hands `f` the published runs (about `max_bytes` of them, at least one if any), then
    /// gives the space of those `f` took from the iterator back to the producer.
    pub fn drain<R>(&mut self, max_bytes: usize, f: impl FnOnce(&mut Runs<'_>) -> R) -> R {
        let tail = self.ring.runs_tail.0.load(Acquire);
        let mut runs = Runs {
            ring: &self.ring,
            data: self.data_head,
            run: self.runs_head,
            tail,
            end_after: self.data_head.saturating_add(max_bytes),
        };
        let r = f(&mut runs);
        let (data, run) = (runs.data, runs.run);
        if run != self.runs_head {
            (self.data_head, self.runs_head) = (data, run);
            self.ring.data_head.0.store(data, Release);
            self.ring.runs_head.0.store(run, Release);
        }
        r
    }

    /// Nothing published is waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.runs_tail.0.load(Acquire) == self.runs_head
    }

    /// The position of everything published so far; `reached` tells when it has been drained.
    pub fn mark(&self) -> usize {
        self.ring.runs_tail.0.load(Acquire)
    }

    pub fn reached(&self, mark: usize) -> bool {
        self.runs_head >= mark
    }
}

/// All rings: `by_core[c][w]` carries records from RX core `c` to writer `w`.
pub struct Rings {
    pub by_core: Vec<Vec<Producer>>,
    pub by_writer: Vec<Vec<Consumer>>,
}

impl Rings {
    pub fn new(rx_cores: usize, writers: usize, bytes: usize) -> Self {
        let mut by_core: Vec<Vec<Producer>> = (0..rx_cores).map(|_| Vec::with_capacity(writers)).collect();
        let mut by_writer: Vec<Vec<Consumer>> = (0..writers).map(|_| Vec::with_capacity(rx_cores)).collect();
        for producers in &mut by_core {
            for consumers in &mut by_writer {
                let (p, c) = ring(bytes);
                producers.push(p);
                consumers.push(c);
            }
        }
        Rings { by_core, by_writer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::format::records;

    /// (slot, secs, frac, caplen, orig_len, data) of every record drained.
    type Rec = (u16, u32, u32, u32, u32, Vec<u8>);

    fn collect(c: &mut Consumer, max: usize) -> Vec<Rec> {
        c.drain(max, |runs| {
            let mut out = Vec::new();
            for run in runs {
                assert_eq!(records(run.records).count() as u64, run.count);
                for r in records(run.records) {
                    let le = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
                    assert_eq!(r.len(), 16 + le(8) as usize);
                    out.push((run.tag.raw(), le(0), le(4), le(8), le(12), r[16..].to_vec()));
                }
            }
            out
        })
    }

    fn push1(p: &mut Producer, slot: u16, secs: u32, byte: u8) -> bool {
        p.push(LeaseTag::from_raw(slot), (secs, 0), 1, 1, std::iter::once(&[byte][..]))
    }

    #[test]
    fn records_arrive_in_order_after_publish_as_pcap_records() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        assert!(p.push(LeaseTag::from_raw(3), (42, 7), 100, 5, [&[1u8, 2][..], &[3, 4, 5, 6]].into_iter()));
        assert!(push1(&mut p, 3, 43, 9));
        assert!(push1(&mut p, 7, 44, 8));
        assert!(c.is_empty(), "nothing is visible before publish");
        assert!(collect(&mut c, usize::MAX).is_empty());
        p.publish();
        let mark = c.mark();
        assert!(!c.reached(mark));
        assert!(push1(&mut p, 3, 45, 1));
        p.publish();
        // Bounded drains take whole runs, at least one.
        assert_eq!(collect(&mut c, 1), vec![(3, 42, 7, 5, 100, vec![1, 2, 3, 4, 5]), (3, 43, 0, 1, 1, vec![9])]);
        assert!(!c.reached(mark));
        assert_eq!(collect(&mut c, usize::MAX), vec![(7, 44, 0, 1, 1, vec![8]), (3, 45, 0, 1, 1, vec![1])]);
        assert!(c.reached(mark) && c.is_empty());
        // The record header is the one the PCAP encoder writes.
        assert!(p.push(LeaseTag::from_raw(1), (1_700_000_000, 123_456_789), 1500, 2, std::iter::once(&[5u8, 6][..])));
        p.publish();
        let rec = c.drain(usize::MAX, |runs| runs.next().unwrap().records.to_vec());
        let want =
            crate::pcap::format::record_header(crate::pcap::Precision::Nanos, 1_700_000_000_123_456_789, 2, 1500);
        assert_eq!((&rec[..16], &rec[16..]), (&want[..], &[5u8, 6][..]));
    }

    #[test]
    fn runs_not_taken_stay_for_the_next_drain() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        for i in 0..3u8 {
            assert!(push1(&mut p, u16::from(i), 0, i));
        }
        p.publish();
        assert_eq!(c.drain(usize::MAX, |runs| runs.next().map(|r| r.records[16])), Some(0));
        assert_eq!(collect(&mut c, usize::MAX).iter().map(|r| r.5[0]).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn full_ring_refuses_then_accepts_after_drain_and_wraps() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        let data = vec![0xabu8; 1000];
        let per = 16 + 1000;
        let fit = MIN_RING_BYTES / per;
        for i in 0..fit {
            assert!(p.push(LeaseTag::from_raw(1), (i as u32, 0), 1000, 1000, std::iter::once(&data[..])), "record {i}");
            if i % 10 == 9 {
                p.publish();
            }
        }
        assert!(!p.push(LeaseTag::from_raw(1), (0, 0), 1000, 1000, std::iter::once(&data[..])), "a full ring refuses");
        p.publish();
        // Draining a bounded amount frees that space.
        assert_eq!(collect(&mut c, 10 * per).len(), 10);
        // The next record does not fit before the end: a pad run, then it starts at 0.
        for i in 0..5 {
            assert!(p.push(LeaseTag::from_raw(2), (1000 + i, 0), 1000, 1000, std::iter::once(&data[..])));
        }
        p.publish();
        let rest = collect(&mut c, usize::MAX);
        assert_eq!(rest.len(), fit - 10 + 5);
        assert!(rest[..fit - 10].iter().all(|r| r.0 == 1 && r.5 == data));
        assert_eq!(rest[fit - 10..].iter().map(|r| r.1).collect::<Vec<_>>(), vec![1000, 1001, 1002, 1003, 1004]);
    }

    #[test]
    fn a_run_ending_exactly_at_the_end_does_not_continue_at_the_start() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        // 1024-byte records fill the ring exactly: the 1025th of the same capture starts at 0.
        let data = vec![7u8; 1024 - 16];
        let fill = MIN_RING_BYTES / 1024;
        for i in 0..fill - 1 {
            assert!(p.push(LeaseTag::from_raw(1), (i as u32, 0), 1008, 1008, std::iter::once(&data[..])));
        }
        p.publish();
        assert_eq!(collect(&mut c, usize::MAX).len(), fill - 1);
        // One record right before the end and one at the start, in one run of one capture.
        assert!(p.push(LeaseTag::from_raw(1), (1, 0), 1008, 1008, std::iter::once(&data[..])));
        assert!(p.push(LeaseTag::from_raw(1), (2, 0), 1008, 1008, std::iter::once(&data[..])));
        p.publish();
        let runs = c.drain(usize::MAX, |runs| runs.map(|r| r.records.len()).collect::<Vec<_>>());
        assert_eq!(runs, vec![1024, 1024], "two slices, each inside the ring");
    }

    #[test]
    fn a_full_run_ring_refuses_too() {
        // 17-byte records, a run each: the run ring fills before 2 MiB of data do.
        let (mut p, mut c) = ring(2 * MIN_RING_BYTES);
        // Alternating slots: a run per record.
        let mut pushed = 0;
        while push1(&mut p, (pushed % 2) as u16, pushed, 0) {
            pushed += 1;
        }
        assert!(pushed as usize >= RUNS - 3 && (pushed as usize) < RUNS, "{pushed}");
        p.publish();
        assert_eq!(collect(&mut c, usize::MAX).len(), pushed as usize);
        assert!(push1(&mut p, 0, 0, 0));
    }

    #[test]
    fn two_threads_move_every_record_intact() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        const N: u32 = 300_000;
        let producer = std::thread::spawn(move || {
            let mut buf = [0u8; 2000];
            for i in 0..N {
                let len = (i * 7919 % 1999 + 1) as usize;
                buf[..len].iter_mut().enumerate().for_each(|(k, b)| *b = (i as usize + k) as u8);
                while !p.push(
                    LeaseTag::from_raw((i / 3 % 5) as u16),
                    (i, 0),
                    len as u32 + 3,
                    len as u32,
                    std::iter::once(&buf[..len]),
                ) {
                    p.publish();
                    std::thread::yield_now();
                }
                if i % 32 == 31 {
                    p.publish();
                }
            }
        });
        let mut next = 0u32;
        while next < N {
            for (slot, sec, _, caplen, orig, data) in collect(&mut c, 64 << 10) {
                let len = (next * 7919 % 1999 + 1) as usize;
                assert_eq!((sec, slot, orig, caplen as usize), (next, (next / 3 % 5) as u16, len as u32 + 3, len));
                assert!(data.iter().enumerate().all(|(k, b)| *b == (next as usize + k) as u8), "record {next}");
                next += 1;
            }
            std::thread::yield_now();
        }
        producer.join().unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn the_data_ring_is_backed_by_huge_pages_where_the_kernel_has_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !thp.contains("[always]") && !thp.contains("[madvise]") {
            eprintln!("skipped: transparent huge pages are off here ({})", thp.trim());
            return;
        }
        let (p, _c) = ring(16 << 20);
        let ring_at = p.ring.base() as usize..p.ring.base() as usize + p.ring.cap();
        // The mappings that hold the ring (madvise splits it), and how much of them is huge pages.
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (mut huge_kb, mut overlaps) = (0, false);
        for line in smaps.lines() {
            let first = line.split(' ').next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
                let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
                overlaps = lo < ring_at.end && ring_at.start < hi;
            } else if overlaps && line.starts_with("AnonHugePages:") {
                huge_kb += line.split_whitespace().nth(1).and_then(|kb| kb.parse::<usize>().ok()).unwrap();
            }
        }
        // At least one 2 MiB page (all 7 of the aligned interior unless memory is fragmented).
        assert!(huge_kb >= 2 << 10, "ring at {ring_at:x?}: {huge_kb} kB in huge pages");
    }
}
