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

use crate::active::{self, ActiveCapture, ActiveSet, Budget, CaptureCounters};
use crate::clock::TscClock;
use crate::config::Config;
use crate::dpdk::{self, DpdkError, Eal, EthStats, LcoreId, Mempool, Port, PortSetup, RxQueue};
use crate::filter::FilterV1;
use crate::handoff::Rings;
use crate::pcap::{PcapSink, SinkError};
use crate::rx::RxWorker;
use crate::stats::per_core_stats;
use crate::writer::{Writer, WriterCmd};

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
    Dpdk(#[from] DpdkError),
    #[error(transparent)]
    Output(#[from] SinkError),
    #[error("-i {0}: no configured port has this device name")]
    UnknownDevice(String),
    #[error("RX lcore failed: {0}")]
    RxPanic(String),
    #[error("writing the capture failed: {0}")]
    Write(String),
    #[error("cannot start a writer thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot install the SIGINT/SIGTERM handler: {0}")]
    Signal(std::io::Error),
}

/// Why the capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Limit,
    Duration,
    EndOfInput,
    Signal,
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
    pub elapsed: Duration,
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
        writeln!(f, "{secs:.3} s, {pps:.0} packets/s, stopped: {reason}")?;
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// How often the main lcore checks limits, signals and the source.
const TICK: Duration = Duration::from_millis(5);

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

    let eal = Eal::init(&cfg.eal_args(&format!("pcapd-{}", std::process::id())))?;
    let replayed: u64 = ports
        .iter()
        .filter(|p| p.replays_from_memory())
        .flat_map(|p| p.pcap_files())
        .filter_map(|f| crate::pcap::format::count_records(&f).ok().flatten())
        .sum();
    let pool = Arc::new(Mempool::new("pcapd_rx", cfg.mempool_size(replayed), 256, dpdk::MBUF_DEFAULT_BUF_SIZE, -1)?);
    let mut started = Vec::new();
    let mut queues: Vec<RxQueue> = Vec::new();
    for p in &ports {
        let setup = PortSetup { rx_queues: p.rx_queues, rx_descriptors: p.rx_descriptors, promiscuous: p.promiscuous };
        let (port, qs) = Port::start(&p.device, &setup, Arc::clone(&pool))?;
        tracing::info!("{} ({}) started with {} RX queue(s)", port.name(), port.driver(), qs.len());
        started.push(port);
        queues.extend(qs);
    }

    let rx_cores = &cfg.dpdk.rx_cores;
    let mut per_core: Vec<Vec<RxQueue>> = (0..rx_cores.len()).map(|_| Vec::new()).collect();
    for (i, q) in queues.into_iter().enumerate() {
        per_core[i % rx_cores.len()].push(q);
    }

    let counters = Arc::new(CaptureCounters::default());
    let budget = Arc::new(Budget::new(req.packet_limit, req.byte_limit));
    let active = active::shared(ActiveSet::new(vec![ActiveCapture {
        slot: 0,
        writer: 0,
        matcher: req.filter.compile(),
        snaplen: req.snaplen,
        budget: Arc::clone(&budget),
        counters: Arc::clone(&counters),
    }]));

    let rings = Rings::new(rx_cores.len(), cfg.writer.threads, cfg.writer.ring_size);
    let mut writer_tx = Vec::new();
    let mut writer_threads = Vec::new();
    let mut sink = Some(sink);
    for w in 0..cfg.writer.threads {
        let (tx, rx) = channel::unbounded();
        if let Some(sink) = sink.take() {
            // Queued before writer 0 starts, so its file is open before any record can arrive.
            let _ = tx.send(WriterCmd::Open { slot: 0, sink: Box::new(sink), counters: Arc::clone(&counters) });
        }
        let writer = Writer { name: format!("pcapd-writer{w}"), rings: rings.for_writer(w), cmds: rx };
        let h = std::thread::Builder::new()
            .name(writer.name.clone())
            .spawn(move || writer.run())
            .map_err(CaptureError::Thread)?;
        writer_tx.push(tx);
        writer_threads.push(h);
    }

    let clock = TscClock::new(eal.tsc_hz());
    let stop = Arc::new(AtomicBool::new(false));
    let (stats_w, stats) = per_core_stats(rx_cores.len());
    let started_at = Instant::now();
    let mut jobs = Vec::new();
    let mut launch_err = None;
    for ((core, qs), sw) in rx_cores.iter().zip(per_core).zip(stats_w) {
        let worker = RxWorker {
            queues: qs,
            active: Arc::clone(&active),
            rings: rings.for_core(jobs.len()),
            stats: sw,
            clock,
            stop: Arc::clone(&stop),
            idle_backoff: cfg.dpdk.idle_backoff,
        };
        match dpdk::launch(LcoreId(*core), move || worker.run()) {
            Ok(j) => jobs.push(j),
            Err(e) => {
                launch_err = Some(e);
                break;
            }
        }
    }

    let reason = if launch_err.is_some() {
        StopReason::Signal
    } else {
        wait_for_end(&stats, &budget, req.duration, finite, &interrupted, started_at)
    };
    stop.store(true, Relaxed);
    let mut rx_failure = None;
    for j in jobs {
        if let Err(msg) = j.wait() {
            rx_failure.get_or_insert(msg);
        }
    }
    let elapsed = started_at.elapsed();

    let (reply_tx, reply_rx) = channel::bounded(1);
    let _ = writer_tx[0].send(WriterCmd::Close { slot: 0, reply: reply_tx });
    let report = reply_rx.recv().ok();
    for tx in &writer_tx {
        let _ = tx.send(WriterCmd::Shutdown);
    }
    for h in writer_threads {
        let _ = h.join();
    }
    let nic = started.iter().map(Port::stats).fold(EthStats::default(), |a, s| EthStats {
        ipackets: a.ipackets + s.ipackets,
        ibytes: a.ibytes + s.ibytes,
        imissed: a.imissed + s.imissed,
        ierrors: a.ierrors + s.ierrors,
        rx_nombuf: a.rx_nombuf + s.rx_nombuf,
    });
    drop(started);
    drop(active);
    drop(pool);
    drop(eal);

    if let Some(e) = launch_err {
        return Err(e.into());
    }
    if let Some(msg) = rx_failure {
        return Err(CaptureError::RxPanic(msg));
    }
    let report = report.ok_or_else(|| CaptureError::Write("the writer thread exited early".into()))?;
    let files = report.files.map_err(CaptureError::Write)?;
    let totals = stats.totals();
    Ok(Summary {
        received: totals.rx_packets,
        matched: counters.matched.load(Relaxed),
        written: counters.written.load(Relaxed),
        written_bytes: report.bytes,
        dropped_ring_full: counters.dropped_ring_full.load(Relaxed),
        dropped_writer_error: counters.dropped_writer_error.load(Relaxed),
        nic,
        elapsed,
        reason,
        files,
    })
}

/// With no packet for this long, a finite source whose length is unknown has ended.
const QUIET_END: Duration = Duration::from_millis(500);

/// Blocks the main lcore until a stop condition holds. `finite` is `None` for live sources,
/// `Some(Some(n))` for files holding `n` packets, `Some(None)` for files of unknown length.
fn wait_for_end(
    stats: &crate::stats::StatsReader,
    budget: &Budget,
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
