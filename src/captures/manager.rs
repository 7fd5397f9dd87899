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
        let Policy { simple_interval, keep_free_bytes, rules } = policy;
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
        if !full.ctx.colos.contains(&req.colo_name) {
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
        Destination::parse(&req.destination_conf).map_err(|e| invalid("destination_conf", e.0))?;
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
            ..Capture::new(account, CaptureType::Full, now, req.time_limit, &req.filter)
        };
        // Fleet-wide first (one pending or running full capture per account across nodes); a
        // claim outlives its capture by a grace period only if nobody gives it back.
        let until = now + chrono::Duration::seconds(c.time_limit as i64 + FULL_CLAIM_GRACE_SECS);
        if let Err(holder) = self.rules.claim_full(account, &c.id, until)? {
            return Err(ManagerError::Conflict(holder));
        }
        let id = c.id.clone();
        full.start(c)
            .inspect_err(|_| {
                if let Err(e) = self.rules.release_full(account, &id) {
                    tracing::warn!("capture {id}: {e}");
                }
            })
            .map_err(|e| match e {
                StartError::Conflict(id) => ManagerError::Conflict(id),
                StartError::Unavailable(m) => ManagerError::Unavailable(m),
                StartError::Failed(m) => ManagerError::StartFailed(m),
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
            ..Capture::new(account, CaptureType::Simple, now, req.time_limit, &req.filter)
        };
        self.store.insert(&c)?;
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
            Ok(n) => {
                c.status = Status::Success;
                c.packets_captured = Some(n);
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

    fn build_simple(&self, c: &Capture) -> Result<u64, String> {
        // Everything sampled up to now must be on disk before the window is read.
        let (tx, rx) = channel::bounded(1);
        self.samples.flush.send(StoreCmd::Flush(tx)).map_err(|_| "the sample store is not running".to_string())?;
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "the sample store did not answer".to_string())?;
        let end = c.offset_time.unwrap_or(c.submitted);
        let end_ns = end.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let start_ns = end_ns.saturating_sub(c.time_limit * 1_000_000_000);
        let matcher = c.filter.filter().compile();
        let limit = c.packet_limit.unwrap_or(0) as usize;
        let (samples, stats) =
            query::query(&self.samples.dir, self.samples.segment_secs, start_ns, end_ns, &matcher, limit)
                .map_err(|e| format!("reading the sample store: {e}"))?;
        tracing::debug!("capture {}: {stats:?}", c.id);
        write_pcap(&self.capture_file(&c.id), self.samples.snaplen, &samples)?;
        Ok(samples.len() as u64)
    }

    pub fn get(&self, account: &str, id: &str) -> Result<Capture, ManagerError> {
        self.store.get(account, id)?.ok_or(ManagerError::NotFound)
    }

    pub fn list(&self, account: &str) -> Result<Vec<Capture>, ManagerError> {
        Ok(self.store.list(account, 50)?)
    }

    /// The bytes of a finished simple capture.
    pub fn download(&self, account: &str, id: &str) -> Result<Vec<u8>, ManagerError> {
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
        let read = crate::datadir::open_read(&self.capture_file(id)).and_then(|mut f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes).map(|_| bytes)
        });
        match read {
            Ok(bytes) => Ok(bytes),
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
        Err(ManagerError::Invalid {
            field: "pcap_id".into(),
            message: format!(
                "capture {} is {}; only a pending or running capture can be stopped",
                c.id,
                c.status.as_str()
            ),
        })
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
            match full.recover_spool(&c.id).and_then(|packets| full.enqueue_spool(&c).map(|_| packets)) {
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

    /// Captures running right now (for /metrics).
    pub fn running(&self) -> usize {
        self.running.lock().map(|r| r.iter().filter(|h| !h.is_finished()).count()).unwrap_or(0)
    }
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
