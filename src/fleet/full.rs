//! Full captures across a fleet (issue 13): a capture for `colo_name` runs on every live node
//! that serves it, each node writing and uploading its own part (`<dir>/<id>/<node>-<seq>/…`).
//!
//! - Start (the node the request reached): the record, one `pending` part per node, the
//!   `open` entry and the budget are created in one etcd transaction; then every node is asked
//!   to start its part (`POST /internal/v1/full/parts`, this node directly), all at once. A node
//!   that cannot start has its part `failed` and is named in the capture; when none starts,
//!   the capture fails (or, if every node was merely full, is removed and 503 answered).
//! - Limits stay exact for the whole capture: the budget in etcd is handed out in chunks
//!   (a quarter of a node's share at a time). Each node starts with one chunk
//!   (`Budget::chunked`) and its part agent takes the next from etcd, in a transaction, when
//!   it has used half of the last; the sum of all grants never exceeds the limit, and a node
//!   stops when etcd has no more to give and its own is used up.
//! - Stop (any node): `stop_requested` is recorded in the capture, and each node is told at
//!   once; a node that missed the call sees it within a second (its part agent reads the
//!   record). The time limit runs on each node.
//! - The record follows the parts (`records::recompute`); a dead node's part is marked lost by
//!   the janitor (`records`).
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::records::{self, budget_key, capture_key, open_key, part_key, parts_prefix};
use super::{kv, Fleet};
use crate::captures::full::{FullRuntime, StartError};
use crate::captures::manager::{FleetCaptures, ManagerError};
use crate::captures::model::{Capture, Part, PartStatus, Status};
use crate::captures::request::serves;
use crate::dataplane::active::Budget;
use crate::db::StoreError;

pub const PARTS_PATH: &str = "/internal/v1/full/parts";
pub const STOP_PATH: &str = "/internal/v1/full/stop";
/// A node's start answers within this (its writer has 5 s to open the file).
const START_TIMEOUT: Duration = Duration::from_secs(8);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// One etcd request (sent again meanwhile if it went to a member that is down).
const ETCD_LIMIT: Duration = Duration::from_secs(3);
/// Byte chunks are never smaller than this (a chunk must hold whole packets).
const MIN_BYTE_CHUNK: u64 = 256 * 1024;
/// How often a part agent looks at its budget while more may come.
const BUDGET_EVERY: Duration = Duration::from_millis(10);
/// A part whose budget has not moved this long gives its grant back to the pool.
const IDLE_RETURN: Duration = Duration::from_secs(2);
/// A dry pool is the end of a part's budget once it stayed dry this long with no part parked:
/// an idle part gives its grant back IDLE_RETURN after its last packet, and its agent may run
/// late on a loaded machine (3 s was too short once: the busy part ended short of the limit).
const DRY_WAIT: Duration = Duration::from_secs(IDLE_RETURN.as_secs() + 3);
/// A part asks a dry pool again this often.
const DRY_POLL: Duration = Duration::from_millis(100);
/// How often a part agent reads the capture's record for a stop request.
const STOP_EVERY: Duration = Duration::from_secs(1);

/// What is left to hand out of a capture's limits (`budget/<id>`); `None`: no such limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    pub chunk_packets: u64,
    pub chunk_bytes: u64,
    /// Parts that gave their grant back while idle, each keeping a reserve: until they end or
    /// take a chunk again, an empty pool is not the end (they return their reserves then).
    #[serde(default)]
    pub parked: u64,
}

impl Pool {
    /// The pool of a capture with these limits shared by `nodes` nodes.
    pub fn new(packets: Option<u64>, bytes: Option<u64>, nodes: usize) -> Pool {
        let quarters = 4 * nodes.max(1) as u64;
        Pool {
            packets,
            bytes,
            chunk_packets: packets.map_or(0, |l| l.div_ceil(quarters).max(1)),
            chunk_bytes: bytes.map_or(0, |l| (l / quarters).max(MIN_BYTE_CHUNK).min(l)),
            parked: 0,
        }
    }

