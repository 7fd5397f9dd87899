//! RX → writer hand-off: one bounded single-producer single-consumer byte ring per (RX core,
//! writer). The RX core copies each packet a capture takes (already cut to its snaplen) into the
//! ring as one entry and frees the mbuf right away, on its own core; the writer turns entries into
//! PCAP records. A full ring refuses the entry (the caller drops and counts); RX never blocks.
//!
//! Why copies and not mbuf references (DESIGN.md allows "a purpose-built ring"): measured with
//! `scripts/bench`, an mbuf freed on the writer's core comes back to the RX core's mempool cold,
//! which cost the RX core ~70 ns per handed-off packet, and one shared-index update per record
//! another cache-line round trip. Copying bytes the PMD has just written (still in the RX core's
//! cache) is cheaper, and the producer publishes its position once per burst.
//!
//! Layout: positions are byte counts that only grow; an entry starts 8-aligned with a 24-byte
//! header `[entry_len u32][slot u16][0 u16][orig_len u32][caplen u32][ts_ns u64]`, then `caplen`
//! bytes, padded to 8. An entry never wraps: when it does not fit before the end, a pad entry
//! (slot `PAD`) fills the rest and the entry starts at offset 0.
use std::cell::UnsafeCell;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;

const HEADER: usize = 24;
const PAD: u16 = u16::MAX;
/// The smallest ring: every entry (at most 24 + 262,144 bytes) must fit several times.
pub const MIN_RING_BYTES: usize = 1 << 20;

#[repr(align(64))]
struct Position(AtomicUsize);

struct Shared {
    /// `cap` bytes as 8-byte words (entries and their headers are 8-aligned).
    buf: Box<[UnsafeCell<u64>]>,
    cap: usize,
    /// Bytes the consumer is done with (written by the consumer only).
    head: Position,
    /// Bytes the producer has published (written by the producer only).
    tail: Position,
}

// SAFETY: the bytes in `buf` are only written by the one `Producer`, in `[tail, head + cap)`,
// and only read by the one `Consumer`, in `[head, tail)`; each side publishes its position with a
// Release store after it is done with the bytes and reads the other's with Acquire. So no byte is
// accessed by both threads without a happens-before edge between the accesses.
unsafe impl Sync for Shared {}
// SAFETY: as above; the buffer is plain memory owned by `Shared`.
unsafe impl Send for Shared {}

impl Shared {
    #[inline]
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr()).cast::<u8>()
    }

    /// # Safety
    /// `[at, at + len)` must lie inside the buffer and belong to the caller's side of the ring
    /// (see `Sync` above) for as long as the slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)] // the ring protocol, not the borrow, makes the range exclusive
    unsafe fn bytes_mut(&self, at: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + len <= self.cap);
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base().wrapping_add(at), len) }
    }

    /// # Safety
    /// As `bytes_mut`, for the consumer's side.
    #[inline]
    unsafe fn bytes(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at + len <= self.cap);
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts(self.base().wrapping_add(at), len) }
    }
}

#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Creates a ring of `cap` bytes (a power of two, at least `MIN_RING_BYTES`).
pub fn ring(cap: usize) -> (Producer, Consumer) {
    assert!(cap.is_power_of_two() && cap >= MIN_RING_BYTES, "ring size {cap} must be a power of two >= 1 MiB");
    let buf = (0..cap / 8).map(|_| UnsafeCell::new(0u64)).collect();
    let shared =
        Arc::new(Shared { buf, cap, head: Position(AtomicUsize::new(0)), tail: Position(AtomicUsize::new(0)) });
    (
        Producer { ring: Arc::clone(&shared), tail: 0, published: 0, head: 0, prefetched: 0 },
        Consumer { ring: shared, head: 0 },
    )
}

/// The RX core's end.
pub struct Producer {
    ring: Arc<Shared>,
    /// Where the next entry goes (ahead of `published` until `publish`).
    tail: usize,
    published: usize,
    /// The consumer's position as last read: stale values only make the ring look fuller.
    head: usize,
    /// Bytes up to here have been prefetched for writing (see `publish`).
    prefetched: usize,
}

/// How far ahead of the next entry `publish` asks for ring lines in exclusive state.
const PREFETCH_AHEAD: usize = 32 << 10;

#[inline]
fn entry_len(caplen: usize) -> usize {
    (HEADER + caplen + 7) & !7
}

