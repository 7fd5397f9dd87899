//! Full captures: live, unsampled, whole packets of one account's filter, written by a writer
//! thread into `spool/<pcap_id>/pcap_NNNNN.pcap` (rotated by `[writer]`), then uploaded.
//!
//! One thread, the lifecycle loop, owns every full capture from start to close and reacts to
//! what ends one: a stop request, the time limit (its own timer), the packet/byte limit and a
//! failed sink (events from the writer), and the writer's close report. Because one thread
//! decides, "one capture per account" and the slot bookkeeping need no further locks.
//!
//! - Start: store it `pending`; a writer opens the sink and issues a `Lease` (slot +
//!   generation); publish a set with the capture to the RX cores; store it `running`. A failure
//!   after the lease rolls back completely: unpublished, drained, closed, lease returned, stored
//!   `failed` with the reason, and only then is the caller answered.
//! - End: publish a set without the capture; wait, however long it takes, until every RX core
//!   finished a loop with that set (no timeout: until then an RX core may still feed the
//!   lease); close the lease (the writer drains the rings first); on the writer's close report
//!   (the slot is free again) queue the files for upload: `conversion_pending` until every file
//!   is in the bucket (`success`), or an upload fails for good (`failed`).
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};

use super::model::{Capture, Status};
use super::rules::Rules;
use super::CaptureRecords;
use crate::datadir::{self, EntryKind};
use crate::dataplane::active::{ActiveCapture, ActiveSet, Budget, CaptureCounters};
use crate::dataplane::lease::Lease;
use crate::dataplane::stats::Epoch;
use crate::dataplane::writer::{CloseReport, Watch, WriterEvent, WriterEventKind};
use crate::dataplane::{CaptureControl, OpenError};
use crate::pcap::format;
use crate::pcap::{PcapSink, Precision, RotatePolicy};
use crate::upload::destination::Destination;
use crate::upload::{FileInfo, UploadQueue};

/// Snaplen of full captures: whole packets.
pub const FULL_SNAPLEN: u32 = 262_144;
/// How long a start waits for a writer to open the capture's file.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the loop looks at the RX cores while a capture waits for them to leave it behind.
const EPOCH_POLL: Duration = Duration::from_millis(1);
/// The loop wakes at least this often (time limits are computed exactly; this bounds drift).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often a running capture's record gets its packet count (in a fleet each store is one
/// publication of the part to etcd: about 3 etcd requests) and its rotated files are queued
/// for upload. The single appliance's API reads live counters in between.
const PROGRESS_EVERY: Duration = Duration::from_millis(900);

/// What full captures need from the data plane and the rest of the appliance.
pub struct FullContext {
    pub control: CaptureControl,
    pub spool_dir: PathBuf,
    pub node: String,
    pub colos: Vec<String>,
    pub rotate: RotatePolicy,
    pub precision: Precision,
    pub uploads: Arc<dyn UploadQueue>,
    pub upload_wake: Sender<()>,
    /// A capture's file stops growing (keeping what it has) below this much free space.
    pub keep_free_bytes: u64,
    /// The per-account rules: a capture's claim is given back when it leaves `running`.
    pub rules: Arc<dyn Rules>,
}

/// Why a full capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The account already has a pending or running full capture (its id).
    #[error("full capture {0} is already pending or running for this account; stop it or wait for it to finish")]
    Conflict(String),
    /// No slot, writer or thread to run it now; nothing was stored. Worth retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// It was stored and then failed to start; it is stored `failed` with this message.
    #[error("{0}")]
    Failed(String),
}

/// Live captures' ids and counters, as the loop last published them.
type LiveView = Arc<Mutex<Vec<(String, Arc<CaptureCounters>)>>>;

enum Cmd {
    Start { capture: Box<Capture>, budget: Option<Arc<Budget>>, reply: Sender<Result<Capture, StartError>> },
    Stop { account: String, id: String, reply: Sender<Option<Capture>> },
    StopAll { reply: Sender<()> },
    Exit,
}