    pub fn is_limited(&self) -> bool {
        self.packets.is_some() || self.bytes.is_some()
    }

    /// Takes the next chunk: (packets, bytes), 0 for a limit with nothing left or no limit.
    pub fn take(&mut self) -> (u64, u64) {
        let take = |left: &mut Option<u64>, chunk: u64| match left {
            Some(l) => {
                let g = chunk.min(*l);
                *l -= g;
                g
            }
            None => 0,
        };
        (take(&mut self.packets, self.chunk_packets), take(&mut self.bytes, self.chunk_bytes))
    }

    /// What an idle part keeps of its grant when it gives the rest back: an eighth of a chunk
    /// (at least one packet, and one jumbo frame's bytes).
    pub fn reserve(&self) -> (u64, u64) {
        ((self.chunk_packets / 8).max(1), (self.chunk_bytes / 8).max(9_216))
    }

    /// Returns an unused grant (only to a limit that has one).
    pub fn put_back(&mut self, packets: u64, bytes: u64) {
        if let Some(p) = &mut self.packets {
            *p += packets;
        }
        if let Some(b) = &mut self.bytes {
            *b += bytes;
        }
    }

    /// Nothing more will be handed out (a limit is used up).
    pub fn is_empty(&self) -> bool {
        self.packets == Some(0) || self.bytes == Some(0)
    }
}

/// Body of `POST /internal/v1/full/parts`: start this node's part of `capture` with a first
/// chunk of its limits.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartStart {
    pub capture: Capture,
    pub pool: Pool,
    pub packets: u64,
    pub bytes: u64,
}

/// Body of `POST /internal/v1/full/stop`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartStop {
    pub account: String,
    pub id: String,
}

/// Starts this node's part (the internal route, or the coordinating node itself) and its part
/// agent on `rt`.
pub fn start_part(fleet: &Fleet, local: &Arc<FullRuntime>, rt: &Handle, req: PartStart) -> Result<Capture, StartError> {
    let budget = Arc::new(if req.pool.is_limited() {
        let limit = |l: Option<u64>, g: u64| l.map(|_| g);
        Budget::chunked(limit(req.pool.packets, req.packets), limit(req.pool.bytes, req.bytes))
    } else {
        Budget::new(None, None)
    });
    let c = local.start_part(req.capture, Arc::clone(&budget))?;
    rt.spawn(part_agent(fleet.clone(), Arc::clone(local), c.account.clone(), c.id.clone(), budget, req.pool));
    Ok(c)
}

