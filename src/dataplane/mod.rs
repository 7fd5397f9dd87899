//! The data plane as one object: EAL, mempool, ports, writer threads and RX lcores, started in
//! that order and stopped in reverse. Used by `pcapd capture` (one capture, then exit) and by
//! the appliance (captures come and go through the `ActiveSet` and writer commands).
pub mod active;
pub mod clock;
pub mod handoff;
pub mod rx;
pub mod stats;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Sender};
use crossbeam::queue::ArrayQueue;

use self::active::{ActiveSet, SharedActiveSet};
use self::clock::TscClock;
use self::handoff::Rings;
use self::stats::{per_core_stats, StatsReader};
use self::writer::{Writer, WriterCmd};
use crate::config::{Config, PortConfig};
use crate::dpdk::{self, DpdkError, Eal, EthStats, LcoreId, LcoreJob, Mempool, Port, PortSetup, RxQueue};
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
    jobs: Vec<LcoreJob>,
    writer_tx: Vec<Sender<WriterCmd>>,
    writer_threads: Vec<JoinHandle<()>>,
    /// Each port holds its mempool, which holds the EAL: they are released in the right order
    /// whatever order fields drop in (see `dpdk`).
    ports: Vec<Port>,
    eal: Eal,
}

impl DataPlane {
    /// Starts everything. `first_cmds` are queued to writers before they start (e.g. opening
    /// a capture's file that the initial `active` set already refers to).
    pub fn start(
        cfg: &Config,
        ports: &[&PortConfig],
        active: ActiveSet,
        first_cmds: Vec<(usize, WriterCmd)>,
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
        let active = active::shared(active);
        let sample_stats = Arc::new(SampleStats::default());
        let sample_rings: Vec<Arc<ArrayQueue<SampleRec>>> = match &sampling {
            Some(s) => (0..rx_cores.len()).map(|_| Arc::new(ArrayQueue::new(s.ring_size))).collect(),
            None => Vec::new(),
        };
        let mut dp = DataPlane {
            active,
            stats,
            sample_rings,
            sample_stats,
            stop: Arc::new(AtomicBool::new(false)),
            jobs: Vec::new(),
            writer_tx: Vec::new(),
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
        let mut first_cmds = first_cmds;
        for (w, consumers) in by_writer.into_iter().enumerate() {
            let (tx, rx) = channel::unbounded();
            for (_, cmd) in first_cmds.extract_if(.., |(to, _)| *to == w) {
                let _ = tx.send(cmd);
            }
            let writer = Writer::new(format!("pcapd-writer{w}"), consumers, rx);
            let name = writer.name().to_string();
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || writer.run())
                .map_err(|source| DataPlaneError::Thread { name, source })?;
            dp.writer_tx.push(tx);
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
            let worker = crate::dataplane::rx::RxWorker {
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
            dp.jobs.push(dpdk::launch(&dp.eal, LcoreId(*core), move || worker.run())?);
        }
        log_hold.release();
        Ok(dp)
    }

    /// The command channel of writer `w`.
    pub fn writer(&self, w: usize) -> &Sender<WriterCmd> {
        &self.writer_tx[w]
    }

    pub fn writers(&self) -> usize {
        self.writer_tx.len()
    }

    /// Handles on the ports (for NIC counters elsewhere).
    pub fn ports(&self) -> Vec<Port> {
        self.ports.clone()
    }

    /// NIC counters summed over all ports.
    pub fn nic_totals(&self) -> EthStats {
        self.ports.iter().map(Port::stats).fold(EthStats::default(), |a, s| EthStats {
            ipackets: a.ipackets + s.ipackets,
            ibytes: a.ibytes + s.ibytes,
            imissed: a.imissed + s.imissed,
            ierrors: a.ierrors + s.ierrors,
            rx_nombuf: a.rx_nombuf + s.rx_nombuf,
        })
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
        for tx in &self.writer_tx {
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