/// The running full captures and the thread that runs them.
pub struct FullRuntime {
    pub ctx: Arc<FullContext>,
    cmds: Sender<Cmd>,
    /// Live captures' counters (for /metrics), kept by the loop.
    view: LiveView,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FullRuntime {
    pub fn new(ctx: FullContext, store: Arc<dyn CaptureRecords>) -> std::io::Result<FullRuntime> {
        let ctx = Arc::new(ctx);
        let (cmds, cmds_rx) = channel::unbounded();
        let view = Arc::new(Mutex::new(Vec::new()));
        let (events_tx, events) = channel::unbounded();
        let mut lifecycle = Lifecycle {
            ctx: Arc::clone(&ctx),
            store,
            live: HashMap::new(),
            view: Arc::clone(&view),
            events_tx,
            stop_all: Vec::new(),
            next_progress: Instant::now() + PROGRESS_EVERY,
        };
        let thread =
            std::thread::Builder::new().name("pcapd-full".into()).spawn(move || lifecycle.run(&cmds_rx, &events))?;
        Ok(FullRuntime { ctx, cmds, view, thread: Mutex::new(Some(thread)) })
    }

    /// Starts `c` (a new full capture, not stored yet); returns it stored as `running`.
    pub fn start(&self, c: Capture) -> Result<Capture, StartError> {
        self.start_with(c, None)
    }

    /// Starts this node's part of a fleet capture: its limits are `budget`, topped up in chunks
    /// by the caller (`Budget::chunked`), not the capture's own `packet_limit`/`byte_limit`.
    pub fn start_part(&self, c: Capture, budget: Arc<Budget>) -> Result<Capture, StartError> {
        self.start_with(c, Some(budget))
    }

    fn start_with(&self, c: Capture, budget: Option<Arc<Budget>>) -> Result<Capture, StartError> {
        let (reply, answer) = channel::bounded(1);
        self.cmds
            .send(Cmd::Start { capture: Box::new(c), budget, reply })
            .map_err(|_| StartError::Unavailable("the full-capture thread is not running".into()))?;
        answer.recv().map_err(|_| StartError::Unavailable("the full-capture thread exited".into()))?
    }

    /// Stops the account's live capture `id`: records `stop_requested` (the loop is the only
    /// writer of a live capture's row) and ends it. Returns the capture as stored, or `None`
    /// when it is not live here (it has ended, or never ran).
    pub fn stop(&self, account: &str, id: &str) -> Option<Capture> {
        let (reply, answer) = channel::bounded(1);
        let cmd = Cmd::Stop { account: account.to_string(), id: id.to_string(), reply };
        self.cmds.send(cmd).ok()?;
        answer.recv().ok().flatten()
    }

    /// Stops every running capture and waits (up to `timeout`) until all are closed and stored.
    pub fn stop_all(&self, timeout: Duration) {
        let (reply, done) = channel::bounded(1);
        if self.cmds.send(Cmd::StopAll { reply }).is_ok() && done.recv_timeout(timeout).is_err() {
            tracing::warn!("full captures still closing after {} s", timeout.as_secs());
        }
    }

    /// Whether capture `id` is live here (running, or closing).
    pub fn is_live(&self, id: &str) -> bool {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(i, _)| i == id)
    }

    /// Ids of all live full captures with their counters (for /metrics).
    pub fn counters(&self) -> Vec<(String, Arc<CaptureCounters>)> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a crash: repairs the capture's spool; see `FullContext::recover_spool`.
    pub fn recover_spool(&self, id: &str) -> Result<u64, String> {
        self.ctx.recover_spool(id)
    }

    pub fn enqueue_spool(&self, c: &Capture) -> Result<usize, String> {
        self.ctx.enqueue_spool(c)
    }

    /// Packets in the capture's files queued for upload (all of them once it is closed).
    pub fn queued_packets(&self, id: &str) -> Result<u64, String> {
        self.ctx.queued_packets(id)
    }

    /// This node's files of capture `id` (queued for upload, or done with it), in order;
    /// `in_flight` is the queue id of the file being uploaded now.
    pub fn files(&self, id: &str, in_flight: i64) -> Result<Vec<crate::upload::FileEntry>, crate::db::StoreError> {
        let jobs = self.ctx.uploads.uploads_of(id)?;
        Ok(jobs.iter().map(|j| crate::upload::FileEntry::of(&self.ctx.node, j, in_flight)).collect())
    }

