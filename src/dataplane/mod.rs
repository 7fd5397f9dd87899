//! The data plane as one object: EAL, mempool, ports, writer threads and RX lcores, started in
//! that order and stopped in reverse. Used by `pcapd capture` (one capture, then exit) and by
//! the appliance (captures come and go through `CaptureControl`: a writer issues a `Lease` for
//! each capture's sink, the capture is published to RX cores in an `ActiveSet`, and the lease
//! is closed once no RX core uses the capture any more).
pub mod active;
pub mod clock;
pub mod handoff;
pub mod lease;
pub mod rx;
pub mod stats;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Sender};
use crossbeam::queue::ArrayQueue;

use self::active::{ActiveSet, CaptureCounters, SharedActiveSet};
use self::clock::TscClock;
use self::handoff::Rings;
use self::lease::Lease;
use self::rx::RxWorker;
use self::stats::{per_core_stats, Epoch, StatsReader};
use self::writer::{OpenRefused, Watch, Writer, WriterCmd};
use crate::config::{Config, PortConfig};
use crate::dpdk::{self, DpdkError, Eal, EthStats, LcoreId, LcoreJob, Mempool, Port, PortSetup, RxQueue};
use crate::pcap::PcapSink;
use crate::samples::{SampleRec, SampleStats, Sampler};

/// Continuous sampling settings for the RX cores.
#[derive(Debug, Clone)]
pub struct SamplingSpec {
    pub one_in: u32,
    pub max_per_second: u64,
    pub snaplen: usize,
    pub ring_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
    #[error("cannot start thread {name}: {source}")]
    Thread { name: String, source: std::io::Error },
}

impl DataPlaneError {
    /// Whether the config or arguments are at fault (exit code 2) rather than the system.
    pub fn is_bad_input(&self) -> bool {
        match self {
            DataPlaneError::Dpdk(e) => e.is_bad_input(),
            DataPlaneError::Thread { .. } => false,
        }
    }
}

/// A running data plane. Dropping it stops everything in order.
pub struct DataPlane {
    pub active: SharedActiveSet,
    pub stats: StatsReader,
    /// Per RX core, the sample ring (consumed by the sample store), when sampling.
    pub sample_rings: Vec<Arc<ArrayQueue<SampleRec>>>,
    pub sample_stats: Arc<SampleStats>,
    stop: Arc<AtomicBool>,
    /// RX workers built by `start`, launched by `launch_rx`.
    unlaunched: Vec<(LcoreId, RxWorker)>,
    jobs: Vec<LcoreJob>,
    control: CaptureControl,
    stray: Vec<Arc<AtomicU64>>,
    writer_threads: Vec<JoinHandle<()>>,
    /// Each port holds its mempool, which holds the EAL: they are released in the right order
    /// whatever order fields drop in (see `dpdk`).
    ports: Vec<Port>,
    eal: Eal,
}

