//! Fleet membership (`[fleet]`): this node's registration in etcd, the live members, and signed
//! calls to other nodes.
//!
//! [`Fleet::join`] connects to etcd, takes a lease of [`LEASE_TTL_SECS`] and creates
//! `/pcapd/nodes/<name>` (a JSON [`NodeInfo`]) bound to it, in one transaction that fails when the
//! key exists: a key with a lease exists only while its holder keeps the lease alive, so a name in
//! use by a live node is refused. Two tasks of their own (never a request path, see FLEET.md on
//! Security Onion) then keep the lease alive and refresh the member list once a second; both
//! record the etcd round trip. A lease that expired anyway (etcd unreachable for longer than the
//! TTL) is replaced and the key re-created. [`Fleet::leave`] stops the tasks and revokes the
//! lease, which deletes the key at once. A third task measures the clock offset to each peer
//! ([`clock`]).
//!
//! Invariants: the key always names this node's current lease; [`Fleet::live_nodes`] is the last
//! successful refresh (it keeps the previous list while etcd is unreachable).
//! Note: a leader change in etcd resets lease TTLs, so a dead node may be listed for up to twice
//! the TTL.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, FleetConfig, HttpEndpoint, NodeConfig};

pub mod auth;
pub mod clock;
pub mod full;
pub mod gather;
pub mod kv;
pub mod records;
pub mod rules;

use auth::FleetSecret;

