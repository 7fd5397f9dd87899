//! Ethernet ports: setup with N RX queues, start, stats, stop + close on drop.
//!
//! `RxQueue` is `Send` but neither `Clone` nor `Sync`, and `Port::start` hands out each queue
//! exactly once, so every queue has exactly one poller by construction.
//!
//! Ownership: each `RxQueue` and `Port` handle holds the port (`Arc<PortInner>`), the port holds
//! its `Arc<Mempool>`, the pool holds the `Eal`. Dropping them in any order stops and closes the
//! device, then frees the pool, then (with the last EAL handle) cleans up the EAL.
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::Arc;

use dpdk_sys as sys;

use super::eal::Eal;
use super::errno::DpdkError;
use super::log::{self, DriverSaid};
use super::mbuf::{Burst, BURST};
use super::mempool::Mempool;
use super::{PortId, QueueId};

/// What the port should look like once started.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub rx_queues: u16,
    pub rx_descriptors: u16,
    pub promiscuous: bool,
    /// The vdev arguments the device was given (`rx_pcap=x.pcap`), for error messages.
    pub args: Option<String>,
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

/// The counters of several ports added up.
impl std::iter::Sum for EthStats {
    fn sum<I: Iterator<Item = EthStats>>(it: I) -> EthStats {
        it.fold(EthStats::default(), |a, s| EthStats {
            ipackets: a.ipackets + s.ipackets,
            ibytes: a.ibytes + s.ibytes,
            imissed: a.imissed + s.imissed,
            ierrors: a.ierrors + s.ierrors,
            rx_nombuf: a.rx_nombuf + s.rx_nombuf,
        })
    }
}

/// A configured port. Created as soon as `rte_eth_dev_configure` succeeds, so every later
/// failure (queue setup, start) and every normal end stops and closes the device in `Drop`.
/// Holds the pool its queues receive into, so the pool is freed after the device is closed
/// (and the pool holds the EAL: cleanup comes last).
struct PortInner {
    id: PortId,
    /// The device as configured, for messages: `net_pcap0 (rx_pcap=x.pcap)`.
    label: String,
    name: String,
    driver: String,
    rx_queues: u16,
    _pool: Arc<Mempool>,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the device was configured (a `PortInner` exists only after a successful
        // rte_eth_dev_configure) and nobody polls it: this is the last owner (the Arc's drop;
        // every RxQueue holds the Arc). Stopping a port that never started is a no-op in DPDK;
        // errors on stop/close leave nothing to clean up.
        unsafe { sys::rte_eth_dev_stop(self.id.0) };
        // SAFETY: as above; close is valid after stop and releases the queues and the mbufs the
        // PMD holds, before `_pool` (a field, dropped after this function) can be freed.
        unsafe { sys::rte_eth_dev_close(self.id.0) };
    }
}

/// A started port. Stopped and closed when it and all its queues are dropped.
#[derive(Clone)]
pub struct Port {
    inner: Arc<PortInner>,
}

/// `net_pcap0 (rx_pcap=x.pcap)`, or just the name without arguments.
fn label(name: &str, args: Option<&str>) -> String {
    match args {
        Some(a) if !a.is_empty() => format!("{name} ({a})"),
        _ => name.to_string(),
    }
}

impl Port {
    /// Looks up a probed device by name (a vdev name such as `net_pcap0` or a PCI address).
    /// A device whose probe failed in `rte_eal_init` is missing: the error quotes the driver.
    pub fn find(eal: &Eal, name: &str, args: Option<&str>) -> Result<PortId, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArg(name.to_string()))?;
        let mut id: u16 = 0;
        // SAFETY: `eal` proves the EAL is initialised; cname is a valid C string and `id` a
        // valid out-pointer for the call.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc < 0 {
            let port = label(name, args);
            let probe = eal.probe_errors(name);
            return Err(if probe.is_empty() {
                DpdkError::PortNotFound { port }
            } else {
                DpdkError::ProbeFailed { port, driver: DriverSaid(probe) }
            });
        }
        Ok(PortId(id))
    }

    /// Configures `setup.rx_queues` RX queues on `pool`, starts the port and returns its queues.
    /// On any failure after the configure step the device is stopped and closed again.
    pub fn start(
        eal: &Eal,
        name: &str,
        setup: &PortSetup,
        pool: Arc<Mempool>,
    ) -> Result<(Port, Vec<RxQueue>), DpdkError> {
        let id = Port::find(eal, name, setup.args.as_deref())?;
        let port = label(name, setup.args.as_deref());
        let p = id.0;
        let mark = log::mark();
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid out-pointer; the port id came from DPDK.
        let rc = unsafe { sys::rte_eth_dev_info_get(p, &mut info) };
        DpdkError::check_port(&port, "rte_eth_dev_info_get", rc, mark)?;
        let driver = if info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name points to the driver's static name string.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        if setup.rx_queues == 0 || setup.rx_queues > info.max_rx_queues {
            return Err(DpdkError::TooManyQueues { port, max: info.max_rx_queues, wanted: setup.rx_queues });
        }
        let conf = sys::rte_eth_conf::default();
        // SAFETY: `conf` is a valid, zeroed configuration (no offloads) that DPDK copies.
        let rc = unsafe { sys::rte_eth_dev_configure(p, setup.rx_queues, 0, &conf) };
        DpdkError::check_port(&port, "rte_eth_dev_configure", rc, mark)?;
        // From here on the guard stops and closes the device on every return path.
        let inner =
            PortInner { id, label: port, name: name.to_string(), driver, rx_queues: setup.rx_queues, _pool: pool };
        let port = inner.label.as_str();
        let mut nb_rx = setup.rx_descriptors;
        let mut nb_tx: u16 = 0;
        // SAFETY: both are valid in/out pointers for the call.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(p, &mut nb_rx, &mut nb_tx) };
        DpdkError::check_port(port, "rte_eth_dev_adjust_nb_rx_tx_desc", rc, mark)?;
        // SAFETY: plain query on a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(p) };
        let socket = u32::try_from(socket).unwrap_or(u32::MAX); // SOCKET_ID_ANY when unknown
        for q in 0..setup.rx_queues {
            // SAFETY: the port is configured with rx_queues queues; a null rxconf selects the
            // driver's defaults; the pool outlives the queue: `inner` holds it and closes the
            // device (releasing the queue) before dropping it.
            let rc =
                unsafe { sys::rte_eth_rx_queue_setup(p, q, nb_rx, socket, std::ptr::null(), inner._pool.as_ptr()) };
            DpdkError::check_port(port, "rte_eth_rx_queue_setup", rc, mark)?;
        }
        if setup.promiscuous {
            // SAFETY: valid port id. Some vdevs (net_pcap) do not support it: not an error.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(p) };
        }
        // SAFETY: the port is configured and every queue is set up.
        let rc = unsafe { sys::rte_eth_dev_start(p) };
        DpdkError::check_port(port, "rte_eth_dev_start", rc, mark)?;
        let inner = Arc::new(inner);
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

    /// The device as configured, for messages: `net_pcap0 (rx_pcap=x.pcap)`.
    pub fn label(&self) -> &str {
        &self.inner.label
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

/// A port the EAL probed, as `pcapd capture -D` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub id: PortId,
    /// The device name (`net_pcap0`, a PCI address): what `-i` and `--vdev`/`--pci` name.
    pub name: String,
    pub driver: String,
}