impl Producer {
    /// Appends one record of `caplen` bytes taken from the start of `data` (which must hold at
    /// least that many). Returns false, writing nothing, when the ring is full. Visible to the
    /// consumer after the next `publish`.
    #[inline]
    pub fn push<'a>(
        &mut self,
        slot: u16,
        ts_ns: u64,
        orig_len: u32,
        caplen: u32,
        data: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        debug_assert_ne!(slot, PAD);
        let cap = self.ring.cap;
        let len = entry_len(caplen as usize);
        let at = self.tail & (cap - 1);
        let room_to_end = cap - at;
        let pad = if len > room_to_end { room_to_end } else { 0 };
        if self.tail + pad + len - self.head > cap {
            self.head = self.ring.head.0.load(Acquire);
            if self.tail + pad + len - self.head > cap {
                return false;
            }
        }
        if pad > 0 {
            // SAFETY: `[tail, tail + pad)` is free (checked above against the consumer's
            // position) and ends exactly at the end of the buffer; a pad entry is >= 8 bytes.
            let p = unsafe { self.ring.bytes_mut(at, 8) };
            p.copy_from_slice(&(pad as u64 | u64::from(PAD) << 32).to_ne_bytes());
            self.tail += pad;
        }
        let at = self.tail & (cap - 1);
        // SAFETY: `[tail, tail + len)` is free and does not cross the end of the buffer (a pad
        // entry moved it to offset 0 otherwise).
        let entry = unsafe { self.ring.bytes_mut(at, len) };
        let (header, body) = entry.split_at_mut(HEADER);
        header[..8].copy_from_slice(&(len as u64 | u64::from(slot) << 32).to_ne_bytes());
        header[8..16].copy_from_slice(&(u64::from(orig_len) | u64::from(caplen) << 32).to_ne_bytes());
        header[16..].copy_from_slice(&ts_ns.to_ne_bytes());
        let (caplen, mut done) = (caplen as usize, 0);
        for seg in data {
            let n = seg.len().min(caplen - done);
            body[done..done + n].copy_from_slice(&seg[..n]);
            done += n;
            if done == caplen {
                break;
            }
        }
        debug_assert_eq!(done, caplen, "data shorter than caplen");
        // The alignment padding (< 8 bytes), and never stale bytes should `data` fall short.
        if done < body.len() {
            body[done..].fill(0);
        }
        self.tail += len;
        true
    }

    /// Makes every entry pushed so far visible to the consumer (one store; call once per burst).
    ///
    /// Then asks for the lines the next entries will go to in exclusive state: the consumer's
    /// core read them last, and waiting for each line's ownership while copying a packet cost
    /// the RX core more than the copy itself. The requests overlap with the next receive.
    #[inline]
    pub fn publish(&mut self) {
        if self.tail == self.published && self.prefetched != 0 {
            return;
        }
        self.ring.tail.0.store(self.tail, Release);
        self.published = self.tail;
        let (cap, base) = (self.ring.cap, self.ring.base());
        let from = self.prefetched.max(self.tail) & !63;
        let to = self.tail + PREFETCH_AHEAD.min(cap / 2);
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

/// One record as the writer sees it.
pub struct Entry<'a> {
    pub slot: u16,
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// The writer's end.
pub struct Consumer {
    ring: Arc<Shared>,
    head: usize,
}

impl Consumer {
    /// Hands `f` the published entries, in order, until about `max_bytes` were consumed, then
    /// gives their space back to the producer. Returns how many records `f` saw.
    pub fn drain(&mut self, max_bytes: usize, mut f: impl FnMut(Entry<'_>)) -> usize {
        let tail = self.ring.tail.0.load(Acquire);
        let (start, mask) = (self.head, self.ring.cap - 1);
        let mut records = 0;
        while self.head != tail && self.head - start < max_bytes {
            let at = self.head & mask;
            // SAFETY: `[head, tail)` was written by the producer before its Release store of
            // `tail` (read above with Acquire) and it will not touch it until we publish `head`;
            // each entry starts 8-aligned with at least its first word inside the buffer.
            let w0 = word(unsafe { self.ring.bytes(at, 8) }, 0);
            let (len, slot) = (w0 as u32 as usize, (w0 >> 32) as u16);
            if slot != PAD {
                // SAFETY: as above, for the whole entry (entries never cross the end).
                let entry = unsafe { self.ring.bytes(at, len) };
                let w1 = word(entry, 8);
                let caplen = (w1 >> 32) as usize;
                f(Entry { slot, ts_ns: word(entry, 16), orig_len: w1 as u32, data: &entry[HEADER..HEADER + caplen] });
                records += 1;
            }
            self.head += len;
        }
        if self.head != start {
            self.ring.head.0.store(self.head, Release);
        }
        records
    }

    /// Nothing published is waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.tail.0.load(Acquire) == self.head
    }

    /// The position of everything published so far; `reached` tells when it has been drained.
    pub fn mark(&self) -> usize {
        self.ring.tail.0.load(Acquire)
    }

    pub fn reached(&self, mark: usize) -> bool {
        self.head >= mark
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

    fn collect(c: &mut Consumer) -> Vec<(u16, u64, u32, Vec<u8>)> {
        let mut out = Vec::new();
        c.drain(usize::MAX, |e| out.push((e.slot, e.ts_ns, e.orig_len, e.data.to_vec())));
        out
    }

    #[test]
    fn entries_arrive_in_order_after_publish_with_segments_joined_and_cut() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        assert!(p.push(3, 42, 100, 5, [&[1u8, 2][..], &[3, 4, 5, 6]].into_iter()));
        assert!(p.push(7, 43, 1, 1, std::iter::once(&[9u8][..])));
        assert!(c.is_empty(), "nothing is visible before publish");
        assert!(collect(&mut c).is_empty());
        p.publish();
        let mark = c.mark();
        assert!(!c.reached(mark));
        assert!(p.push(8, 44, 1, 1, std::iter::once(&[1u8][..])));
        p.publish();
        assert_eq!(c.drain(1, |_| {}), 1, "at least one entry per call");
        assert!(!c.reached(mark));
        assert_eq!(collect(&mut c), vec![(7, 43, 1, vec![9]), (8, 44, 1, vec![1])]);
        assert!(c.reached(mark) && c.is_empty());
    }

    #[test]
    fn full_ring_refuses_then_accepts_after_drain_and_wraps() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        let data = vec![0xabu8; 1000];
        let per = entry_len(1000);
        let fit = MIN_RING_BYTES / per;
        for i in 0..fit {
            assert!(p.push(1, i as u64, 1000, 1000, std::iter::once(&data[..])), "entry {i}");
        }
        assert!(!p.push(1, 0, 1000, 1000, std::iter::once(&data[..])), "a full ring refuses");
        p.publish();
        // Draining a bounded amount frees exactly that space.
        let n = c.drain(10 * per, |_| {});
        assert_eq!(n, 10);
        // The next entry does not fit before the end: a pad entry, then it starts at 0.
        for i in 0..5 {
            assert!(p.push(2, 1000 + i, 1000, 1000, std::iter::once(&data[..])));
        }
        p.publish();
        let rest = collect(&mut c);
        assert_eq!(rest.len(), fit - 10 + 5);
        assert!(rest[..fit - 10].iter().all(|r| r.0 == 1 && r.3 == data));
        assert_eq!(rest[fit - 10..].iter().map(|r| r.1).collect::<Vec<_>>(), vec![1000, 1001, 1002, 1003, 1004]);
    }

    #[test]
    fn two_threads_move_every_record_intact() {
        let (mut p, mut c) = ring(MIN_RING_BYTES);
        const N: u64 = 300_000;
        let producer = std::thread::spawn(move || {
            let mut buf = [0u8; 2000];
            let mut refused = 0u64;
            for i in 0..N {
                let len = (i * 7919 % 1999 + 1) as usize;
                buf[..len].iter_mut().enumerate().for_each(|(k, b)| *b = (i as usize + k) as u8);
                while !p.push((i % 5) as u16, i, len as u32 + 3, len as u32, std::iter::once(&buf[..len])) {
                    refused += 1;
                    p.publish();
                    std::thread::yield_now();
                }
                if i % 32 == 31 {
                    p.publish();
                }
            }
            refused
        });
        let mut next = 0u64;
        while next < N {
            c.drain(64 << 10, |e| {
                let len = (next * 7919 % 1999 + 1) as usize;
                assert_eq!((e.ts_ns, e.slot, e.orig_len, e.data.len()), (next, (next % 5) as u16, len as u32 + 3, len));
                assert!(e.data.iter().enumerate().all(|(k, b)| *b == (next as usize + k) as u8), "record {next}");
                next += 1;
            });
            std::thread::yield_now();
        }
        producer.join().unwrap();
        assert!(c.is_empty());
    }
}
