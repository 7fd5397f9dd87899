//! The fleet's capture records and bucket ownerships, in etcd, so that any node answers for any
//! capture and ownership (issue 13). Reads are linearizable; without an etcd quorum they come
//! from a member's own copy (serializable). Each node also keeps its own captures in its SQLite
//! database: its local work (a simple capture it built, its part of a full capture) is resumed
//! from there after a restart, and capture reads fall back to it when no etcd member answers.
//! Ownerships never fall back: they authorise uploads, and a local copy may be stale.
//!
//! Keys (under the fleet prefix):
//! - `captures/<account>/<id>`: a [`Capture`]. A simple capture is written by the node that
//!   builds it (its `node`, which holds the file). A full capture is created by the node that
//!   received it and then recomputed from its parts by any node, in a transaction on the key's
//!   mod revision ([`recompute`]), so concurrent recomputations never lose a part.
//! - `parts/<id>/<node>`: a [`Part`], written by that node from its local record, or marked
//!   `lost` by any node once its node has left the fleet for [`LOST_GRACE`].
//! - `open/<id>`: the account of a full capture that has not finished (the janitor's list).
//! - `budget/<id>`: packets and bytes of a full capture still to hand out (`fleet::full`).
//! - `ownerships/<account>/<id>`: an [`Ownership`].
//!
//! A full capture's record leaves `pending`/`running` only through [`recompute`], which then
//! gives the account's claim back (`fleet::rules`).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{kv, Fleet};
use crate::captures::model::{Capture, CaptureType, Part, PartStatus, Status};
use crate::captures::CaptureRecords;
use crate::db::{Db, StoreError};
use crate::upload::ownership::{Ownership, OwnershipRecords};

/// A part whose node left the fleet is given up after this long (its node may just be
/// restarting: a killed node's registration lasts up to twice the lease TTL already).
pub const LOST_GRACE: Duration = Duration::from_secs(5);
/// A part still `pending` this long after the janitor first saw it was never started (the node
/// that created the capture died before asking): it fails.
pub const START_GRACE: Duration = Duration::from_secs(30);
/// The janitor looks at unfinished full captures this often.
const JANITOR_EVERY: Duration = Duration::from_secs(2);
/// A read waits this long for etcd before the local copy answers.
const READ_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a linearizable read failed, reads go straight to a member's own copy this long.
const DEGRADED: Duration = Duration::from_secs(5);
/// A write waits this long before it is reported unavailable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Racing recomputations retry this often.
const ROUNDS: usize = 16;

pub fn capture_key(account: &str, id: &str) -> String {
    format!("{}captures/{account}/{id}", super::KEY_PREFIX)
}

pub fn part_key(id: &str, node: &str) -> String {
    format!("{}parts/{id}/{node}", super::KEY_PREFIX)
}

pub fn parts_prefix(id: &str) -> String {
    format!("{}parts/{id}/", super::KEY_PREFIX)
}

pub fn open_key(id: &str) -> String {
    format!("{}open/{id}", super::KEY_PREFIX)
}

pub fn budget_key(id: &str) -> String {
    format!("{}budget/{id}", super::KEY_PREFIX)
}

/// The internal route a node serves a capture file it holds on.
pub const FILE_ROUTE: &str = "/internal/v1/captures/{account}/{id}/file";

pub fn file_path(account: &str, id: &str) -> String {
    FILE_ROUTE.replace("{account}", account).replace("{id}", id)
}

/// The internal route a node lists its files of a full capture on (`GET .../files`).
pub const FILES_ROUTE: &str = "/internal/v1/captures/{account}/{id}/files";

pub fn files_path(account: &str, id: &str) -> String {
    FILES_ROUTE.replace("{account}", account).replace("{id}", id)
}

fn ownership_key(account: &str, id: &str) -> String {
    format!("{}ownerships/{account}/{id}", super::KEY_PREFIX)
}

fn unavailable(e: impl Into<String>) -> StoreError {
    StoreError::Unavailable(e.into())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(StoreError::Encode)
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value)
        .map_err(|source| StoreError::Corrupt { id: String::from_utf8_lossy(key).into_owned(), source })
}

