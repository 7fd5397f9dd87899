//! The per-account rules decided for the whole fleet in etcd transactions: exactly one of any
//! number of racing nodes wins (`create_revision == 0` for a first claim, `mod_revision == seen`
//! for a later one). Times are values compared by the deciding node, never lease TTLs (a leader
//! change resets those).
//!
//! Keys (under the fleet prefix):
//! - `rules/simple/<account>`: unix ms of the last admitted simple request.
//! - `rules/full/<account>`: `{"id": ..., "until_ms": ...}` of the account's pending or running
//!   full capture; a claim past `until_ms` (its holder died without releasing) is free again.
//!
//! Every etcd call has a deadline: without quorum the answer is `RulesError::Unavailable`
//! (the API says 503, retry), never a hang.
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::kv;
use crate::captures::rules::{retry_after, Rules, RulesError};

/// How long one rule decision may take before it is reported as unavailable.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(3);
/// Racing writers retry this often before giving up (each round is one get and one txn).
const ROUNDS: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
struct FullClaim {
    id: String,
    until_ms: i64,
}

/// The fleet's rules, in etcd.
pub struct EtcdRules {
    client: Client,
    prefix: String,
    rt: Handle,
}

impl EtcdRules {
    /// `prefix` is the fleet's key prefix (e.g. `/pcapd/`); `rt` the runtime the client's
    /// connections live on (calls come from blocking threads).
    pub fn new(client: Client, prefix: &str, rt: Handle) -> EtcdRules {
        EtcdRules { client, prefix: prefix.to_string(), rt }
    }

    fn key(&self, rule: &str, account: &str) -> String {
        format!("{}rules/{rule}/{account}", self.prefix)
    }

    /// Runs `f` (a request with the decision deadline) on the client's runtime.
    fn decide<T>(&self, f: impl std::future::Future<Output = Result<T, kv::KvError>>) -> Result<T, RulesError> {
        Ok(self.rt.block_on(f)?)
    }

