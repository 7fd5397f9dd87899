//! Fleet helpers: an etcd cluster of real members, signed internal calls (signatures by
//! `openssl dgst -hmac`, independent of pcapd's code), node configs and small waits.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::appliance::{call, free_port, write_config, Appliance, Opts, Resp};
use super::{fixture, DpdkLock};

pub const SECRET: &str = "fleet-test-secret-0123456789";
pub const ETCD: &str = "/usr/bin/etcd";
/// pcapd's lease TTL (src/fleet/mod.rs): a killed node disappears within twice this.
pub const TTL_SECS: u64 = 10;

/// An etcd cluster on 127.0.0.1, in a temporary directory; every member in its own process
/// group (so no terminal signal reaches it) and SIGKILLed by pid on drop.
pub struct Etcd {
    pub members: Vec<Child>,
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start(n: usize) -> Etcd {
        use std::os::unix::process::CommandExt;
        assert!(Path::new(ETCD).exists(), "{ETCD} is missing: run scripts/setup (it installs etcd-server)");
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
            let child = Command::new(ETCD)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("pcapd-test-{}", std::process::id())])
                .args(["--auto-compaction-retention=1", "--log-level", "warn"])
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            members.push(child);
        }
        let endpoints: Vec<String> = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
        let e = Etcd { members, endpoints, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        for ep in &e.endpoints {
            loop {
                let healthy = ureq::get(&format!("{ep}/health"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .is_some_and(|b| b.contains("\"health\":\"true\""));
                if healthy {
                    break;
                }
                assert!(Instant::now() < deadline, "etcd member {ep} did not become healthy");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        e
    }

    /// The index of the member that leads now (asked through etcd's JSON gateway).
    pub fn leader(&self) -> usize {
        let status = |ep: &str| -> serde_json::Value {
            let r = ureq::post(&format!("{ep}/v3/maintenance/status")).send_json(serde_json::json!({}));
            r.expect("etcd status").into_json().unwrap()
        };
        let statuses: Vec<serde_json::Value> = self.endpoints.iter().map(|ep| status(ep)).collect();
        let leader = statuses[0]["leader"].as_str().expect("a leader").to_string();
        statuses.iter().position(|s| s["header"]["member_id"].as_str() == Some(leader.as_str())).expect("the leader")
    }

    /// SIGKILL of member `i`.
    pub fn kill(&mut self, i: usize) {
        let _ = self.members[i].kill();
        let _ = self.members[i].wait();
    }

    /// The node records under `/pcapd/nodes/`, read through etcd's own JSON gateway (not pcapd).
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        let b64 = |s: &str| base64(s.as_bytes());
        let body = serde_json::json!({"key": b64("/pcapd/nodes/"), "range_end": b64("/pcapd/nodes0")});
        let r = ureq::post(&format!("{}/v3/kv/range", self.endpoints[0])).send_json(body).expect("etcd range");
        let v: serde_json::Value = r.into_json().unwrap();
        let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter().map(|kv| serde_json::from_slice(&unbase64(kv["value"].as_str().unwrap())).unwrap()).collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

pub const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(b: &[u8]) -> String {
    let mut s = String::new();
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

pub fn unbase64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for ch in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == ch).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `openssl dgst` over `input` with `args`: the lowercase hex digest.
fn openssl_dgst(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .arg("dgst")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit("= ").next().unwrap().to_string()
}

/// HMAC-SHA256 of `METHOD\nPATH\nTIME\nNONCE\nSHA256(BODY)` under `secret`, computed by openssl.
pub fn openssl_sign(secret: &str, method: &str, path: &str, time: i64, nonce: &str, body: &[u8]) -> String {
    let digest = openssl_dgst(&["-sha256"], body);
    openssl_dgst(&["-sha256", "-hmac", secret], format!("{method}\n{path}\n{time}\n{nonce}\n{digest}").as_bytes())
}

/// A nonce no other call of this process uses.
pub fn nonce() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    format!("{t:016x}{n:016x}")
}

/// The signature headers of a call signed with `secret` at `time`.
pub fn signed_headers(secret: &str, method: &str, path: &str, time: i64, body: &[u8]) -> Vec<(String, String)> {
    let n = nonce();
    let sig = openssl_sign(secret, method, path, time, &n, body);
    vec![
        ("x-pcapd-node".into(), "test".into()),
        ("x-pcapd-time".into(), time.to_string()),
        ("x-pcapd-nonce".into(), n),
        ("x-pcapd-signature".into(), sig),
    ]
}

/// `method path` on `base` with `headers`.
pub fn call_with(method: &str, url: &str, headers: &[(String, String)], body: Option<&[u8]>) -> Resp {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    call(method, url, &h, body)
}

/// `method path` on `base`, signed with `secret` at `time` (no signature headers when `None`).
pub fn internal(base: &str, method: &str, path: &str, signed: Option<(&str, i64)>) -> Resp {
    let Some((secret, time)) = signed else { return call(method, &format!("{base}{path}"), &[], None) };
    call_with(method, &format!("{base}{path}"), &signed_headers(secret, method, path, time, b""), None)
}

/// A node's config: the common test appliance with `[node]`, `[fleet]` and its own DPDK file
/// prefix. Returns (config, data dir, API port).
pub fn node_config(dir: &Path, name: &str, colos: &[&str], etcd: &[String]) -> (PathBuf, PathBuf, u16) {
    node_config_with(dir, name, colos, etcd, None, "")
}

/// As `node_config`, receiving from `iface` (when given) and with `more` TOML appended.
pub fn node_config_with(
    dir: &Path,
    name: &str,
    colos: &[&str],
    etcd: &[String],
    iface: Option<&str>,
    more: &str,
) -> (PathBuf, PathBuf, u16) {
    let port = free_port();
    let data = dir.join(name);
    let etcd = etcd.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    let colos = colos.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let extra = format!(
        "[node]\nname = \"{name}\"\ncolos = [{colos}]\n\n[fleet]\netcd = [{etcd}]\n\
         advertise = \"http://127.0.0.1:{port}\"\nsecret = \"{SECRET}\"\n\n{more}\n"
    );
    let fixture = fixture("frames.pcap");
    let opts =
        Opts { source: &fixture, one_in: 1, simple_interval: 0, data: &data, infinite: false, iface, extra: &extra };
    let config = write_config(&opts, port);
    let text = std::fs::read_to_string(&config).unwrap();
    let prefix = format!("pcapd-fleet-{name}-{}-{port}", std::process::id());
    let text = text.replace(r#""--no-shconf"]"#, &format!(r#""--no-shconf", "--file-prefix", "{prefix}"]"#));
    assert!(text.contains(&prefix));
    std::fs::write(&config, text).unwrap();
    (config, data, port)
}

pub fn start_node(dir: &Path, name: &str, colos: &[&str], etcd: &Etcd, lock: &DpdkLock) -> Appliance {
    let (config, data, port) = node_config(dir, name, colos, &etcd.endpoints);
    Appliance::start_config_held(config, &data, port, lock)
}

/// A gauge from /metrics (None when absent).
pub fn metric(base: &str, name: &str) -> Option<f64> {
    let r = call("GET", &format!("{base}/metrics"), &[], None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `f` holds, at most `within`; returns the time it took.
pub fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}