/// Looks after one running part: tops its budget up from etcd, and stops it when the capture's
/// record asks to. Ends when the part is no longer live here.
async fn part_agent(
    fleet: Fleet,
    local: Arc<FullRuntime>,
    account: String,
    id: String,
    budget: Arc<Budget>,
    pool: Pool,
) {
    let mut next_check = Instant::now() + STOP_EVERY;
    let mut more = pool.is_limited();
    // Parked: an idle part gave most of its grant back; it takes a chunk again once RX is
    // refused a packet, and returns its reserve when the pool runs dry.
    let mut parked = false;
    let (mut last_left, mut unchanged_since) = (budget.left(), Instant::now());
    // Since when the pool has been dry (and when it was last asked).
    let mut dry_since: Option<(Instant, Instant)> = None;
    loop {
        tokio::time::sleep(if more { BUDGET_EVERY } else { Duration::from_millis(200) }).await;
        if !local.is_live(&id) {
            // Ended (limit, time, stop, failure): what it did not use goes back to the others.
            if more || parked {
                let unused = budget.reclaim((0, 0));
                if let Err(e) = give_back(&fleet.client(), &id, unused, if parked { -1 } else { 0 }).await {
                    tracing::warn!("capture {id}: giving back an unused grant: {e}");
                }
            }
            return;
        }
        if more {
            let left = budget.left();
            if left != last_left {
                (last_left, unchanged_since) = (left, Instant::now());
            }
            let refill_now = if parked { budget.is_starved() } else { wants_more(&budget, &pool) };
            let dry_pause = dry_since.is_some_and(|(_, tried): (Instant, Instant)| tried.elapsed() < DRY_POLL);
            if refill_now && !dry_pause {
                match refill(&fleet, &id, &budget, parked).await {
                    Ok(Refill::Granted) => (parked, dry_since) = (false, None),
                    Ok(Refill::Gone) => {
                        budget.no_more();
                        more = false;
                    }
                    Ok(Refill::Dry { parked: others }) => {
                        parked = false;
                        let now = Instant::now();
                        let since = dry_since.map_or(now, |(since, _)| since);
                        // Idle parts give their grants back after IDLE_RETURN and parked ones
                        // their reserves once they see the pool dry: wait for them before
                        // taking the limit as reached.
                        if others > 0 {
                            dry_since = Some((now, now));
                        } else if now.duration_since(since) >= DRY_WAIT {
                            budget.no_more();
                            more = false;
                        } else {
                            dry_since = Some((since, now));
                        }
                    }
                    Err(e) => tracing::warn!("capture {id}: taking more of the budget: {e}"),
                }
            } else if !parked && dry_since.is_none() && unchanged_since.elapsed() >= IDLE_RETURN {
                // Little or no traffic here: most of its grant serves the busy nodes better; it
                // keeps a reserve for the odd packet. (A part waiting on a dry pool is not idle.)
                let unused = budget.reclaim(pool.reserve());
                unchanged_since = Instant::now();
                if unused != (0, 0) {
                    match give_back(&fleet.client(), &id, unused, 1).await {
                        Ok(()) => parked = true,
                        Err(e) => {
                            tracing::warn!("capture {id}: giving back an idle grant: {e}");
                            budget.grant(unused.0, unused.1);
                        }
                    }
                }
            }
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + STOP_EVERY;
            if stop_requested(&fleet, &account, &id).await {
                tracing::info!("capture {id}: stop requested through the fleet");
                let (local, account, id) = (Arc::clone(&local), account.clone(), id.clone());
                let _ = tokio::task::spawn_blocking(move || local.stop(&account, &id)).await;
            }
            // The pool ran dry while this part idled: its reserve goes to the busy parts, and
            // it ends (the capture's limit is reached by the others).
            if parked && pool_used_up(&fleet, &id).await {
                let reserve = budget.reclaim((0, 0));
                match give_back(&fleet.client(), &id, reserve, -1).await {
                    Ok(()) => {
                        budget.no_more();
                        (more, parked) = (false, false);
                    }
                    Err(e) => {
                        tracing::warn!("capture {id}: giving back a reserve: {e}");
                        budget.grant(reserve.0, reserve.1);
                    }
                }
            }
        }
    }
}

async fn stop_requested(fleet: &Fleet, account: &str, id: &str) -> bool {
    match kv::get(&fleet.client(), &capture_key(account, id), None, ETCD_LIMIT).await {
        Ok(r) => r
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<Capture>(kv.value()).ok())
            .is_some_and(|c| c.stop_requested.is_some()),
        Err(_) => false,
    }
}

/// Whether the capture's pool has nothing left to hand out (or is gone: the capture finished).
async fn pool_used_up(fleet: &Fleet, id: &str) -> bool {
    match kv::get(&fleet.client(), &budget_key(id), None, ETCD_LIMIT).await {
        Ok(r) => {
            r.kvs().first().is_none_or(|kv| serde_json::from_slice::<Pool>(kv.value()).is_ok_and(|p| p.is_empty()))
        }
        Err(_) => false,
    }
}

