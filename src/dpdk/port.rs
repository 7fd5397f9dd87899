//! Ethernet ports: setup with N RX queues, start, stats, stop + close on drop.
//!
//! `RxQueue` is `Send` but neither `Clone` nor `Sync`, and `Port::start` hands out each queue
//! exactly once, so every queue has exactly one poller by construction.
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::Arc;

use dpdk_sys as sys;

use super::errno::DpdkError;
use super::mbuf::{Burst, BURST};
use super::mempool::Mempool;
use super::{PortId, QueueId};

/// What the port should look like once started.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub rx_queues: u16,
    pub rx_descriptors: u16,
    pub promiscuous: bool,
}

/// NIC counters (`rte_eth_stats_get`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EthStats {
    pub ipackets: u64,
    pub ibytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub rx_nombuf: u64,
}

struct PortInner {
    id: PortId,
    name: String,
    driver: String,
    rx_queues: u16,
    _pool: Arc<Mempool>,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the last RxQueue and Port handle are gone (this is the Arc's drop), so nobody
        // polls the port any more. Errors on stop/close leave nothing to clean up.
        unsafe { sys::rte_eth_dev_stop(self.id.0) };
        // SAFETY: as above; close is valid after stop.
        unsafe { sys::rte_eth_dev_close(self.id.0) };
    }
}

/// A started port. Stopped and closed when it and all its queues are dropped.
#[derive(Clone)]
pub struct Port {
    inner: Arc<PortInner>,
}

impl Port {
    /// Looks up a probed device by name (a vdev name such as `net_pcap0` or a PCI address).
    pub fn find(name: &str) -> Result<PortId, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        let mut id: u16 = 0;
        // SAFETY: cname is a valid C string and `id` a valid out-pointer for the call.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc < 0 {
            return Err(DpdkError::PortNotFound(name.to_string()));
        }
        Ok(PortId(id))
    }

    /// Configures `setup.rx_queues` RX queues on `pool`, starts the port and returns its queues.
    pub fn start(name: &str, setup: &PortSetup, pool: Arc<Mempool>) -> Result<(Port, Vec<RxQueue>), DpdkError> {
        let id = Port::find(name)?;
        let p = id.0;
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid out-pointer; the port id came from DPDK.
        let rc = unsafe { sys::rte_eth_dev_info_get(p, &mut info) };
        DpdkError::check_port(p, name, "rte_eth_dev_info_get", rc)?;
        let driver = if info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name points to the driver's static name string.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        if setup.rx_queues == 0 || setup.rx_queues > info.max_rx_queues {
            return Err(DpdkError::TooManyQueues {
                port: p,
                name: name.to_string(),
                max: info.max_rx_queues,
                wanted: setup.rx_queues,
            });
        }
        let conf = sys::rte_eth_conf::default();
        // SAFETY: `conf` is a valid, zeroed configuration (no offloads) that DPDK copies.
        let rc = unsafe { sys::rte_eth_dev_configure(p, setup.rx_queues, 0, &conf) };
        DpdkError::check_port(p, name, "rte_eth_dev_configure", rc)?;
        let mut nb_rx = setup.rx_descriptors;
        let mut nb_tx: u16 = 0;
        // SAFETY: both are valid in/out pointers for the call.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(p, &mut nb_rx, &mut nb_tx) };
        DpdkError::check_port(p, name, "rte_eth_dev_adjust_nb_rx_tx_desc", rc)?;
        // SAFETY: plain query on a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(p) };
        let socket = u32::try_from(socket).unwrap_or(u32::MAX); // SOCKET_ID_ANY when unknown
        for q in 0..setup.rx_queues {
            // SAFETY: the port is configured with rx_queues queues; a null rxconf selects the
            // driver's defaults; the pool outlives the port (PortInner holds it).
            let rc = unsafe { sys::rte_eth_rx_queue_setup(p, q, nb_rx, socket, std::ptr::null(), pool.as_ptr()) };
            DpdkError::check_port(p, name, "rte_eth_rx_queue_setup", rc)?;
        }
        if setup.promiscuous {
            // SAFETY: valid port id. Some vdevs (net_pcap) do not support it: not an error.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(p) };
        }
        // SAFETY: the port is configured and every queue is set up.
        let rc = unsafe { sys::rte_eth_dev_start(p) };
        DpdkError::check_port(p, name, "rte_eth_dev_start", rc)?;
        let inner = Arc::new(PortInner { id, name: name.to_string(), driver, rx_queues: setup.rx_queues, _pool: pool });
        let queues = (0..setup.rx_queues)
            .map(|q| RxQueue { port: Arc::clone(&inner), queue: QueueId(q), _not_sync: PhantomData })
            .collect();
        Ok((Port { inner }, queues))
    }

    pub fn id(&self) -> PortId {
        self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn driver(&self) -> &str {
        &self.inner.driver
    }

    /// Packets and bytes received per RX queue (drivers report the first 16 queues).
    pub fn queue_stats(&self) -> Vec<(u64, u64)> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is a valid out-pointer; the port is started.
        let rc = unsafe { sys::rte_eth_stats_get(self.inner.id.0, &mut s) };
        if rc != 0 {
            return Vec::new();
        }
        let n = usize::from(self.inner.rx_queues).min(s.q_ipackets.len());
        (0..n).map(|q| (s.q_ipackets[q], s.q_ibytes[q])).collect()
    }

    /// NIC counters; all zero if the driver cannot report them.
    pub fn stats(&self) -> EthStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is a valid out-pointer; the port is started.
        let rc = unsafe { sys::rte_eth_stats_get(self.inner.id.0, &mut s) };
        if rc != 0 {
            return EthStats::default();
        }
        EthStats {
            ipackets: s.ipackets,
            ibytes: s.ibytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            rx_nombuf: s.rx_nombuf,
        }
    }
}

/// One per (port, queue): `Send` (moved to its lcore once), not `Clone`/`Sync`.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
    _not_sync: PhantomData<Cell<()>>,
}

impl RxQueue {
    /// Receives up to `BURST` packets into `burst` (freeing what it held). Returns how many.
    #[inline]
    pub fn poll(&mut self, burst: &mut Burst) -> usize {
        let slots = burst.slots();
        // SAFETY: `slots` holds BURST slots; `&mut self` proves we are this queue's only poller
        // and the port is started for as long as this queue exists (it holds the port).
        let n = unsafe { sys::rte_eth_rx_burst(self.port.id.0, self.queue.0, slots.as_mut_ptr(), BURST as u16) };
        let n = usize::from(n).min(BURST);
        // SAFETY: the PMD filled the first `n` slots with owned, non-null mbufs.
        unsafe { burst.set_len(n) };
        n
    }
}
