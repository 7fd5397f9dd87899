//! Running work on EAL worker lcores (with panic capture).
use std::any::Any;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use dpdk_sys as sys;

use super::eal::Eal;
use super::errno::{DpdkError, Errno};
use super::LcoreId;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Launch {
    job: Job,
    panic: Arc<Mutex<Option<String>>>,
}

/// Work running on a worker lcore; `wait` joins it.
#[must_use = "an lcore job must be waited for"]
pub struct LcoreJob {
    lcore: LcoreId,
    panic: Arc<Mutex<Option<String>>>,
    /// The lcore runs inside the EAL: no cleanup before the job was waited for (or dropped).
    _eal: Eal,
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Launch> leaked by `launch` for exactly this call.
    let launch = unsafe { Box::from_raw(arg.cast::<Launch>()) };
    let Launch { job, panic } = *launch;
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(()) => 0,
        Err(payload) => {
            if let Ok(mut slot) = panic.lock() {
                *slot = Some(panic_text(payload.as_ref()));
            }
            -1
        }
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Starts `job` on worker lcore `lcore` (which must be enabled and idle). The job's
/// `LcoreJob` keeps the EAL alive until it has been waited for.
pub fn launch(eal: &Eal, lcore: LcoreId, job: impl FnOnce() + Send + 'static) -> Result<LcoreJob, DpdkError> {
    // SAFETY: plain query; `eal` proves the EAL is initialised.
    if unsafe { sys::rte_lcore_is_enabled(lcore.0) } == 0 {
        return Err(DpdkError::LcoreNotEnabled { lcore: lcore.0 });
    }
    let panic = Arc::new(Mutex::new(None));
    let arg = Box::into_raw(Box::new(Launch { job: Box::new(job), panic: Arc::clone(&panic) }));
    // SAFETY: the trampoline takes back ownership of `arg` exactly once when it runs.
    let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg.cast(), lcore.0) };
    if rc != 0 {
        // SAFETY: the launch failed, so the trampoline will never run: reclaim the box.
        drop(unsafe { Box::from_raw(arg) });
        return Err(DpdkError::Launch { lcore: lcore.0, errno: Errno(rc) });
    }
    Ok(LcoreJob { lcore, panic, _eal: eal.clone() })
}

impl LcoreJob {
    /// Blocks until the job returns. `Err` carries the panic message if it panicked.
    pub fn wait(self) -> Result<(), String> {
        // SAFETY: this lcore was launched by us and `_eal` keeps the EAL initialised; waiting on
        // it is always valid.
        let rc = unsafe { sys::rte_eal_wait_lcore(self.lcore.0) };
        if rc == 0 {
            return Ok(());
        }
        let msg = self.panic.lock().ok().and_then(|mut s| s.take());
        Err(msg.unwrap_or_else(|| format!("lcore {} job failed with {rc}", self.lcore.0)))
    }
}
