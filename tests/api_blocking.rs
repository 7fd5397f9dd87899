//! The admin API keeps answering while its store is slow: handlers that touch SQLite (or files,
//! or wait on the capture manager) must not hold one of the runtime's two async workers.
//!
//! In process, no DPDK: the real router on a loopback listener, served by a tokio runtime with
//! exactly 2 workers (as `app` runs it), over the real `db::Db` wrapped so every call takes 2 s.
use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use pcapd::api::auth::Auth;
use pcapd::api::metrics::ApiMetrics;
use pcapd::api::{router, AppState};
use pcapd::captures::manager::{Manager, Policy, SampleAccess};
use pcapd::captures::model::{new_id, Capture, CaptureType, Status};
use pcapd::captures::CaptureRecords;
use pcapd::config::{AccountConfig, CredentialConfig, Permission, UploadConfig};
use pcapd::db::{Db, StoreError};
use pcapd::filter::FilterV1;
use pcapd::upload::buckets::Buckets;
use pcapd::upload::ownership::{Ownership, OwnershipRecords, OwnershipStatus};
use pcapd::upload::uploader::UploadStats;
use serde_json::{json, Value};

/// How long every store call takes.
const STORE_DELAY: Duration = Duration::from_secs(2);
/// What a health check may take while the store is slow.
const HEALTHZ_BUDGET: Duration = Duration::from_millis(100);
const TOKEN: &str = "blocking-test-token";

/// The real SQLite store, made slow on purpose; counts the calls in progress.
struct SlowDb {
    db: Db,
    slow: AtomicBool,
    in_store: AtomicUsize,
}

impl SlowDb {
    fn call<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        if !self.slow.load(SeqCst) {
            return f(&self.db);
        }
        self.in_store.fetch_add(1, SeqCst);
        thread::sleep(STORE_DELAY);
        let r = f(&self.db);
        self.in_store.fetch_sub(1, SeqCst);
        r
    }
}

impl CaptureRecords for SlowDb {
    fn insert(&self, c: &Capture) -> Result<(), StoreError> {
        self.call(|db| db.insert(c))
    }
    fn update(&self, c: &Capture) -> Result<(), StoreError> {
        self.call(|db| db.update(c))
    }
    fn get(&self, account: &str, id: &str) -> Result<Option<Capture>, StoreError> {
        self.call(|db| db.get(account, id))
    }
    fn list(&self, account: &str, limit: usize) -> Result<Vec<Capture>, StoreError> {
        self.call(|db| db.list(account, limit))
    }
    fn unfinished(&self) -> Result<Vec<Capture>, StoreError> {
        self.call(|db| db.unfinished())
    }
    fn newest_simple(&self, account: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        self.call(|db| db.newest_simple(account))
    }
}

impl OwnershipRecords for SlowDb {
    fn put_ownership(&self, o: &Ownership) -> Result<(), StoreError> {
        self.call(|db| db.put_ownership(o))
    }
    fn ownerships(&self, account: &str) -> Result<Vec<Ownership>, StoreError> {
        self.call(|db| db.ownerships(account))
    }
    fn delete_ownership(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        self.call(|db| db.delete_ownership(account, id))
    }
}

fn capture(account: &str, kind: CaptureType, status: Status) -> Capture {
    let c = Capture::new(account, kind, Utc::now(), 60, &FilterV1::default());
    Capture { status, packet_limit: Some(10), ..c }
}

fn ownership(account: &str, dest: &str) -> Ownership {
    let id = new_id();
    Ownership {
        filename: format!("ownership-challenge-{id}.txt"),
        id,
        account: account.to_string(),
        destination_conf: dest.to_string(),
        status: OwnershipStatus::Pending,
        submitted: Utc::now(),
        validated: None,
        token: format!("token-{}", new_id()),
    }
}

/// One finished request: status, content type, body.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn call(method: &str, url: &str, body: Option<Value>) -> Reply {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let req = agent.request(method, url).set("Authorization", &format!("Bearer {TOKEN}"));
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let (status, content_type) = (resp.status(), resp.content_type().to_string());
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    Reply { status, content_type, body }
}

