//! etcd key-value requests with a deadline, sent again when they went to a member that is down.
//!
//! The client spreads requests over every configured endpoint, a dead one included: a request
//! it sends there fails at once with "connection refused" without reaching any member (seen
//! here: after a SIGKILL of the etcd leader, a third of the requests failed for as long as the
//! member stayed down). Such a request is safe to send again, and the next one goes to another
//! member. Any other failure is final: the request may have been applied (a retried
//! transaction could then see its own write as someone else's).
use std::time::Duration;

use etcd_client::{Client, DeleteOptions, DeleteResponse, GetOptions, GetResponse, PutResponse, Txn, TxnResponse};
use tokio::time::Instant;

/// Pause before sending a request again.
const RESEND_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("etcd: {0}")]
    Failed(#[from] etcd_client::Error),
    #[error("etcd did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

impl From<KvError> for crate::db::StoreError {
    /// etcd cannot take or give the record now: retry soon.
    fn from(e: KvError) -> Self {
        crate::db::StoreError::Unavailable(e.to_string())
    }
}

impl From<KvError> for crate::captures::rules::RulesError {
    fn from(e: KvError) -> Self {
        crate::captures::rules::RulesError::Unavailable(e.to_string())
    }
}

/// Whether a request failed before it reached any member: the connection to the member it was
/// sent to could not be made.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect error")
        }
        _ => false,
    }
}

/// Sends the request `f` makes until it is answered, fails for another reason, or `limit`
/// passes; each attempt is counted in [`super::ETCD_REQUESTS`].
pub async fn send<T, F, Fut>(limit: Duration, mut f: F) -> Result<T, KvError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        super::ETCD_REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match tokio::time::timeout(left, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if never_sent(&e) && Instant::now() + RESEND_PAUSE < deadline => {
                tokio::time::sleep(RESEND_PAUSE).await
            }
            Ok(Err(e)) => return Err(KvError::Failed(e)),
            Err(_) => return Err(KvError::Timeout(limit)),
        }
    }
}

pub async fn get(c: &Client, key: &str, opts: Option<GetOptions>, limit: Duration) -> Result<GetResponse, KvError> {
    send(limit, || {
        let (mut kv, opts) = (c.kv_client(), opts.clone());
        async move { kv.get(key, opts).await }
    })
    .await
}

pub async fn put(c: &Client, key: &str, value: Vec<u8>, limit: Duration) -> Result<PutResponse, KvError> {
    send(limit, || {
        let (mut kv, value) = (c.kv_client(), value.clone());
        async move { kv.put(key, value, None).await }
    })
    .await
}

pub async fn delete(
    c: &Client,
    key: &str,
    opts: Option<DeleteOptions>,
    limit: Duration,
) -> Result<DeleteResponse, KvError> {
    send(limit, || {
        let (mut kv, opts) = (c.kv_client(), opts.clone());
        async move { kv.delete(key, opts).await }
    })
    .await
}

pub async fn txn(c: &Client, txn: Txn, limit: Duration) -> Result<TxnResponse, KvError> {
    send(limit, || {
        let (mut kv, txn) = (c.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
}