/// A part wants its next chunk once half of its last one is used (or a packet did not fit).
fn wants_more(budget: &Budget, pool: &Pool) -> bool {
    let (packets, bytes, blocked) = budget.left();
    blocked
        || (pool.packets.is_some() && packets < pool.chunk_packets.div_ceil(2))
        || (pool.bytes.is_some() && bytes < pool.chunk_bytes.div_ceil(2))
}

/// What a part learned taking its next chunk.
#[derive(Debug, PartialEq)]
enum Refill {
    /// Granted (some of) a chunk.
    Granted,
    /// Nothing left to hand out; `parked` parts still hold reserves they return soon.
    Dry { parked: u64 },
    /// The pool is gone: the capture finished.
    Gone,
}

/// Takes the next chunk of the capture's budget from etcd (`unpark`: this part was parked) and
/// grants it.
async fn refill(fleet: &Fleet, id: &str, budget: &Budget, unpark: bool) -> Result<Refill, StoreError> {
    let taken = update_pool(&fleet.client(), id, |pool| {
        if unpark {
            pool.parked = pool.parked.saturating_sub(1);
        }
        (pool.take(), pool.parked)
    })
    .await?;
    let Some(((packets, bytes), parked)) = taken else { return Ok(Refill::Gone) };
    budget.grant(packets, bytes);
    Ok(if packets > 0 || bytes > 0 { Refill::Granted } else { Refill::Dry { parked } })
}

/// Changes the capture's pool with `f` in a transaction (retried on a race); `None` when the
/// pool is gone (the capture finished).
async fn update_pool<T>(
    client: &etcd_client::Client,
    id: &str,
    f: impl Fn(&mut Pool) -> T,
) -> Result<Option<T>, StoreError> {
    Ok(records::update_json(client, &budget_key(id), ETCD_LIMIT, f).await?.map(|(_, out)| out))
}

/// Puts an unused grant back into the capture's pool, and counts a part parked (`+1`) or no
/// longer parked (`-1`).
async fn give_back(
    client: &etcd_client::Client,
    id: &str,
    (packets, bytes): (u64, u64),
    parked: i64,
) -> Result<(), StoreError> {
    if (packets, bytes, parked) == (0, 0, 0) {
        return Ok(());
    }
    update_pool(client, id, |pool| {
        pool.put_back(packets, bytes);
        pool.parked = pool.parked.saturating_add_signed(parked);
    })
    .await
    .map(|_| ())
}

/// The fleet's full captures, as the capture manager sees them.
pub struct FleetFull {
    fleet: Fleet,
    rt: Handle,
    local: Arc<FullRuntime>,
}

impl FleetFull {
    pub fn new(fleet: Fleet, rt: Handle, local: Arc<FullRuntime>) -> FleetFull {
        FleetFull { fleet, rt, local }
    }

    /// Asks `node` to start its part; its refusal as a `StartError`.
    fn ask_start(
        &self,
        node: String,
        req: PartStart,
    ) -> impl std::future::Future<Output = (String, Outcome)> + Send + 'static {
        let (fleet, local, rt) = (self.fleet.clone(), Arc::clone(&self.local), self.rt.clone());
        ask_start(fleet, local, rt, node, req)
    }
}

/// How a node answered the request to start its part.
enum Outcome {
    Started,
    /// It answered no (or was never asked): nothing of the capture runs there.
    Refused(StartError),
    /// No answer (a timeout, a connection lost mid-request): it may run.
    Unknown(String),
}

