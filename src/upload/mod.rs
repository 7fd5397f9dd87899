//! Buckets: destinations (`s3://`, `gs://`), the object stores behind them, ownership
//! challenges, and the durable upload queue of full captures.
pub mod buckets;
pub mod destination;
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
    ) -> Result<(), StoreError>;
    fn pending_uploads(&self) -> Result<Vec<UploadJob>, StoreError>;
    fn uploads_of(&self, capture_id: &str) -> Result<Vec<UploadJob>, StoreError>;
    fn set_upload_state(&self, id: i64, state: &str, attempts: u32, error: Option<&str>) -> Result<(), StoreError>;
}
