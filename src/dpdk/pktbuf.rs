//! Packets built from bytes: an owned mbuf chain allocated from a `Mempool` (tests, benches,
//! replaying stored packets through code that takes mbufs).
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys as sys;

use super::mbuf::Packet;
use super::mempool::Mempool;

/// An mbuf chain this value owns; dropping it frees every segment. Holds its pool, so the pool
/// (and the EAL) outlive it.
pub struct PktBuf {
    raw: NonNull<sys::rte_mbuf>,
    _pool: Arc<Mempool>,
}

// SAFETY: a `PktBuf` is the sole owner of its chain (built in `from_segments`, never shared)
// and DPDK mempools accept frees from any thread, so it may move to another thread. Not `Sync`.
unsafe impl Send for PktBuf {}

impl PktBuf {
    /// A packet holding the bytes of `segments`, one mbuf per segment, chained in order (no
    /// segment, or one empty segment: an empty packet). `None` when the pool runs out or a
    /// segment is larger than one mbuf's data room.
    pub fn from_segments(pool: &Arc<Mempool>, segments: &[&[u8]]) -> Option<PktBuf> {
        let first = segments.first().copied().unwrap_or(&[]);
        let head = PktBuf { raw: segment(pool, first)?, _pool: Arc::clone(pool) };
        for seg in segments.iter().skip(1) {
            // On failure `head` drops and frees what was chained so far.
            let tail = segment(pool, seg)?;
            // SAFETY: `head` and `tail` are valid mbufs we own; `tail` is a single segment in no
            // other chain. On success the chain owns `tail`.
            let rc = unsafe { sys::rte_pktmbuf_chain(head.raw.as_ptr(), tail.as_ptr()) };
            if rc != 0 {
                // SAFETY: chaining failed (too many segments), so `tail` is still ours alone.
                unsafe { sys::rte_pktmbuf_free(tail.as_ptr()) };
                return None;
            }
        }
        Some(head)
    }

    /// The packet, as the RX path sees one.
    pub fn packet(&self) -> &Packet {
        // SAFETY: `Packet` is a transparent wrapper of `rte_mbuf`; the chain is valid and owned
        // by `self`, and the borrow is tied to `self`.
        unsafe { &*self.raw.as_ptr().cast::<Packet>() }
    }

    /// Gives the chain up, e.g. to a `Burst` (which frees it). The pool must outlive it.
    #[cfg(test)]
    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let raw = self.raw.as_ptr();
        let mut me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; only the Arc's count is given back.
        unsafe { std::ptr::drop_in_place(&mut me._pool) };
        raw
    }
}

impl Drop for PktBuf {
    fn drop(&mut self) {
        // SAFETY: we own the chain and this is the only place it is freed.
        unsafe { sys::rte_pktmbuf_free(self.raw.as_ptr()) };
    }
}

/// One fresh mbuf holding `data`.
fn segment(pool: &Mempool, data: &[u8]) -> Option<NonNull<sys::rte_mbuf>> {
    let len = u16::try_from(data.len()).ok()?;
    // SAFETY: the pool is alive (borrowed) and holds packet buffers (rte_pktmbuf_pool_create).
    let m = NonNull::new(unsafe { sys::rte_pktmbuf_alloc(pool.as_ptr()) })?;
    // SAFETY: `m` is a fresh, empty, single-segment mbuf we own.
    let dst = unsafe { sys::rte_pktmbuf_append(m.as_ptr(), len) };
    if dst.is_null() {
        // SAFETY: `m` is ours alone and freed once.
        unsafe { sys::rte_pktmbuf_free(m.as_ptr()) };
        return None;
    }
    // SAFETY: rte_pktmbuf_append returned room for `len` bytes inside `m`'s buffer, which
    // `data` (memory of the caller) cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.cast::<u8>(), data.len()) };
    Some(m)
}