/// The records of a fleet: etcd, with this node's SQLite database underneath.
pub struct FleetRecords {
    local: Arc<Db>,
    fleet: Fleet,
    rt: Handle,
    /// Until when (unix ms) reads skip the linearizable attempt: etcd lost its quorum lately.
    degraded_until_ms: AtomicU64,
    /// Set once a simple capture's record was handed to the task to publish: later states go
    /// there too, so that an older state retried never lands after a newer one.
    retrying: AtomicBool,
    /// Records to publish by the task, retried until etcd takes them (the latest state of each
    /// capture wins): this node's full-capture parts, and simple captures whose write failed.
    reports: mpsc::UnboundedSender<Capture>,
}

impl FleetRecords {
    /// Starts the task that publishes this node's parts and looks after unfinished captures
    /// (on `rt`, until the fleet is left).
    pub fn new(local: Arc<Db>, fleet: Fleet, rt: Handle) -> Arc<FleetRecords> {
        let (reports, rx) = mpsc::unbounded_channel();
        rt.spawn(parts_task(fleet.clone(), rx));
        Arc::new(FleetRecords {
            local,
            fleet,
            rt,
            reports,
            degraded_until_ms: AtomicU64::new(0),
            retrying: AtomicBool::new(false),
        })
    }

    /// Reads `key`: linearizable (the latest write, wherever it was made); when etcd cannot
    /// answer that (no quorum), from the member's own copy (serializable: possibly a little
    /// behind, but an answer); `Err` only when no member answers at all.
    fn read(&self, key: String, opts: GetOptions) -> Result<etcd_client::GetResponse, StoreError> {
        let now = super::unix_ms();
        let client = self.client();
        let attempt = |opts: GetOptions| {
            let (client, key) = (client.clone(), key.clone());
            async move { kv::get(&client, &key, Some(opts), READ_TIMEOUT).await.map_err(StoreError::from) }
        };
        self.rt.block_on(async {
            if self.degraded_until_ms.load(Relaxed) <= now {
                match attempt(opts.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        tracing::warn!("etcd: {e}; reading members' own copies for {} s", DEGRADED.as_secs());
                        self.degraded_until_ms.store(now + DEGRADED.as_millis() as u64, Relaxed);
                    }
                }
            }
            attempt(opts.with_serializable()).await
        })
    }

    fn client(&self) -> Client {
        self.fleet.client()
    }

    /// A simple capture as the fleet sees it: this node holds its file.
    fn put_simple(&self, c: &Capture) -> Result<(), StoreError> {
        let mut c = c.clone();
        c.node = Some(self.fleet.name().to_string());
        let value = encode(&c)?;
        let client = self.client();
        self.rt.block_on(kv::put(&client, &capture_key(&c.account, &c.id), value, WRITE_TIMEOUT))?;
        Ok(())
    }

    fn publish(&self, c: &Capture, first: bool) -> Result<(), StoreError> {
        match c.kind {
            CaptureType::Full => {
                // This node's part: published (and retried) by the parts task.
                let _ = self.reports.send(c.clone());
                Ok(())
            }
            CaptureType::Simple => match self.put_simple(c) {
                Ok(()) => {
                    if self.retrying.load(Relaxed) {
                        // An older state of it may wait in the task: this one replaces it.
                        let _ = self.reports.send(c.clone());
                    }
                    Ok(())
                }
                // A new capture that the fleet cannot see is refused (nothing runs).
                Err(e) if first => Err(e),
                Err(e) => {
                    tracing::warn!("capture {}: {e}; its record is published again when etcd answers", c.id);
                    self.retrying.store(true, Relaxed);
                    let _ = self.reports.send(c.clone());
                    Ok(())
                }
            },
        }
    }
}

impl CaptureRecords for FleetRecords {
    fn insert(&self, c: &Capture) -> Result<(), StoreError> {
        // The fleet first: a capture etcd did not take was never created.
        if c.kind == CaptureType::Simple {
            self.publish(c, true)?;
            return self.local.insert(c);
        }
        self.local.insert(c)?;
        self.publish(c, true)
    }

    fn update(&self, c: &Capture) -> Result<(), StoreError> {
        self.local.update(c)?;
        self.publish(c, false)
    }

    fn get(&self, account: &str, id: &str) -> Result<Option<Capture>, StoreError> {
        match self.read(capture_key(account, id), GetOptions::new()) {
            Ok(r) => match r.kvs().first() {
                Some(kv) => decode(kv.key(), kv.value()).map(Some),
                // Not (yet) published: what this node has, if anything.
                None => self.local.get(account, id),
            },
            Err(e) => {
                tracing::warn!("capture {id}: {e}; answering from this node's records");
                self.local.get(account, id)
            }
        }
    }

