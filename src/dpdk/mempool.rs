//! Packet-buffer mempools. Freed on drop (after every mbuf from it has been returned).
use std::ffi::CString;
use std::ptr::NonNull;

use dpdk_sys as sys;

use super::errno::{DpdkError, Errno};

/// A pool of packet buffers for RX queues.
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
    name: String,
}

// SAFETY: DPDK mempools are thread-safe (lock-free ring + per-lcore caches); the handle is only a
// pointer to shared hugepage memory. Moving or sharing it across threads is how DPDK uses it.
unsafe impl Send for Mempool {}
// SAFETY: see `Send`; every operation through `&Mempool` is a thread-safe DPDK call.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `mbufs` buffers of `data_room` bytes (headroom included) on `socket`.
    pub fn new(name: &str, mbufs: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        // SAFETY: cname is a valid C string for the duration of the call; DPDK copies it.
        let raw = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, data_room, socket) };
        let raw = NonNull::new(raw).ok_or_else(|| DpdkError::Mempool {
            name: name.to_string(),
            mbufs,
            errno: Errno::last(),
        })?;
        Ok(Mempool { raw, name: name.to_string() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: owners drop ports (which stop RX) and every Mbuf before the pool.
        unsafe { sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