impl DataPlane {
    /// Starts the EAL, mempool, ports and writer threads, and builds the RX workers with an
    /// empty capture set. `launch_rx` starts polling: in between, captures can be opened and
    /// published, so that a capture of a finite source misses none of its packets.
    pub fn start(
        cfg: &Config,
        ports: &[&PortConfig],
        sampling: Option<SamplingSpec>,
    ) -> Result<DataPlane, DataPlaneError> {
        // DPDK's errors and warnings are quoted by a failed start, or logged once it succeeded.
        let log_hold = dpdk::log::hold();
        let eal = Eal::init(&cfg.eal_args(&format!("pcapd-{}", std::process::id())))?;
        let replayed: u64 = ports
            .iter()
            .filter(|p| p.replays_from_memory())
            .flat_map(|p| p.pcap_files())
            .filter_map(|f| crate::pcap::format::count_records(&f).ok().flatten())
            .sum();
        let pool =
            Arc::new(Mempool::new(&eal, "pcapd_rx", cfg.mempool_size(replayed), 256, dpdk::MBUF_DEFAULT_BUF_SIZE, -1)?);
        let rx_cores = &cfg.dpdk.rx_cores;
        let (stats_w, stats) = per_core_stats(rx_cores.len());
        let active = active::shared(ActiveSet::default());
        let sample_stats = Arc::new(SampleStats::default());
        let sample_rings: Vec<Arc<ArrayQueue<SampleRec>>> = match &sampling {
            Some(s) => (0..rx_cores.len()).map(|_| Arc::new(ArrayQueue::new(s.ring_size))).collect(),
            None => Vec::new(),
        };
        let control = CaptureControl {
            active: Arc::clone(&active),
            writers: Vec::new(),
            stats: stats.clone(),
            published: Arc::new(Mutex::new(0)),
            eal: Some(eal.clone()),
            programs: Arc::default(),
        };
        let mut dp = DataPlane {
            active,
            stats,
            sample_rings,
            sample_stats,
            stop: Arc::new(AtomicBool::new(false)),
            unlaunched: Vec::new(),
            jobs: Vec::new(),
            control,
            stray: Vec::new(),
            writer_threads: Vec::new(),
            ports: Vec::new(),
            eal,
        };
        let mut queues: Vec<RxQueue> = Vec::new();
        for p in ports {
            let setup = PortSetup {
                rx_queues: p.rx_queues,
                rx_descriptors: p.rx_descriptors,
                promiscuous: p.promiscuous,
                args: p.args.clone(),
            };
            let (port, qs) = Port::start(&dp.eal, &p.device, &setup, Arc::clone(&pool))?;
            tracing::info!("{} ({}) started with {} RX queue(s)", port.name(), port.driver(), qs.len());
            dp.ports.push(port);
            queues.extend(qs);
        }
        let mut per_core: Vec<Vec<RxQueue>> = (0..rx_cores.len()).map(|_| Vec::new()).collect();
        for (i, q) in queues.into_iter().enumerate() {
            per_core[i % rx_cores.len()].push(q);
        }

        let Rings { by_core, by_writer } = Rings::new(rx_cores.len(), cfg.writer.threads, cfg.writer.ring_bytes);
        for (w, consumers) in by_writer.into_iter().enumerate() {
            let (tx, rx) = channel::unbounded();
            let writer = Writer::new(w, consumers, rx, tx.clone());
            let name = writer.name().to_string();
            dp.stray.push(writer.stray_records());
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || writer.run())
                .map_err(|source| DataPlaneError::Thread { name, source })?;
            dp.control.writers.push(tx);
            dp.writer_threads.push(h);
        }

        let wait_when_full = cfg.waits_when_full(ports);
        let clock = TscClock::new(dp.eal.tsc_hz());
        let per_core_rate = sampling.as_ref().map_or(0, |s| (s.max_per_second / rx_cores.len() as u64).max(1));
        for (c, (((core, qs), sw), producers)) in rx_cores.iter().zip(per_core).zip(stats_w).zip(by_core).enumerate() {
            let sampler = sampling.as_ref().map(|s| {
                Sampler::new(
                    s.one_in,
                    per_core_rate,
                    s.snaplen,
                    Arc::clone(&dp.sample_rings[c]),
                    Arc::clone(&dp.sample_stats),
                )
            });
            let worker = RxWorker {
                queues: qs,
                active: Arc::clone(&dp.active),
                rings: producers,
                stats: sw,
                clock,
                stop: Arc::clone(&dp.stop),
                idle_backoff: cfg.dpdk.idle_backoff,
                wait_when_full,
                sampler,
            };
            dp.unlaunched.push((LcoreId(*core), worker));
        }
        log_hold.release();
        Ok(dp)
    }

    /// Starts the RX lcores' poll loops (once; later calls do nothing).
    pub fn launch_rx(&mut self) -> Result<(), DataPlaneError> {
        for (core, worker) in std::mem::take(&mut self.unlaunched) {
            // Marked polling before it can load a capture set (and until its loop has returned,
            // or panicked): `epoch_passed` never takes a core about to poll for a stopped one.
            let polling = worker.stats.polling();
            self.jobs.push(dpdk::launch(&self.eal, core, move || {
                let _polling = polling;
                worker.run();
            })?);
        }
        Ok(())
    }

    /// Opens, publishes and closes captures (cheap to clone into the control plane).
    pub fn control(&self) -> CaptureControl {
        self.control.clone()
    }

    /// Per writer, records dropped because no open sink held their lease (see `lease.rs`).
    pub fn stray_counters(&self) -> Vec<Arc<AtomicU64>> {
        self.stray.clone()
    }

    /// Handles on the ports (for NIC counters elsewhere).
    pub fn ports(&self) -> Vec<Port> {
        self.ports.clone()
    }

    /// NIC counters summed over all ports.
    pub fn nic_totals(&self) -> EthStats {
        self.ports.iter().map(Port::stats).sum()
    }

    /// Stops the RX lcores and waits for them. Returns the first panic message, if any.
    pub fn stop_rx(&mut self) -> Result<(), String> {
        self.stop.store(true, Relaxed);
        let mut failure = None;
        for j in self.jobs.drain(..) {
            if let Err(msg) = j.wait() {
                failure.get_or_insert(msg);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Stops RX, drains and closes every writer (their open files are finished).
    pub fn shutdown(&mut self) -> Result<(), String> {
        let rx = self.stop_rx();
        for tx in &self.control.writers {
            let _ = tx.send(WriterCmd::Shutdown);
        }
        for h in self.writer_threads.drain(..) {
            let _ = h.join();
        }
        rx
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("RX lcore failed: {e}");
        }
        // Then the fields drop: ports (stopped and closed), their pool, the EAL last, an order
        // the types guarantee.
    }
}

/// Why a capture could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Refused(#[from] OpenRefused),
    #[error("writer thread {0} is not running")]
    WriterGone(usize),
    #[error("writer thread {writer} did not answer within {} ms", timeout.as_millis())]
    NoAnswer { writer: usize, timeout: Duration },
}

