//! Buckets: destinations (`s3://`, `gs://`), the object stores behind them, ownership
//! challenges, and the durable upload queue of full captures.
pub mod buckets;
pub mod destination;
pub mod objects;
pub mod ownership;
pub mod uploader;

use crate::db::StoreError;

/// One file of a full capture waiting for (or done with) its upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadJob {
    pub id: i64,
    pub capture_id: String,
    pub seq: u32,
    pub path: String,
    pub key: String,
    pub destination_conf: String,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// What the file holds (from its record headers, when it was queued).
    pub file: FileInfo,
}

/// A spool file's size and contents, noted when it is queued (the file is gone once uploaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileInfo {
    pub bytes: u64,
    pub packets: u64,
    /// Timestamps (ns since the epoch) of its first and last packet.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

/// Where one queued file stands. Stored as text in the queue (`pending`, `done`, `failed`);
/// `Uploading` is never stored: the uploader reports the job it is sending
/// (`UploadStats::in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// On this node's disk, waiting for (its next attempt at) its upload.
    Spooled,
    /// Being sent to the bucket now.
    Uploading,
    /// In the bucket; the local copy is deleted.
    Uploaded,
    /// Given up (the store refused it for good, or the capture failed).
    Failed,
}

impl FileState {
    /// The state of `job`, which is in flight when `in_flight` is its id.
    pub fn of(job: &UploadJob, in_flight: i64) -> FileState {
        match job.state.as_str() {
            "done" => FileState::Uploaded,
            "failed" => FileState::Failed,
            _ if job.id == in_flight => FileState::Uploading,
            _ => FileState::Spooled,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Spooled => "spooled",
            FileState::Uploading => "uploading",
            FileState::Uploaded => "uploaded",
            FileState::Failed => "failed",
        }
    }
}

/// One object of a full capture as `GET .../pcaps/{id}/files` lists it (a pcapd extension;
/// the web page reads `node`, `key`, `bytes`, `packets` and `state`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// The node that wrote the file.
    pub node: String,
    /// The object's key in the bucket of the capture's `destination_conf`.
    pub key: String,
    pub bytes: u64,
    pub packets: u64,
    /// `spooled`, `uploading`, `uploaded` or `failed` ([`FileState`]).
    pub state: String,
    /// The file's number among its node's files of the capture (0, 1, …).
    pub seq: u32,
    /// Times of its first and last packet (RFC 3339, nanoseconds); absent when it holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_packet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_packet: Option<String>,
    /// Upload attempts so far, and the last one's error (a retry is due, or it failed).
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileEntry {
    /// The entry of queued file `job` of node `node`; `in_flight` is the job being uploaded.
    pub fn of(node: &str, job: &UploadJob, in_flight: i64) -> FileEntry {
        let time = |ns: Option<u64>| {
            ns.map(|t| {
                chrono::DateTime::from_timestamp_nanos(i64::try_from(t).unwrap_or(i64::MAX))
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            })
        };
        FileEntry {
            node: node.to_string(),
            key: job.key.clone(),
            bytes: job.file.bytes,
            packets: job.file.packets,
            state: FileState::of(job, in_flight).as_str().to_string(),
            seq: job.seq,
            first_packet: time(job.file.first_ns),
            last_packet: time(job.file.last_ns),
            attempts: job.attempts,
            error: job.last_error.clone(),
        }
    }
}

/// The durable upload queue.
pub trait UploadQueue: Send + Sync {
    /// Adds a file (idempotent per capture and sequence number).
    fn enqueue(
        &self,
        capture_id: &str,
        seq: u32,
        path: &str,
        key: &str,
        destination_conf: &str,
        file: &FileInfo,
    ) -> Result<(), StoreError>;
    fn pending_uploads(&self) -> Result<Vec<UploadJob>, StoreError>;
    fn uploads_of(&self, capture_id: &str) -> Result<Vec<UploadJob>, StoreError>;
    fn set_upload_state(&self, id: i64, state: &str, attempts: u32, error: Option<&str>) -> Result<(), StoreError>;
}
