//! Received packets: a `Burst` owns up to `BURST` mbufs from one `rx_burst` and frees them all
//! with one bulk free; `Packet` is a borrowed view of one of them.
use std::marker::PhantomData;

use dpdk_sys as sys;

/// Most packets one poll returns.
pub const BURST: usize = 32;

/// The mbufs of one receive call, owned; `free` (or drop) returns them to their mempools.
/// Not `Send`: it stays on its RX core, whose mempool cache takes the buffers back.
pub struct Burst {
    raw: [*mut sys::rte_mbuf; BURST],
    len: usize,
    _not_send: PhantomData<*mut sys::rte_mbuf>,
}

impl Default for Burst {
    fn default() -> Self {
        Burst { raw: [std::ptr::null_mut(); BURST], len: 0, _not_send: PhantomData }
    }
}

impl Burst {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Packet `i` (< `len`).
    #[inline]
    pub fn packet(&self, i: usize) -> &Packet {
        assert!(i < self.len);
        // SAFETY: the first `len` slots hold valid mbufs we own until `free`; `Packet` is a
        // transparent wrapper of `rte_mbuf` and the borrow is tied to `self`.
        unsafe { &*self.raw[i].cast::<Packet>() }
    }

    #[inline]
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Packet> + ExactSizeIterator {
        // SAFETY: as in `packet`, for each of the first `len` slots.
        self.raw[..self.len].iter().map(|&m| unsafe { &*m.cast::<Packet>() })
    }

    /// The slots for `rte_eth_rx_burst` to fill, after freeing what the burst still holds.
    #[inline]
    pub(crate) fn slots(&mut self) -> &mut [*mut sys::rte_mbuf; BURST] {
        self.free();
        &mut self.raw
    }

    /// # Safety
    /// The first `n` slots must hold mbufs (chain heads) whose ownership passes to the burst.
    #[inline]
    pub(crate) unsafe fn set_len(&mut self, n: usize) {
        debug_assert!(n <= BURST && self.raw[..n].iter().all(|m| !m.is_null()));
        self.len = n;
    }

    /// Frees every packet (all segments) in one bulk call.
    #[inline]
    pub fn free(&mut self) {
        if self.len > 0 {
            // SAFETY: the first `len` slots are owned mbufs; `len = 0` right after forgets them.
            unsafe { sys::pcapd_pktmbuf_free_bulk(self.raw.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free();
    }
}

/// One received packet (possibly a chain of segments), borrowed from its `Burst`.
#[repr(transparent)]
pub struct Packet(sys::rte_mbuf);

impl Packet {
    /// Total length of the packet over all segments (the original wire length as received).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.0.pkt_len
    }

    /// The first segment's bytes: all headers pcapd parses are in it (mbufs hold >= 2 KiB).
    #[inline]
    pub fn first_segment(&self) -> &[u8] {
        segment_bytes(&self.0)
    }

    /// Every segment's bytes, in order.
    #[inline]
    pub fn segments(&self) -> Segments<'_> {
        Segments { next: Some(&self.0) }
    }

    /// The mbuf itself, for C functions that read it (`rte_bpf`'s programs).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const sys::rte_mbuf {
        &self.0
    }
}

#[inline]
fn segment_bytes(m: &sys::rte_mbuf) -> &[u8] {
    // SAFETY: for a valid mbuf, `buf_addr + data_off` stays inside the data buffer.
    let start = unsafe { m.buf_addr.cast::<u8>().add(usize::from(m.data_off)) };
    // SAFETY: `start` is followed by `data_len` initialised bytes, alive while the mbuf is
    // owned by its burst (the returned lifetime is tied to `m`, borrowed from the burst).
    unsafe { std::slice::from_raw_parts(start, usize::from(m.data_len)) }
}

/// Iterator over the segments of a chained mbuf.
pub struct Segments<'a> {
    next: Option<&'a sys::rte_mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let m = self.next?;
        // SAFETY: `next` is either null or a valid segment of the same chain, alive as long as
        // the head (which the borrow on the owning burst keeps alive).
        self.next = unsafe { m.next.as_ref() };
        Some(segment_bytes(m))
    }
}