#[test]
fn healthz_answers_while_slow_store_calls_block() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ("a".repeat(32), "b".repeat(32));
    let dest = "s3://bucket/captures?region=us-east-1";

    // Seed the store at full speed, then slow it down.
    let store = Arc::new(SlowDb {
        db: Db::open(&dir.path().join("pcapd.db")).unwrap(),
        slow: AtomicBool::new(false),
        in_store: AtomicUsize::new(0),
    });
    let listed: Vec<Capture> = (0..3).map(|_| capture(&a, CaptureType::Simple, Status::Pending)).collect();
    let done = capture(&a, CaptureType::Simple, Status::Success);
    let full = Capture {
        colo_name: Some("test".into()),
        destination_conf: Some(dest.into()),
        ..capture(&a, CaptureType::Full, Status::Running)
    };
    for c in listed.iter().chain([&done, &full]) {
        store.insert(c).unwrap();
    }
    let owned_a = ownership(&a, dest);
    let (to_validate, to_delete) = (ownership(&b, dest), ownership(&b, "gs://other/dir"));
    for o in [&owned_a, &to_validate, &to_delete] {
        store.put_ownership(o).unwrap();
    }

    let (flush, _flush_rx) = crossbeam::channel::unbounded();
    let manager = Manager::new(
        store.clone(),
        store.clone(),
        None,
        SampleAccess { dir: dir.path().join("samples"), segment_secs: 60, snaplen: 256, one_in: 1, flush, peers: None },
        dir.path().join("captures"),
        Policy {
            simple_interval: Duration::from_secs(60),
            keep_free_bytes: 0,
            rules: Arc::new(pcapd::captures::rules::LocalRules::new(store.clone())),
            fleet: None,
        },
    )
    .unwrap();
    let pcap_bytes = b"not really a pcap, but the bytes to download".to_vec();
    std::fs::write(manager.capture_file(&done.id), &pcap_bytes).unwrap();
    let credential = CredentialConfig {
        token: Some(TOKEN.into()),
        token_env: None,
        email: None,
        key: None,
        key_env: None,
        permission: Permission::Write,
    };
    let accounts: Vec<AccountConfig> = [&a, &b]
        .into_iter()
        .map(|id| AccountConfig { id: id.clone(), name: None, credentials: vec![credential.clone()] })
        .collect();
    let state = AppState {
        manager,
        auth: Arc::new(Auth::from_config(&accounts).unwrap()),
        metrics: Arc::new(ApiMetrics::default()),
        dataplane: None,
        ready: Arc::new(AtomicBool::new(true)),
        full_time_limit_max: 300,
        stores: Arc::new(Buckets::new(UploadConfig::default())),
        ownerships: store.clone(),
        uploads: Arc::new(UploadStats::default()),
        data_dir: None,
        metrics_access: Default::default(),
        ownership_throttle: Arc::new(pcapd::api::throttle::Throttle::per_minute(10)),
        fleet: None,
    };

    // As `app` serves it: a multi-thread runtime with exactly 2 workers.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state, 64 * 1024);
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    let healthz = || {
        let started = Instant::now();
        let r = call("GET", &format!("{base}/healthz"), None);
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok\n".as_slice()));
        started.elapsed()
    };
    let warm = healthz();
    assert!(warm < Duration::from_secs(1), "healthz took {warm:?} before any slow request");
    store.slow.store(true, SeqCst);

    // Seven slow requests at once, each from its own thread and connection.
    let pcaps = format!("{base}/client/v4/accounts/{a}/pcaps");
    let pcaps_b = format!("{base}/client/v4/accounts/{b}/pcaps");
    let requests: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", pcaps.clone(), None),
        ("GET", format!("{pcaps}/{}", listed[0].id), None),
        ("PUT", format!("{pcaps}/{}/stop", full.id), None),
        ("GET", format!("{pcaps}/{}/download", done.id), None),
        ("GET", format!("{pcaps}/ownership"), None),
        (
            "POST",
            format!("{pcaps_b}/ownership/validate"),
            Some(json!({"destination_conf": dest, "ownership_challenge": to_validate.token})),
        ),
        ("DELETE", format!("{pcaps_b}/ownership/{}", to_delete.id), None),
    ];
    let finished = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = requests
        .into_iter()
        .map(|(method, url, body)| {
            let finished = Arc::clone(&finished);
            thread::spawn(move || {
                let r = call(method, &url, body);
                finished.fetch_add(1, SeqCst);
                r
            })
        })
        .collect();

    // Both workers would be taken by now if the handlers called the store themselves.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.in_store.load(SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the slow requests never reached the store");
        thread::sleep(Duration::from_millis(5));
    }
    let took = healthz();
    assert!(took < HEALTHZ_BUDGET, "healthz took {took:?} while slow store calls were in flight");
    assert_eq!(finished.load(SeqCst), 0, "the probe must run while every slow request is in flight");

    // The slow requests still answer, correctly.
    let mut replies = clients.into_iter().map(|c| c.join().unwrap());
    let mut next = || replies.next().unwrap();

    let list = next();
    assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
    let mut ids: Vec<String> =
        list.json()["result"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    let mut want: Vec<String> = listed.iter().chain([&done, &full]).map(|c| c.id.clone()).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);

    let one = next();
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["result"]["id"], listed[0].id.as_str());
    assert_eq!(one.json()["result"]["status"], "pending");

    let stop = next();
    assert_eq!(stop.status, 200, "{}", String::from_utf8_lossy(&stop.body));
    let stopped = &stop.json()["result"];
    assert_eq!(stopped["id"], full.id.as_str());
    assert!(stopped["stop_requested"].is_string(), "{stopped}");

    let download = next();
    assert_eq!(download.status, 200);
    assert_eq!(download.content_type, "application/vnd.tcpdump.pcap");
    assert_eq!(download.body, pcap_bytes);

    let owned = next();
    assert_eq!(owned.status, 200);
    let owned = owned.json()["result"].clone();
    assert_eq!(owned.as_array().unwrap().len(), 1, "{owned}");
    assert_eq!(owned[0]["id"], owned_a.id.as_str());

    let validated = next();
    assert_eq!(validated.status, 200, "{}", String::from_utf8_lossy(&validated.body));
    assert_eq!(validated.json()["result"]["id"], to_validate.id.as_str());
    assert_eq!(validated.json()["result"]["status"], "success");

    let deleted = next();
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));

    // And they were stored.
    store.slow.store(false, SeqCst);
    let left = store.ownerships(&b).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].id.as_str(), left[0].status), (to_validate.id.as_str(), OwnershipStatus::Success));
    assert!(store.get(&a, &full.id).unwrap().unwrap().stop_requested.is_some());
    rt.shutdown_timeout(Duration::from_secs(1));
}
