//! The one error type of the SQLite database (`db`): a leaf, so that the traits defined next to
//! their users (captures, ownership, upload queue) can name it without importing `db`.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: corrupt record {id}: {source}")]
    Corrupt { id: String, source: serde_json::Error },
    #[error("store: cannot encode record: {0}")]
    Encode(serde_json::Error),
    /// The fleet's records (etcd) cannot be written or read now: retry soon.
    #[error("the fleet's records cannot be reached now: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// SQLite could not write: the data dir's file system is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
    }
}