async fn ask_start(
    fleet: Fleet,
    local: Arc<FullRuntime>,
    rt: Handle,
    node: String,
    req: PartStart,
) -> (String, Outcome) {
    if node == fleet.name() {
        let r = tokio::task::spawn_blocking(move || start_part(&fleet, &local, &rt, req).map(|_| ())).await;
        let outcome = match r {
            Ok(Ok(())) => Outcome::Started,
            Ok(Err(e)) => Outcome::Refused(e),
            Err(e) => Outcome::Refused(StartError::Failed(format!("the start failed: {e}"))),
        };
        return (node, outcome);
    }
    let Some(info) = fleet.live_nodes().iter().find(|n| n.name == node).cloned() else {
        return (node, Outcome::Refused(StartError::Unavailable("it is not live".into())));
    };
    let body = match serde_json::to_vec(&req) {
        Ok(b) => b,
        Err(e) => return (node, Outcome::Refused(StartError::Failed(e.to_string()))),
    };
    let call = async {
        let resp = match fleet.call(&info, reqwest::Method::POST, PARTS_PATH, Some(body)).await {
            Ok(r) => r,
            Err(super::FleetError::Call { source, .. }) if source.is_connect() => {
                return Outcome::Refused(StartError::Unavailable(format!("cannot connect: {source}")))
            }
            Err(e) => return Outcome::Unknown(e.to_string()),
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Started;
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        // (A 409 there, the account's earlier part still closing on that node, fails the part.)
        Outcome::Refused(match status.as_u16() {
            503 => StartError::Unavailable(msg),
            _ => StartError::Failed(msg),
        })
    };
    let outcome = tokio::time::timeout(START_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Outcome::Unknown(format!("no answer within {} s", START_TIMEOUT.as_secs())));
    (node, outcome)
}

/// Marks a part that did not start `failed` with `why`, unless its node has reported on it
/// since (it started after all); returns whether it was marked.
async fn fail_pending_part(
    client: &etcd_client::Client,
    id: &str,
    node: &str,
    why: String,
) -> Result<bool, StoreError> {
    let part =
        Part { node: node.to_string(), status: PartStatus::Failed, packets_captured: 0, error_message: Some(why) };
    let key = part_key(id, node);
    // Version 1: as the create wrote it (pending); any report of the node's own is newer.
    let txn = Txn::new().when([Compare::version(key.as_str(), CompareOp::Equal, 1)]).and_then([TxnOp::put(
        key.as_str(),
        serde_json::to_vec(&part).map_err(StoreError::Encode)?,
        None,
    )]);
    Ok(kv::txn(client, txn, ETCD_LIMIT).await?.succeeded())
}

fn etcd_down(e: StoreError) -> ManagerError {
    ManagerError::CoordinationDown(e.to_string())
}

impl FleetCaptures for FleetFull {
    fn node(&self) -> &str {
        self.fleet.name()
    }

    fn nodes_for(&self, colo_name: &str) -> Result<Vec<String>, String> {
        let live = self.fleet.live_nodes();
        let nodes: Vec<String> =
            live.iter().filter(|n| n.colos.iter().any(|c| serves(colo_name, c))).map(|n| n.name.clone()).collect();
        if !nodes.is_empty() {
            return Ok(nodes);
        }
        let mut colos: Vec<&str> = live.iter().flat_map(|n| n.colos.iter().map(String::as_str)).collect();
        colos.sort_unstable();
        colos.dedup();
        Err(if colos.is_empty() {
            format!("{colo_name:?} is not served by any live node of the fleet (no live node serves a colo)")
        } else {
            format!("{colo_name:?} is not served by any live node of the fleet (they serve: {})", colos.join(", "))
        })
    }

    fn start(&self, mut c: Capture, nodes: &[String]) -> Result<Capture, ManagerError> {
        let me = self.fleet.name().to_string();
        c.node = Some(me);
        c.parts = nodes
            .iter()
            .map(|n| Part { node: n.clone(), status: PartStatus::Pending, packets_captured: 0, error_message: None })
            .collect();
        let mut pool = Pool::new(c.packet_limit, c.byte_limit, nodes.len());
        let grants: Vec<(u64, u64)> = nodes.iter().map(|_| pool.take()).collect();
        let key = capture_key(&c.account, &c.id);
        let mut ops =
            vec![TxnOp::put(key.as_str(), encode(&c)?, None), TxnOp::put(open_key(&c.id), c.account.clone(), None)];
        for p in &c.parts {
            ops.push(TxnOp::put(part_key(&c.id, &p.node), encode(p)?, None));
        }
        if pool.is_limited() {
            ops.push(TxnOp::put(budget_key(&c.id), encode(&pool)?, None));
        }
        let txn = Txn::new().when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)]).and_then(ops);
        let client = self.fleet.client();
        let created = self.rt.block_on(kv::txn(&client, txn, ETCD_LIMIT)).map_err(StoreError::from);
        if !created.map_err(etcd_down)?.succeeded() {
            return Err(ManagerError::Internal(format!("capture {} exists already", c.id)));
        }
        let starts = nodes.iter().zip(&grants).map(|(n, &(packets, bytes))| {
            let req = PartStart { capture: c.clone(), pool: pool.clone(), packets, bytes };
            self.ask_start(n.clone(), req)
        });
        let answers = self.rt.block_on(futures_join_all(starts.collect()));
        let (account, id) = (c.account.clone(), c.id.clone());
        let all_full = answers.iter().all(|(_, o)| matches!(o, Outcome::Refused(StartError::Unavailable(_))));
        if all_full {
            // No node could take it now (each said so): as on one appliance, nothing is left.
            let txn = Txn::new().and_then([
                TxnOp::delete(key.as_str(), None),
                TxnOp::delete(open_key(&id), None),
                TxnOp::delete(budget_key(&id), None),
                TxnOp::delete(parts_prefix(&id), Some(etcd_client::DeleteOptions::new().with_prefix())),
            ]);
            if let Err(e) = self.rt.block_on(kv::txn(&client, txn, ETCD_LIMIT)) {
                tracing::warn!("capture {id}: removing it: {e}; its parts fail within 30 s instead");
            }
            let why: Vec<String> = answers.iter().map(|(n, o)| format!("{n}: {}", describe(o))).collect();
            return Err(ManagerError::Unavailable(format!(
                "no node of colo {:?} can take a capture now: {}",
                c.colo_name.as_deref().unwrap_or(""),
                why.join("; ")
            )));
        }
        // Bookkeeping of the parts that did not start. Once a part runs, the capture exists:
        // an etcd failure here is logged (the janitor fails parts left pending), never answered
        // as "retry", which would start a second capture.
        let mut started = answers.iter().filter(|(_, o)| matches!(o, Outcome::Started)).count();
        let mut failures = Vec::new();
        let mut returned = (0, 0);
        for ((node, outcome), (packets, bytes)) in answers.iter().zip(&grants) {
            let why = match outcome {
                Outcome::Started => continue,
                Outcome::Refused(e) => format!("did not start: {e}"),
                Outcome::Unknown(e) => format!("no answer to its start ({e}); told to stop"),
            };
            if let Outcome::Unknown(_) = outcome {
                self.tell_stop(&account, &id, &[node.as_str()]);
            }
            match self.rt.block_on(fail_pending_part(&client, &id, node, why.clone())) {
                Ok(true) => {
                    failures.push(format!("{node}: {why}"));
                    // A refused part never had its grant; an unanswered one gives back what it
                    // did not use when it stops.
                    if let Outcome::Refused(_) = outcome {
                        returned = (returned.0 + packets, returned.1 + bytes);
                    }
                }
                // The node reported on its part: it started after all.
                Ok(false) => started += 1,
                Err(e) => {
                    tracing::warn!("capture {id}: marking {node}'s part failed: {e}");
                    failures.push(format!("{node}: {why}"));
                }
            }
        }
        let bookkeeping = self.rt.block_on(async {
            give_back(&client, &id, returned, 0).await?;
            if started > 0 {
                records::update_capture(&client, &account, &id, |c| {
                    if c.status == Status::Pending {
                        c.status = Status::Running;
                    }
                })
                .await?;
            }
            records::recompute(&client, &account, &id).await
        });
        if started == 0 {
            return Err(ManagerError::StartFailed(failures.join("; ")));
        }
        match bookkeeping {
            Ok(Some(stored)) => Ok(stored),
            other => {
                if let Err(e) = other {
                    tracing::warn!("capture {id}: {e}; the record catches up with its parts");
                }
                c.status = Status::Running;
                Ok(c)
            }
        }
    }

    fn stop(&self, c: &Capture) -> Result<Capture, ManagerError> {
        let client = self.fleet.client();
        let now = Utc::now();
        let updated = self
            .rt
            .block_on(records::update_capture(&client, &c.account, &c.id, |c| {
                if c.stop_requested.is_none() && matches!(c.status, Status::Pending | Status::Running) {
                    c.stop_requested = Some(now);
                }
            }))
            .map_err(etcd_down)?
            .ok_or(ManagerError::NotFound)?;
        let running: Vec<&str> =
            updated.parts.iter().filter(|p| !p.status.is_finished()).map(|p| p.node.as_str()).collect();
        self.tell_stop(&c.account, &c.id, &running);
        Ok(updated)
    }
}

