//! The capture manager: creates captures, runs simple captures against the sample store,
//! persists every state change, and reconciles unfinished captures at start-up.
//!
//! Simple captures: `pending` (stored) → `conversion_running` (the sample store is flushed and
//! the window `[offset_time - time_limit, offset_time]` queried with the filter) →
//! `success` (the earliest `packet_limit` matching samples in `captures/<id>.pcap`) or `failed`
//! with `error_message`. Conversions run on their own threads (file I/O), never on the API's.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam::channel::{self, Sender};

use super::full::{FullRuntime, StartError};
use super::model::{Capture, CaptureType, Status};
use super::request::{CreateRequest, FullRequest, SimpleRequest};
use super::rules::{Rules, RulesError};
use super::CaptureRecords;
use crate::db::StoreError;
use crate::pcap::{PcapSink, Precision, RotatePolicy};
use crate::samples::query;
use crate::samples::store::StoreCmd;
use crate::upload::destination::Destination;
use crate::upload::ownership;
use crate::upload::ownership::OwnershipRecords;

/// How to read the sample store.
#[derive(Clone)]
pub struct SampleAccess {
    pub dir: PathBuf,
    pub segment_secs: u64,
    pub snaplen: u32,
    pub one_in: u32,
    pub flush: Sender<StoreCmd>,
    /// Fleet mode: the other live nodes, asked for their samples too (`None`: this node only).
    pub peers: Option<Arc<dyn PeerSamples>>,
}

/// One node's part of a simple capture: its earliest `limit` samples in `[start_ns, end_ns]`
/// that match `filter_v1` (the body of `POST /internal/v1/samples`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRequest {
    pub start_ns: u64,
    pub end_ns: u64,
    pub filter_v1: serde_json::Map<String, serde_json::Value>,
    /// A tcpdump expression too (libpcap on the stored bytes, with their wire length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_expression: Option<String>,
    pub limit: usize,
}

/// The other nodes of a fleet, asked for their part of a simple capture.
pub trait PeerSamples: Send + Sync {
    /// This node's name (its samples are merged under it).
    fn local_name(&self) -> String;
    /// Asks every other live node (blocking, bounded in time); one answer per node, by name:
    /// its samples in time order, or why it gave none.
    fn gather(&self, req: &SampleRequest) -> Vec<(String, Result<Vec<query::Sample>, String>)>;
}

/// Merges the nodes' parts by (timestamp, node name, order within the node) and keeps the
/// first `limit`. Each part must be in its node's order (as `query::query` returns it).
pub fn merge(parts: Vec<(String, Vec<query::Sample>)>, limit: usize) -> Vec<query::Sample> {
    let mut all: Vec<(u64, &str, usize, &query::Sample)> = Vec::new();
    for (name, samples) in &parts {
        all.extend(samples.iter().enumerate().map(|(i, s)| (s.ts_ns, name.as_str(), i, s)));
    }
    all.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    all.into_iter().take(limit).map(|e| e.3.clone()).collect()
}

/// A fleet's side of full captures (`[fleet]`): which live nodes serve a colo, and starting and
/// stopping a capture on all of them.
pub trait FleetCaptures: Send + Sync {
    /// This node's name.
    fn node(&self) -> &str;
    /// The live nodes that serve `colo_name` (`request::serves`); the error names what the
    /// fleet serves instead.
    fn nodes_for(&self, colo_name: &str) -> Result<Vec<String>, String>;
    /// Starts `c` (stored nowhere yet, its account's claim held) on `nodes`; returns it as stored.
    fn start(&self, c: Capture, nodes: &[String]) -> Result<Capture, ManagerError>;
    /// Records a stop request of a pending or running capture and tells each of its nodes.
    fn stop(&self, c: &Capture) -> Result<Capture, ManagerError>;
}

/// What a download is: the file, here, or the node that holds it.
pub enum Download {
    File(Vec<u8>),
    OnNode(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("only one simple capture request per {interval} seconds is allowed; retry in {retry_after} s")]
    RateLimited { interval: u64, retry_after: u64 },
    #[error("capture not found")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotDownloadable(String),
    /// The data dir's file system is (nearly) full (507).
    #[error("the appliance's data disk is full; retry once space has been freed")]
    DiskFull,
    /// Its data is gone for good (410).
    #[error("{0}")]
    Gone(String),
    #[error("full capture {0} is already pending or running for this account; stop it or wait for it to finish")]
    Conflict(String),
    /// No capacity right now (capture slots, writers); nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    /// Stored, then failed to start; it is stored `failed` with this message.
    #[error("cannot start the capture: {0}")]
    StartFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The fleet cannot decide an admission now (no etcd quorum): retry.
    #[error("{0}")]
    CoordinationDown(String),
    #[error("{0}")]
    Internal(String),
}