    /// The current value and mod revision of `key` (`None` when absent).
    fn read(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, RulesError> {
        let r = self.decide(kv::get(&self.client, key, None, DECIDE_TIMEOUT))?;
        Ok(r.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Writes `value` to `key` if it is still as read (`seen` = its mod revision, or absent).
    /// Returns whether this writer won.
    fn write_if_unchanged(&self, key: &str, seen: Option<i64>, value: Vec<u8>) -> Result<bool, RulesError> {
        let cmp = match seen {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key, value, None)]);
        Ok(self.decide(kv::txn(&self.client, txn, DECIDE_TIMEOUT))?.succeeded())
    }

    /// Whether the holder of a claim still counts: its record is pending or running, or not
    /// written yet (a claim is taken before the record). A holder whose claim was not given back
    /// (its release failed) no longer blocks the account once it stopped capturing.
    fn still_live(&self, account: &str, id: &str) -> Result<bool, RulesError> {
        let key = format!("{}captures/{account}/{id}", self.prefix);
        let Some((value, _)) = self.read(&key)? else { return Ok(true) };
        Ok(serde_json::from_slice::<serde_json::Value>(&value)
            .map_or(true, |c| matches!(c["status"].as_str(), Some("pending" | "running"))))
    }

    fn raced(&self, what: &str) -> RulesError {
        RulesError::Unavailable(format!("{what}: {ROUNDS} racing updates in a row; retry"))
    }
}

impl Rules for EtcdRules {
    fn admit_simple(
        &self,
        account: &str,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<Option<Duration>, RulesError> {
        let key = self.key("simple", account);
        for _ in 0..ROUNDS {
            let seen = self.read(&key)?;
            if let Some((value, _)) = &seen {
                let last = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(DateTime::from_timestamp_millis);
                if let Some(wait) = last.and_then(|l| retry_after(l, now, interval)) {
                    return Ok(Some(wait));
                }
            }
            let value = now.timestamp_millis().to_string().into_bytes();
            if self.write_if_unchanged(&key, seen.map(|(_, rev)| rev), value)? {
                return Ok(None);
            }
        }
        Err(self.raced("simple capture rule"))
    }

    fn unadmit_simple(&self, account: &str, at: DateTime<Utc>) -> Result<(), RulesError> {
        let key = self.key("simple", account);
        let value = at.timestamp_millis().to_string().into_bytes();
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        self.decide(kv::txn(&self.client, txn, DECIDE_TIMEOUT)).map(|_| ())
    }

    fn claim_full(&self, account: &str, id: &str, until: DateTime<Utc>) -> Result<Result<(), String>, RulesError> {
        let key = self.key("full", account);
        let now_ms = Utc::now().timestamp_millis();
        for _ in 0..ROUNDS {
            let seen = self.read(&key)?;
            if let Some((value, _)) = &seen {
                match serde_json::from_slice::<FullClaim>(value) {
                    Ok(held) if held.id == id => return Ok(Ok(())),
                    Ok(held) if held.until_ms > now_ms && self.still_live(account, &held.id)? => {
                        return Ok(Err(held.id))
                    }
                    // Expired (its holder never released it), or unreadable: free.
                    _ => {}
                }
            }
            let claim = FullClaim { id: id.to_string(), until_ms: until.timestamp_millis() };
            let value = serde_json::to_vec(&claim).map_err(|e| RulesError::Unavailable(e.to_string()))?;
            if self.write_if_unchanged(&key, seen.map(|(_, rev)| rev), value)? {
                return Ok(Ok(()));
            }
        }
        Err(self.raced("full capture rule"))
    }

    fn release_full(&self, account: &str, id: &str) -> Result<(), RulesError> {
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        self.rt.block_on(async move {
            match tokio::time::timeout(DECIDE_TIMEOUT, release_full(&client, &prefix, account, id)).await {
                Ok(r) => r,
                Err(_) => {
                    Err(RulesError::Unavailable(format!("etcd did not answer within {} s", DECIDE_TIMEOUT.as_secs())))
                }
            }
        })
    }
}

/// Gives the account's full-capture claim back if `id` holds it (nothing otherwise).
pub async fn release_full(client: &Client, prefix: &str, account: &str, id: &str) -> Result<(), RulesError> {
    let key = format!("{prefix}rules/full/{account}");
    for _ in 0..ROUNDS {
        let r = kv::get(client, &key, None, DECIDE_TIMEOUT).await?;
        let Some(kv) = r.kvs().first() else { return Ok(()) };
        if serde_json::from_slice::<FullClaim>(kv.value()).map_or(true, |held| held.id != id) {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision())])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if kv::txn(client, txn, DECIDE_TIMEOUT).await?.succeeded() {
            return Ok(());
        }
    }
    Err(RulesError::Unavailable(format!("full capture rule: {ROUNDS} racing updates in a row; retry")))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use super::*;