    /// Records written so far by live capture `id` (`None` when it is not live here).
    pub fn live_packets(&self, id: &str) -> Option<u64> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.iter().find(|(i, _)| i == id).map(|(_, c)| c.written.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Drop for FullRuntime {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Exit);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Why a capture is ending.
#[derive(Debug, Clone)]
enum Why {
    /// Time limit, packet/byte limit or stop request: upload what was written.
    Done,
    /// The sink failed: the capture fails.
    WriterFailed(String),
    /// A start failed after the capture was published: fail it, then answer the start.
    Rollback(String),
}

enum Phase {
    Running {
        deadline: Instant,
    },
    /// Unpublished; waiting for every RX core to leave the capture behind.
    Draining {
        epoch: Epoch,
        why: Why,
    },
    /// The writer was told to close; its report comes on `report`.
    Closing {
        why: Why,
        report: Receiver<CloseReport>,
    },
}

struct Live {
    /// The capture as stored: this loop is the only writer of its row while it is live.
    capture: Capture,
    spec: ActiveCapture,
    /// Held until the close is sent.
    lease: Option<Lease>,
    phase: Phase,
    /// A rolled-back start answers once the capture is closed.
    start_reply: Option<Sender<Result<Capture, StartError>>>,
}

struct Lifecycle {
    ctx: Arc<FullContext>,
    store: Arc<dyn CaptureRecords>,
    live: HashMap<String, Live>,
    view: LiveView,
    events_tx: Sender<WriterEvent>,
    /// `stop_all` callers waiting for `live` to empty.
    stop_all: Vec<Sender<()>>,
    /// When running captures next store their progress and queue their rotated files.
    next_progress: Instant,
}

impl Lifecycle {
    fn run(&mut self, cmds: &Receiver<Cmd>, events: &Receiver<WriterEvent>) {
        loop {
            let timeout = self.sleep();
            crossbeam::select! {
                recv(cmds) -> cmd => match cmd {
                    Ok(Cmd::Start { capture, budget, reply }) => {
                        if let Some(answer) = self.start(*capture, budget, &reply) {
                            let _ = reply.send(answer);
                        }
                    }
                    Ok(Cmd::Stop { account, id, reply }) => {
                        let _ = reply.send(self.stop(&account, &id));
                    }
                    Ok(Cmd::StopAll { reply }) => {
                        let ids: Vec<String> = self.live.keys().cloned().collect();
                        ids.iter().for_each(|id| self.end(id, Why::Done));
                        self.stop_all.push(reply);
                    }
                    Ok(Cmd::Exit) | Err(_) => return,
                },
                recv(events) -> e => if let Ok(e) = e { self.writer_event(e) },
                default(timeout) => {}
            }
            self.tick();
        }
    }

    /// Until the next thing the loop must do by itself.
    fn sleep(&self) -> Duration {
        let now = Instant::now();
        self.live.values().fold(MAX_SLEEP, |next, l| match l.phase {
            Phase::Running { deadline } => {
                next.min(deadline.saturating_duration_since(now)).min(self.next_progress.saturating_duration_since(now))
            }
            Phase::Draining { .. } | Phase::Closing { .. } => next.min(EPOCH_POLL),
        })
    }

    /// Time limits, captures whose RX epoch has passed, and close reports.
    fn tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| matches!(l.phase, Phase::Running { deadline } if deadline <= now))
            .map(|(id, _)| id.clone())
            .collect();
        expired.iter().for_each(|id| self.end(id, Why::Done));
        if now >= self.next_progress {
            self.next_progress = now + PROGRESS_EVERY;
            self.progress();
        }
        let mut closed = Vec::new();
        for (id, l) in self.live.iter_mut() {
            match &l.phase {
                Phase::Draining { epoch, why } if self.ctx.control.epoch_passed(*epoch) => {
                    let (tx, report) = channel::bounded(1);
                    let why = why.clone();
                    if !l.lease.take().is_some_and(|lease| lease.close(tx)) {
                        closed.push((id.clone(), why.clone(), None));
                    }
                    l.phase = Phase::Closing { why, report };
                }
                Phase::Closing { why, report } => match report.try_recv() {
                    Ok(r) => closed.push((id.clone(), why.clone(), Some(r))),
                    Err(channel::TryRecvError::Disconnected) => closed.push((id.clone(), why.clone(), None)),
                    Err(channel::TryRecvError::Empty) => {}
                },
                _ => {}
            }
        }
        for (id, why, report) in closed {
            match report {
                Some(r) => self.finish(&id, why, r),
                None => self.writer_gone(&id, why),
            }
        }
        if self.live.is_empty() {
            self.stop_all.drain(..).for_each(|r| {
                let _ = r.send(());
            });
        }
    }

    /// Running captures: the packets written so far into their records (stored only when the
    /// count moved), and their rotated files into the upload queue.
    fn progress(&mut self) {
        let mut wake = false;
        for l in self.live.values_mut() {
            if !matches!(l.phase, Phase::Running { .. }) {
                continue;
            }
            let written = Some(l.spec.counters.written.load(std::sync::atomic::Ordering::Relaxed));
            if l.capture.packets_captured != written {
                l.capture.packets_captured = written;
                if let Err(e) = self.store.update(&l.capture) {
                    tracing::warn!("capture {}: storing its progress: {e}", l.capture.id);
                }
            }
            match self.ctx.enqueue_spool(&l.capture) {
                Ok(n) => wake |= n > 0,
                Err(e) => tracing::warn!("capture {}: queueing its rotated files: {e}", l.capture.id),
            }
        }
        if wake {
            let _ = self.ctx.upload_wake.try_send(());
        }
    }