/// How long a full capture's claim on its account outlives its time limit when nobody gives it
/// back (its node died): then another capture may start.
const FULL_CLAIM_GRACE_SECS: i64 = 120;

/// What the manager admits.
pub struct Policy {
    /// One simple capture request per account per this long.
    pub simple_interval: Duration,
    /// New captures are refused (507) while the data dir's file system has less free.
    pub keep_free_bytes: u64,
    /// Who decides the per-account rules (this appliance, or the fleet).
    pub rules: Arc<dyn Rules>,
    /// Fleet mode: where full captures run.
    pub fleet: Option<Arc<dyn FleetCaptures>>,
}

impl From<StartError> for ManagerError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Conflict(id) => ManagerError::Conflict(id),
            StartError::Unavailable(m) => ManagerError::Unavailable(m),
            StartError::Failed(m) => ManagerError::StartFailed(m),
        }
    }
}

impl From<RulesError> for ManagerError {
    fn from(e: RulesError) -> Self {
        match e {
            RulesError::Store(e) => ManagerError::Store(e),
            RulesError::Unavailable(m) => ManagerError::CoordinationDown(m),
        }
    }
}

pub struct Manager {
    store: Arc<dyn CaptureRecords>,
    ownerships: Arc<dyn OwnershipRecords>,
    full: Option<Arc<FullRuntime>>,
    samples: SampleAccess,
    captures_dir: PathBuf,
    simple_interval: Duration,
    /// New captures are refused (507) while the data dir's file system has less free.
    keep_free_bytes: u64,
    /// One simple request per interval, one pending or running full capture, per account.
    rules: Arc<dyn Rules>,
    /// Fleet mode: full captures run on the fleet's nodes.
    fleet: Option<Arc<dyn FleetCaptures>>,
    running: Mutex<Vec<JoinHandle<()>>>,
}

impl Manager {
    pub fn new(
        store: Arc<dyn CaptureRecords>,
        ownerships: Arc<dyn OwnershipRecords>,
        full: Option<Arc<FullRuntime>>,
        samples: SampleAccess,
        captures_dir: PathBuf,
        policy: Policy,
    ) -> std::io::Result<Arc<Self>> {
        let Policy { simple_interval, keep_free_bytes, rules, fleet } = policy;
        std::fs::create_dir_all(&captures_dir)?;
        Ok(Arc::new(Manager {
            store,
            ownerships,
            full,
            samples,
            captures_dir,
            simple_interval,
            keep_free_bytes,
            rules,
            fleet,
            running: Mutex::new(Vec::new()),
        }))
    }

    pub fn capture_file(&self, id: &str) -> PathBuf {
        self.captures_dir.join(format!("{id}.pcap"))
    }

    pub fn create(
        self: &Arc<Self>,
        account: &str,
        req: CreateRequest,
        now: DateTime<Utc>,
    ) -> Result<Capture, ManagerError> {
        if let Ok(free) = crate::datadir::free_bytes(&self.captures_dir) {
            if free < self.keep_free_bytes {
                tracing::error!(
                    "{}: {free} bytes free, below the {} kept free: refusing new captures",
                    self.captures_dir.display(),
                    self.keep_free_bytes
                );
                return Err(ManagerError::DiskFull);
            }
        }
        match req {
            CreateRequest::Simple(s) => self.create_simple(account, s, now),
            CreateRequest::Full(f) => self.create_full(account, f, now),
        }
    }

    pub fn full_runtime(&self) -> Option<&Arc<FullRuntime>> {
        self.full.as_ref()
    }

