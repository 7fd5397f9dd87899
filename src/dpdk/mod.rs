//! The safe layer over DPDK: with `bpf` (the door to `rte_bpf` and libpcap), the only code in
//! pcapd that names `dpdk_sys`.
//!
//! RAII owns every resource, and ownership follows dependency: `Eal` is a shared handle that
//! `Mempool` and `LcoreJob` hold; `Port` + `RxQueue` (one poller per queue by construction) hold
//! their `Arc<Mempool>`; `Burst` (received mbufs, freed in bulk); `PktBuf` (a packet built from
//! bytes, holding its pool); lcore jobs with panic capture.
//! Whatever order owners drop them in, cleanup runs as ports → pool → EAL. DPDK's log goes to
//! `tracing` (`log`), and start failures quote what the driver logged.
use std::fmt;

mod eal;
mod errno;
mod lcore;
pub mod log;
mod mbuf;
mod mempool;
mod pktbuf;
mod port;

pub use eal::{tsc, Eal};
pub use errno::{DpdkError, Errno};
pub use lcore::{launch, LcoreJob};
pub use mbuf::{Burst, Packet, BURST};
pub use mempool::Mempool;
pub use pktbuf::PktBuf;
pub use port::{list as list_ports, EthStats, Port, PortInfo, PortSetup, RxQueue};

/// Default mbuf data room (2048 bytes of data + 128 headroom), as `RTE_MBUF_DEFAULT_BUF_SIZE`.
pub const MBUF_DEFAULT_BUF_SIZE: u16 = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

/// The version of the DPDK library loaded at run time (`rte_version()`, "DPDK 22.11.11").
/// Needs no EAL: it reads a constant string of the library.
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string of the library.
    let v = unsafe { dpdk_sys::rte_version() };
    if v.is_null() {
        return String::from("DPDK (unknown version)");
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    unsafe { std::ffi::CStr::from_ptr(v) }.to_string_lossy().into_owned()
}

macro_rules! id_newtype {
    ($name:ident, $inner:ty, $prefix:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        pub struct $name(pub $inner);
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}
id_newtype!(PortId, u16, "port");
id_newtype!(QueueId, u16, "queue");
id_newtype!(LcoreId, u32, "lcore");

/// For tests and benches that start DPDK (in this process or a child): the machine's DPDK lock
/// (on these 2-core machines one DPDK process runs at a time; the same file as tests/common's
/// `dpdk_lock`) and EAL arguments without hugepages, PCI devices or shared config.
#[doc(hidden)]
pub mod testing {
    /// Held while DPDK runs; released when dropped (the descriptor closes).
    pub struct Lock(#[allow(dead_code)] std::fs::File);

    pub fn lock() -> Lock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("pcapd-tests-dpdk.lock"))
            .expect("open the DPDK test lock file");
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0, "flock the DPDK test lock");
        Lock(file)
    }

    /// EAL arguments for one core, `mem_mb` MB of ordinary pages, and its own file prefix.
    pub fn eal_args(prefix: &str, mem_mb: u32) -> Vec<String> {
        let mem = mem_mb.to_string();
        let prefix = format!("{prefix}-{}", std::process::id());
        ["--no-huge", "-m", &mem, "--no-shconf", "--no-pci", "-l", "0", "--log-level=notice", "--file-prefix", &prefix]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}
