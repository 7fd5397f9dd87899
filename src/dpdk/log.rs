//! DPDK's log, routed into `tracing` (target `dpdk`) instead of DPDK's own stderr writer.
//!
//! `route` installs a stream (glibc `fopencookie`, see `dpdk-sys/shim.c`) with
//! `rte_openlog_stream` before `rte_eal_init`. Each message arrives here with its level:
//! errors and warnings keep their level, routine NOTICE/INFO lines (TELEMETRY, hugepage
//! reports) become `debug` so they show only with `-v` or `PCAPD_LOG=debug`.
//!
//! Errors and warnings are also kept, numbered, in a small ring, so that a failed start can
//! quote the driver's own reason ("Couldn't open x.pcap", "At least 2000 mbufs per queue is
//! required"): `mark` before the call, `errors_since(mark)` after it failed. While a `Hold`
//! exists (the start-up of the data plane) they are logged at `debug` only: a start that fails
//! quotes them in its error, one that succeeds replays them at their own level (`release`).
use std::collections::VecDeque;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use dpdk_sys as sys;

use super::errno::{DpdkError, Errno};

/// Error and warning lines kept for quoting.
const KEPT: usize = 64;

/// Messages DPDK logs as warnings on every start that need no action (pcapd does not use the
/// legacy telemetry socket): shown as routine lines.
const ROUTINE: &[&str] = &["TELEMETRY: "];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Error,
    Warning,
    Routine,
    Debug,
}

impl Severity {
    fn of(level: u32) -> Severity {
        match level {
            0..=sys::RTE_LOG_ERR => Severity::Error,
            sys::RTE_LOG_WARNING => Severity::Warning,
            sys::RTE_LOG_NOTICE | sys::RTE_LOG_INFO => Severity::Routine,
            _ => Severity::Debug,
        }
    }
}

/// One kept error or warning line.
#[derive(Debug, Clone)]
struct Kept {
    seq: u64,
    severity: Severity,
    text: String,
}

struct State {
    /// Bytes of a message not yet ended by a newline (a message longer than stdio's buffer
    /// arrives in several writes).
    partial: String,
    partial_severity: Option<Severity>,
    kept: VecDeque<Kept>,
    /// Lines held back while a `Hold` exists, replayed by `Hold::release`.
    held: Vec<Kept>,
}

static STATE: Mutex<State> =
    Mutex::new(State { partial: String::new(), partial_severity: None, kept: VecDeque::new(), held: Vec::new() });
static SEQ: AtomicU64 = AtomicU64::new(0);
static HOLDING: AtomicBool = AtomicBool::new(false);
static ROUTE: Once = Once::new();

/// Routes DPDK's log into `tracing`. Idempotent; call before `rte_eal_init`.
pub(crate) fn route() -> Result<(), DpdkError> {
    let mut rc = 0;
    ROUTE.call_once(|| {
        // SAFETY: `on_log` is a plain `extern "C"` function valid for the life of the process;
        // the shim keeps the FILE* it creates open for the life of the process as well.
        rc = unsafe { sys::pcapd_log_route(Some(on_log)) };
    });
    if rc < 0 {
        return Err(DpdkError::LogStream(Errno(rc)));
    }
    Ok(())
}

extern "C" fn on_log(level: u32, buf: *const c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    // SAFETY: the shim passes stdio's buffer and its length, valid for the duration of this call.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    let text = String::from_utf8_lossy(bytes);
    // A panic must not unwind into C: `take` poisoned state instead of unwrapping.
    let mut st = match STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let severity = Severity::of(level);
    st.partial_severity.get_or_insert(severity);
    st.partial.push_str(&text);
    while let Some(nl) = st.partial.find('\n') {
        let line: String = st.partial.drain(..=nl).collect();
        let sev = st.partial_severity.unwrap_or(severity);
        emit(&mut st, sev, line.trim_end());
    }
    if st.partial.is_empty() {
        st.partial_severity = None;
    }
}