    /// One etcd member on free loopback ports in a temp dir; killed (by pid) on drop.
    pub(crate) struct Etcd {
        child: Child,
        pub url: String,
        _dir: tempfile::TempDir,
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    impl Etcd {
        pub(crate) fn start() -> Etcd {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let url = format!("http://127.0.0.1:{client}");
            let child = Command::new("etcd")
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--name", "t", "--listen-client-urls", &url, "--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &format!("t=http://127.0.0.1:{peer}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd (scripts/setup installs etcd-server)");
            let e = Etcd { child, url, _dir: dir };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while TcpListener::bind(("127.0.0.1", client)).is_ok()
                || std::net::TcpStream::connect(("127.0.0.1", client)).is_err()
            {
                assert!(std::time::Instant::now() < deadline, "etcd did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            e
        }

        pub(crate) fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn rules(rt: &tokio::runtime::Runtime, url: &str) -> EtcdRules {
        let opts = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let client = rt.block_on(Client::connect([url], Some(opts))).unwrap();
        EtcdRules::new(client, "/pcapd-test/", rt.handle().clone())
    }

    /// Two "nodes" (two clients) and many racing requests: exactly one admission per interval.
    #[test]
    fn racing_nodes_admit_exactly_one_simple_request_and_one_full_capture() {
        let etcd = Etcd::start();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let nodes = [Arc::new(rules(&rt, &etcd.url)), Arc::new(rules(&rt, &etcd.url))];
        let now = Utc::now();
        let interval = Duration::from_secs(60);
        let granted: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..12)
                .map(|i| {
                    let n = Arc::clone(&nodes[i % 2]);
                    s.spawn(move || n.admit_simple("acct", now, interval).unwrap().is_none() as usize)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 1);
        // Stored in ms: the wait is 40 s less the sub-millisecond part of `now`.
        let wait = nodes[1].admit_simple("acct", now + chrono::Duration::seconds(20), interval).unwrap().unwrap();
        assert!(wait > Duration::from_millis(39_990) && wait <= Duration::from_secs(40), "{wait:?}");
        assert_eq!(nodes[0].admit_simple("other", now, interval).unwrap(), None, "per account");
        assert_eq!(nodes[1].admit_simple("acct", now + chrono::Duration::seconds(61), interval).unwrap(), None);
        // Taken back (its record could not be stored): the next request is admitted at once;
        // an older admission's take-back does nothing.
        let later = now + chrono::Duration::seconds(62);
        nodes[0].unadmit_simple("acct", now).unwrap();
        assert!(nodes[0].admit_simple("acct", later, interval).unwrap().is_some(), "not the last admission");
        nodes[0].unadmit_simple("acct", now + chrono::Duration::seconds(61)).unwrap();
        assert_eq!(nodes[0].admit_simple("acct", later, interval).unwrap(), None);

        let until = Utc::now() + chrono::Duration::seconds(300);
        let winners: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..10)
                .map(|i| {
                    let n = Arc::clone(&nodes[i % 2]);
                    s.spawn(move || {
                        (n.claim_full("acct", &format!("cap{i}"), until).unwrap().is_ok(), format!("cap{i}"))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).filter(|(won, _)| *won).map(|(_, id)| id).collect()
        });
        assert_eq!(winners.len(), 1, "{winners:?}");
        let holder = &winners[0];
        assert_eq!(nodes[0].claim_full("acct", "late", until).unwrap(), Err(holder.clone()));
        nodes[1].release_full("acct", "not-the-holder").unwrap();
        assert!(nodes[0].claim_full("acct", "late", until).unwrap().is_err(), "only the holder releases");
        nodes[1].release_full("acct", holder).unwrap();
        assert_eq!(nodes[0].claim_full("acct", "late", until).unwrap(), Ok(()));
        // A holder whose record says it no longer captures does not block (its release failed).
        let mut kv = rt.block_on(Client::connect([etcd.url.as_str()], None)).unwrap().kv_client();
        let record = |status: &str| serde_json::json!({ "status": status }).to_string();
        rt.block_on(kv.put("/pcapd-test/captures/acct3/old", record("running"), None)).unwrap();
        assert_eq!(nodes[0].claim_full("acct3", "old", until).unwrap(), Ok(()));
        assert_eq!(nodes[1].claim_full("acct3", "new", until).unwrap(), Err("old".to_string()));
        rt.block_on(kv.put("/pcapd-test/captures/acct3/old", record("conversion_pending"), None)).unwrap();
        assert_eq!(nodes[1].claim_full("acct3", "new", until).unwrap(), Ok(()));
        // A claim whose holder never released it lapses at its deadline.
        let past = Utc::now() - chrono::Duration::seconds(1);
        assert_eq!(nodes[0].claim_full("acct2", "dead", past).unwrap(), Ok(()));
        assert_eq!(nodes[1].claim_full("acct2", "next", until).unwrap(), Ok(()));
    }

    #[test]
    fn without_etcd_a_decision_is_unavailable_not_a_hang() {
        let mut etcd = Etcd::start();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let node = rules(&rt, &etcd.url);
        let before = crate::fleet::ETCD_REQUESTS.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(node.admit_simple("a", Utc::now(), Duration::from_secs(60)).unwrap(), None);
        // A first admission is a read and a transaction, each counted (other tests may add).
        assert!(crate::fleet::ETCD_REQUESTS.load(std::sync::atomic::Ordering::Relaxed) >= before + 2);
        etcd.kill();
        let t = std::time::Instant::now();
        let e = node.admit_simple("b", Utc::now(), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(e, RulesError::Unavailable(_)), "{e}");
        assert!(t.elapsed() < DECIDE_TIMEOUT + Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(matches!(node.claim_full("a", "x", Utc::now()), Err(RulesError::Unavailable(_))));
    }
}