    fn create_full(
        self: &Arc<Self>,
        account: &str,
        req: FullRequest,
        now: DateTime<Utc>,
    ) -> Result<Capture, ManagerError> {
        let invalid = |field: &str, message: String| ManagerError::Invalid { field: field.into(), message };
        let Some(full) = &self.full else {
            return Err(invalid("type", "full captures are not available on this appliance".into()));
        };
        let nodes = match &self.fleet {
            Some(fleet) => Some(fleet.nodes_for(&req.colo_name).map_err(|m| invalid("colo_name", m))?),
            // One appliance: the colo as configured (a fleet also takes a region).
            None if full.ctx.colos.contains(&req.colo_name) => None,
            None => {
                let serves = if full.ctx.colos.is_empty() {
                    "it serves none: [node] colos is empty".to_string()
                } else {
                    format!("it serves: {}", full.ctx.colos.join(", "))
                };
                return Err(invalid(
                    "colo_name",
                    format!("{:?} is not served by this appliance ({serves})", req.colo_name),
                ));
            }
        };
        Destination::parse(&req.destination_conf).map_err(|e| invalid("destination_conf", e.0))?;
        // libpcap took it; DPDK must take it too (its converter refuses a few, e.g. protochain).
        if let Some(e) = &req.expression {
            full.ctx.control.load_expression(e).map_err(|m| invalid("filter_expression", m))?;
        }
        if !ownership::is_validated(self.ownerships.as_ref(), account, &req.destination_conf)? {
            return Err(invalid(
                "destination_conf",
                format!(
                    "{:?} has no validated ownership for this account: register it (POST /pcaps/ownership) and validate it first",
                    req.destination_conf
                ),
            ));
        }
        let c = Capture {
            packet_limit: req.packet_limit,
            byte_limit: req.byte_limit,
            colo_name: Some(req.colo_name),
            destination_conf: Some(req.destination_conf),
            packets_captured: Some(0),
            filter_expression: req.expression,
            ..Capture::new(account, CaptureType::Full, now, req.time_limit, &req.filter)
        };
        // Fleet-wide first (one pending or running full capture per account across nodes); a
        // claim outlives its capture by a grace period only if nobody gives it back.
        let until = now + chrono::Duration::seconds(c.time_limit as i64 + FULL_CLAIM_GRACE_SECS);
        if let Err(holder) = self.rules.claim_full(account, &c.id, until)? {
            return Err(ManagerError::Conflict(holder));
        }
        let id = c.id.clone();
        let started = match (&self.fleet, nodes) {
            (Some(fleet), Some(nodes)) => fleet.start(c, &nodes),
            _ => full.start(c).map_err(ManagerError::from),
        };
        started.inspect_err(|_| {
            if let Err(e) = self.rules.release_full(account, &id) {
                tracing::warn!("capture {id}: {e}");
            }
        })
    }

