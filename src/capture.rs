//! `pcapd capture`: a one-shot capture from DPDK ports into PCAP files, like tcpdump `-c/-w`.
//!
//! Start-up order: output file (fail fast), EAL, mempool, ports, writers, RX lcores. It stops at
//! the first limit reached, at the end of a finite source, or on SIGINT/SIGTERM; then shuts down
//! in reverse: stop RX, wait for the lcores, drain and close the files, stop ports, EAL last.
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel;

use crate::config::Config;
use crate::dataplane::active::{ActiveCapture, ActiveSet, Budget, CaptureCounters};
use crate::dataplane::{DataPlane, DataPlaneError};
use crate::dpdk::EthStats;
use crate::filter::FilterV1;
use crate::pcap::{PcapSink, SinkError};

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub filter: FilterV1,
    pub packet_limit: Option<u64>,
    pub byte_limit: Option<u64>,
    pub duration: Option<Duration>,
    pub snaplen: u32,
    pub output: PathBuf,
    /// Only these ports (`-i`); all configured ports when empty.
    pub devices: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
    #[error(transparent)]
    Output(#[from] SinkError),
    #[error("-i {0}: no configured port has this device name")]
    UnknownDevice(String),
    #[error("RX lcore failed: {0}")]
    RxPanic(String),
    #[error("writing the capture failed: {0}")]
    Write(String),
    #[error("cannot install the SIGINT/SIGTERM handler: {0}")]
    Signal(std::io::Error),
}

impl CaptureError {
    /// Whether the command line or config is at fault (exit code 2) rather than the system.
    pub fn is_bad_input(&self) -> bool {
        match self {
            CaptureError::DataPlane(e) => e.is_bad_input(),
            CaptureError::UnknownDevice(_) => true,
            CaptureError::Output(_) | CaptureError::RxPanic(_) | CaptureError::Write(_) | CaptureError::Signal(_) => {
                false
            }
        }
    }
}

/// Why the capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Limit,
    Duration,
    EndOfInput,
    Signal,
    /// The file could not be written (disk full, a FIFO's reader gone): nothing more would land.
    WriteFailed,
}

/// What a capture did, printed at the end.
#[derive(Debug, Clone)]
pub struct Summary {
    pub received: u64,
    pub matched: u64,
    pub written: u64,
    pub written_bytes: u64,
    pub dropped_ring_full: u64,
    pub dropped_writer_error: u64,
    pub nic: EthStats,
    /// From the RX cores' start until they stopped.
    pub elapsed: Duration,
    /// From the RX cores' start until the last file was closed (drained, fsynced, renamed).
    pub complete: Duration,
    pub reason: StopReason,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let pps = if secs > 0.0 { self.received as f64 / secs } else { 0.0 };
        let reason = match self.reason {
            StopReason::Limit => "limit reached",
            StopReason::Duration => "duration elapsed",
            StopReason::EndOfInput => "end of input",
            StopReason::Signal => "interrupted",
            StopReason::WriteFailed => "writing failed",
        };
        writeln!(
            f,
            "{} packets received, {} matched, {} written ({} bytes)",
            self.received, self.matched, self.written, self.written_bytes
        )?;
        writeln!(
            f,
            "{} dropped (ring full {}, writer error {})",
            self.dropped_ring_full + self.dropped_writer_error,
            self.dropped_ring_full,
            self.dropped_writer_error
        )?;
        writeln!(
            f,
            "NIC: ipackets {} imissed {} ierrors {} rx_nombuf {}",
            self.nic.ipackets, self.nic.imissed, self.nic.ierrors, self.nic.rx_nombuf
        )?;
        writeln!(
            f,
            "{secs:.3} s, {pps:.0} packets/s, stopped: {reason}; files complete after {:.3} s",
            self.complete.as_secs_f64()
        )?;
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// How often the main lcore checks limits, signals and the source.
const TICK: Duration = Duration::from_millis(5);
/// The writer opens the file at once (it is not receiving yet): this only bounds a stuck one.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(cfg: &Config, req: &CaptureRequest) -> Result<Summary, CaptureError> {
    let ports: Vec<_> = if req.devices.is_empty() {
        cfg.ports.iter().collect()
    } else {
        let mut v = Vec::new();
        for d in &req.devices {
            v.push(cfg.ports.iter().find(|p| &p.device == d).ok_or_else(|| CaptureError::UnknownDevice(d.clone()))?);
        }
        v
    };
    // A capture from files only ends with them: count their packets to know when.
    let finite = ports.iter().all(|p| p.is_finite()).then(|| {
        let mut total = Some(0u64);
        for f in ports.iter().flat_map(|p| p.pcap_files()) {
            total = match (total, crate::pcap::format::count_records(&f)) {
                (Some(t), Ok(Some(n))) => Some(t + n),
                _ => None,
            };
        }
        total
    });