fn emit(st: &mut State, severity: Severity, line: &str) {
    if line.is_empty() {
        return;
    }
    let holding = HOLDING.load(Ordering::Acquire);
    let severity = if ROUTINE.iter().any(|p| line.starts_with(p)) { Severity::Routine } else { severity };
    match severity {
        Severity::Error | Severity::Warning => {
            let k = Kept { seq: SEQ.fetch_add(1, Ordering::AcqRel) + 1, severity, text: line.to_string() };
            if holding {
                tracing::debug!(target: "dpdk", "{line}");
                st.held.push(k.clone());
            } else {
                log_at(severity, line);
            }
            if st.kept.len() == KEPT {
                st.kept.pop_front();
            }
            st.kept.push_back(k);
        }
        Severity::Routine => tracing::debug!(target: "dpdk", "{line}"),
        Severity::Debug => tracing::trace!(target: "dpdk", "{line}"),
    }
}

fn log_at(severity: Severity, line: &str) {
    match severity {
        Severity::Error => tracing::error!(target: "dpdk", "{line}"),
        Severity::Warning => tracing::warn!(target: "dpdk", "{line}"),
        Severity::Routine => tracing::debug!(target: "dpdk", "{line}"),
        Severity::Debug => tracing::trace!(target: "dpdk", "{line}"),
    }
}

/// A position in the log: `errors_since` returns what was logged after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

pub fn mark() -> Mark {
    Mark(SEQ.load(Ordering::Acquire))
}

/// Error lines (warnings too when there is no error) DPDK logged after `mark`, each without
/// the `func(): ` / `EAL: ` prefix.
pub fn errors_since(mark: Mark) -> Vec<String> {
    let st = match STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let after: Vec<&Kept> = st.kept.iter().filter(|k| k.seq > mark.0).collect();
    let errors: Vec<&Kept> = after.iter().copied().filter(|k| k.severity == Severity::Error).collect();
    let chosen = if errors.is_empty() { after } else { errors };
    chosen.into_iter().map(|k| strip_prefix(&k.text).to_string()).collect()
}

/// `open_single_rx_pcap(): Couldn't open x` → `Couldn't open x`; `EAL: ...` → `...`.
fn strip_prefix(line: &str) -> &str {
    if let Some((head, rest)) = line.split_once(": ") {
        let is_func = head.ends_with("()") && !head.contains(' ');
        let is_type =
            !head.is_empty() && head.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
        if is_func || is_type {
            return strip_prefix(rest);
        }
    }
    line
}

/// While it exists, DPDK's errors and warnings are logged at `debug` and kept back: the data
/// plane's start either fails (and quotes them) or calls `release` (and they are logged).
#[must_use = "dropping the hold discards the held lines; call release() after a successful start"]
pub struct Hold {
    _private: (),
}

pub fn hold() -> Hold {
    HOLDING.store(true, Ordering::Release);
    Hold { _private: () }
}

impl Hold {
    /// Logs what was held at its own level.
    pub fn release(self) {
        HOLDING.store(false, Ordering::Release);
        let held = {
            let mut st = match STATE.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            std::mem::take(&mut st.held)
        };
        for k in held {
            log_at(k.severity, &k.text);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        HOLDING.store(false, Ordering::Release);
        if let Ok(mut st) = STATE.lock() {
            st.held.clear();
        }
    }
}

/// The driver's reason as it is appended to an error: `: line; line` or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverSaid(pub Vec<String>);

impl std::fmt::Display for DriverSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.0.is_empty() {
            write!(f, ": {}", self.0.join("; "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_functions_and_log_types_are_stripped() {
        assert_eq!(
            strip_prefix("open_single_rx_pcap(): Couldn't open /x: /x: No such file or directory"),
            "Couldn't open /x: /x: No such file or directory"
        );
        assert_eq!(strip_prefix("EAL: Bus (vdev) probe failed."), "Bus (vdev) probe failed.");
        assert_eq!(
            strip_prefix("Couldn't open t.txt: unknown file format"),
            "Couldn't open t.txt: unknown file format"
        );
    }

    #[test]
    fn driver_said_renders_nothing_when_empty() {
        assert_eq!(DriverSaid::default().to_string(), "");
        assert_eq!(DriverSaid(vec!["a".into(), "b".into()]).to_string(), ": a; b");
    }
}