/// The control side's door to the data plane: open a capture's sink (a writer issues a
/// `Lease`), publish capture sets to the RX cores, and tell when they have left a set behind.
#[derive(Clone)]
pub struct CaptureControl {
    active: SharedActiveSet,
    writers: Vec<Sender<WriterCmd>>,
    stats: StatsReader,
    /// The version of the last published set; the lock also orders publications.
    published: Arc<Mutex<u64>>,
    /// Programs of tcpdump expressions live in DPDK memory (none without DPDK: tests).
    eal: Option<Eal>,
    /// Loaded programs by expression text: captures with the same expression share one
    /// program, which RX then runs once a packet for all of them.
    programs: Arc<Mutex<HashMap<String, Weak<crate::bpf::Program>>>>,
}

/// Expressions loaded for the RX cores, by the engine that runs them (for /metrics: any
/// `interpreter` means DPDK's JIT was not available).
pub static EXPRESSIONS_LOADED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

impl CaptureControl {
    /// Loads a tcpdump expression for the RX cores: libpcap compiles it, DPDK JIT-compiles it
    /// (its interpreter runs it when there is no JIT).
    pub fn load_expression(&self, text: &str) -> Result<Arc<crate::bpf::Program>, String> {
        let Some(eal) = &self.eal else {
            return Err("tcpdump expressions need DPDK (this data plane has none)".into());
        };
        let mut loaded = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = loaded.get(text).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let p = Arc::new(crate::bpf::Program::compile(eal, text).map_err(|e| e.to_string())?);
        EXPRESSIONS_LOADED[usize::from(!p.is_jit())].fetch_add(1, Relaxed);
        loaded.retain(|_, p| p.strong_count() > 0);
        loaded.insert(text.to_string(), Arc::downgrade(&p));
        Ok(p)
    }

    pub fn writers(&self) -> usize {
        self.writers.len()
    }

    /// Asks writer `writer` to open `sink` in a free slot and waits (up to `timeout`) for the
    /// lease. A writer that answers after the timeout takes its slot back by itself.
    pub fn open(
        &self,
        writer: usize,
        sink: PcapSink,
        counters: Arc<CaptureCounters>,
        watch: Option<Watch>,
        timeout: Duration,
    ) -> Result<Lease, OpenError> {
        // Rendezvous: the lease is handed over only while we still wait for it (see `Open`).
        let (reply, answer) = channel::bounded(0);
        let tx = self.writers.get(writer).ok_or(OpenError::WriterGone(writer))?;
        tx.send(WriterCmd::Open { sink: Box::new(sink), counters, watch, reply })
            .map_err(|_| OpenError::WriterGone(writer))?;
        match answer.recv_timeout(timeout) {
            Ok(r) => Ok(r?),
            Err(channel::RecvTimeoutError::Timeout) => Err(OpenError::NoAnswer { writer, timeout }),
            Err(channel::RecvTimeoutError::Disconnected) => Err(OpenError::WriterGone(writer)),
        }
    }