    // The output first: an unwritable path fails before DPDK starts.
    let sink = PcapSink::create(&req.output, cfg.rotate_policy(), cfg.writer.timestamp_precision, req.snaplen)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted)).map_err(CaptureError::Signal)?;
    }

    let counters = Arc::new(CaptureCounters::default());
    let budget = Arc::new(Budget::new(req.packet_limit, req.byte_limit));
    let mut dp = DataPlane::start(cfg, &ports, None)?;
    // The file is opened and the capture published before the RX cores poll: a finite source
    // loses none of its first packets.
    let control = dp.control();
    let lease = control
        .open(0, sink, Arc::clone(&counters), None, OPEN_TIMEOUT)
        .map_err(|e| CaptureError::Write(e.to_string()))?;
    control.publish(ActiveSet::new(vec![ActiveCapture::new(
        &lease,
        req.filter.compile(),
        req.snaplen,
        cfg.writer.timestamp_precision,
        Arc::clone(&budget),
        Arc::clone(&counters),
    )]));
    dp.launch_rx()?;
    // Capture time (`--duration`, packets/s) starts once the RX cores poll: not during EAL
    // memory set-up or while a PMD loads its files (seconds for a large `infinite_rx` file).
    let started_at = Instant::now();

    let reason = wait_for_end(&dp.stats, &budget, &counters, req.duration, finite, &interrupted, started_at);
    // The RX cores are stopped and waited for: nothing feeds the lease any more.
    let rx_failure = dp.stop_rx().err();
    let elapsed = started_at.elapsed();
    let (reply_tx, reply_rx) = channel::bounded(1);
    let report = if lease.close(reply_tx) { reply_rx.recv().ok() } else { None };
    let complete = started_at.elapsed();
    let nic = dp.nic_totals();
    let totals = dp.stats.totals();
    drop(dp);

    if let Some(msg) = rx_failure {
        return Err(CaptureError::RxPanic(msg));
    }
    let report = report.ok_or_else(|| CaptureError::Write("the writer thread exited early".into()))?;
    if let Some(e) = report.error {
        // Like tcpdump on a full disk, what reached the disk is kept (cut to whole records).
        let kept = match report.files.as_slice() {
            [] => String::new(),
            files => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                format!("; the {} packets written before it are in {}", report.packets, names.join(", "))
            }
        };
        return Err(CaptureError::Write(format!("{e}{kept}")));
    }
    let files = report.files;
    Ok(Summary {
        received: totals.rx_packets,
        matched: counters.matched.load(Relaxed),
        written: counters.written.load(Relaxed),
        written_bytes: report.bytes,
        dropped_ring_full: counters.dropped_ring_full.load(Relaxed),
        dropped_writer_error: counters.dropped_writer_error.load(Relaxed),
        nic,
        elapsed,
        complete,
        reason,
        files,
    })
}

/// With no packet for this long, a finite source whose length is unknown has ended.
const QUIET_END: Duration = Duration::from_millis(500);

/// Blocks the main lcore until a stop condition holds. `finite` is `None` for live sources,
/// `Some(Some(n))` for files holding `n` packets, `Some(None)` for files of unknown length.
fn wait_for_end(
    stats: &crate::dataplane::stats::StatsReader,
    budget: &Budget,
    counters: &CaptureCounters,
    duration: Option<Duration>,
    finite: Option<Option<u64>>,
    interrupted: &AtomicBool,
    started_at: Instant,
) -> StopReason {
    let mut last_rx = stats.totals().rx_packets;
    let mut last_change = Instant::now();
    loop {
        std::thread::sleep(TICK);
        if interrupted.load(Relaxed) {
            return StopReason::Signal;
        }
        if budget.is_exhausted() {
            return StopReason::Limit;
        }
        if counters.dropped_writer_error.load(Relaxed) > 0 {
            return StopReason::WriteFailed;
        }
        if duration.is_some_and(|d| started_at.elapsed() >= d) {
            return StopReason::Duration;
        }
        let Some(expected) = finite else { continue };
        let rx = stats.totals().rx_packets;
        if expected.is_some_and(|n| rx >= n) {
            return StopReason::EndOfInput;
        }
        // Unknown length, or packets lost to an empty mempool (rx_nombuf): end when quiet.
        if rx != last_rx {
            last_rx = rx;
            last_change = Instant::now();
        } else if last_change.elapsed() >= QUIET_END {
            return StopReason::EndOfInput;
        }
    }
}