    fn list(&self, account: &str, limit: usize) -> Result<Vec<Capture>, StoreError> {
        let prefix = capture_key(account, "");
        let opts =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Descend).with_limit(limit as i64);
        match self.read(prefix, opts) {
            Ok(r) => {
                let mut all = Vec::with_capacity(r.kvs().len());
                for kv in r.kvs() {
                    match decode::<Capture>(kv.key(), kv.value()) {
                        Ok(c) => all.push(c),
                        Err(e) => tracing::error!("{e}"),
                    }
                }
                all.sort_by_key(|c| std::cmp::Reverse(c.submitted));
                Ok(all)
            }
            Err(e) => {
                tracing::warn!("listing captures: {e}; answering from this node's records");
                self.local.list(account, limit)
            }
        }
    }

    /// This node's own unfinished work (resumed after a restart).
    fn unfinished(&self) -> Result<Vec<Capture>, StoreError> {
        self.local.unfinished()
    }

    fn newest_simple(&self, account: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        self.local.newest_simple(account)
    }
}

impl OwnershipRecords for FleetRecords {
    fn put_ownership(&self, o: &Ownership) -> Result<(), StoreError> {
        let client = self.client();
        let key = ownership_key(&o.account, &o.id);
        self.rt.block_on(kv::put(&client, &key, encode(o)?, WRITE_TIMEOUT))?;
        Ok(())
    }

    fn ownerships(&self, account: &str) -> Result<Vec<Ownership>, StoreError> {
        let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        // No fallback to this node's copy: ownerships authorise uploads, and that copy may
        // hold one deleted or validated elsewhere.
        let r = self.read(ownership_key(account, ""), opts)?;
        r.kvs().iter().map(|kv| decode(kv.key(), kv.value())).collect()
    }

    fn delete_ownership(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let client = self.client();
        let key = ownership_key(account, id);
        let r = self.rt.block_on(kv::delete(&client, &key, None, WRITE_TIMEOUT))?;
        Ok(r.deleted() > 0)
    }
}

impl Fleet {
    /// The fleet's record of a capture (linearizable read).
    pub async fn capture(&self, account: &str, id: &str) -> Result<Option<Capture>, StoreError> {
        let r = kv::get(&self.client(), &capture_key(account, id), None, READ_TIMEOUT).await?;
        r.kvs().first().map(|kv| decode(kv.key(), kv.value())).transpose()
    }
}

/// A node's part from its local record of the capture.
fn part_of(node: &str, c: &Capture) -> Part {
    Part {
        node: node.to_string(),
        status: PartStatus::of(c.status),
        packets_captured: c.packets_captured.unwrap_or(0),
        error_message: c.error_message.clone(),
    }
}

/// The capture as its parts make it: the parts (by node), the packets of all, the status, and an
/// error message naming the nodes whose part failed or was lost. A finished capture stays
/// finished (a lost node that returns adds its packets, nothing else). A lost part's packets
/// (its last live count) are not counted: they are on a node that is gone, not in the bucket,
/// until it returns.
pub fn aggregate(stored: &Capture, parts: &[Part]) -> Capture {
    let mut c = stored.clone();
    let mut parts = parts.to_vec();
    parts.sort_by(|a, b| a.node.cmp(&b.node));
    c.packets_captured = Some(parts.iter().filter(|p| p.status != PartStatus::Lost).map(|p| p.packets_captured).sum());
    let has = |s: PartStatus| parts.iter().any(|p| p.status == s);
    if !stored.status.is_finished() && !parts.is_empty() {
        c.status = if has(PartStatus::Running) {
            Status::Running
        } else if has(PartStatus::Pending) {
            stored.status
        } else if has(PartStatus::Uploading) {
            Status::ConversionPending
        } else if has(PartStatus::Success) {
            Status::Success
        } else {
            Status::Failed
        };
    }
    let notes: Vec<String> = parts
        .iter()
        .filter_map(|p| match (p.status, &p.error_message) {
            (PartStatus::Lost, m) => Some(format!(
                "node {}: lost ({}); its files are uploaded when it returns",
                p.node,
                m.as_deref().unwrap_or("it left the fleet while capturing")
            )),
            (PartStatus::Failed, Some(m)) => Some(format!("node {}: failed: {m}", p.node)),
            (PartStatus::Failed, None) => Some(format!("node {}: failed", p.node)),
            (_, Some(m)) => Some(format!("node {}: {m}", p.node)),
            (_, None) => None,
        })
        .collect();
    c.error_message = (!notes.is_empty()).then(|| notes.join("; "));
    c.parts = parts;
    c
}

