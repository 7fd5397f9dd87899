//! Full captures: live, unsampled, whole packets of one account's filter, written by a writer
//! thread into `spool/<pcap_id>/pcap_NNNNN.pcap` (rotated by `[writer]`), then uploaded.
//!
//! Start: open the sink in its writer (acknowledged), then publish a new `ActiveSet` including
//! the capture. End (time limit, packet/byte limit, stop request, writer failure): publish a set
//! without it, wait until every RX core has finished a burst with the new set, close the sink
//! (the writer drains the rings first), enqueue the files for upload. `conversion_pending` lasts
//! until every file is in the bucket (`success`), or an upload fails for good (`failed`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};

use super::model::{Capture, Status};
use super::CaptureRecords;
use crate::dataplane::active::{ActiveCapture, ActiveSet, Budget, CaptureCounters, SharedActiveSet};
use crate::dataplane::stats::StatsReader;
use crate::dataplane::writer::WriterCmd;
use crate::pcap::format;
use crate::pcap::{PcapSink, Precision, RotatePolicy};
use crate::upload::destination::Destination;
use crate::upload::UploadQueue;

/// Snaplen of full captures: whole packets.
pub const FULL_SNAPLEN: u32 = 262_144;

/// What full captures need from the data plane and the rest of the appliance.
pub struct FullContext {
    pub active: SharedActiveSet,
    pub writers: Vec<Sender<WriterCmd>>,
    pub stats: StatsReader,
    pub spool_dir: PathBuf,
    pub node: String,
    pub colos: Vec<String>,
    pub rotate: RotatePolicy,
    pub precision: Precision,
    pub uploads: Arc<dyn UploadQueue>,
    pub upload_wake: Sender<()>,
}

struct Running {
    account: String,
    spec: ActiveCapture,
    stop: Arc<AtomicBool>,
}

/// The running full captures (at most one per account) and their RX slots.
pub struct FullRuntime {
    pub ctx: FullContext,
    running: Mutex<HashMap<String, Running>>,
}

/// How a full capture ended.
enum End {
    Done,
    WriterFailed(String),
}

