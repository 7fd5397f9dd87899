//! Starts a real `pcapd run` on a test config and talks to it over HTTP.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
pub const OTHER_ACCOUNT: &str = "fedcba9876543210fedcba9876543210";
pub const TOKEN: &str = "test-write-token";
pub const READ_TOKEN: &str = "test-read-token";
pub const OTHER_TOKEN: &str = "other-account-token";
/// A token of both accounts (read only).
pub const BOTH_TOKEN: &str = "both-accounts-token";
pub const EMAIL: &str = "ops@example.com";
pub const KEY: &str = "test-key";

pub struct Appliance {
    pub child: Option<Child>,
    pub base: String,
    pub data: PathBuf,
    pub config: PathBuf,
    /// `None` when the caller holds the DPDK lock for several appliances (`start_config_held`).
    _lock: Option<super::DpdkLock>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Options of a test appliance.
pub struct Opts<'a> {
    pub source: &'a Path,
    pub one_in: u32,
    pub simple_interval: u64,
    pub data: &'a Path,
    /// Replay the source forever (`infinite_rx=1`) instead of once.
    pub infinite: bool,
    /// Receive from this network interface (net_pcap `rx_iface_in=`) instead of `source`.
    pub iface: Option<&'a str>,
    /// More TOML appended to the config (sections not written above).
    pub extra: &'a str,
}

impl Opts<'_> {
    /// The usual test appliance: the fixture replayed once, every packet sampled, no simple
    /// capture interval, nothing extra.
    pub fn fixture(data: &Path) -> Opts<'_> {
        static FIXTURE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let source = FIXTURE.get_or_init(|| super::fixture("frames.pcap"));
        Opts { source, one_in: 1, simple_interval: 0, data, infinite: false, iface: None, extra: "" }
    }
}

pub fn write_config(o: &Opts, port: u16) -> PathBuf {
    let cfg = format!(
        r#"
[dpdk]
eal_args = ["--no-huge", "-m", "512", "--no-shconf"]
rx_cores = [1]

[[port]]
device = "net_pcap0"
args = "{port_args}"

[data]
dir = "{data}"

[api]
listen = "127.0.0.1:{port}"

[samples]
one_in = {one_in}
max_per_second = 1000000
segment_seconds = 10
# Small enough for the tests' small tmpfs data dirs.
min_free_bytes = 4194304

[limits]
simple_interval_seconds = {interval}

[[account]]
id = "{ACCOUNT}"
[[account.credential]]
token = "{TOKEN}"
permission = "write"
[[account.credential]]
token = "{READ_TOKEN}"
permission = "read"
[[account.credential]]
email = "{EMAIL}"
key = "{KEY}"
permission = "write"

[[account.credential]]
token = "{BOTH_TOKEN}"
permission = "read"

[[account]]
id = "{OTHER_ACCOUNT}"
name = "other"
[[account.credential]]
token = "{OTHER_TOKEN}"
permission = "write"
[[account.credential]]
token = "{BOTH_TOKEN}"
permission = "read"

{extra}
"#,
        port_args = match o.iface {
            Some(i) => format!("rx_iface_in={i}"),
            None => format!("rx_pcap={}{}", o.source.display(), if o.infinite { ",infinite_rx=1" } else { "" }),
        },
        data = o.data.display(),
        one_in = o.one_in,
        interval = o.simple_interval,
        extra = o.extra,
    );
    let path = o.data.join("pcapd-test.toml");
    std::fs::create_dir_all(o.data).unwrap();
    std::fs::write(&path, cfg).unwrap();
    path
}

impl Appliance {
    pub fn start(o: &Opts) -> Appliance {
        let port = free_port();
        let config = write_config(o, port);
        Self::start_config(config, o.data, port)
    }

    /// Starts (or restarts) on an existing config file.
    pub fn start_config(config: PathBuf, data: &Path, port: u16) -> Appliance {
        Self::start_config_in(config, data, port, &root())
    }

    /// As `start_config`, with `cwd` as the working directory of `pcapd run`.
    pub fn start_config_in(config: PathBuf, data: &Path, port: u16, cwd: &Path) -> Appliance {
        let lock = dpdk_lock();
        Self::spawn(config, data, port, cwd, Some(lock))
    }

    /// Starts one of several appliances that run at once while the caller holds the DPDK lock
    /// (`_held`) for all of them; drop them before the lock.
    pub fn start_config_held(config: PathBuf, data: &Path, port: u16, _held: &super::DpdkLock) -> Appliance {
        Self::spawn(config, data, port, &root(), None)
    }

    fn spawn(config: PathBuf, data: &Path, port: u16, cwd: &Path, lock: Option<super::DpdkLock>) -> Appliance {
        let child = pcapd()
            .current_dir(cwd)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pcapd run");
        let mut a = Appliance {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
            config,
            _lock: lock,
        };
        a.wait_ready();
        a
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let mut err = String::new();
                if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("pcapd run exited with {st}: {err}");
            }
            if ureq::get(&format!("{}/readyz", self.base)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pcapd run did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/client/v4/accounts/{ACCOUNT}{path}", self.base)
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// The pid of the running `pcapd run`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the appliance dies without any clean-up.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then wait; returns the exit status and stderr.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().expect("running");
        send_signal(child.id(), "TERM");
        let out = child.wait_with_output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn send_signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP response, whatever its status.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The single error message of a failed envelope.
    pub fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["result"], serde_json::Value::Null, "{v}");
        let errs = v["errors"].as_array().expect("errors array");
        assert_eq!(errs.len(), 1, "{v}");
        assert!(errs[0]["code"].as_u64().unwrap() >= 1000, "{v}");
        errs[0]["message"].as_str().unwrap().to_string()
    }
}

pub fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    let mut req = ureq::request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = r.status();
    let headers = r.headers_names().iter().map(|n| (n.clone(), r.header(n).unwrap_or("").to_string())).collect();
    let mut body = Vec::new();
    use std::io::Read;
    r.into_reader().read_to_end(&mut body).unwrap();
    Resp { status, headers, body }
}

pub fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Packets `app`'s RX cores have received: the sum of its RX counters in /metrics.
pub fn rx_packets(app: &Appliance) -> u64 {
    let m = String::from_utf8(call("GET", &format!("{}/metrics", app.base), &[], None).body).unwrap();
    m.lines()
        .filter(|l| l.starts_with("pcapd_rx_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits (up to 20 s) until `app` has received `packets` packets: its RX counters in /metrics.
pub fn wait_replayed(app: &Appliance, packets: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rx = rx_packets(app);
        if rx >= packets as u64 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{}: received {rx} of {packets}", app.base);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
