//! The EAL handle: initialises DPDK once per process; the last handle dropped cleans it up.
//!
//! `Eal` is a cheap clonable handle (an `Arc` inside). Everything that needs the EAL alive holds
//! one: a `Mempool` keeps a clone, a `Port` (and each of its `RxQueue`s) holds its `Mempool`,
//! `launch` borrows one. So `rte_eal_cleanup` runs only after the last of them is gone,
//! whatever order their owners drop them in: no drop order can free a pool after the cleanup.
use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk_sys as sys;

use super::errno::{DpdkError, Errno};
use super::log;
use super::LcoreId;

static INITIALISED: AtomicBool = AtomicBool::new(false);

struct EalInner {
    main_lcore: LcoreId,
    /// Errors DPDK logged during `rte_eal_init` (a vdev that failed to probe is not an init
    /// failure: its port is then simply missing, and `Port::start` quotes these lines).
    init_errors: Vec<String>,
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: this is the last `Eal` handle (the Arc's drop). Every `Mempool` holds a handle,
        // every `Port` and `RxQueue` holds its `Mempool`, and lcore jobs are launched through a
        // handle and joined by their owner: so no pool, port, queue or mbuf outlives this call.
        // rte_eal_cleanup releases hugepages and runtime files.
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// Proof that the EAL is initialised; clones share it, the last one dropped cleans it up.
#[derive(Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (without the program name). DPDK's log goes to
    /// `tracing` from here on (see `log`).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalTwice);
        }
        log::route()?;
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("pcapd").map_err(|_| DpdkError::BadArg("pcapd".into()))?);
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| DpdkError::BadArg(a.clone()))?);
        }
        // rte_eal_init may permute argv; it gets its own array of pointers into `owned`.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len()).map_err(|_| DpdkError::BadArg("too many arguments".into()))?;
        let mark = log::mark();
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call; EAL only
        // reorders the pointer array, never writes through the pointers.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::EalInit {
                errno: Errno::last(),
                args: args.join(" "),
                driver: log::DriverSaid(log::errors_since(mark)),
            });
        }
        // SAFETY: the EAL is initialised (checked above).
        let main = unsafe { sys::rte_get_main_lcore() };
        Ok(Eal { inner: Arc::new(EalInner { main_lcore: LcoreId(main), init_errors: log::errors_since(mark) }) })
    }

    pub fn main_lcore(&self) -> LcoreId {
        self.inner.main_lcore
    }

    /// TSC ticks per second as measured by the EAL at start-up.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: the EAL is initialised: `self` proves it and keeps it so.
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// What DPDK logged about `device` failing during `rte_eal_init` (its probe), if anything.
    /// Lines of the probe of one device run up to "failed to initialize <device> device".
    pub(crate) fn probe_errors(&self, device: &str) -> Vec<String> {
        let errs = &self.inner.init_errors;
        let own_end = format!("failed to initialize {device} device");
        let Some(end) = errs.iter().position(|l| l.contains(&own_end)) else {
            return Vec::new();
        };
        let start = errs[..end].iter().rposition(|l| l.contains("failed to initialize")).map_or(0, |i| i + 1);
        let own: Vec<String> = errs[start..end].to_vec();
        if own.is_empty() {
            vec![errs[end].clone()]
        } else {
            own
        }
    }
}

/// Reads the TSC. Cheap (an `rdtsc`, inlined on x86-64: DPDK's is a call), callable from any
/// thread; the same counter DPDK's `rte_get_tsc_hz` calibrates.
#[inline]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc reads a counter; every x86-64 CPU has it and it touches no memory.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rte_rdtsc only reads the CPU's cycle counter.
    unsafe {
        sys::rte_rdtsc()
    }
}
