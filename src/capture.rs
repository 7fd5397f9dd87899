//! `pcapd capture`: a one-shot capture from DPDK ports into PCAP files, like tcpdump `-c/-w`.
//!
//! Start-up order: signal handlers, output file (fail fast), EAL, mempool, ports, writers, RX
//! lcores. It stops at the first limit reached, at the end of a finite source, or on
//! SIGINT/SIGTERM; then shuts down in reverse: stop RX, wait for the lcores, drain and close the
//! files, stop ports, EAL last. While it runs, the main lcore prints a status line every second
//! (when asked) and the statistics on SIGUSR1, as tcpdump does on SIGINFO/SIGUSR1.
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel;

use crate::config::Config;
use crate::dataplane::active::{ActiveCapture, ActiveSet, Budget, CaptureCounters};
use crate::dataplane::{DataPlane, DataPlaneError};
use crate::dpdk::{Eal, EthStats, PortInfo};
use crate::filter::FilterV1;
use crate::pcap::{PcapSink, RotatePolicy, SinkError, TcpdumpNames};

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub filter: FilterV1,
    /// A tcpdump expression (ANDed with `filter`), already compiled once by libpcap.
    pub expression: Option<String>,
    pub packet_limit: Option<u64>,
    pub byte_limit: Option<u64>,
    pub duration: Option<Duration>,
    pub snaplen: u32,
    pub output: PathBuf,
    /// Only these ports (`-i`); all configured ports when empty.
    pub devices: Vec<String>,
    /// tcpdump's `-C`/`-G`/`-W`: its file names and rotation (else the config's rotation and
    /// pcapd's names).
    pub tcpdump_files: Option<TcpdumpFiles>,
    /// A status line on stderr every second.
    pub progress: Progress,
}

/// Files named and rotated as tcpdump's `-C`/`-G`/`-W` do.
#[derive(Debug, Clone)]
pub struct TcpdumpFiles {
    pub names: TcpdumpNames,
    pub policy: RotatePolicy,
}

/// The status line every second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Off,
    /// Rewritten in place (stderr is a terminal).
    InPlace,
    /// One line per second (`-v` when stderr is not a terminal).
    Lines,
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
    #[error("cannot install the SIGINT/SIGTERM/SIGUSR1 handler: {0}")]
    Signal(std::io::Error),
    #[error("expression: {0}")]
    Expression(String),
    /// `-w -` and the reader of standard output went away (`| head`): the end, as for tcpdump.
    #[error("the reader of standard output closed it")]
    ReaderClosed,
}

impl CaptureError {
    /// Whether the command line or config is at fault (exit code 2) rather than the system.
    pub fn is_bad_input(&self) -> bool {
        match self {
            CaptureError::DataPlane(e) => e.is_bad_input(),
            CaptureError::Output(e) => e.is_bad_input(),
            CaptureError::UnknownDevice(_) | CaptureError::Expression(_) => true,
            CaptureError::RxPanic(_)
            | CaptureError::Write(_)
            | CaptureError::Signal(_)
            | CaptureError::ReaderClosed => false,
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
            if file.as_os_str() == "-" {
                writeln!(f, "wrote the capture to standard output")?;
            } else {
                writeln!(f, "wrote {}", file.display())?;
            }
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

    // Before anything lasting: SIGUSR1's default action would kill pcapd and leave a
    // `.partial` behind.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted)).map_err(CaptureError::Signal)?;
    }
    let stats_asked = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&stats_asked))
        .map_err(CaptureError::Signal)?;

    // The output first: an unwritable path fails before DPDK starts.
    let precision = cfg.writer.timestamp_precision;
    let sink = match &req.tcpdump_files {
        Some(t) => PcapSink::create_tcpdump(&req.output, t.names.clone(), t.policy, precision, req.snaplen)?,
        None => PcapSink::create(&req.output, cfg.rotate_policy(), precision, req.snaplen)?,
    };

    let counters = Arc::new(CaptureCounters::default());
    let budget = Arc::new(Budget::new(req.packet_limit, req.byte_limit));
    let mut dp = DataPlane::start(cfg, &ports, None)?;
    // The file is opened and the capture published before the RX cores poll: a finite source
    // loses none of its first packets.
    let control = dp.control();
    let program = match &req.expression {
        Some(e) => Some(control.load_expression(e).map_err(CaptureError::Expression)?),
        None => None,
    };
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
    )
    .with_program(program)]));
    dp.launch_rx()?;
    // Capture time (`--duration`, packets/s) starts once the RX cores poll: not during EAL
    // memory set-up or while a PMD loads its files (seconds for a large `infinite_rx` file).
    let started_at = Instant::now();

    let watch = Watch { budget: &budget, counters: &counters, interrupted: &interrupted, stats_asked: &stats_asked };
    let reason = wait_for_end(&dp, &watch, req, finite, started_at);
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
        if req.output.as_os_str() == "-" && e.contains(&std::io::Error::from_raw_os_error(libc::EPIPE).to_string()) {
            return Err(CaptureError::ReaderClosed);
        }
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