impl FleetFull {
    /// Tells `nodes` to stop their part of capture `id` now, all at once (best effort: each
    /// node's part agent also reads a recorded stop within a second).
    fn tell_stop(&self, account: &str, id: &str, nodes: &[&str]) {
        let live = self.fleet.live_nodes();
        let Ok(body) = serde_json::to_vec(&PartStop { account: account.to_string(), id: id.to_string() }) else {
            return;
        };
        let calls = nodes.iter().map(|&node| {
            let (fleet, local, body) = (self.fleet.clone(), Arc::clone(&self.local), body.clone());
            let (account, id, node) = (account.to_string(), id.to_string(), node.to_string());
            let info = live.iter().find(|n| n.name == node).cloned();
            async move {
                if node == fleet.name() {
                    let _ = tokio::task::spawn_blocking(move || local.stop(&account, &id)).await;
                } else if let Some(info) = info {
                    let call = fleet.call(&info, reqwest::Method::POST, STOP_PATH, Some(body));
                    if let Ok(Err(e)) = tokio::time::timeout(STOP_TIMEOUT, call).await {
                        tracing::warn!("capture {id}: telling {node} to stop: {e}");
                    }
                }
            }
        });
        self.rt.block_on(futures_join_all(calls.collect()));
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Started => "started".into(),
        Outcome::Refused(e) => e.to_string(),
        Outcome::Unknown(e) => e.clone(),
    }
}

