//! The upload queue worker: uploads each closed spool file of a full capture to its bucket
//! (multipart above `upload.multipart_threshold`), retrying with exponential back-off and jitter
//! while the store is unreachable, aborting the multipart upload on a permanent failure (no
//! orphaned parts), deleting the local file only after the store confirmed it, and moving the
//! capture to `success` (or `failed`, with the store's reason) when its last file is done.
//! The queue lives in SQLite, so a restart (even SIGKILL) resumes where it stopped.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncReadExt;

use super::buckets::{is_permanent, store_reason, Buckets};
use super::destination::Destination;
use crate::captures::model::{CaptureType, Status};
use crate::captures::CaptureRecords;
use crate::upload::{UploadJob, UploadQueue};

/// Upload counters for /metrics.
#[derive(Debug)]
pub struct UploadStats {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
    pub latency_us_sum: AtomicU64,
    pub backlog: AtomicU64,
    /// The queue id of the file being uploaded now (-1: none), for files listings.
    pub in_flight: AtomicI64,
}

impl Default for UploadStats {
    fn default() -> Self {
        UploadStats {
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_us_sum: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            in_flight: AtomicI64::new(-1),
        }
    }
}

pub struct Uploader {
    pub stores: Arc<Buckets>,
    pub queue: Arc<dyn UploadQueue>,
    pub captures: Arc<dyn CaptureRecords>,
    pub wake: Receiver<()>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<UploadStats>,
    /// `<data dir>/spool`: the only files the uploader reads, and deletes once uploaded.
    pub spool_dir: PathBuf,
}

/// Whether `job` names a finished file of its own capture's spool (`<spool>/<capture_id>/
/// pcap_NNNNN.pcap`, a regular file, not a symlink). A queue row naming anything else (planted
/// in the database) is refused: the uploader would read it out and then delete it.
pub fn spool_file_of(spool_dir: &Path, job: &UploadJob) -> Result<(), String> {
    let path = Path::new(&job.path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let named_like_a_part = name
        .strip_prefix("pcap_")
        .and_then(|n| n.strip_suffix(".pcap"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let refuse = |why: &str| Err(format!("refusing to upload {}: {why}", job.path));
    // Compared resolved, so that a row written when the data dir was named another way (a
    // relative path, say) still matches; `..` and links cannot point elsewhere.
    let own = spool_dir.join(&job.capture_id).canonicalize().ok();
    let parent = path.parent().and_then(|p| p.canonicalize().ok());
    if !crate::captures::model::is_id(&job.capture_id) || own.is_none() || parent != own {
        return refuse("not in its capture's spool directory");
    }
    if !named_like_a_part {
        return refuse("not a spool file of the capture");
    }
    match crate::datadir::EntryKind::of(path) {
        Ok(crate::datadir::EntryKind::File) => Ok(()),
        Ok(kind) => refuse(&format!("it is {}", kind.as_str())),
        // Missing: the upload reports it as the local error it is.
        Err(_) => Ok(()),
    }
}

enum Outcome {
    Done(u64),
    Permanent(String),
    Transient(String),
}

/// When a destination's files are tried again, and the back-off after the next failure.
struct Backoff {
    until: Instant,
    next: Duration,
}

/// Back-off per destination: one account's unreachable or failing bucket delays only its own
/// files, never another's (one failure used to hold the whole queue back).
struct Backoffs {
    waits: HashMap<String, Backoff>,
    initial: Duration,
    max: Duration,
}

impl Backoffs {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoffs { waits: HashMap::new(), initial, max }
    }

    /// The queued jobs whose destination is not waiting. A destination's back-off is kept
    /// (and grows on the next failure) while it has files queued.
    fn due<'a>(&mut self, jobs: &'a [UploadJob], now: Instant) -> Vec<&'a UploadJob> {
        self.waits.retain(|d, w| w.until > now || jobs.iter().any(|j| &j.destination_conf == d));
        jobs.iter().filter(|j| self.waits.get(&j.destination_conf).is_none_or(|w| w.until <= now)).collect()
    }

    /// How long until a waiting destination is due (at most `cap`).
    fn next_due(&self, now: Instant, cap: Duration) -> Duration {
        self.waits.values().map(|w| w.until.saturating_duration_since(now)).min().map_or(cap, |d| d.min(cap))
    }

    /// `dest` failed: it waits its back-off (with up to half of it as jitter), which doubles.
    fn failed(&mut self, dest: &str, now: Instant) -> Duration {
        let (initial, max) = (self.initial, self.max);
        let w = self.waits.entry(dest.to_string()).or_insert(Backoff { until: now, next: initial });
        let wait = w.next + Duration::from_millis(rand::random::<u64>() % (w.next.as_millis() as u64 / 2 + 1));
        w.until = now + wait;
        w.next = (w.next * 2).min(max);
        wait
    }

    fn succeeded(&mut self, dest: &str) {
        self.waits.remove(dest);
    }

    fn is_waiting(&self, dest: &str, now: Instant) -> bool {
        self.waits.get(dest).is_some_and(|w| w.until > now)
    }
}