/// The stored capture (with its mod revision) and its parts, read at one revision.
async fn read_with_parts(
    client: &Client,
    account: &str,
    id: &str,
) -> Result<Option<(Capture, i64, Vec<Part>)>, StoreError> {
    let key = capture_key(account, id);
    let txn = Txn::new().and_then([
        TxnOp::get(key.as_str(), None),
        TxnOp::get(parts_prefix(id), Some(GetOptions::new().with_prefix())),
    ]);
    let r = kv::txn(client, txn, WRITE_TIMEOUT).await?;
    let mut gets = r.op_responses().into_iter().filter_map(|o| match o {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    });
    let (Some(cap), Some(parts)) = (gets.next(), gets.next()) else {
        return Err(unavailable("etcd: a transaction answered without its reads"));
    };
    let Some(ckv) = cap.kvs().first() else { return Ok(None) };
    let c: Capture = decode(ckv.key(), ckv.value())?;
    let mut ps = Vec::new();
    for kv in parts.kvs() {
        match decode::<Part>(kv.key(), kv.value()) {
            Ok(p) => ps.push(p),
            Err(e) => tracing::error!("{e}"),
        }
    }
    Ok(Some((c, ckv.mod_revision(), ps)))
}

/// Brings a full capture's record in line with its parts (a transaction that retries when
/// another node wrote the record meanwhile). When the capture leaves pending/running its
/// budget and `open` entry go, and the account's claim is given back.
pub async fn recompute(client: &Client, account: &str, id: &str) -> Result<Option<Capture>, StoreError> {
    for _ in 0..ROUNDS {
        let Some((stored, rev, parts)) = read_with_parts(client, account, id).await? else { return Ok(None) };
        let next = aggregate(&stored, &parts);
        if next == stored {
            return Ok(Some(next));
        }
        let key = capture_key(account, id);
        let mut ops = vec![TxnOp::put(key.as_str(), encode(&next)?, None)];
        let finishing = next.status.is_finished() && !stored.status.is_finished();
        // As on one appliance, the account may start another full capture once this one no
        // longer captures (it may still be uploading).
        let live = |c: &Capture| matches!(c.status, Status::Pending | Status::Running);
        let releasing = live(&stored) && !live(&next);
        if finishing {
            ops.push(TxnOp::delete(open_key(id), None));
            ops.push(TxnOp::delete(budget_key(id), None));
        }
        let txn = Txn::new().when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)]).and_then(ops);
        if kv::txn(client, txn, WRITE_TIMEOUT).await?.succeeded() {
            if finishing {
                tracing::info!(
                    "capture {id}: {} ({} packets)",
                    next.status.as_str(),
                    next.packets_captured.unwrap_or(0)
                );
            }
            // (Should this fail, the next claim finds this capture no longer live: free.)
            if releasing {
                if let Err(e) = super::rules::release_full(client, super::KEY_PREFIX, account, id).await {
                    tracing::warn!("capture {id}: giving the account's claim back: {e}");
                }
            }
            return Ok(Some(next));
        }
    }
    Err(unavailable(format!("capture {id}: {ROUNDS} racing updates in a row")))
}

/// Changes the JSON value at `key` with `f` in a transaction on its mod revision, retried on a
/// race; nothing is written when `f` leaves it as it was. `None` when there is no such key;
/// else the value as stored and what `f` returned.
pub(crate) async fn update_json<V, T>(
    client: &Client,
    key: &str,
    limit: Duration,
    f: impl Fn(&mut V) -> T,
) -> Result<Option<(V, T)>, StoreError>
where
    V: serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq,
{
    for _ in 0..ROUNDS {
        let r = kv::get(client, key, None, limit).await?;
        let Some(found) = r.kvs().first() else { return Ok(None) };
        let mut v: V = decode(found.key(), found.value())?;
        let before = v.clone();
        let out = f(&mut v);
        if v == before {
            return Ok(Some((v, out)));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, found.mod_revision())])
            .and_then([TxnOp::put(key, encode(&v)?, None)]);
        if kv::txn(client, txn, limit).await?.succeeded() {
            return Ok(Some((v, out)));
        }
    }
    Err(unavailable(format!("{key}: {ROUNDS} racing updates in a row")))
}

