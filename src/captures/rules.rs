//! Per-account admission rules: one simple capture request per interval, and one pending or
//! running full capture. A single appliance keeps them itself (`LocalRules`: the interval in
//! memory, read back from the capture records after a restart; the full-capture rule is the
//! lifecycle loop's own bookkeeping); a fleet decides them in etcd transactions
//! (`fleet::rules::EtcdRules`), so that no two nodes can both admit.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::CaptureRecords;
use crate::db::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The store that decides cannot be reached (a fleet without etcd quorum): retry later.
    #[error("the fleet's coordination store cannot decide now: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decides, for the whole service, whether an account may start a capture now.
pub trait Rules: Send + Sync {
    /// Admits a simple capture request of `account` at `now`, unless one was admitted less than
    /// `interval` before: then `Some(retry_after)`.
    fn admit_simple(
        &self,
        account: &str,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<Option<Duration>, RulesError>;

    /// Takes back the admission of `account`'s simple request admitted at `at` (its record
    /// could not be stored: the request was refused after all, and a retry must not be 429).
    /// Nothing if a later request was admitted since.
    fn unadmit_simple(&self, account: &str, at: DateTime<Utc>) -> Result<(), RulesError>;

    /// Claims the account's one full capture for `id` until `until` (after which a holder that
    /// never released it no longer counts). `Err(holder)`: another capture holds it.
    fn claim_full(&self, account: &str, id: &str, until: DateTime<Utc>) -> Result<Result<(), String>, RulesError>;

    /// Gives the claim of `id` back (nothing if it does not hold it).
    fn release_full(&self, account: &str, id: &str) -> Result<(), RulesError>;
}

/// The rules of a single appliance.
pub struct LocalRules {
    store: Arc<dyn CaptureRecords>,
    /// Each account's last admitted simple request (wall clock, as the records keep it).
    last_simple: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl LocalRules {
    pub fn new(store: Arc<dyn CaptureRecords>) -> LocalRules {
        LocalRules { store, last_simple: Mutex::new(HashMap::new()) }
    }
}

/// How long until `interval` has passed since `last`, if it has not.
pub fn retry_after(last: DateTime<Utc>, now: DateTime<Utc>, interval: Duration) -> Option<Duration> {
    let since = (now - last).to_std().unwrap_or(Duration::ZERO);
    (since < interval).then(|| interval - since)
}

impl Rules for LocalRules {
    fn admit_simple(
        &self,
        account: &str,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<Option<Duration>, RulesError> {
        // The rule outlives restarts: an account's last request comes from the records the
        // first time it is asked about.
        let mut last = self.last_simple.lock().unwrap_or_else(|e| e.into_inner());
        let prev = match last.get(account) {
            Some(t) => Some(*t),
            None => self.store.newest_simple(account)?,
        };
        if let Some(wait) = prev.and_then(|p| retry_after(p, now, interval)) {
            if let Some(p) = prev {
                last.insert(account.to_string(), p);
            }
            return Ok(Some(wait));
        }
        last.insert(account.to_string(), now);
        Ok(None)
    }

    fn unadmit_simple(&self, account: &str, at: DateTime<Utc>) -> Result<(), RulesError> {
        let mut last = self.last_simple.lock().unwrap_or_else(|e| e.into_inner());
        if last.get(account) == Some(&at) {
            last.remove(account);
        }
        Ok(())
    }

    /// One appliance: the full-capture lifecycle loop admits one capture per account itself.
    fn claim_full(&self, _account: &str, _id: &str, _until: DateTime<Utc>) -> Result<Result<(), String>, RulesError> {
        Ok(Ok(()))
    }

    fn release_full(&self, _account: &str, _id: &str) -> Result<(), RulesError> {
        Ok(())
    }
}
