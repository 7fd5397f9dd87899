//! DPDK's "0 or -errno" return convention and `rte_errno`, as typed errors.
use std::fmt;

use dpdk_sys as sys;

use super::log::{self, DriverSaid};

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
///
/// `port` fields name the device as configured (`net_pcap0 (rx_pcap=x.pcap)`); `driver` holds
/// what DPDK itself logged about the failure, the reason the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL initialisation failed: {errno}{driver}; EAL arguments were: {args}")]
    EalInit { errno: Errno, args: String, driver: DriverSaid },
    #[error("the EAL is already initialised in this process (it can be initialised only once)")]
    EalTwice,
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArg(String),
    #[error("cannot route DPDK's log: {0}")]
    LogStream(Errno),
    #[error("port {port}: no DPDK port has this name; check the PCI address / vdev name")]
    PortNotFound { port: String },
    #[error("port {port}: the driver could not open the device{driver}")]
    ProbeFailed { port: String, driver: DriverSaid },
    #[error("port {port}: {op} failed: {errno}{driver}")]
    PortSetup { port: String, op: &'static str, errno: Errno, driver: DriverSaid },
    #[error("port {port}: the device supports {max} RX queues, the config asks for {wanted}")]
    TooManyQueues { port: String, max: u16, wanted: u16 },
    #[error("cannot create mempool {name:?} of {mbufs} mbufs: {errno}{driver}")]
    Mempool { name: String, mbufs: u32, errno: Errno, driver: DriverSaid },
    #[error("lcore {lcore} is not enabled in the EAL (rx_cores must be CPUs this process may use)")]
    LcoreNotEnabled { lcore: u32 },
    #[error("cannot launch work on lcore {lcore}: {errno}")]
    Launch { lcore: u32, errno: Errno },
}

impl DpdkError {
    /// Turns DPDK's "0 or -errno" into a `PortSetup` error naming the C call, quoting what the
    /// driver logged since `mark`.
    pub(crate) fn check_port(port: &str, op: &'static str, rc: i32, mark: log::Mark) -> Result<(), DpdkError> {
        if rc >= 0 {
            Ok(())
        } else {
            Err(DpdkError::PortSetup {
                port: port.to_string(),
                op,
                errno: Errno(rc),
                driver: DriverSaid(log::errors_since(mark)),
            })
        }
    }

    /// Whether the input is at fault (the config, the arguments, a file they name): exit code
    /// 2. A device or driver that rejects its settings answers EINVAL/ENOTSUP/ERANGE; anything
    /// else (no memory, I/O errors, a busy lcore) is a runtime fault.
    pub fn is_bad_input(&self) -> bool {
        let rejected = |e: &Errno| matches!(e.0.abs(), libc::EINVAL | libc::ENOTSUP | libc::ERANGE);
        match self {
            DpdkError::EalInit { errno, .. } => rejected(errno),
            DpdkError::BadArg(_)
            | DpdkError::PortNotFound { .. }
            | DpdkError::ProbeFailed { .. }
            | DpdkError::TooManyQueues { .. }
            | DpdkError::LcoreNotEnabled { .. } => true,
            DpdkError::PortSetup { errno, .. } | DpdkError::Mempool { errno, .. } => rejected(errno),
            DpdkError::EalTwice | DpdkError::LogStream(_) | DpdkError::Launch { .. } => false,
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
        let m = log::mark();
        let e = DpdkError::check_port("net_pcap0", "rte_eth_dev_configure", -22, m).unwrap_err();
        assert_eq!(
            e.to_string(),
            "port net_pcap0: rte_eth_dev_configure failed: Invalid argument (os error 22) (errno -22)"
        );
        assert!(e.is_bad_input());
        assert!(DpdkError::check_port("x", "y", 0, m).is_ok());
        let e = DpdkError::check_port("x", "rte_eth_dev_start", -12, m).unwrap_err();
        assert!(!e.is_bad_input(), "ENOMEM is a runtime fault");
    }
}
