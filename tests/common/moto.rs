//! A real S3-compatible server for tests: moto, with SigV4 checked (after its set-up requests).
#![allow(dead_code)]
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::appliance::{free_port, send_signal};
use super::root;

pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub access: String,
    pub secret: String,
}

fn python() -> std::path::PathBuf {
    root().join(".venv/bin/python")
}

impl Moto {
    /// Starts moto with authentication on and creates `buckets`.
    pub fn start(buckets: &[&str]) -> Moto {
        Self::start_inner(buckets, true)
    }

    /// Without authentication (object_store's GCS client sends bearer tokens moto cannot check).
    pub fn start_no_auth(buckets: &[&str]) -> Moto {
        Self::start_inner(buckets, false)
    }

    fn start_inner(buckets: &[&str], auth: bool) -> Moto {
        let port = free_port();
        let mut cmd = Command::new(root().join(".venv/bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = cmd.spawn().expect("moto_server (run scripts/setup)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (access, secret) = if auth {
            let out = Command::new(python())
                .arg(root().join("tests/s3/moto_setup.py"))
                .arg(&endpoint)
                .args(buckets)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let s = String::from_utf8(out.stdout).unwrap();
            let mut w = s.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        } else {
            for b in buckets {
                let st = Command::new("curl")
                    .args(["-sf", "-X", "PUT", &format!("{endpoint}/{b}")])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            ("test".to_string(), "test".to_string())
        };
        Moto { child, endpoint, access, secret }
    }

    fn bucket(&self, bucket: &str, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(root().join("tests/s3/bucket.py"))
            .args([&self.endpoint, &self.access, &self.secret, bucket])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "bucket.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn get(&self, bucket: &str, key: &str, out: &Path) {
        self.bucket(bucket, &["get", key, out.to_str().unwrap()]);
    }

    /// (key, size) under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        self.bucket(bucket, &["list", prefix])
            .lines()
            .filter_map(|l| {
                let (k, s) = l.rsplit_once(' ')?;
                Some((k.to_string(), s.parse().ok()?))
            })
            .collect()
    }

    pub fn multipart_uploads(&self, bucket: &str) -> usize {
        self.bucket(bucket, &["uploads"]).trim().parse().unwrap()
    }

    /// SIGSTOP: the server stops answering (connections hang) until `thaw`.
    pub fn freeze(&self) {
        send_signal(self.child.id(), "STOP");
    }

    pub fn thaw(&self) {
        send_signal(self.child.id(), "CONT");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
