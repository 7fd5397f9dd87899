//! Packet-buffer mempools. A pool holds the EAL (an `Eal` handle), so it is always freed before
//! `rte_eal_cleanup`; ports hold their pool (`Arc<Mempool>`), so it is freed after them.
use std::ffi::CString;
use std::ptr::NonNull;

use dpdk_sys as sys;

use super::eal::Eal;
use super::errno::{DpdkError, Errno};
use super::log;

/// A pool of packet buffers for RX queues.
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
    name: String,
    /// Keeps the EAL initialised until after `rte_mempool_free` (fields drop after `drop`).
    _eal: Eal,
}

// SAFETY: DPDK mempools are thread-safe (lock-free ring + per-lcore caches); the handle is only a
// pointer to shared hugepage memory. Moving or sharing it across threads is how DPDK uses it.
unsafe impl Send for Mempool {}
// SAFETY: see `Send`; every operation through `&Mempool` is a thread-safe DPDK call.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `mbufs` buffers of `data_room` bytes (headroom included) on `socket`.
    pub fn new(
        eal: &Eal,
        name: &str,
        mbufs: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        let mark = log::mark();
        // SAFETY: `eal` proves the EAL is initialised; cname is a valid C string for the
        // duration of the call; DPDK copies it.
        let raw = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, data_room, socket) };
        let raw = NonNull::new(raw).ok_or_else(|| DpdkError::Mempool {
            name: name.to_string(),
            mbufs,
            errno: Errno::last(),
            driver: log::DriverSaid(log::errors_since(mark)),
        })?;
        Ok(Mempool { raw, name: name.to_string(), _eal: eal.clone() })
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
        // SAFETY: nothing uses the pool any more: every port that receives into it holds an
        // `Arc<Mempool>` (and each RX queue holds its port), so this runs after the last of them
        // was stopped and closed (its descriptors and PMD-held mbufs released). The EAL is still
        // initialised: `_eal` is dropped after this function returns.
        unsafe { sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