impl FullRuntime {
    pub fn new(ctx: FullContext) -> Self {
        FullRuntime { ctx, running: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of the account's pending or running full capture, if any.
    pub fn running_for(&self, account: &str) -> Option<String> {
        self.lock().iter().find(|(_, r)| r.account == account).map(|(id, _)| id.clone())
    }

    /// Ids of all running full captures with their counters (for /metrics).
    pub fn counters(&self) -> Vec<(String, Arc<CaptureCounters>)> {
        self.lock().iter().map(|(id, r)| (id.clone(), Arc::clone(&r.spec.counters))).collect()
    }

    fn publish(&self, running: &HashMap<String, Running>) {
        let set = ActiveSet::new(running.values().map(|r| r.spec.clone()).collect());
        self.ctx.active.store(Arc::new(set));
    }

    /// Waits until every RX core has run two loops since now: none still uses an older set.
    fn wait_rx_epoch(&self) {
        let before: Vec<u64> = self.ctx.stats.cores().iter().map(|c| c.loops.load(Relaxed)).collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let done = self.ctx.stats.cores().iter().zip(&before).all(|(c, b)| c.loops.load(Relaxed) >= b + 2);
            if done {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        tracing::warn!("an RX core did not finish a loop within 2 s");
    }

    fn spool(&self, id: &str) -> PathBuf {
        self.ctx.spool_dir.join(id)
    }

    /// Starts capturing for `c` (already stored as `pending`); returns it `running`.
    pub fn start(self: &Arc<Self>, store: &Arc<dyn CaptureRecords>, mut c: Capture) -> Result<Capture, String> {
        let mut running = self.lock();
        let used: Vec<u16> = running.values().map(|r| r.spec.slot).collect();
        let slot = (0..ActiveSet::MAX_CAPTURES as u16).find(|s| !used.contains(s)).ok_or_else(|| {
            format!("{} full captures are already running on this appliance", ActiveSet::MAX_CAPTURES)
        })?;
        let writer = usize::from(slot) % self.ctx.writers.len();
        let dir = self.spool(&c.id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("spool {}: {e}", dir.display()))?;
        let sink =
            PcapSink::create_with(&dir.join("pcap.pcap"), self.ctx.rotate, self.ctx.precision, FULL_SNAPLEN, true)
                .map_err(|e| e.to_string())?;
        let counters = Arc::new(CaptureCounters::default());
        let (ack_tx, ack_rx) = channel::bounded(1);
        self.ctx.writers[writer]
            .send(WriterCmd::Open { slot, sink: Box::new(sink), counters: Arc::clone(&counters), ack: Some(ack_tx) })
            .map_err(|_| "the writer thread is not running".to_string())?;
        ack_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the writer did not open the capture file".to_string())?;
        let spec = ActiveCapture {
            slot,
            writer,
            matcher: c.filter.filter().compile(),
            snaplen: FULL_SNAPLEN,
            precision: self.ctx.precision,
            budget: Arc::new(Budget::new(c.packet_limit, c.byte_limit)),
            counters,
        };
        let stop = Arc::new(AtomicBool::new(false));
        running
            .insert(c.id.clone(), Running { account: c.account.clone(), spec: spec.clone(), stop: Arc::clone(&stop) });
        self.publish(&running);
        drop(running);
        c.status = Status::Running;
        store.update(&c).map_err(|e| e.to_string())?;
        let me = Arc::clone(self);
        let st = Arc::clone(store);
        let cap = c.clone();
        std::thread::Builder::new()
            .name(format!("pcapd-full-{}", &c.id[..8]))
            .spawn(move || me.monitor(st, cap, spec, stop))
            .map_err(|e| format!("cannot start the capture's thread: {e}"))?;
        Ok(c)
    }

    /// Stops every running capture and waits (up to `timeout`) until they have ended.
    pub fn stop_all(&self, timeout: Duration) {
        for r in self.lock().values() {
            r.stop.store(true, Relaxed);
        }
        let deadline = Instant::now() + timeout;
        while !self.lock().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The monitors update the store after leaving the map: give them a moment.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Asks a running capture to stop; false if it is not running here.
    pub fn request_stop(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(r) => {
                r.stop.store(true, Relaxed);
                true
            }
            None => false,
        }
    }

    fn monitor(&self, store: Arc<dyn CaptureRecords>, c: Capture, spec: ActiveCapture, stop: Arc<AtomicBool>) {
        let started = Instant::now();
        let limit = Duration::from_secs(c.time_limit);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            if stop.load(Relaxed) || spec.budget.is_exhausted() || started.elapsed() >= limit {
                break;
            }
            if spec.counters.dropped_writer_error.load(Relaxed) > 0 {
                break;
            }
        }
        let end = self.end(&c.id, &spec);
        // Re-read: a stop request may have set stop_requested meanwhile.
        let mut c = store.get(&c.account, &c.id).ok().flatten().unwrap_or(c);
        c.packets_captured = Some(spec.counters.written.load(Relaxed));
        match end {
            End::WriterFailed(e) => {
                c.status = Status::Failed;
                c.error_message = Some(format!("writing the capture failed: {e}"));
                let _ = std::fs::remove_dir_all(self.spool(&c.id));
            }
            End::Done => match self.enqueue_spool(&c) {
                Ok(n) => {
                    tracing::info!(
                        "capture {}: {} packets in {n} file(s), uploading",
                        c.id,
                        c.packets_captured.unwrap_or(0)
                    );
                    c.status = Status::ConversionPending;
                }
                Err(e) => {
                    c.status = Status::Failed;
                    c.error_message = Some(e);
                }
            },
        }
        if let Err(e) = store.update(&c) {
            tracing::error!("capture {}: {e}", c.id);
        }
        let _ = self.ctx.upload_wake.try_send(());
    }

    /// Takes the capture out of the RX set, drains its writer and closes its files.
    fn end(&self, id: &str, spec: &ActiveCapture) -> End {
        {
            let mut running = self.lock();
            running.remove(id);
            self.publish(&running);
        }
        self.wait_rx_epoch();
        let (tx, rx) = channel::bounded(1);
        if self.ctx.writers[spec.writer].send(WriterCmd::Close { slot: spec.slot, reply: tx }).is_err() {
            return End::WriterFailed("the writer thread is not running".into());
        }
        match rx.recv() {
            Ok(r) => match r.files {
                Ok(_) if spec.counters.dropped_writer_error.load(Relaxed) == 0 => End::Done,
                Ok(_) => End::WriterFailed("records were lost to write errors".into()),
                Err(e) => End::WriterFailed(e),
            },
            Err(_) => End::WriterFailed("the writer thread exited".into()),
        }
    }

    /// Queues every finished file of the capture's spool directory; returns how many.
    pub fn enqueue_spool(&self, c: &Capture) -> Result<usize, String> {
        let dest = Destination::parse(c.destination_conf.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
        let files = spool_files(&self.spool(&c.id)).map_err(|e| format!("reading the spool: {e}"))?;
        for (seq, path) in &files {
            let key = dest.key(&format!("{}/{}-{seq}/pcap_{}.pcap", c.id, self.ctx.node, c.id));
            self.ctx
                .uploads
                .enqueue(&c.id, *seq, &path.to_string_lossy(), &key, c.destination_conf.as_deref().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        }
        Ok(files.len())
    }

    /// After a crash: repairs `.partial` files of the capture's spool (cut to the last whole
    /// record, then renamed) and returns the packets the spool holds.
    pub fn recover_spool(&self, id: &str) -> Result<u64, String> {
        let dir = self.spool(id);
        if !dir.exists() {
            return Ok(0);
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| e.to_string())?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(final_name) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".partial")) else { continue };
            let path = e.path();
            let data = std::fs::read(&path).map_err(|e| e.to_string())?;
            if data.len() < format::FILE_HEADER_LEN {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let whole = format::FILE_HEADER_LEN + format::whole_records_len(&data[format::FILE_HEADER_LEN..]);
            let f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| e.to_string())?;
            f.set_len(whole as u64).map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&path, dir.join(final_name)).map_err(|e| e.to_string())?;
            tracing::info!("capture {id}: recovered {final_name} ({} of {} bytes)", whole, data.len());
        }
        let mut packets = 0;
        for (_, p) in spool_files(&dir).map_err(|e| e.to_string())? {
            packets += format::count_records(&p).map_err(|e| e.to_string())?.unwrap_or(0);
        }
        Ok(packets)
    }
}

/// Finished spool files (`pcap_NNNNN.pcap`) with their sequence numbers, in order.
pub fn spool_files(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut v = Vec::new();
    if !dir.exists() {
        return Ok(v);
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let seq = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("pcap_"))
            .and_then(|n| n.strip_suffix(".pcap"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(seq) = seq {
            v.push((seq, p));
        }
    }
    v.sort();
    Ok(v)
}