    /// Makes `set` the RX cores' capture set; returns its epoch (see `epoch_passed`).
    pub fn publish(&self, mut set: ActiveSet) -> Epoch {
        let mut version = self.published.lock().unwrap_or_else(|e| e.into_inner());
        *version += 1;
        set.version = *version;
        self.active.store(Arc::new(set));
        Epoch(*version)
    }

    /// Whether no RX core uses a set published before `e` any more, and every record handed
    /// off under one is published to the writers.
    pub fn epoch_passed(&self, e: Epoch) -> bool {
        self.stats.epoch_passed(e)
    }
}

/// Writer threads, rings and capture control without DPDK, for tests that play the RX cores
/// themselves (and so can hold an old capture set as long as they like).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::dataplane::handoff::Producer;
    use crate::dataplane::stats::{Polling, StatsWriter};

    /// Plays one RX core: matches frames against a capture set and hands them off like `rx.rs`.
    pub(crate) struct FakeRx {
        pub active: SharedActiveSet,
        producers: Vec<Producer>,
        stats: StatsWriter,
        _polling: Polling,
    }

    impl FakeRx {
        /// One poll loop over `frames` with the newest set.
        pub(crate) fn step(&mut self, frames: &[Vec<u8>], ts_ns: u64) {
            let set = self.active.load_full();
            self.step_with(&set, frames, ts_ns);
        }

        /// One poll loop over `frames` with `set` (maybe an old one).
        pub(crate) fn step_with(&mut self, set: &ActiveSet, frames: &[Vec<u8>], ts_ns: u64) {
            for f in frames {
                let key = crate::wire::parse_general(f);
                for cap in &set.captures {
                    let len = f.len() as u32;
                    if cap.matcher.matches(&key) && cap.budget.take(&[len]) == 1 {
                        let ts = crate::pcap::format::Stamp::new(ts_ns).parts(cap.precision);
                        let pushed = self.producers[cap.writer].push(cap.tag, ts, len, len, std::iter::once(&f[..]));
                        assert!(pushed, "test ring full");
                        cap.counters.matched.fetch_add(1, Relaxed);
                    }
                }
            }
            self.producers.iter_mut().for_each(Producer::publish);
            self.stats.record_loop(set.version);
        }
    }

    /// `writers` writer threads fed by `cores` fake RX cores. Dropping the returned `Stop`
    /// shuts the writers down (closing what is open) and joins them.
    pub(crate) fn without_dpdk(cores: usize, writers: usize) -> (CaptureControl, Vec<FakeRx>, Stop) {
        let active = active::shared(ActiveSet::default());
        let (stats_w, stats) = per_core_stats(cores);
        let Rings { by_core, by_writer } = Rings::new(cores, writers, handoff::MIN_RING_BYTES);
        let mut control = CaptureControl {
            active: Arc::clone(&active),
            writers: Vec::new(),
            stats,
            published: Arc::default(),
            eal: None,
            programs: Arc::default(),
        };
        let mut threads = Vec::new();
        let mut stray = Vec::new();
        for (w, consumers) in by_writer.into_iter().enumerate() {
            let (tx, rx) = channel::unbounded();
            let writer = Writer::new(w, consumers, rx, tx.clone());
            stray.push(writer.stray_records());
            threads.push(std::thread::spawn(move || writer.run()));
            control.writers.push(tx);
        }
        let fakes = by_core
            .into_iter()
            .zip(stats_w)
            .map(|(producers, stats)| FakeRx {
                active: Arc::clone(&active),
                producers,
                _polling: stats.polling(),
                stats,
            })
            .collect();
        let stop = Stop { writers: control.writers.clone(), threads, stray };
        (control, fakes, stop)
    }

    pub(crate) struct Stop {
        writers: Vec<Sender<WriterCmd>>,
        threads: Vec<JoinHandle<()>>,
        stray: Vec<Arc<AtomicU64>>,
    }

    impl Stop {
        pub(crate) fn stray_records(&self) -> u64 {
            self.stray.iter().map(|s| s.load(Relaxed)).sum()
        }
    }

    impl Drop for Stop {
        fn drop(&mut self) {
            self.writers.iter().for_each(|w| {
                let _ = w.send(WriterCmd::Shutdown);
            });
            self.threads.drain(..).for_each(|t| {
                let _ = t.join();
            });
        }
    }
}