/// Changes a stored capture with `f` (see [`update_json`]); `None` when there is no such capture.
pub async fn update_capture(
    client: &Client,
    account: &str,
    id: &str,
    f: impl Fn(&mut Capture),
) -> Result<Option<Capture>, StoreError> {
    Ok(update_json(client, &capture_key(account, id), WRITE_TIMEOUT, f).await?.map(|(c, ())| c))
}

/// Publishes this node's parts (latest state of each, retried every second while etcd cannot
/// take them) and, every [`JANITOR_EVERY`], looks after the fleet's unfinished full captures.
async fn parts_task(fleet: Fleet, mut rx: mpsc::UnboundedReceiver<Capture>) {
    let client = fleet.client();
    let me = fleet.name().to_string();
    let mut pending: HashMap<String, Capture> = HashMap::new();
    let mut janitor = Janitor::default();
    let mut next_janitor = Instant::now() + JANITOR_EVERY;
    let mut stop = fleet.inner.stop.subscribe();
    loop {
        let wait = if pending.is_empty() {
            next_janitor.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(1).min(next_janitor.saturating_duration_since(Instant::now()))
        };
        tokio::select! {
            got = rx.recv() => match got {
                Some(c) => { pending.insert(c.id.clone(), c); }
                None => return,
            },
            _ = stop.changed() => {
                // Leaving: one last try for what is pending.
                publish_parts(&client, &me, &mut pending).await;
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        while let Ok(c) = rx.try_recv() {
            pending.insert(c.id.clone(), c);
        }
        publish_parts(&client, &me, &mut pending).await;
        if Instant::now() >= next_janitor {
            janitor.pass(&fleet).await;
            next_janitor = Instant::now() + JANITOR_EVERY;
        }
    }
}

async fn publish_parts(client: &Client, me: &str, pending: &mut HashMap<String, Capture>) {
    let ids: Vec<String> = pending.keys().cloned().collect();
    for id in ids {
        let Some(c) = pending.get(&id) else { continue };
        let published = async {
            if c.kind == CaptureType::Simple {
                let mut c = c.clone();
                c.node = Some(me.to_string());
                let key = capture_key(&c.account, &c.id);
                return kv::put(client, &key, encode(&c)?, WRITE_TIMEOUT).await.map(|_| ()).map_err(StoreError::from);
            }
            let value = encode(&part_of(me, c))?;
            kv::put(client, &part_key(&c.id, me), value, WRITE_TIMEOUT).await?;
            recompute(client, &c.account, &c.id).await.map(|_| ())
        };
        match published.await {
            Ok(_) => {
                pending.remove(&id);
            }
            Err(e) => tracing::warn!("capture {id}: publishing its record: {e}; retrying"),
        }
    }
}

/// Marks parts of nodes that left the fleet `lost` after [`LOST_GRACE`], and recomputes every
/// unfinished full capture (a node that died between writing its part and recomputing leaves
/// the record behind; any node catches it up).
#[derive(Default)]
struct Janitor {
    /// (capture, node) → when this node first saw the part's node gone, or the part pending.
    since: HashMap<(String, String), Instant>,
}

impl Janitor {
    async fn pass(&mut self, fleet: &Fleet) {
        if let Err(e) = self.try_pass(fleet).await {
            tracing::debug!("fleet janitor: {e}");
        }
    }

    async fn try_pass(&mut self, fleet: &Fleet) -> Result<(), StoreError> {
        let client = fleet.client();
        let prefixed = Some(GetOptions::new().with_prefix());
        let open = kv::get(&client, &open_key(""), prefixed, WRITE_TIMEOUT).await?;
        let mut pass = Pass {
            live: fleet.live_nodes().iter().map(|n| n.name.clone()).collect(),
            now: Instant::now(),
            seen: Vec::new(),
            by_state: PartStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        };
        for okv in open.kvs() {
            let id = String::from_utf8_lossy(okv.key()).rsplit('/').next().unwrap_or_default().to_string();
            let account = String::from_utf8_lossy(okv.value()).into_owned();
            // One capture's trouble (a corrupt record, racing writers) must not stop the others.
            if let Err(e) = self.look_after(fleet, &mut pass, &account, &id).await {
                tracing::warn!("fleet janitor: capture {id}: {e}");
            }
        }
        self.since.retain(|k, _| pass.seen.contains(k));
        if let Ok(mut parts) = fleet.stats().parts.lock() {
            *parts = pass.by_state;
        }
        Ok(())
    }

    /// One unfinished capture: its parts given up where due, then its record recomputed.
    async fn look_after(&mut self, fleet: &Fleet, pass: &mut Pass, account: &str, id: &str) -> Result<(), StoreError> {
        let client = fleet.client();
        let prefixed = Some(GetOptions::new().with_prefix());
        let parts = kv::get(&client, &parts_prefix(id), prefixed, WRITE_TIMEOUT).await?;
        for pkv in parts.kvs() {
            let Ok(mut part) = decode::<Part>(pkv.key(), pkv.value()) else { continue };
            if let Some(i) = PartStatus::ALL.iter().position(|s| *s == part.status) {
                pass.by_state[i].1 += 1;
            }
            let alive = pass.live.contains(&part.node);
            if part.status.is_finished() || (alive && part.status != PartStatus::Pending) {
                continue;
            }
            let key = (id.to_string(), part.node.clone());
            let since = *self.since.entry(key.clone()).or_insert(pass.now);
            pass.seen.push(key);
            let waited = pass.now.duration_since(since);
            if alive {
                if waited < START_GRACE {
                    continue;
                }
                part.status = PartStatus::Failed;
                part.error_message = Some("never started: the node that created the capture did not ask".into());
            } else {
                if waited < LOST_GRACE {
                    continue;
                }
                let doing = match part.status {
                    PartStatus::Pending => "starting",
                    PartStatus::Running => "capturing",
                    _ => "uploading",
                };
                part.status = PartStatus::Lost;
                part.error_message = Some(format!("it left the fleet while {doing}"));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(pkv.key(), CompareOp::Equal, pkv.mod_revision())])
                .and_then([TxnOp::put(pkv.key(), encode(&part)?, None)]);
            if kv::txn(&client, txn, WRITE_TIMEOUT).await?.succeeded() {
                tracing::warn!("capture {id}: the part of node {} is {}", part.node, part.status.as_str());
                fleet.stats().parts_given_up.fetch_add(1, Relaxed);
            }
        }
        recompute(&client, account, id).await.map(|_| ())
    }
}

/// What one janitor pass sees and counts.
struct Pass {
    live: Vec<String>,
    now: Instant,
    /// (capture, node) of the parts waiting to be given up.
    seen: Vec<(String, String)>,
    by_state: Vec<(&'static str, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterV1;

    fn part(node: &str, status: PartStatus, packets: u64, err: Option<&str>) -> Part {
        Part { node: node.into(), status, packets_captured: packets, error_message: err.map(str::to_string) }
    }

    #[test]
    fn a_full_capture_is_what_its_parts_make_it() {
        let stored = Capture {
            status: Status::Running,
            ..Capture::new(&"a".repeat(32), CaptureType::Full, chrono::Utc::now(), 60, &FilterV1::default())
        };
        let running = [part("n2", PartStatus::Running, 5, None), part("n1", PartStatus::Uploading, 7, None)];
        let c = aggregate(&stored, &running);
        assert_eq!((c.status, c.packets_captured, c.error_message.clone()), (Status::Running, Some(12), None));
        assert_eq!(c.parts.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        let uploading = [part("n1", PartStatus::Uploading, 7, None), part("n2", PartStatus::Success, 5, None)];
        assert_eq!(aggregate(&stored, &uploading).status, Status::ConversionPending);
        let done = [part("n1", PartStatus::Success, 7, None), part("n2", PartStatus::Lost, 5, None)];
        let c = aggregate(&stored, &done);
        assert_eq!(
            (c.status, c.packets_captured),
            (Status::Success, Some(7)),
            "a lost part's live count is not in the bucket"
        );
        assert_eq!(
            c.error_message.as_deref(),
            Some("node n2: lost (it left the fleet while capturing); its files are uploaded when it returns")
        );
        let failed = [part("n1", PartStatus::Failed, 0, Some("disk")), part("n2", PartStatus::Lost, 0, Some("x"))];
        let c = aggregate(&stored, &failed);
        assert_eq!(c.status, Status::Failed);
        assert!(c.error_message.unwrap().starts_with("node n1: failed: disk; node n2: lost (x)"));
        // A finished capture stays finished; a returning node adds its packets.
        let finished = aggregate(&stored, &done);
        let back = [part("n1", PartStatus::Success, 7, None), part("n2", PartStatus::Uploading, 9, None)];
        let c = aggregate(&finished, &back);
        assert_eq!((c.status, c.packets_captured), (Status::Success, Some(16)));
        // Parts all pending: the record keeps its own status.
        let pending = [part("n1", PartStatus::Pending, 0, None)];
        assert_eq!(aggregate(&stored, &pending).status, Status::Running);
    }
}