    /// Returns the answer to send now, or `None` when a rollback will answer later.
    fn start(
        &mut self,
        mut c: Capture,
        budget: Option<Arc<Budget>>,
        reply: &Sender<Result<Capture, StartError>>,
    ) -> Option<Result<Capture, StartError>> {
        if let Some((id, _)) = self.live.iter().find(|(_, l)| l.capture.account == c.account) {
            return Some(Err(StartError::Conflict(id.clone())));
        }
        if self.live.len() >= ActiveSet::MAX_CAPTURES {
            return Some(Err(self.full_appliance()));
        }
        // The expression before anything else: nothing is left behind when it cannot load.
        let program = match &c.filter_expression {
            Some(e) => match self.ctx.control.load_expression(e) {
                Ok(p) => Some(p),
                Err(m) => return Some(Err(StartError::Failed(format!("filter_expression: {m}")))),
            },
            None => None,
        };
        let counters = Arc::new(CaptureCounters::default());
        let budget = budget.unwrap_or_else(|| Arc::new(Budget::new(c.packet_limit, c.byte_limit)));
        // The file first, then the record: a refused start stores nothing.
        let lease = match self.open(&c, &counters, &budget) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.ctx.spool(&c.id));
                return Some(Err(e));
            }
        };
        if let Err(e) = self.store.insert(&c) {
            lease.discard();
            let _ = std::fs::remove_dir_all(self.ctx.spool(&c.id));
            return Some(Err(StartError::Unavailable(format!("cannot store the capture: {e}"))));
        }
        let spec = ActiveCapture::new(
            &lease,
            c.filter.filter().compile(),
            FULL_SNAPLEN,
            self.ctx.precision,
            budget,
            Arc::clone(&counters),
        )
        .with_program(program);
        let deadline = Instant::now() + Duration::from_secs(c.time_limit);
        let id = c.id.clone();
        c.status = Status::Running;
        let live = Live {
            capture: c.clone(),
            spec,
            lease: Some(lease),
            phase: Phase::Running { deadline },
            start_reply: None,
        };
        self.live.insert(id.clone(), live);
        self.publish();
        if let Err(e) = self.store.update(&c) {
            // Roll back: the capture is unpublished and closed before the caller hears of it.
            tracing::error!("capture {id}: cannot store it as running: {e}");
            if let Some(l) = self.live.get_mut(&id) {
                l.start_reply = Some(reply.clone());
            }
            self.end(&id, Why::Rollback("the capture could not be started (its record could not be stored)".into()));
            return None;
        }
        tracing::info!("capture {id}: running ({})", self.live[&id].spec.tag());
        Some(Ok(c))
    }

    fn full_appliance(&self) -> StartError {
        StartError::Unavailable(format!(
            "all capture slots of this appliance are in use ({} full captures running); retry when one has finished",
            self.live.len()
        ))
    }

    /// Creates the spool and has a writer (the least busy one that answers) open the capture's
    /// file.
    fn open(&self, c: &Capture, counters: &Arc<CaptureCounters>, budget: &Arc<Budget>) -> Result<Lease, StartError> {
        let dir = self.ctx.spool(&c.id);
        std::fs::create_dir_all(&dir).map_err(|e| StartError::Failed(format!("spool {}: {e}", dir.display())))?;
        let mut writers: Vec<usize> = (0..self.ctx.control.writers()).collect();
        writers.sort_by_key(|&w| self.live.values().filter(|l| l.spec.writer() == w).count());
        let mut last = None;
        for w in writers {
            let sink =
                PcapSink::create_with(&dir.join("pcap.pcap"), self.ctx.rotate, self.ctx.precision, FULL_SNAPLEN, true)
                    .map_err(|e| StartError::Failed(e.to_string()))?
                    .keep_free(self.ctx.keep_free_bytes);
            let watch = Watch { budget: Arc::clone(budget), events: self.events_tx.clone() };
            match self.ctx.control.open(w, sink, Arc::clone(counters), Some(watch), OPEN_TIMEOUT) {
                Ok(lease) => return Ok(lease),
                Err(OpenError::Refused(_)) => last = Some(self.full_appliance()),
                Err(e) => {
                    tracing::error!("capture {}: {e}", c.id);
                    last = Some(StartError::Unavailable(format!("the appliance cannot take a capture now: {e}")));
                }
            }
        }
        Err(last.unwrap_or_else(|| StartError::Unavailable("the appliance has no writer threads".into())))
    }

    /// Publishes the set of running captures (those ending are left out).
    fn publish(&mut self) -> Epoch {
        let running = self.live.values().filter(|l| matches!(l.phase, Phase::Running { .. }));
        let epoch = self.ctx.control.publish(ActiveSet::new(running.map(|l| l.spec.clone()).collect()));
        self.publish_view();
        epoch
    }

    fn publish_view(&self) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        *view = self.live.iter().map(|(id, l)| (id.clone(), Arc::clone(&l.spec.counters))).collect();
    }

    /// Takes a running capture out of the RX set; it closes once the RX cores left it behind.
    fn end(&mut self, id: &str, why: Why) {
        let Some(l) = self.live.get_mut(id) else { return };
        if !matches!(l.phase, Phase::Running { .. }) {
            return;
        }
        // A placeholder until `publish` (which leaves it out of the set) returns the real epoch.
        l.phase = Phase::Draining { epoch: Epoch(u64::MAX), why };
        let epoch = self.publish();
        if let Some(Live { phase: Phase::Draining { epoch: e, .. }, .. }) = self.live.get_mut(id) {
            *e = epoch;
        }
    }

    /// A stop request: record it and end the capture.
    fn stop(&mut self, account: &str, id: &str) -> Option<Capture> {
        let l = self.live.get_mut(id).filter(|l| l.capture.account == account)?;
        if l.capture.stop_requested.is_none() {
            l.capture.stop_requested = Some(chrono::Utc::now());
            if let Err(e) = self.store.update(&l.capture) {
                tracing::error!("capture {id}: {e}");
            }
        }
        let c = l.capture.clone();
        self.end(id, Why::Done);
        Some(c)
    }

    fn writer_event(&mut self, e: WriterEvent) {
        let found = self.live.iter().find(|(_, l)| l.spec.writer() == e.writer && l.spec.tag() == e.tag);
        let Some((id, _)) = found else { return };
        let id = id.clone();
        match e.kind {
            WriterEventKind::LimitReached => self.end(&id, Why::Done),
            WriterEventKind::Failed(msg) => self.end(&id, Why::WriterFailed(msg)),
        }
    }

    /// The writer thread is gone (shut down first, or died): a finished capture stays `running`
    /// in the store and the next start uploads what its writer closed (as after a crash);
    /// anything else fails.
    fn writer_gone(&mut self, id: &str, why: Why) {
        match why {
            Why::Done => {
                tracing::warn!("capture {id}: its writer exited first; left for the next start to upload");
                if let Some(l) = self.live.remove(id) {
                    self.release(&l.capture);
                }
                self.publish_view();
            }
            Why::WriterFailed(_) | Why::Rollback(_) => {
                let Some(l) = self.live.remove(id) else { return };
                self.publish_view();
                self.release(&l.capture);
                let msg = match why {
                    Why::Rollback(m) => m,
                    _ => "writing the capture failed: the writer thread exited".into(),
                };
                self.fail(l.capture, &msg, l.start_reply);
            }
        }
    }

    /// The writer closed the capture (its slot is free again): store the outcome. A capture
    /// whose file could not be written (a full disk) still uploads what reached the disk, then
    /// ends `failed` saying so (the uploader keeps `error_message` and fails it when done).
    fn finish(&mut self, id: &str, why: Why, report: CloseReport) {
        let Some(l) = self.live.remove(id) else { return };
        self.publish_view();
        self.release(&l.capture);
        let mut c = l.capture;
        c.packets_captured = Some(report.packets);
        let write_error = match why {
            Why::Rollback(m) => {
                self.fail(c, &m, l.start_reply);
                return;
            }
            Why::WriterFailed(e) => Some(e),
            Why::Done => report.error,
        };
        if let Some(e) = &write_error {
            if report.files.is_empty() {
                self.fail(c, &format!("writing the capture failed: {e}; no packet reached the disk"), None);
                return;
            }
            c.error_message = Some(format!(
                "writing the capture failed after {n} packets: {e}; those {n} packets are uploaded to the bucket",
                n = report.packets
            ));
        }
        match self.ctx.enqueue_spool(&c) {
            Ok(n) => tracing::info!("capture {id}: {} packets in {n} file(s), uploading", report.packets),
            Err(e) => {
                self.fail(c, &format!("queueing the capture's files for upload failed: {e}"), None);
                return;
            }
        }
        c.status = Status::ConversionPending;
        if let Err(e) = self.store.update(&c) {
            tracing::error!("capture {id}: {e}");
        }
        let _ = self.ctx.upload_wake.try_send(());
    }

    /// Stores `c` failed with `msg` (nothing of it is uploaded) and answers a rolled-back start.
    fn fail(&self, mut c: Capture, msg: &str, start_reply: Option<Sender<Result<Capture, StartError>>>) {
        tracing::warn!("capture {}: {msg}", c.id);
        self.ctx.forget_spool(&c.id);
        self.store_failed(&mut c, msg);
        if let Some(reply) = start_reply {
            let _ = reply.send(Err(StartError::Failed(msg.to_string())));
        }
    }

    /// Gives the account's full-capture claim back (in a fleet, to etcd; a failure is logged:
    /// the claim lapses at its deadline anyway).
    fn release(&self, c: &Capture) {
        if let Err(e) = self.ctx.rules.release_full(&c.account, &c.id) {
            tracing::warn!("capture {}: {e}", c.id);
        }
    }

    fn store_failed(&self, c: &mut Capture, msg: &str) {
        c.status = Status::Failed;
        c.error_message = Some(msg.to_string());
        if let Err(e) = self.store.update(c) {
            tracing::error!("capture {}: {e}", c.id);
        }
    }
}