/// Runs futures at once (spawned on the runtime) and collects their outputs in order.
async fn futures_join_all<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ManagerError> {
    serde_json::to_vec(v).map_err(|e| ManagerError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_out_exactly_its_limits_in_chunks() {
        let mut p = Pool::new(Some(10_000), None, 3);
        assert_eq!(p.chunk_packets, 834);
        let mut got = 0;
        while !p.is_empty() {
            let (packets, bytes) = p.take();
            assert_eq!(bytes, 0);
            got += packets;
        }
        assert_eq!(got, 10_000);
        assert_eq!(p.take(), (0, 0));
        let mut tiny = Pool::new(Some(2), Some(1_000), 3);
        assert_eq!((tiny.chunk_packets, tiny.chunk_bytes), (1, 1_000), "a chunk never exceeds the limit");
        assert_eq!([tiny.take(), tiny.take(), tiny.take()], [(1, 1_000), (1, 0), (0, 0)]);
        assert!(tiny.is_empty());
        let none = Pool::new(None, None, 2);
        assert!(!none.is_limited() && !none.is_empty());
    }

    #[test]
    fn a_part_asks_for_more_at_half_its_chunk() {
        let pool = Pool::new(Some(1_000), None, 1);
        let b = Budget::chunked(Some(250), None);
        assert!(!wants_more(&b, &pool));
        b.take(&[60; 125]);
        assert!(!wants_more(&b, &pool), "125 left of 250");
        b.take(&[60; 1]);
        assert!(wants_more(&b, &pool));
    }
}
