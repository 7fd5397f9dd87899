//! The EAL guard: initialises DPDK once per process and cleans it up after everything else.
//!
//! Every other DPDK object (`Mempool`, `Port`, `RxQueue`) borrows nothing from `Eal` at the type
//! level, so `app`/`oneshot` own the `Eal` and drop it last; `Eal::drop` calls `rte_eal_cleanup`.
use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

use super::errno::{DpdkError, Errno};
use super::LcoreId;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is initialised. Not `Clone`: one per process.
pub struct Eal {
    main_lcore: LcoreId,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (without the program name).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalTwice);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("pcapd").map_err(|_| DpdkError::BadArg("pcapd".into()))?);
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| DpdkError::BadArg(a.clone()))?);
        }
        // rte_eal_init may permute argv; it gets its own array of pointers into `owned`.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len()).map_err(|_| DpdkError::BadArg("too many arguments".into()))?;
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call; EAL only
        // reorders the pointer array, never writes through the pointers.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::EalInit { errno: Errno::last(), args: args.join(" ") });
        }
        // SAFETY: the EAL is initialised (checked above).
        let main = unsafe { sys::rte_get_main_lcore() };
        Ok(Eal { main_lcore: LcoreId(main) })
    }

    pub fn main_lcore(&self) -> LcoreId {
        self.main_lcore
    }

    /// TSC ticks per second as measured by the EAL at start-up.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: the EAL is initialised.
        unsafe { sys::rte_get_tsc_hz() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: every port, queue and mempool was dropped before the guard (the owners drop
        // them first); rte_eal_cleanup releases hugepages and runtime files.
        unsafe { sys::rte_eal_cleanup() };
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