impl Uploader {
    pub fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("uploader: cannot start its runtime: {e}");
                return;
            }
        };
        let cfg = self.stores.config().clone();
        let mut backoffs =
            Backoffs::new(Duration::from_millis(cfg.retry_initial_ms), Duration::from_millis(cfg.retry_max_ms));
        while !self.stop.load(Relaxed) {
            let jobs = match self.queue.pending_uploads() {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!("uploader: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            self.stats.backlog.store(jobs.len() as u64, Relaxed);
            self.settle_captures();
            let due = backoffs.due(&jobs, Instant::now());
            if due.is_empty() {
                // Nothing to do before the earliest back-off ends (or a new file is queued).
                let _ = self.wake.recv_timeout(backoffs.next_due(Instant::now(), Duration::from_millis(500)));
                continue;
            }
            for job in due {
                if self.stop.load(Relaxed) {
                    break;
                }
                if backoffs.is_waiting(&job.destination_conf, Instant::now()) {
                    continue; // its destination just failed: retried after its back-off
                }
                let started = Instant::now();
                self.stats.in_flight.store(job.id, Relaxed);
                let outcome = rt.block_on(self.upload(job));
                self.stats.in_flight.store(-1, Relaxed);
                match outcome {
                    Outcome::Done(bytes) => {
                        backoffs.succeeded(&job.destination_conf);
                        self.stats.bytes.fetch_add(bytes, Relaxed);
                        self.stats.files.fetch_add(1, Relaxed);
                        self.stats.latency_us_sum.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                        if let Err(e) = self.queue.set_upload_state(job.id, "done", job.attempts + 1, None) {
                            tracing::error!("uploader: {e}");
                            continue;
                        }
                        // Only now is the local copy expendable. (Its directory goes when the
                        // capture is settled: a running capture's writer opens its next file in
                        // it, maybe after this upload emptied it.)
                        let _ = std::fs::remove_file(&job.path);
                    }
                    Outcome::Permanent(e) => {
                        self.stats.failures.fetch_add(1, Relaxed);
                        tracing::warn!("upload of {} failed for good: {e}", job.key);
                        let _ = self.queue.set_upload_state(job.id, "failed", job.attempts + 1, Some(&e));
                    }
                    Outcome::Transient(e) => {
                        self.stats.retries.fetch_add(1, Relaxed);
                        let _ = self.queue.set_upload_state(job.id, "pending", job.attempts + 1, Some(&e));
                        let wait = backoffs.failed(&job.destination_conf, Instant::now());
                        tracing::info!("upload of {} will be retried in {wait:?}: {e}", job.key);
                    }
                }
            }
            self.settle_captures();
        }
    }

    /// Moves uploading captures whose files are all done (or one failed) to their final status.
    fn settle_captures(&self) {
        let Ok(unfinished) = self.captures.unfinished() else { return };
        for mut c in
            unfinished.into_iter().filter(|c| c.kind == CaptureType::Full && c.status == Status::ConversionPending)
        {
            let Ok(jobs) = self.queue.uploads_of(&c.id) else { continue };
            if let Some(failed) = jobs.iter().find(|j| j.state == "failed") {
                c.status = Status::Failed;
                c.error_message = Some(format!(
                    "upload of {} failed: {}",
                    failed.key,
                    failed.last_error.as_deref().unwrap_or("unknown error")
                ));
                // The other files of a failed capture are not uploaded.
                for j in jobs.iter().filter(|j| j.state == "pending") {
                    let _ = self.queue.set_upload_state(
                        j.id,
                        "failed",
                        j.attempts,
                        Some("another file of the capture failed"),
                    );
                }
            } else if jobs.iter().all(|j| j.state == "done") {
                // A capture cut short by a write error uploads what it has, then fails saying so.
                c.status = if c.error_message.is_some() { Status::Failed } else { Status::Success };
            } else {
                continue;
            }
            if let Err(e) = self.captures.update(&c) {
                tracing::error!("capture {}: {e}", c.id);
            }
            // Files the store confirmed but that are still here (a kill between marking one
            // done and deleting it) go now; files not uploaded stay.
            for j in jobs.iter().filter(|j| j.state == "done") {
                if spool_file_of(&self.spool_dir, j).is_ok() {
                    let _ = std::fs::remove_file(&j.path);
                }
            }
            let _ = std::fs::remove_dir(self.spool_dir.join(&c.id)); // only when empty
        }
    }

    async fn upload(&self, job: &UploadJob) -> Outcome {
        if let Err(e) = spool_file_of(&self.spool_dir, job) {
            tracing::error!("{e}");
            return Outcome::Permanent(e);
        }
        let dest = match Destination::parse(&job.destination_conf) {
            Ok(d) => d,
            Err(e) => return Outcome::Permanent(e.to_string()),
        };
        let store = match self.stores.for_destination(&dest) {
            Ok(s) => s,
            Err(e) => return Outcome::Permanent(e.to_string()),
        };
        let key = match ObjectPath::parse(&job.key) {
            Ok(k) => k,
            Err(e) => return Outcome::Permanent(e.to_string()),
        };
        let cfg = self.stores.config();
        match upload_file(
            store.as_ref(),
            &key,
            std::path::Path::new(&job.path),
            cfg.multipart_threshold,
            cfg.part_size as usize,
        )
        .await
        {
            Ok(size) => Outcome::Done(size),
            Err(UploadFileError::Local(e)) => Outcome::Permanent(format!("{}: {e}", job.path)),
            Err(UploadFileError::Store(e)) if is_permanent(&e) => Outcome::Permanent(store_reason(&e)),
            Err(UploadFileError::Store(e)) => Outcome::Transient(store_reason(&e)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadFileError {
    #[error("reading the file: {0}")]
    Local(std::io::Error),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// Uploads one local file as `key`: a single PUT up to `multipart_threshold` bytes, else a
/// multipart upload of `part_size` parts. Returns the bytes uploaded.
pub async fn upload_file(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    path: &std::path::Path,
    multipart_threshold: u64,
    part_size: usize,
) -> Result<u64, UploadFileError> {
    let mut file = tokio::fs::File::open(path).await.map_err(UploadFileError::Local)?;
    let size = file.metadata().await.map_err(UploadFileError::Local)?.len();
    if size <= multipart_threshold {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf).await.map_err(UploadFileError::Local)?;
        store.put(key, PutPayload::from(buf)).await?;
        return Ok(size);
    }
    multipart(store, key, &mut file, part_size, size).await?;
    Ok(size)
}

/// A multipart upload that is aborted on any failure, so no parts are left behind.
async fn multipart(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    file: &mut tokio::fs::File,
    part_size: usize,
    size: u64,
) -> Result<(), object_store::Error> {
    let mut upload = store.put_multipart(key).await?;
    let mut sent = 0u64;
    let result: Result<(), object_store::Error> = async {
        while sent < size {
            let want = part_size.min((size - sent) as usize);
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
            upload.put_part(PutPayload::from(buf)).await?;
            sent += want as u64;
        }
        upload.complete().await.map(|_| ())
    }
    .await;
    if result.is_err() {
        if let Err(e) = upload.abort().await {
            tracing::warn!("aborting the multipart upload of {key}: {e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(capture_id: &str, path: &Path) -> UploadJob {
        UploadJob {
            id: 1,
            capture_id: capture_id.into(),
            seq: 0,
            path: path.to_string_lossy().into_owned(),
            key: "k".into(),
            destination_conf: "s3://b/d?region=r".into(),
            state: "pending".into(),
            attempts: 0,
            last_error: None,
            file: Default::default(),
        }
    }

    /// Regression (probe): an `uploads` row naming a file outside the spool was uploaded (and
    /// would then have been deleted).
    #[test]
    fn only_files_of_the_captures_own_spool_are_uploaded() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path().join("spool");
        let id = "0123456789abcdef0123456789abcdef";
        std::fs::create_dir_all(spool.join(id)).unwrap();
        let good = spool.join(id).join("pcap_00000.pcap");
        std::fs::write(&good, b"x").unwrap();
        assert_eq!(spool_file_of(&spool, &job(id, &good)), Ok(()));
        let victim = d.path().join("victim.pcap");
        std::fs::write(&victim, b"precious").unwrap();
        assert!(spool_file_of(&spool, &job(id, &victim)).is_err(), "outside the spool");
        let other = "fedcba9876543210fedcba9876543210";
        assert!(spool_file_of(&spool, &job(other, &good)).is_err(), "another capture's spool");
        let odd = spool.join(id).join("notes.txt");
        assert!(spool_file_of(&spool, &job(id, &odd)).is_err(), "not a part file");
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let up = spool.join(id).join("..").join("..").join("elsewhere").join("pcap_00001.pcap");
        assert!(spool_file_of(&spool, &job(id, &up)).is_err(), "no .. games");
        let same = spool.join(id).join("..").join(id).join("pcap_00000.pcap");
        assert_eq!(spool_file_of(&spool, &job(id, &same)), Ok(()), "the same file by another name");
        let link = spool.join(id).join("pcap_00002.pcap");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(spool_file_of(&spool, &job(id, &link)).unwrap_err().contains("symlink"));
    }

    /// Regression: one destination's transient failure held every other destination's files
    /// back (the uploader slept its back-off and re-read the queue from the failed file).
    #[test]
    fn a_failing_destination_waits_alone() {
        let d = tempfile::tempdir().unwrap();
        let of = |id: i64, dest: &str| UploadJob { id, destination_conf: dest.into(), ..job("c", d.path()) };
        let (a, b) = ("s3://a/x?region=r", "s3://b/y?region=r");
        let jobs = vec![of(1, a), of(2, a), of(3, b)];
        let mut bo = Backoffs::new(Duration::from_secs(1), Duration::from_secs(8));
        let t0 = Instant::now();
        let ids = |v: Vec<&UploadJob>| v.iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(bo.due(&jobs, t0)), [1, 2, 3]);
        let wait = bo.failed(a, t0);
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_millis(1500), "{wait:?}");
        assert!(bo.is_waiting(a, t0) && !bo.is_waiting(b, t0));
        assert_eq!(ids(bo.due(&jobs, t0)), [3], "b's file goes on while a waits");
        assert!(bo.next_due(t0, Duration::from_secs(5)) <= wait);
        // After its wait, a is due again; its next failure waits twice as long.
        let later = t0 + wait;
        assert_eq!(ids(bo.due(&jobs, later)), [1, 2, 3]);
        assert!(bo.failed(a, later) >= Duration::from_secs(2));
        // Success forgets the back-off; a destination with nothing queued is forgotten too.
        bo.succeeded(a);
        assert!(!bo.is_waiting(a, later));
        bo.failed(b, later);
        assert_eq!(ids(bo.due(&jobs[..2], later + Duration::from_secs(10))), [1, 2]);
        assert!(bo.waits.is_empty());
    }

    /// Regression (review): a kill between marking a file uploaded and deleting it left the
    /// file, and with it the capture's spool directory, on disk for good.
    #[test]
    fn settling_a_capture_removes_uploaded_files_left_in_its_spool() {
        use crate::captures::model::Capture;
        use crate::config::UploadConfig;
        use crate::db::Db;
        let d = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&d.path().join("pcapd.db")).unwrap());
        let spool = d.path().join("spool");
        let mut c = Capture::new(&"a".repeat(32), CaptureType::Full, chrono::Utc::now(), 60, &Default::default());
        c.status = Status::ConversionPending;
        c.destination_conf = Some("s3://b/d?region=r".into());
        db.insert(&c).unwrap();
        std::fs::create_dir_all(spool.join(&c.id)).unwrap();
        let (uploaded, waiting) =
            (spool.join(&c.id).join("pcap_00000.pcap"), spool.join(&c.id).join("pcap_00001.pcap"));
        for (seq, f) in [(0, &uploaded), (1, &waiting)] {
            std::fs::write(f, b"x").unwrap();
            db.enqueue(&c.id, seq, &f.to_string_lossy(), "k", "s3://b/d?region=r", &Default::default()).unwrap();
        }
        let (_wake_tx, wake) = crossbeam::channel::bounded(1);
        let uploader = Uploader {
            stores: Arc::new(Buckets::new(UploadConfig::default())),
            queue: db.clone(),
            captures: db.clone(),
            wake,
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
            spool_dir: spool.clone(),
        };
        let jobs = db.uploads_of(&c.id).unwrap();
        // Only the first is uploaded: the capture is not settled, nothing is removed.
        db.set_upload_state(jobs[0].id, "done", 1, None).unwrap();
        uploader.settle_captures();
        assert!(uploaded.exists() && waiting.exists());
        // Both uploaded, the first file left behind by a kill: settling removes it and the dir.
        db.set_upload_state(jobs[1].id, "done", 1, None).unwrap();
        std::fs::remove_file(&waiting).unwrap();
        uploader.settle_captures();
        assert!(!uploaded.exists(), "an uploaded file left in the spool is removed");
        assert!(!spool.join(&c.id).exists(), "and the capture's spool directory with it");
        assert_eq!(db.get(&c.account, &c.id).unwrap().unwrap().status, Status::Success);
    }
}