/// What the main lcore watches while the capture runs.
struct Watch<'a> {
    budget: &'a Budget,
    counters: &'a CaptureCounters,
    interrupted: &'a AtomicBool,
    /// Set by SIGUSR1: print the statistics and go on.
    stats_asked: &'a AtomicBool,
}

/// How often the status line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Blocks the main lcore until a stop condition holds. `finite` is `None` for live sources,
/// `Some(Some(n))` for files holding `n` packets, `Some(None)` for files of unknown length.
fn wait_for_end(
    dp: &DataPlane,
    w: &Watch<'_>,
    req: &CaptureRequest,
    finite: Option<Option<u64>>,
    started_at: Instant,
) -> StopReason {
    let (stats, budget, counters, duration) = (&dp.stats, w.budget, w.counters, req.duration);
    let mut last_rx = stats.totals().rx_packets;
    let mut last_change = Instant::now();
    let mut shown = (started_at, 0u64);
    let reason = loop {
        std::thread::sleep(TICK);
        if w.stats_asked.swap(false, Relaxed) {
            let s = Status::now(dp, counters, started_at);
            // A line of its own, also under a status line that is rewritten in place.
            let clear = if req.progress == Progress::InPlace { "\r\x1b[K" } else { "" };
            let _ = writeln!(std::io::stderr(), "{clear}pcapd: statistics: {}", s.full());
        }
        if req.progress != Progress::Off && shown.0.elapsed() >= PROGRESS_EVERY {
            let s = Status::now(dp, counters, started_at);
            let secs = shown.0.elapsed().as_secs_f64();
            let rate = (s.received.saturating_sub(shown.1)) as f64 / secs;
            let line =
                format!("{} received, {} written, {} dropped, {rate:.0} packets/s", s.received, s.written, s.dropped());
            let mut err = std::io::stderr().lock();
            let _ = match req.progress {
                Progress::InPlace => write!(err, "\r\x1b[K{line}"),
                _ => writeln!(err, "pcapd: {line}"),
            };
            let _ = err.flush();
            shown = (Instant::now(), s.received);
        }
        if w.interrupted.load(Relaxed) {
            break StopReason::Signal;
        }
        if budget.is_exhausted() {
            break StopReason::Limit;
        }
        if counters.dropped_writer_error.load(Relaxed) > 0 {
            break StopReason::WriteFailed;
        }
        if duration.is_some_and(|d| started_at.elapsed() >= d) {
            break StopReason::Duration;
        }
        let Some(expected) = finite else { continue };
        let rx = stats.totals().rx_packets;
        if expected.is_some_and(|n| rx >= n) {
            break StopReason::EndOfInput;
        }
        // Unknown length, or packets lost to an empty mempool (rx_nombuf): end when quiet.
        if rx != last_rx {
            last_rx = rx;
            last_change = Instant::now();
        } else if last_change.elapsed() >= QUIET_END {
            break StopReason::EndOfInput;
        }
    };
    if req.progress == Progress::InPlace {
        // The summary starts on a clean line.
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    reason
}

/// The counters while the capture runs.
struct Status {
    received: u64,
    matched: u64,
    written: u64,
    dropped_ring_full: u64,
    dropped_writer_error: u64,
    nic: EthStats,
    elapsed: Duration,
}

impl Status {
    fn now(dp: &DataPlane, c: &CaptureCounters, started_at: Instant) -> Status {
        // Downstream first, so that written <= matched <= received in one line.
        let written = c.written.load(Relaxed);
        let matched = c.matched.load(Relaxed);
        Status {
            received: dp.stats.totals().rx_packets,
            matched,
            written,
            dropped_ring_full: c.dropped_ring_full.load(Relaxed),
            dropped_writer_error: c.dropped_writer_error.load(Relaxed),
            nic: dp.nic_totals(),
            elapsed: started_at.elapsed(),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped_ring_full + self.dropped_writer_error + self.nic.imissed + self.nic.rx_nombuf
    }

    /// The SIGUSR1 line: every counter of the final summary so far.
    fn full(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let pps = if secs > 0.0 { self.received as f64 / secs } else { 0.0 };
        format!(
            "{} packets received, {} matched, {} written, {} dropped (ring full {}, writer error {}, \
             NIC imissed {}, rx_nombuf {}), {secs:.3} s, {pps:.0} packets/s",
            self.received,
            self.matched,
            self.written,
            self.dropped(),
            self.dropped_ring_full,
            self.dropped_writer_error,
            self.nic.imissed,
            self.nic.rx_nombuf
        )
    }
}

/// `-D`: the ports DPDK probes with the config's EAL arguments and devices, like `tcpdump -D`.
/// Besides the configured ports, the PCI devices bound to a DPDK driver (vfio-pci, uio) are
/// probed, by address: never a NIC the kernel holds (a PMD that probes one may reset it), and
/// nothing when the EAL arguments say `--no-pci` or choose devices themselves.
pub fn list_ports(cfg: &Config) -> Result<Vec<PortInfo>, CaptureError> {
    let mut args = cfg.eal_args(&format!("pcapd-{}", std::process::id()));
    let own = |opt: &str| cfg.dpdk.eal_args.iter().any(|a| a == opt || a.starts_with(&format!("{opt}=")));
    if !["--no-pci", "-a", "--allow", "-b", "--block"].iter().any(|o| own(o)) {
        let bound = dpdk_bound_pci();
        if !bound.is_empty() {
            args.retain(|a| a != "--no-pci");
            for addr in bound.into_iter().filter(|b| !cfg.ports.iter().any(|p| &p.device == b)) {
                args.extend(["-a".to_string(), addr]);
            }
        }
    }
    let eal = Eal::init(&args).map_err(DataPlaneError::from)?;
    Ok(crate::dpdk::list_ports(&eal))
}

/// PCI addresses bound to a driver DPDK's PMDs work through (from sysfs), sorted.
fn dpdk_bound_pci() -> Vec<String> {
    let mut v = Vec::new();
    for driver in ["vfio-pci", "uio_pci_generic", "igb_uio"] {
        let Ok(dir) = std::fs::read_dir(format!("/sys/bus/pci/drivers/{driver}")) else { continue };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Device links are named by address (0000:3b:00.0); the rest are bind, new_id, …
            if name.len() == 12 && name.as_bytes()[4] == b':' && name.as_bytes()[10] == b'.' {
                v.push(name);
            }
        }
    }
    v.sort();
    v
}

/// Kernel network interfaces (`/sys/class/net`), sorted: what a vdev can capture from
/// (`net_af_packet0,iface=IF`, `net_pcap0,iface=IF`), for `-D`'s hint.
pub fn kernel_interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    v.sort();
    v
}