    fn create_simple(
        self: &Arc<Self>,
        account: &str,
        req: SimpleRequest,
        now: DateTime<Utc>,
    ) -> Result<Capture, ManagerError> {
        if let Some(wait) = self.rules.admit_simple(account, now, self.simple_interval)? {
            let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ManagerError::RateLimited { interval: self.simple_interval.as_secs(), retry_after });
        }
        let c = Capture {
            offset_time: Some(req.offset_time.unwrap_or(now)),
            packet_limit: Some(req.packet_limit),
            sample_one_in: Some(self.samples.one_in),
            filter_expression: req.expression,
            ..Capture::new(account, CaptureType::Simple, now, req.time_limit, &req.filter)
        };
        if let Err(e) = self.store.insert(&c) {
            // Refused after all: the account's next request is not held to the interval.
            if let Err(e) = self.rules.unadmit_simple(account, now) {
                tracing::warn!("capture {}: taking its admission back: {e}", c.id);
            }
            return Err(e.into());
        }
        self.spawn_conversion(c.clone());
        Ok(c)
    }

    fn spawn_conversion(self: &Arc<Self>, c: Capture) {
        let me = Arc::clone(self);
        let h = std::thread::Builder::new().name(format!("pcapd-simple-{}", &c.id[..8])).spawn(move || me.convert(c));
        match h {
            Ok(h) => {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                running.retain(|h| !h.is_finished());
                running.push(h);
            }
            Err(e) => tracing::error!("cannot start a conversion thread: {e}"),
        }
    }

    /// Runs one simple capture to `success` or `failed`.
    fn convert(&self, mut c: Capture) {
        c.status = Status::ConversionRunning;
        if let Err(e) = self.store.update(&c) {
            tracing::error!("capture {}: {e}", c.id);
        }
        match self.build_simple(&c) {
            Ok((n, note)) => {
                c.status = Status::Success;
                c.packets_captured = Some(n);
                // Fleet mode: the nodes that did not answer (the capture has the others').
                c.error_message = note;
            }
            Err(e) => {
                tracing::warn!("capture {} failed: {e}", c.id);
                c.status = Status::Failed;
                c.error_message = Some(e);
            }
        }
        if let Err(e) = self.store.update(&c) {
            tracing::error!("capture {}: {e}", c.id);
        }
    }

    /// Writes the capture file; returns its packet count and, in fleet mode, a note naming the
    /// nodes that did not answer.
    fn build_simple(&self, c: &Capture) -> Result<(u64, Option<String>), String> {
        let end = c.offset_time.unwrap_or(c.submitted);
        let end_ns = end.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let req = SampleRequest {
            start_ns: end_ns.saturating_sub(c.time_limit * 1_000_000_000),
            end_ns,
            filter_v1: c.filter.0.clone(),
            filter_expression: c.filter_expression.clone(),
            limit: c.packet_limit.unwrap_or(0) as usize,
        };
        let (samples, note) = match &self.samples.peers {
            None => (self.local_samples(&req).map_err(|e| e.to_string())?, None),
            Some(peers) => {
                // The others are asked while this node reads its own store.
                let (local, remote) = std::thread::scope(|s| {
                    let remote = s.spawn(|| peers.gather(&req));
                    let local = self.local_samples(&req).map_err(|e| e.to_string());
                    (local, remote.join())
                });
                let remote = remote.map_err(|_| "asking the other nodes failed (a panic)".to_string())?;
                let mut answers = vec![(peers.local_name(), local)];
                answers.extend(remote);
                gathered(answers, req.limit)?
            }
        };
        write_pcap(&self.capture_file(&c.id), self.samples.snaplen, &samples)?;
        tracing::debug!("capture {}: {} samples", c.id, samples.len());
        Ok((samples.len() as u64, note))
    }

    /// This node's part of a simple capture: the sample store is flushed (everything sampled up
    /// to now is on disk), then the window queried.
    pub fn local_samples(&self, req: &SampleRequest) -> Result<Vec<query::Sample>, ManagerError> {
        let (tx, rx) = channel::bounded(1);
        self.samples
            .flush
            .send(StoreCmd::Flush(tx))
            .map_err(|_| ManagerError::Internal("the sample store is not running".into()))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| ManagerError::Internal("the sample store did not answer".into()))?;
        let filter = crate::filter::FilterV1::from_json(&serde_json::Value::Object(req.filter_v1.clone()))
            .map_err(|e| ManagerError::Invalid { field: "filter_v1".into(), message: e.to_string() })?;
        let expression = match &req.filter_expression {
            Some(text) => Some(
                crate::bpf::Expression::compile(text)
                    .map_err(|e| ManagerError::Invalid { field: "filter_expression".into(), message: e.to_string() })?,
            ),
            None => None,
        };
        let (samples, stats) = query::query(
            &self.samples.dir,
            self.samples.segment_secs,
            req.start_ns,
            req.end_ns,
            &filter.compile(),
            expression.as_ref(),
            req.limit,
        )
        .map_err(|e| ManagerError::Internal(format!("reading the sample store: {e}")))?;
        tracing::debug!("sample query: {stats:?}");
        Ok(samples)
    }

    /// The sample store's snaplen (the capture files' header).
    pub fn snaplen(&self) -> u32 {
        self.samples.snaplen
    }

    pub fn get(&self, account: &str, id: &str) -> Result<Capture, ManagerError> {
        self.store.get(account, id)?.map(|c| self.with_progress(c)).ok_or(ManagerError::NotFound)
    }

    pub fn list(&self, account: &str) -> Result<Vec<Capture>, ManagerError> {
        Ok(self.store.list(account, 50)?.into_iter().map(|c| self.with_progress(c)).collect())
    }

    /// A running full capture of this appliance counts the packets written up to now (its
    /// stored record is brought up to date once a second). In a fleet the record is the sum of
    /// the parts as they publish them.
    fn with_progress(&self, mut c: Capture) -> Capture {
        if self.fleet.is_none() && c.kind == CaptureType::Full && c.status == Status::Running {
            if let Some(n) = self.full.as_ref().and_then(|f| f.live_packets(&c.id)) {
                c.packets_captured = Some(n);
            }
        }
        c
    }

    /// The bytes of a finished simple capture, or (in a fleet) the node that holds them.
    pub fn download(&self, account: &str, id: &str) -> Result<Download, ManagerError> {
        let c = self.get(account, id)?;
        if let (Status::Failed, Some(why)) = (c.status, &c.error_message) {
            return Err(ManagerError::NotDownloadable(format!("capture failed: {why}")));
        }
        if c.kind != CaptureType::Simple {
            return Err(ManagerError::NotDownloadable(
                "full captures are delivered to their bucket (destination_conf), not downloaded".into(),
            ));
        }
        if c.status != Status::Success {
            return Err(ManagerError::NotDownloadable(format!(
                "capture is {}; it can be downloaded once its status is success",
                c.status.as_str()
            )));
        }
        if let (Some(fleet), Some(node)) = (&self.fleet, &c.node) {
            if node != fleet.node() {
                return Ok(Download::OnNode(node.clone()));
            }
        }
        let read = crate::datadir::open_read(&self.capture_file(id)).and_then(|mut f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes).map(|_| bytes)
        });
        match read {
            Ok(bytes) => Ok(Download::File(bytes)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ELOOP) => {
                // Gone from the data dir (deleted, or replaced by a symlink, never followed):
                // the capture can no longer be had, and says so from now on.
                let msg = "the capture's file is missing from the appliance's data directory".to_string();
                tracing::error!("capture {id}: {}: {e}", self.capture_file(id).display());
                let mut c = c;
                c.status = Status::Failed;
                c.error_message = Some(msg.clone());
                self.store.update(&c)?;
                Err(ManagerError::Gone(msg))
            }
            Err(e) => Err(ManagerError::Internal(format!("reading the capture file: {e}"))),
        }
    }

    /// Stops a running full capture early (`stop_requested` is set); its files are then uploaded.
    pub fn stop(&self, account: &str, id: &str) -> Result<Capture, ManagerError> {
        let c = self.get(account, id)?;
        if c.kind == CaptureType::Simple {
            return Err(ManagerError::Invalid {
                field: "pcap_id".into(),
                message: format!("capture {} is a simple capture; only full captures can be stopped", c.id),
            });
        }
        if let Some(fleet) = &self.fleet {
            if !matches!(c.status, Status::Pending | Status::Running) {
                return Err(not_stoppable(&c));
            }
            return fleet.stop(&c);
        }
        // A live capture's row is written by the full-capture loop only: it records the stop.
        if let Some(stopped) = self.full.as_ref().and_then(|full| full.stop(account, id)) {
            return Ok(stopped);
        }
        // Not live here: it has ended (maybe just now), or this appliance runs no full
        // captures and the row is all there is (nobody else writes it then).
        let mut c = self.get(account, id)?;
        if matches!(c.status, Status::Pending | Status::Running) {
            if c.stop_requested.is_none() {
                c.stop_requested = Some(Utc::now());
                self.store.update(&c)?;
            }
            return Ok(c);
        }
        Err(not_stoppable(&c))
    }

    /// Start-up: finishes simple captures a restart interrupted (their samples are on disk) and
    /// fails what cannot be resumed.
    pub fn reconcile(self: &Arc<Self>) -> Result<usize, ManagerError> {
        let unfinished = self.store.unfinished()?;
        let n = unfinished.len();
        for c in unfinished {
            match c.kind {
                CaptureType::Simple => {
                    tracing::info!("capture {}: resuming the conversion a restart interrupted", c.id);
                    self.spawn_conversion(c);
                }
                CaptureType::Full => self.reconcile_full(c)?,
            }
        }
        Ok(n)
    }

    /// A full capture a restart interrupted: what was written before is repaired and uploaded;
    /// a capture already uploading just resumes (its queue is in the store).
    fn reconcile_full(&self, mut c: Capture) -> Result<(), ManagerError> {
        let Some(full) = &self.full else {
            c.status = Status::Failed;
            c.error_message = Some("full captures are not available on this appliance any more".into());
            self.store.update(&c)?;
            return Ok(());
        };
        if matches!(c.status, Status::Pending | Status::Running) {
            // Files rotated before the restart may be uploaded already: the count is the queue's.
            let recovered =
                full.recover_spool(&c.id).and_then(|_| full.enqueue_spool(&c)).and_then(|_| full.queued_packets(&c.id));
            match recovered {
                Ok(packets) => {
                    tracing::info!(
                        "capture {}: interrupted by a restart; uploading the {packets} packets written before",
                        c.id
                    );
                    c.packets_captured = Some(packets);
                    c.status = Status::ConversionPending;
                }
                Err(e) => {
                    c.status = Status::Failed;
                    c.error_message = Some(format!("interrupted by a restart and not recoverable: {e}"));
                }
            }
            self.store.update(&c)?;
        }
        let _ = full.ctx.upload_wake.try_send(());
        Ok(())
    }

    /// Waits for running conversions (shutdown).
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }

    /// Captures running right now on this appliance: simple ones being made and full ones
    /// capturing (for /metrics and the status route).
    pub fn running(&self) -> usize {
        let simple = self.running.lock().map(|r| r.iter().filter(|h| !h.is_finished()).count()).unwrap_or(0);
        simple + self.full_runtime().map_or(0, |f| f.counters().len())
    }
}

