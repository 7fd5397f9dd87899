//! Bucket ownership: `write_challenge` writes `<dir>/ownership-challenge-<id>.txt` holding a
//! random token into the destination; the user reads it and posts it to `validate`, compared in
//! constant time. Only destinations with a `success` ownership take full captures.
//!
//! Bucket calls are async; `OwnershipRecords` calls are blocking (SQLite), so the two are kept
//! in separate functions and the API runs the record parts off its async workers.
use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::buckets::{store_reason, Buckets, StoresError};
use super::destination::Destination;
use crate::captures::model::{new_id, rfc3339};
use crate::db::StoreError;

/// Bucket ownership records.
pub trait OwnershipRecords: Send + Sync {
    fn put_ownership(&self, o: &Ownership) -> Result<(), StoreError>;
    fn ownerships(&self, account: &str) -> Result<Vec<Ownership>, StoreError>;
    fn delete_ownership(&self, account: &str, id: &str) -> Result<bool, StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnershipStatus {
    Pending,
    Success,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    pub id: String,
    pub account: String,
    pub destination_conf: String,
    pub filename: String,
    pub status: OwnershipStatus,
    pub submitted: DateTime<Utc>,
    pub validated: Option<DateTime<Utc>>,
    /// The challenge token written to the bucket (never returned by the API).
    pub token: String,
}

impl Ownership {
    pub fn to_api(&self) -> Value {
        json!({
            "id": self.id,
            "destination_conf": self.destination_conf,
            "filename": self.filename,
            "status": self.status,
            "submitted": rfc3339(&self.submitted),
            "validated": self.validated.as_ref().map(rfc3339).unwrap_or_default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("{0}")]
    Invalid(String),
    #[error("ownership not found")]
    NotFound,
    /// The challenge could not be written. `detail` (the store's answer: no such bucket, access
    /// denied, unreachable) is for the log only: told to the caller, it would let any account
    /// probe which buckets exist and what the appliance's credentials reach.
    #[error("destination_conf: cannot write the ownership challenge to this destination")]
    Unwritable { destination: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn token() -> String {
    let (a, b): (u128, u128) = (rand::random(), rand::random());
    format!("{a:032x}{b:032x}")
}

/// Writes the challenge file of a new registration of `destination_conf` for `account` and
/// returns that registration, `pending`; the caller stores it (`put_ownership`, blocking).
pub async fn write_challenge(
    stores: &Buckets,
    account: &str,
    destination_conf: &str,
) -> Result<Ownership, OwnershipError> {
    let dest = Destination::parse(destination_conf).map_err(|e| OwnershipError::Invalid(e.to_string()))?;
    let store = stores.for_destination(&dest).map_err(|e| match e {
        // Configuration, the same for every bucket: safe and useful to tell.
        StoresError::NotConfigured { .. } => OwnershipError::Invalid(e.to_string()),
        _ => OwnershipError::Unwritable { destination: destination_conf.to_string(), detail: e.to_string() },
    })?;
    let id = new_id();
    let filename = format!("ownership-challenge-{id}.txt");
    let tok = token();
    let key = ObjectPath::parse(dest.key(&filename))
        .map_err(|e| OwnershipError::Invalid(format!("destination_conf: {e}")))?;
    store.put(&key, PutPayload::from(tok.clone().into_bytes())).await.map_err(|e| OwnershipError::Unwritable {
        destination: destination_conf.to_string(),
        detail: format!("cannot write {filename}: {}", store_reason(&e)),
    })?;
    Ok(Ownership {
        id,
        account: account.to_string(),
        destination_conf: destination_conf.to_string(),
        filename,
        status: OwnershipStatus::Pending,
        submitted: Utc::now(),
        validated: None,
        token: tok,
    })
}

/// Checks the challenge contents for `destination_conf`.
pub fn validate(
    db: &dyn OwnershipRecords,
    account: &str,
    destination_conf: &str,
    challenge: &str,
) -> Result<Ownership, OwnershipError> {
    let mut all = db.ownerships(account)?;
    // The newest registration of this destination is the one being validated.
    let Some(mut o) = all.drain(..).rev().find(|o| o.destination_conf == destination_conf) else {
        return Err(OwnershipError::Invalid(format!(
            "destination_conf: {destination_conf:?} is not registered for this account; create its ownership first"
        )));
    };
    let given = challenge.trim().as_bytes();
    let ok = given.len() == o.token.len() && bool::from(given.ct_eq(o.token.as_bytes()));
    if !ok {
        return Err(OwnershipError::Invalid(format!(
            "ownership_challenge: does not match the contents of {}; copy the file's contents exactly",
            o.filename
        )));
    }
    if o.status != OwnershipStatus::Success {
        o.status = OwnershipStatus::Success;
        o.validated = Some(Utc::now());
        db.put_ownership(&o)?;
    }
    Ok(o)
}

/// Whether `account` owns `destination_conf` (a validated ownership).
pub fn is_validated(db: &dyn OwnershipRecords, account: &str, destination_conf: &str) -> Result<bool, StoreError> {
    Ok(db
        .ownerships(account)?
        .iter()
        .any(|o| o.destination_conf == destination_conf && o.status == OwnershipStatus::Success))
}
