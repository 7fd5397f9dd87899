//! `pcapd run`: the appliance. Start-up order: config → data dir (locked: one pcapd per dir) and
//! store → data plane (RX lcores with sampling, writers) → sample store thread → control-plane
//! runtime and fleet membership (with `[fleet]`: the per-account rules are then decided in etcd)
//! → capture manager (reconciles what a restart interrupted) → admin API on the non-RX cores.
//! Shutdown (SIGINT/SIGTERM) in reverse: stop accepting requests, let running conversions finish,
//! end running full captures (giving their claims back), leave the fleet, stop RX, drain the
//! writers and the sample store, close the store.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel;

use crate::api::metrics::{ApiMetrics, DataPlaneView};
use crate::api::{self, auth::Auth, AppState};
use crate::captures::full::{FullContext, FullRuntime};
use crate::captures::manager::{Manager, Policy, SampleAccess};
use crate::captures::rules::{LocalRules, Rules};
use crate::captures::CaptureRecords;
use crate::config::{Config, Secret};
use crate::datadir::DataDirLock;
use crate::dataplane::{DataPlane, SamplingSpec};
use crate::db::Db;
use crate::fleet::records::FleetRecords;
use crate::fleet::rules::EtcdRules;
use crate::samples::store::{SampleStore, StoreCmd, StoreConfig};
use crate::upload::buckets::Buckets;
use crate::upload::ownership::OwnershipRecords;
use crate::upload::uploader::{UploadStats, Uploader};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Locked(#[from] crate::datadir::DataDirError),
    #[error(transparent)]
    Store(#[from] crate::db::StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    DataPlane(#[from] crate::dataplane::DataPlaneError),
    #[error("api.listen {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot start the control-plane runtime: {0}")]
    Runtime(std::io::Error),
    #[error("fleet: {0}")]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// Whether the config is at fault (exit code 2) rather than the system.
    pub fn is_bad_input(&self) -> bool {
        match self {
            AppError::Config(_) => true,
            AppError::DataPlane(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

pub fn run(cfg: Config) -> Result<(), AppError> {
    let data = cfg.data.dir.clone();
    let mkdir =
        |p: &PathBuf| std::fs::create_dir_all(p).map_err(|source| AppError::DataDir { path: p.clone(), source });
    // Directories under the data dir are never symlinks (the data dir itself may be one).
    let subdir = |p: PathBuf| crate::datadir::ensure_dir(&p).map_err(|source| AppError::DataDir { path: p, source });
    mkdir(&data)?;
    // Before SQLite, the sample store or DPDK: a second pcapd on this dir stops here. Held
    // until `run` returns.
    let _lock = DataDirLock::acquire(&data)?;
    // The database's files are regular files of the data dir, never reached through a link.
    for name in ["pcapd.db", "pcapd.db-wal", "pcapd.db-shm"] {
        let path = data.join(name);
        match crate::datadir::EntryKind::of(&path) {
            Ok(crate::datadir::EntryKind::File) | Err(_) => {}
            Ok(kind) => {
                let source =
                    std::io::Error::other(format!("{} is {}, not a regular file", path.display(), kind.as_str()));
                return Err(AppError::DataDir { path, source });
            }
        }
    }
    // A full disk (after a crash, say) must not keep the database from opening: the oldest
    // samples go first, as they would while running.
    let samples_dir = data.join("samples");
    if let Ok(free) = crate::datadir::free_bytes(&data) {
        if free < cfg.samples.min_free_bytes && crate::datadir::ensure_dir(&samples_dir).is_ok() {
            crate::samples::store::drop_oldest_until(&samples_dir, cfg.samples.min_free_bytes, None, free, |_| {});
        }
    }
    let store = Arc::new(Db::open(&data.join("pcapd.db"))?);
    subdir(data.join("spool"))?;
    subdir(data.join("captures"))?;
    let auth = Arc::new(Auth::from_config(&cfg.accounts)?);
    if auth.is_empty() {
        tracing::warn!("no [[account]] credentials configured: the API will refuse every request");
    }
    let addr: SocketAddr = cfg
        .api
        .listen
        .parse()
        .map_err(|_| AppError::Other(format!("api.listen {:?} is not an address", cfg.api.listen)))?;
    // Bind before starting DPDK so a busy port fails fast and cleanly.
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| AppError::Listen { addr: cfg.api.listen.clone(), source })?;
    listener.set_nonblocking(true).map_err(|source| AppError::Listen { addr: cfg.api.listen.clone(), source })?;

    let ports: Vec<_> = cfg.ports.iter().collect();
    let sampling = SamplingSpec {
        one_in: cfg.samples.one_in,
        max_per_second: cfg.samples.max_per_second,
        snaplen: cfg.samples.snaplen as usize,
        ring_size: cfg.samples.ring_size,
    };
    let mut dp = DataPlane::start(&cfg, &ports, Some(sampling))?;
    dp.launch_rx()?;

    let (store_tx, store_rx) = channel::unbounded();
    let sample_store = SampleStore::open(
        StoreConfig {
            dir: samples_dir.clone(),
            segment_secs: cfg.samples.segment_seconds,
            retention_secs: cfg.samples.retention_seconds,
            max_bytes: cfg.samples.max_bytes,
            min_free_bytes: cfg.samples.min_free_bytes,
            snaplen: cfg.samples.snaplen,
        },
        dp.sample_rings.clone(),
        store_rx,
        Arc::clone(&dp.sample_stats),
    )
    .map_err(|source| AppError::DataDir { path: samples_dir.clone(), source })?;
    let sample_thread = std::thread::Builder::new()
        .name("pcapd-samples".into())
        .spawn(move || sample_store.run())
        .map_err(|e| AppError::Other(format!("cannot start the sample store thread: {e}")))?;

    // Full captures: spool, upload queue and the uploader thread.
    let stores = Arc::new(Buckets::new(cfg.upload.clone()));
    let (wake_tx, wake_rx) = channel::bounded(1);
    // The control plane's runtime (admin API, uploads, etcd), on the non-RX cores: DPDK has
    // placed this thread, and the runtime's threads inherit it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pcapd-api")
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    // After the listener is bound (peers' calls wait in its backlog), before anything is
    // decided: a failure (etcd unreachable, the name in use) stops the start-up here.
    let fleet = match &cfg.fleet {
        Some(f) => Some(rt.block_on(crate::fleet::Fleet::join(f, &cfg.node, addr))?),
        None => None,
    };
    // The per-account rules: this appliance's own, or the fleet's in etcd.
    let rules: Arc<dyn Rules> = match &fleet {
        Some(f) => Arc::new(EtcdRules::new(f.client(), crate::fleet::KEY_PREFIX, rt.handle().clone())),
        None => Arc::new(LocalRules::new(store.clone())),
    };
    // A fleet keeps its capture records and ownerships in etcd (each node's own work in its
    // SQLite database too); one appliance keeps them in SQLite.
    let (records, ownerships): (Arc<dyn CaptureRecords>, Arc<dyn OwnershipRecords>) = match &fleet {
        Some(f) => {
            let r = FleetRecords::new(store.clone(), f.clone(), rt.handle().clone());
            (r.clone(), r)
        }
        None => (store.clone(), store.clone()),
    };
    let full = FullRuntime::new(
        FullContext {
            control: dp.control(),
            spool_dir: data.join("spool"),
            node: cfg.node.name.clone(),
            colos: cfg.node.colos.clone(),
            rotate: cfg.rotate_policy(),
            precision: cfg.writer.timestamp_precision,
            uploads: store.clone(),
            upload_wake: wake_tx,
            keep_free_bytes: cfg.samples.min_free_bytes / 2,
            // In a fleet a capture's claim is given back when all its parts are done
            // (`fleet::records::recompute`), not when this node's part is.
            rules: if fleet.is_some() { Arc::new(LocalRules::new(store.clone())) } else { Arc::clone(&rules) },
        },
        records.clone(),
    )
    .map(Arc::new)
    .map_err(|e| AppError::Other(format!("cannot start the full-capture thread: {e}")))?;
    subdir(data.join("spool"))?;
    let upload_stats = Arc::new(UploadStats::default());
    let uploader_stop = Arc::new(AtomicBool::new(false));
    let uploader = Uploader {
        spool_dir: data.join("spool"),
        stores: Arc::clone(&stores),
        queue: store.clone(),
        captures: records.clone(),
        wake: wake_rx,
        stop: Arc::clone(&uploader_stop),
        stats: Arc::clone(&upload_stats),
    };

    let manager = Manager::new(
        records.clone(),
        ownerships.clone(),
        Some(Arc::clone(&full)),
        SampleAccess {
            dir: samples_dir,
            segment_secs: cfg.samples.segment_seconds,
            snaplen: cfg.samples.snaplen,
            one_in: cfg.samples.one_in,
            flush: store_tx.clone(),
            // Fleet mode: a simple capture gathers every live node's samples.
            peers: fleet.as_ref().map(|f| {
                Arc::new(crate::fleet::gather::FleetPeers::new(f.clone(), rt.handle().clone()))
                    as Arc<dyn crate::captures::manager::PeerSamples>
            }),
        },
        data.join("captures"),
        Policy {
            simple_interval: Duration::from_secs(cfg.limits.simple_interval_seconds),
            keep_free_bytes: cfg.samples.min_free_bytes / 2,
            rules: Arc::clone(&rules),
            fleet: fleet.as_ref().map(|f| {
                Arc::new(crate::fleet::full::FleetFull::new(f.clone(), rt.handle().clone(), Arc::clone(&full)))
                    as Arc<dyn crate::captures::manager::FleetCaptures>
            }),
        },
    )
    .map_err(|source| AppError::DataDir { path: data.join("captures"), source })?;
    let resumed = manager.reconcile().map_err(|e| AppError::Other(e.to_string()))?;
    if resumed > 0 {
        tracing::info!("reconciled {resumed} capture(s) a restart interrupted");
    }
    let uploader_thread = std::thread::Builder::new()
        .name("pcapd-upload".into())
        .spawn(move || uploader.run())
        .map_err(|e| AppError::Other(format!("cannot start the uploader thread: {e}")))?;

    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        manager: Arc::clone(&manager),
        auth,
        metrics: Arc::new(ApiMetrics::default()),
        dataplane: Some(DataPlaneView {
            cores: cfg.dpdk.rx_cores.clone(),
            stats: dp.stats.clone(),
            ports: dp.ports(),
            samples: Arc::clone(&dp.sample_stats),
            stray: dp.stray_counters(),
        }),
        ready: Arc::clone(&ready),
        full_time_limit_max: cfg.limits.full_time_limit_max,
        stores,
        ownerships,
        uploads: Arc::clone(&upload_stats),
        data_dir: Some((data.clone(), cfg.samples.min_free_bytes / 2)),
        metrics_access: api::MetricsAccess {
            token: cfg.api.metrics_token()?.map(Arc::from),
            per_capture: cfg.api.metrics_per_capture,
        },
        ownership_throttle: Arc::new(api::throttle::Throttle::per_minute(cfg.limits.ownership_per_minute)),
        fleet: fleet.clone(),
    };
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    print_banner(&cfg);

    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| AppError::Listen { addr: cfg.api.listen.clone(), source })?;
        api::set_ready(&ready, true);
        api::serve(listener, api::router(state, cfg.api.max_body_bytes), shutdown_signal())
            .await
            .map_err(|e| AppError::Other(format!("admin API: {e}")))
    });
    api::set_ready(&ready, false);
    tracing::info!("shutting down");
    manager.wait_idle(Duration::from_secs(30));
    // Running full captures end as if stopped: their files are finished and queued (and their
    // claims given back, in etcd for a fleet: the runtime is still up).
    if let Some(full) = manager.full_runtime() {
        full.stop_all(Duration::from_secs(30));
    }
    if let Some(f) = &fleet {
        rt.block_on(f.leave());
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    uploader_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = uploader_thread.join();
    let rx = dp.shutdown();
    let _ = store_tx.send(StoreCmd::Shutdown);
    let _ = sample_thread.join();
    drop(dp);
    served?;
    rx.map_err(|e| AppError::Other(format!("RX lcore failed: {e}")))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The bundled demo config's write token (config/pcapd.toml): public, so the banner may show it.
const DEMO_TOKEN: &str = "pcapd-demo-token";

/// Start-up lines an operator can paste. No secret is printed: logs are read by more people
/// than the config. Only the demo's own, published token is shown literally.
fn print_banner(cfg: &Config) {
    let base = format!("http://{}/client/v4", cfg.api.listen);
    println!("pcapd: admin API on {base} (metrics: http://{}/metrics)", cfg.api.listen);
    for (i, a) in cfg.accounts.iter().enumerate() {
        let token = a.credentials.iter().enumerate().find_map(|(j, c)| {
            let field = format!("account[{i}].credential[{j}]");
            match c.secret(&field) {
                Ok(Secret::Token(t)) if c.token.is_some() || c.token_env.is_some() => Some((field, t)),
                _ => None,
            }
        });
        println!("pcapd: account {}{}", a.id, a.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default());
        match token {
            Some((_, t)) if t == DEMO_TOKEN => {
                println!("  curl -s {base}/accounts/{}/pcaps -H 'Authorization: Bearer {t}'", a.id);
            }
            Some((field, _)) => {
                println!(
                    "  curl -s {base}/accounts/{}/pcaps -H \"Authorization: Bearer $TOKEN\"   # TOKEN: {field}",
                    a.id
                );
            }
            None => {}
        }
    }
}