fn not_stoppable(c: &Capture) -> ManagerError {
    ManagerError::Invalid {
        field: "pcap_id".into(),
        message: format!("capture {} is {}; only a pending or running capture can be stopped", c.id, c.status.as_str()),
    }
}

/// The merged samples of the nodes that answered, and a note naming those that did not; an
/// error when none answered.
fn gathered(
    answers: Vec<(String, Result<Vec<query::Sample>, String>)>,
    limit: usize,
) -> Result<(Vec<query::Sample>, Option<String>), String> {
    let total = answers.len();
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for (name, answer) in answers {
        match answer {
            Ok(samples) => parts.push((name, samples)),
            Err(why) => {
                tracing::warn!("simple capture: node {name} skipped: {why}");
                missing.push(format!("{name} ({why})"));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("no node of the fleet answered: {}", missing.join("; ")));
    }
    let note = (!missing.is_empty()).then(|| {
        format!("samples of {} of {total} nodes; not included (no answer): {}", parts.len(), missing.join("; "))
    });
    Ok((merge(parts, limit), note))
}

fn write_pcap(path: &Path, snaplen: u32, samples: &[query::Sample]) -> Result<(), String> {
    let mut sink =
        PcapSink::create(path, RotatePolicy::default(), Precision::Nanos, snaplen).map_err(|e| e.to_string())?;
    for s in samples {
        // Samples are already truncated; keep their original length in the record.
        sink.write_truncated(s.ts_ns, s.orig_len, &s.data, 0).map_err(|e| e.to_string())?;
    }
    sink.finish().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod gather_tests {
    use super::*;

    fn s(ts_ns: u64, tag: u8) -> query::Sample {
        query::Sample { ts_ns, orig_len: 1, data: vec![tag] }
    }

    fn tags(v: &[query::Sample]) -> Vec<u8> {
        v.iter().map(|s| s.data[0]).collect()
    }

    #[test]
    fn merge_orders_by_time_then_node_then_order_and_stops_at_the_limit() {
        // Written out by hand: ties at 10 go to node "a" before "b", and keep each node's order.
        let parts = vec![
            ("b".to_string(), vec![s(10, 1), s(10, 2), s(30, 3)]),
            ("a".to_string(), vec![s(5, 4), s(10, 5), s(40, 6)]),
            ("c".to_string(), vec![]),
        ];
        assert_eq!(tags(&merge(parts.clone(), 100)), [4, 5, 1, 2, 3, 6]);
        assert_eq!(tags(&merge(parts.clone(), 3)), [4, 5, 1]);
        assert!(merge(parts, 0).is_empty());
    }

    #[test]
    fn nodes_without_an_answer_are_named_and_none_answering_fails() {
        let answers = vec![
            ("n1".to_string(), Ok(vec![s(2, 1)])),
            ("n3".to_string(), Err("connection refused".to_string())),
            ("n2".to_string(), Ok(vec![s(1, 2)])),
        ];
        let (got, note) = gathered(answers, 10).unwrap();
        assert_eq!(tags(&got), [2, 1]);
        assert_eq!(note.as_deref(), Some("samples of 2 of 3 nodes; not included (no answer): n3 (connection refused)"));
        let (_, note) = gathered(vec![("n1".to_string(), Ok(vec![]))], 10).unwrap();
        assert_eq!(note, None);
        let err =
            gathered(vec![("n1".to_string(), Err("x".into())), ("n2".to_string(), Err("y".into()))], 10).unwrap_err();
        assert_eq!(err, "no node of the fleet answered: n1 (x); n2 (y)");
    }
}
