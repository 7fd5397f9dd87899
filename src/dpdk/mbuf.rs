//! `Mbuf`: one received packet, owned. Dropping it returns the buffer to its mempool.
use std::marker::PhantomData;
use std::ptr::NonNull;

use dpdk_sys as sys;

/// One received packet (possibly a chain of segments). Dropping it frees it.
pub struct Mbuf {
    raw: NonNull<sys::rte_mbuf>,
    _owns: PhantomData<sys::rte_mbuf>,
}

// SAFETY: an `Mbuf` is the sole owner of its reference to the rte_mbuf (see `from_raw`, `share`)
// and DPDK mempools accept frees from any thread, so moving it to a writer thread is sound. Not
// `Sync`: two threads must not read the refcount-shared segment metadata while one frees it.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// # Safety
    /// - `raw` must be non-null and point to a valid rte_mbuf (a chain head) from a mempool.
    /// - The caller hands over one reference: nobody else frees this reference.
    #[inline]
    pub(crate) unsafe fn from_raw(raw: *mut sys::rte_mbuf) -> Self {
        debug_assert!(!raw.is_null());
        // SAFETY: non-null per this function's contract.
        let raw = unsafe { NonNull::new_unchecked(raw) };
        Mbuf { raw, _owns: PhantomData }
    }

    #[inline]
    fn head(&self) -> &sys::rte_mbuf {
        // SAFETY: `raw` is valid for as long as we hold our reference (type invariant).
        unsafe { self.raw.as_ref() }
    }

    /// Total length of the packet over all segments (the original wire length as received).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.head().pkt_len
    }

    /// The first segment's bytes: all headers pcapd parses are in it (mbufs hold >= 2 KiB).
    #[inline]
    pub fn first_segment(&self) -> &[u8] {
        segment_bytes(self.head())
    }

    /// Every segment's bytes, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments { next: Some(self.head()) }
    }

    /// Another owned reference to the same packet (refcount + 1): for a packet that several
    /// captures take. The data must then be treated as read-only, which pcapd always does.
    #[inline]
    pub fn share(&self) -> Mbuf {
        // SAFETY: we hold a reference, so the mbuf is alive; the increment is atomic in DPDK.
        unsafe { sys::rte_mbuf_refcnt_update(self.raw.as_ptr(), 1) };
        // SAFETY: the new reference created just above belongs to the returned value.
        unsafe { Mbuf::from_raw(self.raw.as_ptr()) }
    }

    /// Gives up ownership without freeing (for bulk frees).
    #[inline]
    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own this reference and this is the only place (besides `free_bulk`, which
        // takes ownership through `into_raw`) where it is released.
        unsafe { sys::rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

#[inline]
fn segment_bytes(m: &sys::rte_mbuf) -> &[u8] {
    // SAFETY: for a valid mbuf, `buf_addr + data_off` stays inside the data buffer.
    let start = unsafe { m.buf_addr.cast::<u8>().add(usize::from(m.data_off)) };
    // SAFETY: `start` is followed by `data_len` initialised bytes, alive while the mbuf is
    // referenced (the returned lifetime is tied to `m`).
    unsafe { std::slice::from_raw_parts(start, usize::from(m.data_len)) }
}

/// Iterator over the segments of a chained mbuf.
pub struct Segments<'a> {
    next: Option<&'a sys::rte_mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let m = self.next?;
        // SAFETY: `next` is either null or a valid segment of the same chain, alive as long as
        // the head (which the borrow on the owning `Mbuf` keeps alive).
        self.next = unsafe { m.next.as_ref() };
        Some(segment_bytes(m))
    }
}

/// Frees mbufs in batches with `rte_pktmbuf_free_bulk` (cheaper than one free each).
/// Holds owned references; whatever is left is freed on drop.
pub struct FreeBatch {
    raw: Vec<*mut sys::rte_mbuf>,
}

impl FreeBatch {
    pub fn with_capacity(n: usize) -> Self {
        FreeBatch { raw: Vec::with_capacity(n.max(1)) }
    }

    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        self.raw.push(m.into_raw());
        if self.raw.len() == self.raw.capacity() {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let n = u32::try_from(self.raw.len()).unwrap_or(u32::MAX);
        // SAFETY: each pointer is an owned reference taken out of an `Mbuf` by `push`.
        unsafe { sys::rte_pktmbuf_free_bulk(self.raw.as_mut_ptr(), n) };
        self.raw.clear();
    }
}

impl Drop for FreeBatch {
    fn drop(&mut self) {
        self.flush();
    }
}