/// Where nodes register: `/pcapd/nodes/<name>`.
/// Every key of the fleet lives under this prefix.
pub const KEY_PREFIX: &str = "/pcapd/";
pub const NODES_PREFIX: &str = "/pcapd/nodes/";
/// Lease of a node's registration (seconds): a node that stops renewing disappears after this
/// (up to twice this across an etcd leader change).
pub const LEASE_TTL_SECS: i64 = 10;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(3);
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one etcd request.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a node-to-node call (connect, send, answer head).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One node's registration: what other nodes need to call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// The base URL of its API listener (`http://10.0.0.5:8080`, no trailing `/`).
    pub advertise: String,
    pub colos: Vec<String>,
    pub pid: u32,
    /// When the node started (UNIX milliseconds).
    pub started_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    #[error(
        "node name {name:?} is in use by a live node (advertise {}, pid {}, started {}); give this node \
         another [node] name, or stop that one (a killed node's registration expires within {} s)",
        holder.advertise, holder.pid, rfc3339_ms(holder.started_unix_ms), 2 * LEASE_TTL_SECS
    )]
    NameInUse { name: String, holder: Box<NodeInfo> },
    #[error("etcd {op}: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op}: no answer within {} s", ETCD_TIMEOUT.as_secs())]
    Timeout { op: &'static str },
    #[error("etcd key {key}: not a node record: {reason}")]
    BadRecord { key: String, reason: String },
    #[error("node {node} ({url}): {source}")]
    Call {
        node: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("node {node}: call path {path:?} must start with '/'")]
    BadPath { node: String, path: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Figures for /metrics.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Members in the last successful refresh.
    pub live_nodes: AtomicU64,
    /// The last etcd round trip (keepalive or member refresh), in microseconds.
    pub etcd_latency_us: AtomicU64,
    /// Times the lease expired anyway and the registration was re-created.
    pub reregistrations: AtomicU64,
    /// The last measured clock offset to each live peer, sorted by node ([`clock`]).
    pub clock_offsets: Mutex<Vec<clock::PeerClock>>,
    /// Parts of the fleet's unfinished full captures by state, as of the last janitor pass
    /// (`records`): (state, count) for every state.
    pub parts: Mutex<Vec<(&'static str, u64)>>,
    /// Parts this node gave up: their node left the fleet (`lost`) or never started them.
    pub parts_given_up: AtomicU64,
}

/// A member of the fleet. Cheap to clone; every clone is the same membership.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    me: NodeInfo,
    key: String,
    lease: AtomicI64,
    secret: FleetSecret,
    nonces: auth::Nonces,
    members: RwLock<Arc<Vec<NodeInfo>>>,
    stats: FleetStats,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// This machine's clock in UNIX seconds (the time node-to-node calls are signed with).
pub fn unix_secs() -> i64 {
    (unix_ms() / 1000) as i64
}

fn rfc3339_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// etcd requests this process has made (/metrics `pcapd_fleet_etcd_requests_total`): every call
/// through [`etcd`], every rule decision (`rules.rs`), every lease keepalive. New code that talks
/// to etcd goes through [`etcd`], which counts.
pub static ETCD_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Runs one etcd request (`op` names it in errors) with [`ETCD_TIMEOUT`], counted in
/// [`ETCD_REQUESTS`].
pub(crate) async fn etcd<T>(
    op: &'static str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    ETCD_REQUESTS.fetch_add(1, Relaxed);
    match tokio::time::timeout(ETCD_TIMEOUT, f).await {
        Ok(r) => r.map_err(|source| FleetError::Etcd { op, source }),
        Err(_) => Err(FleetError::Timeout { op }),
    }
}

impl Fleet {
    /// Joins the fleet: connects to etcd, registers this node (refused when its name is held by
    /// a live node), reads the members, and starts the keepalive and refresh tasks on the current
    /// tokio runtime. `api_listen` is the bound API address (a warning when `advertise` names
    /// another port: fine behind a proxy, a typo otherwise).
    pub async fn join(cfg: &FleetConfig, node: &NodeConfig, api_listen: SocketAddr) -> Result<Fleet, FleetError> {
        let secret = FleetSecret::new(cfg.secret()?.as_bytes());
        if let Ok(adv) = HttpEndpoint::parse(&cfg.advertise) {
            if adv.port != api_listen.port() {
                tracing::warn!(
                    "fleet.advertise {} names port {}, but the API listens on {api_listen}",
                    cfg.advertise,
                    adv.port
                );
            }
        }
        let endpoints = cfg.etcd.join(", ");
        let unreachable =
            |e: FleetError| FleetError::Unreachable { endpoints: endpoints.clone(), reason: e.to_string() };
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if cfg.etcd.iter().any(|e| e.starts_with("https://")) {
            opts = opts.with_tls(etcd_client::TlsOptions::new().with_native_roots());
        }
        let client = etcd("connect", Client::connect(&cfg.etcd, Some(opts))).await.map_err(unreachable)?;
        let me = NodeInfo {
            name: node.name.clone(),
            advertise: cfg.advertise_base().to_string(),
            colos: node.colos.clone(),
            pid: std::process::id(),
            started_unix_ms: unix_ms(),
        };
        let key = format!("{NODES_PREFIX}{}", me.name);
        // The first request proves etcd answers: its failure is "cannot reach etcd".
        let lease =
            etcd("lease grant", client.lease_client().grant(LEASE_TTL_SECS, None)).await.map_err(unreachable)?;
        if let Err(e) = register(&client, &key, &me, lease.id()).await {
            let _ = etcd("lease revoke", client.lease_client().revoke(lease.id())).await;
            return Err(e);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|source| FleetError::Call { node: me.name.clone(), url: me.advertise.clone(), source })?;
        let (stop, _) = watch::channel(false);
        let fleet = Fleet {
            inner: Arc::new(Inner {
                client,
                me,
                key,
                lease: AtomicI64::new(lease.id()),
                secret,
                nonces: auth::Nonces::default(),
                members: RwLock::new(Arc::new(Vec::new())),
                stats: FleetStats::default(),
                http,
                stop,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        fleet.refresh_live_nodes().await?;
        let tasks = vec![
            tokio::spawn(keepalive_task(Arc::clone(&fleet.inner))),
            tokio::spawn(refresh_task(Arc::clone(&fleet.inner))),
            tokio::spawn(clock::clock_task(fleet.clone())),
        ];
        if let Ok(mut t) = fleet.inner.tasks.lock() {
            t.extend(tasks);
        }
        tracing::info!(
            "fleet: joined as {} ({}) with {} live node(s)",
            fleet.inner.me.name,
            fleet.inner.me.advertise,
            fleet.live_nodes().len()
        );
        Ok(fleet)
    }

    /// This node's name (`[node] name`).
    pub fn name(&self) -> &str {
        &self.inner.me.name
    }

    /// This node's registration.
    pub fn me(&self) -> &NodeInfo {
        &self.inner.me
    }

    /// The etcd client, for fleet-wide records and transactions. Cheap to clone.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The secret node-to-node calls are signed with.
    pub fn secret(&self) -> &FleetSecret {
        &self.inner.secret
    }

    /// Figures for /metrics.
    pub fn stats(&self) -> &FleetStats {
        &self.inner.stats
    }

    /// The live members, this node included, sorted by name: the last refresh (at most about a
    /// second old; kept while etcd is unreachable). No I/O.
    pub fn live_nodes(&self) -> Arc<Vec<NodeInfo>> {
        self.inner.members.read().map(|m| Arc::clone(&m)).unwrap_or_default()
    }

    /// Reads the members from etcd now (one prefix get) and updates the cache.
    pub async fn refresh_live_nodes(&self) -> Result<Arc<Vec<NodeInfo>>, FleetError> {
        refresh(&self.inner).await
    }

    /// A request to `node` signed with the fleet secret, to the node's advertised URL + `path`
    /// (which starts with `/` and may carry a query; it is signed as given), with `body` (JSON)
    /// when given: the signature covers it. Add a timeout, then `send()` it; for the common case
    /// use [`Fleet::call`].
    pub fn request(
        &self,
        node: &NodeInfo,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::RequestBuilder, FleetError> {
        if !path.starts_with('/') {
            return Err(FleetError::BadPath { node: node.name.clone(), path: path.to_string() });
        }
        let now = unix_secs();
        let nonce = auth::new_nonce();
        let body = body.unwrap_or_default();
        let signature = auth::sign(&self.inner.secret, method.as_str(), path, now, &nonce, &body);
        let url = format!("{}{path}", node.advertise.trim_end_matches('/'));
        let mut req = self
            .inner
            .http
            .request(method, url)
            .header(auth::NODE_HEADER, &self.inner.me.name)
            .header(auth::TIME_HEADER, now.to_string())
            .header(auth::NONCE_HEADER, nonce)
            .header(auth::SIGNATURE_HEADER, signature);
        if !body.is_empty() {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        Ok(req)
    }

    /// The nonces of node-to-node calls this node accepted lately (each is accepted once).
    pub fn nonces(&self) -> &auth::Nonces {
        &self.inner.nonces
    }

    /// Calls `method path` on `node` (signed), with a JSON `body` when given; any HTTP status is
    /// an `Ok` answer, only a failure to get one is an error (naming the node and URL).
    pub async fn call(
        &self,
        node: &NodeInfo,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, FleetError> {
        let req = self.request(node, method, path, body)?;
        let url = format!("{}{path}", node.advertise);
        req.send().await.map_err(|source| FleetError::Call { node: node.name.clone(), url, source })
    }

    /// Leaves the fleet: stops the keepalive, refresh and clock tasks and revokes the lease (the
    /// registration disappears at once). Safe to call twice.
    pub async fn leave(&self) {
        let _ = self.inner.stop.send(true);
        let tasks = self.inner.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
        let lease = self.inner.lease.swap(0, Relaxed);
        if lease != 0 {
            match etcd("lease revoke", self.inner.client.lease_client().revoke(lease)).await {
                Ok(_) => tracing::info!("fleet: {} left", self.inner.me.name),
                Err(e) => tracing::warn!("fleet: leaving: {e} (the registration expires with its lease)"),
            }
        }
    }
}

/// Creates `key` bound to `lease` unless it exists; an existing key is a live holder.
async fn register(client: &Client, key: &str, me: &NodeInfo, lease: i64) -> Result<(), FleetError> {
    let value =
        serde_json::to_vec(me).map_err(|e| FleetError::BadRecord { key: key.to_string(), reason: e.to_string() })?;
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))])
        .or_else([TxnOp::get(key, None)]);
    let resp = etcd("register", client.kv_client().txn(txn)).await?;
    if resp.succeeded() {
        return Ok(());
    }
    let holder = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| parse_node(key, kv.value())),
        _ => None,
    });
    let holder = match holder {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(e),
        // Deleted between the compare and the get: cannot happen within one transaction.
        None => return Err(FleetError::BadRecord { key: key.to_string(), reason: "vanished".into() }),
    };
    Err(FleetError::NameInUse { name: me.name.clone(), holder: Box::new(holder) })
}

fn parse_node(key: &str, value: &[u8]) -> Result<NodeInfo, FleetError> {
    serde_json::from_slice(value).map_err(|e| FleetError::BadRecord { key: key.to_string(), reason: e.to_string() })
}

async fn refresh(inner: &Inner) -> Result<Arc<Vec<NodeInfo>>, FleetError> {
    let started = Instant::now();
    let resp =
        etcd("list nodes", inner.client.kv_client().get(NODES_PREFIX, Some(GetOptions::new().with_prefix()))).await?;
    inner.stats.etcd_latency_us.store(started.elapsed().as_micros() as u64, Relaxed);
    let mut nodes = Vec::with_capacity(resp.kvs().len());
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        match parse_node(&key, kv.value()) {
            Ok(n) => nodes.push(n),
            // One bad record must not hide the other nodes.
            Err(e) => tracing::warn!("fleet: {e}"),
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    inner.stats.live_nodes.store(nodes.len() as u64, Relaxed);
    let nodes = Arc::new(nodes);
    if let Ok(mut m) = inner.members.write() {
        *m = Arc::clone(&nodes);
    }
    Ok(nodes)
}

/// Sleeps `d`; false when the fleet is stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = stop.changed() => false,
        _ = tokio::time::sleep(d) => !*stop.borrow(),
    }
}

