//! Captures: the model (Cloudflare's PCAP object), request validation and the manager that runs
//! them (simple captures from the sample store).
pub mod full;
pub mod manager;
pub mod model;
pub mod request;
pub mod rules;

use crate::db::StoreError;
use model::Capture;

/// What the capture manager needs from persistence.
pub trait CaptureRecords: Send + Sync {
    fn insert(&self, c: &Capture) -> Result<(), StoreError>;
    fn update(&self, c: &Capture) -> Result<(), StoreError>;
    fn get(&self, account: &str, id: &str) -> Result<Option<Capture>, StoreError>;
    /// Newest first, at most `limit`.
    fn list(&self, account: &str, limit: usize) -> Result<Vec<Capture>, StoreError>;
    /// Every capture whose status is not final (for start-up reconciliation).
    fn unfinished(&self) -> Result<Vec<Capture>, StoreError>;
    /// When the account's newest simple capture was submitted (the one-a-minute rule).
    fn newest_simple(&self, account: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>;
}