/// Every port the EAL probed, in port-id order.
pub fn list(_eal: &Eal) -> Vec<PortInfo> {
    let mut out = Vec::new();
    let mut next: u16 = 0;
    loop {
        // SAFETY: `_eal` proves the EAL is initialised; a plain query over the port table.
        let id = unsafe { sys::rte_eth_find_next(next) };
        if u32::from(id) >= sys::RTE_MAX_ETHPORTS {
            break;
        }
        let mut buf = [0 as std::os::raw::c_char; 64]; // RTE_ETH_NAME_MAX_LEN
                                                       // SAFETY: `buf` holds RTE_ETH_NAME_MAX_LEN bytes, as the call requires; `id` is valid.
        let rc = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
        let name = if rc == 0 {
            // SAFETY: on success DPDK wrote a NUL-terminated name into `buf`.
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
        } else {
            format!("port{id}")
        };
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid out-pointer; the port id came from DPDK.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        let driver = if rc != 0 || info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name points to the driver's static name string.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        out.push(PortInfo { id: PortId(id), name, driver });
        match id.checked_add(1) {
            Some(n) => next = n,
            None => break,
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpdk::MBUF_DEFAULT_BUF_SIZE;

    /// A pcap file of `n` minimal Ethernet frames.
    fn pcap_of(path: &std::path::Path, n: u32) {
        let mut b = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for i in 0..n {
            for v in [i, 0, 60, 60] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&[0u8; 60]);
        }
        std::fs::write(path, b).unwrap();
    }

    /// Regression: a port whose queue setup (or start) failed stayed configured and was never
    /// closed; its owner then freed the pool after the EAL cleanup (SIGSEGV in Mempool::drop).
    #[test]
    fn a_port_whose_start_fails_is_closed_and_every_drop_order_is_safe() {
        // DPDK processes never run concurrently on these machines (see tests/common).
        let _lock = crate::dpdk::testing::lock();
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pcap");
        pcap_of(&big, 600);
        let mut args = crate::dpdk::testing::eal_args("pcapd-unit", 128);
        args.extend(["--vdev".into(), format!("net_pcap0,rx_pcap={},infinite_rx=1", big.display())]);
        args.extend(["--vdev".into(), "net_pcap1,rx_pcap=/no/such.pcap".into()]);
        let eal = Eal::init(&args).unwrap();
        let pool = Arc::new(Mempool::new(&eal, "unit_rx", 511, 32, MBUF_DEFAULT_BUF_SIZE, -1).unwrap());
        let setup = PortSetup {
            rx_queues: 1,
            rx_descriptors: 64,
            promiscuous: false,
            args: Some(format!("rx_pcap={},infinite_rx=1", big.display())),
        };
        let Err(err) = Port::start(&eal, "net_pcap0", &setup, Arc::clone(&pool)) else {
            panic!("net_pcap0 started with fewer mbufs than its infinite_rx file has packets");
        };
        let msg = err.to_string();
        assert!(matches!(err, DpdkError::PortSetup { op: "rte_eth_rx_queue_setup", .. }), "{msg}");
        assert!(msg.contains("At least 600 mbufs per queue is required"), "{msg}");
        assert!(err.is_bad_input());
        assert_eq!(Arc::strong_count(&pool), 1, "the failed port released its pool");
        // Closed: DPDK releases a closed vdev's port, so the name no longer resolves.
        assert!(matches!(Port::find(&eal, "net_pcap0", None), Err(DpdkError::PortNotFound { .. })));
        // A vdev that failed to probe in rte_eal_init: the error quotes the driver.
        let err = Port::find(&eal, "net_pcap1", Some("rx_pcap=/no/such.pcap")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port net_pcap1 (rx_pcap=/no/such.pcap): the driver could not open the device: \
             Couldn't open /no/such.pcap: /no/such.pcap: No such file or directory"
        );
        // The order that crashed: the EAL handle goes first, the pool (holding the EAL) after.
        drop(eal);
        drop(pool);
    }
}