impl FullContext {
    fn spool(&self, id: &str) -> PathBuf {
        self.spool_dir.join(id)
    }

    /// A failed capture: its spool is removed and any of its files already queued are marked
    /// failed, so that nothing of it is uploaded.
    fn forget_spool(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.spool(id));
        for job in self.uploads.uploads_of(id).unwrap_or_default() {
            if job.state == "pending" {
                let _ = self.uploads.set_upload_state(job.id, "failed", job.attempts, Some("the capture failed"));
            }
        }
    }

    /// Queues the capture's finished spool files not queued yet (each with what it holds) for
    /// upload; returns how many were new. Called every `PROGRESS_EVERY` while the capture runs
    /// (a rotated file goes to the bucket at once) and once more when it is closed. Only
    /// renamed files are seen: a file gets its final name after its last byte is fsynced.
    fn enqueue_spool(&self, c: &Capture) -> Result<usize, String> {
        let dest = Destination::parse(c.destination_conf.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
        let files = spool_files(&self.spool(&c.id)).map_err(|e| format!("reading the spool: {e}"))?;
        let queued: std::collections::HashSet<u32> =
            self.uploads.uploads_of(&c.id).map_err(|e| e.to_string())?.iter().map(|j| j.seq).collect();
        let mut new = 0;
        for (seq, path) in files.iter().filter(|(seq, _)| !queued.contains(seq)) {
            let key = dest.key(&format!("{}/{}-{seq}/pcap_{}.pcap", c.id, self.node, c.id));
            let bytes = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
            let summary = format::summarize(path).map_err(|e| format!("{}: {e}", path.display()))?.unwrap_or_default();
            let info =
                FileInfo { bytes, packets: summary.packets, first_ns: summary.first_ns, last_ns: summary.last_ns };
            self.uploads
                .enqueue(
                    &c.id,
                    *seq,
                    &path.to_string_lossy(),
                    &key,
                    c.destination_conf.as_deref().unwrap_or_default(),
                    &info,
                )
                .map_err(|e| e.to_string())?;
            new += 1;
        }
        Ok(new)
    }

    /// Packets in the capture's queued files (uploaded or not).
    fn queued_packets(&self, id: &str) -> Result<u64, String> {
        Ok(self.uploads.uploads_of(id).map_err(|e| e.to_string())?.iter().map(|j| j.file.packets).sum())
    }

    /// After a crash: repairs `.partial` files of the capture's spool (cut to the last whole
    /// record, then renamed) and returns the packets the spool holds.
    fn recover_spool(&self, id: &str) -> Result<u64, String> {
        let dir = self.spool(id);
        match EntryKind::of(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
            Ok(EntryKind::Dir) => {}
            Ok(kind) => {
                tracing::warn!(
                    "capture {id}: skipping the spool {}: {}, not a directory",
                    dir.display(),
                    kind.as_str()
                );
                return Ok(0);
            }
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| e.to_string())?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(final_name) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".partial")) else { continue };
            let path = e.path();
            // Never through a symlink (repair as root would truncate its target).
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                let kind = EntryKind::of(&path).map_or("unreadable", |k| k.as_str());
                tracing::warn!("capture {id}: skipping {}: {kind}, not a regular file", path.display());
                continue;
            }
            let mut data = Vec::new();
            datadir::open_read(&path).and_then(|mut f| f.read_to_end(&mut data)).map_err(|e| e.to_string())?;
            if data.len() < format::FILE_HEADER_LEN {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let whole = format::FILE_HEADER_LEN + format::whole_records_len(&data[format::FILE_HEADER_LEN..]);
            let f = datadir::nofollow().write(true).open(&path).map_err(|e| e.to_string())?;
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

/// Finished spool files (`pcap_NNNNN.pcap`) with their sequence numbers, in order. Only
/// regular files: a symlink is never uploaded (its target could be any file of the machine).
pub fn spool_files(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut v = Vec::new();
    if EntryKind::of(dir).map_or(true, |k| k != EntryKind::Dir) {
        return Ok(v);
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let p = e.path();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    use super::*;
    use crate::captures::model::CaptureType;
    use crate::dataplane::testing::{without_dpdk, FakeRx, Stop};
    use crate::db::{Db, StoreError};
    use crate::filter::FilterV1;

    /// An untagged IPv4 frame of `protocol` with ports, whose last byte is `n`.
    fn ipv4(protocol: u8, n: u8) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&50u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = protocol;
        ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
        ip[16..20].copy_from_slice(&[192, 0, 2, 2]);
        f[34..38].copy_from_slice(&[0x30, 0x39, 0x01, 0xbb]);
        f[63] = n;
        f
    }

    struct Rig {
        rt: FullRuntime,
        db: Arc<Db>,
        rx: Vec<FakeRx>,
        stop: Stop,
        _dir: tempfile::TempDir,
    }

    fn rig(store: impl Fn(Arc<Db>) -> Arc<dyn CaptureRecords>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("pcapd.db")).unwrap());
        let (control, rx, stop) = without_dpdk(1, 1);
        let (upload_wake, _) = channel::bounded(1);
        let ctx = FullContext {
            control,
            spool_dir: dir.path().join("spool"),
            node: "test".into(),
            colos: vec!["lhr".into()],
            rotate: RotatePolicy::default(),
            precision: Precision::Nanos,
            uploads: db.clone(),
            upload_wake,
            keep_free_bytes: 0,
            rules: Arc::new(crate::captures::rules::LocalRules::new(db.clone())),
        };
        let rt = FullRuntime::new(ctx, store(Arc::clone(&db))).unwrap();
        Rig { rt, db, rx, stop, _dir: dir }
    }

    fn full(account: char, filter: &str) -> Capture {
        Capture {
            colo_name: Some("lhr".into()),
            destination_conf: Some("s3://bucket/dir?region=us-east-1".into()),
            packets_captured: Some(0),
            ..Capture::new(
                &account.to_string().repeat(32),
                CaptureType::Full,
                chrono::Utc::now(),
                300,
                &FilterV1::from_json_str(filter).unwrap(),
            )
        }
    }

    impl Rig {
        fn status(&self, c: &Capture) -> Capture {
            self.db.get(&c.account, &c.id).unwrap().unwrap()
        }

        /// Plays the RX core (current set, `frames`) until `done` holds.
        fn poll_until(&mut self, frames: &[Vec<u8>], done: impl Fn(&Rig) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out");
                self.rx[0].step(frames, 1);
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// The frames in the files a capture queued for upload.
        fn uploaded(&self, c: &Capture) -> Vec<Vec<u8>> {
            let jobs = crate::upload::UploadQueue::uploads_of(self.db.as_ref(), &c.id).unwrap();
            jobs.iter().flat_map(|j| crate::dataplane::writer::tests::frames_in(Path::new(&j.path))).collect()
        }
    }

    /// Regression: ending a full capture freed its slot before the RX cores had left it behind,
    /// so another account's capture started in that window took the same slot and writer, and
    /// the first capture's records still in flight were written into the second one's file
    /// (and so into the other account's bucket). Here the RX core holds the old set on purpose.
    #[test]
    fn a_capture_ending_while_another_account_starts_never_gets_its_packets() {
        let mut rig = rig(|db| db);
        let (udp, tcp) = (ipv4(17, 1), ipv4(6, 2));
        let both = [udp.clone(), tcp.clone()];
        let a = rig.rt.start(full('a', r#"{"protocol":17}"#)).unwrap();
        assert_eq!(a.status, Status::Running);
        for _ in 0..3 {
            rig.rx[0].step(&both, 1);
        }
        let with_a = rig.rx[0].active.load_full();
        assert!(rig.rt.stop(&a.account, &a.id).unwrap().stop_requested.is_some());
        rig.poll_until(&[], |r| r.rx[0].active.load().captures.is_empty());
        // The RX core has not finished a loop with the new set: A's lease is still out.
        let b = rig.rt.start(full('b', r#"{"protocol":6}"#)).unwrap();
        let b_tag = rig.rx[0].active.load().captures[0].tag();
        assert_ne!(b_tag.slot(), with_a.captures[0].tag().slot(), "B may not take A's slot while A is open");
        // Late records of A from the old set, then B's.
        for _ in 0..3 {
            rig.rx[0].step_with(&with_a, &both, 2);
        }
        rig.poll_until(&both, |r| r.status(&a).status == Status::ConversionPending);
        rig.rt.stop(&b.account, &b.id).unwrap();
        rig.poll_until(&both, |r| r.status(&b).status == Status::ConversionPending);
        let (got_a, got_b) = (rig.uploaded(&a), rig.uploaded(&b));
        assert_eq!(got_a, vec![udp; 6], "A's file holds A's packets, the late ones too");
        assert!(!got_b.is_empty() && got_b.iter().all(|f| *f == tcp), "B's file holds only B's packets");
        let stored_a = rig.status(&a);
        assert_eq!(stored_a.packets_captured, Some(6));
        assert!(stored_a.stop_requested.is_some(), "the stop request is kept through the close");
        assert_eq!(rig.stop.stray_records(), 0);
    }

    /// A store that fails the first update to `running`.
    struct FailsRunning(Arc<Db>, AtomicBool);

    impl CaptureRecords for FailsRunning {
        fn insert(&self, c: &Capture) -> Result<(), StoreError> {
            self.0.insert(c)
        }
        fn update(&self, c: &Capture) -> Result<(), StoreError> {
            if c.status == Status::Running && !self.1.swap(true, Relaxed) {
                return Err(StoreError::Sqlite(rusqlite::Error::InvalidQuery));
            }
            self.0.update(c)
        }
        fn get(&self, account: &str, id: &str) -> Result<Option<Capture>, StoreError> {
            self.0.get(account, id)
        }
        fn list(&self, account: &str, limit: usize) -> Result<Vec<Capture>, StoreError> {
            self.0.list(account, limit)
        }
        fn unfinished(&self) -> Result<Vec<Capture>, StoreError> {
            self.0.unfinished()
        }
        fn newest_simple(&self, account: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
            self.0.newest_simple(account)
        }
    }

    /// Regression: a start that failed after publishing (store update, thread spawn) left the
    /// capture in the RX set forever, its slot taken and its file open.
    #[test]
    fn a_start_that_fails_after_publishing_rolls_back_completely() {
        let mut rig = rig(|db| Arc::new(FailsRunning(db, AtomicBool::new(false))));
        let c = full('a', "{}");
        let rt = &rig.rt;
        let answer = std::thread::scope(|s| {
            let h = s.spawn(|| rt.start(c.clone()));
            // The rollback waits for the RX core to leave the capture behind: play it.
            while !h.is_finished() {
                rig.rx[0].step(&[ipv4(17, 1)], 1);
                std::thread::sleep(Duration::from_millis(1));
            }
            h.join().unwrap()
        });
        let err = answer.unwrap_err();
        assert!(matches!(err, StartError::Failed(_)), "{err:?}");
        let stored = rig.status(&c);
        assert_eq!(stored.status, Status::Failed);
        assert!(stored.error_message.unwrap().contains("its record could not be stored"));
        assert!(rig.rx[0].active.load().captures.is_empty(), "unpublished");
        assert!(!rig.rt.ctx.spool(&c.id).exists(), "its spool is removed");
        assert!(rig.rt.counters().is_empty());
        // The lease came back: the next capture gets the same slot, and the account may start.
        let again = rig.rt.start(full('a', "{}")).unwrap();
        assert_eq!(again.status, Status::Running);
        assert_eq!(rig.rx[0].active.load().captures[0].tag().slot(), 0);
        rig.rt.stop(&again.account, &again.id).unwrap();
        rig.poll_until(&[], |r| r.status(&again).status == Status::ConversionPending);
    }

    #[test]
    fn one_capture_per_account_and_a_full_appliance_is_unavailable_not_an_error() {
        let rig = rig(|db| db);
        let a = rig.rt.start(full('a', "{}")).unwrap();
        match rig.rt.start(full('a', "{}")) {
            Err(StartError::Conflict(id)) => assert_eq!(id, a.id),
            other => panic!("{other:?}"),
        }
        // Fill the appliance: ActiveSet::MAX_CAPTURES accounts.
        for i in 1..ActiveSet::MAX_CAPTURES {
            let mut c = full('b', "{}");
            c.account = format!("{:032x}", i);
            rig.rt.start(c).unwrap();
        }
        let mut c = full('c', "{}");
        c.account = "c".repeat(32);
        match rig.rt.start(c.clone()) {
            Err(StartError::Unavailable(m)) => {
                assert!(m.contains("all capture slots of this appliance are in use"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(rig.db.get(&c.account, &c.id).unwrap().is_none(), "nothing stored for a refused start");
    }
}
