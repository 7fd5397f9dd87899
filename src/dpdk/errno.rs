//! DPDK's "0 or -errno" return convention and `rte_errno`, as typed errors.
use std::fmt;

use dpdk_sys as sys;

/// A negative errno returned by DPDK, kept verbatim; Display adds the OS text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's `rte_errno` (set by calls that return NULL or -1).
    pub fn last() -> Self {
        // SAFETY: reads a thread-local integer; no preconditions.
        Errno(-unsafe { sys::pcapd_rte_errno() }.abs())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0.abs();
        // DPDK's own codes (E_RTE_*) start at 1001; the OS has no text for them.
        if code > 1000 {
            // SAFETY: rte_strerror takes any int and returns a non-null C string.
            let ptr = unsafe { sys::rte_strerror(code) };
            // SAFETY: `ptr` points to a static or thread-local NUL-terminated string.
            let text = unsafe { std::ffi::CStr::from_ptr(ptr) };
            write!(f, "{} (errno {})", text.to_string_lossy(), self.0)
        } else {
            write!(f, "{} (errno {})", std::io::Error::from_raw_os_error(code), self.0)
        }
    }
}

/// Errors from the DPDK layer: one variant per decision the caller can make.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL initialisation failed: {errno}; EAL arguments were: {args}")]
    EalInit { errno: Errno, args: String },
    #[error("the EAL is already initialised in this process (it can be initialised only once)")]
    EalTwice,
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArg(String),
    #[error("no DPDK port matches {0:?}; check the PCI address / vdev name (and that the device was probed)")]
    PortNotFound(String),
    #[error("port {port} ({name}): {op} failed: {errno}")]
    PortSetup { port: u16, name: String, op: &'static str, errno: Errno },
    #[error("port {port} ({name}): the device supports {max} RX queues, the config asks for {wanted}")]
    TooManyQueues { port: u16, name: String, max: u16, wanted: u16 },
    #[error("cannot create mempool {name:?} of {mbufs} mbufs: {errno}")]
    Mempool { name: String, mbufs: u32, errno: Errno },
    #[error("lcore {lcore} is not enabled in the EAL (rx_cores must be CPUs this process may use)")]
    LcoreNotEnabled { lcore: u32 },
    #[error("cannot launch work on lcore {lcore}: {errno}")]
    Launch { lcore: u32, errno: Errno },
}

impl DpdkError {
    /// Turns DPDK's "0 or -errno" into a `PortSetup` error naming the C call.
    pub fn check_port(port: u16, name: &str, op: &'static str, rc: i32) -> Result<(), DpdkError> {
        if rc >= 0 {
            Ok(())
        } else {
            Err(DpdkError::PortSetup { port, name: name.to_string(), op, errno: Errno(rc) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_renders_os_text_and_raw_code() {
        let s = Errno(-22).to_string();
        assert!(s.contains("Invalid argument"), "{s}");
        assert!(s.ends_with("(errno -22)"), "{s}");
    }

    #[test]
    fn port_error_names_the_call() {
        let e = DpdkError::check_port(3, "net_pcap0", "rte_eth_dev_configure", -22).unwrap_err();
        assert_eq!(
            e.to_string(),
            "port 3 (net_pcap0): rte_eth_dev_configure failed: Invalid argument (os error 22) (errno -22)"
        );
        assert!(DpdkError::check_port(3, "x", "y", 0).is_ok());
    }
}