async fn refresh_task(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut failing = false;
    while pause(&mut stop, REFRESH_EVERY).await {
        match refresh(&inner).await {
            Ok(_) if failing => {
                tracing::info!("fleet: etcd answers again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!("fleet: cannot list the nodes: {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Keeps the lease alive every [`KEEPALIVE_EVERY`] on one keepalive stream, reopened after an
/// error; re-registers when the lease expired anyway.
async fn keepalive_task(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut lease_client = inner.client.lease_client();
    'reopen: loop {
        let lease = inner.lease.load(Relaxed);
        if *stop.borrow() || lease == 0 {
            return;
        }
        let (mut keeper, mut stream) = match etcd("lease keepalive", lease_client.keep_alive(lease)).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("fleet: {e}");
                if !pause(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let started = Instant::now();
            ETCD_REQUESTS.fetch_add(1, Relaxed);
            if let Err(e) = keeper.keep_alive().await {
                tracing::warn!("fleet: lease keepalive: {e}");
                if !pause(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue 'reopen;
            }
            match tokio::time::timeout(ETCD_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    inner.stats.etcd_latency_us.store(started.elapsed().as_micros() as u64, Relaxed);
                }
                Ok(Ok(Some(_))) => {
                    tracing::warn!("fleet: lease {lease:x} expired; registering {} again", inner.me.name);
                    if !reregister(&inner, &mut stop).await {
                        return;
                    }
                    continue 'reopen;
                }
                Ok(Ok(None)) => {
                    tracing::warn!("fleet: lease keepalive stream closed; reopening");
                    if !pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue 'reopen;
                }
                Ok(Err(e)) => {
                    tracing::warn!("fleet: lease keepalive: {e}");
                    if !pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue 'reopen;
                }
                Err(_) => {
                    tracing::warn!("fleet: lease keepalive: no answer within {} s", ETCD_TIMEOUT.as_secs());
                    continue 'reopen;
                }
            }
            if !pause(&mut stop, KEEPALIVE_EVERY).await {
                return;
            }
        }
    }
}

/// A new lease and the key again, retried until it works or the fleet stops; false when stopping.
async fn reregister(inner: &Inner, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        let attempt = async {
            let lease = etcd("lease grant", inner.client.lease_client().grant(LEASE_TTL_SECS, None)).await?;
            match register(&inner.client, &inner.key, &inner.me, lease.id()).await {
                Ok(()) => Ok(lease.id()),
                Err(e) => {
                    let _ = etcd("lease revoke", inner.client.lease_client().revoke(lease.id())).await;
                    Err(e)
                }
            }
        };
        match attempt.await {
            Ok(id) => {
                inner.lease.store(id, Relaxed);
                inner.stats.reregistrations.fetch_add(1, Relaxed);
                tracing::info!("fleet: registered {} again", inner.me.name);
                return true;
            }
            Err(e) => tracing::error!("fleet: cannot register {} again: {e}", inner.me.name),
        }
        if !pause(stop, Duration::from_secs(2)).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_through_etcd_is_counted_failed_ones_too() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Process-wide: other tests may add to it at the same time, never take away.
        let before = ETCD_REQUESTS.load(Relaxed);
        assert_eq!(rt.block_on(etcd("ok", async { Ok::<_, etcd_client::Error>(7) })).unwrap(), 7);
        let e = rt.block_on(etcd("bad", async { Err::<(), _>(etcd_client::Error::InvalidArgs("x".into())) }));
        assert!(matches!(e, Err(FleetError::Etcd { op: "bad", .. })), "{e:?}");
        assert!(ETCD_REQUESTS.load(Relaxed) >= before + 2);
    }
}
