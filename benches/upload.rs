//! Upload throughput: pcapd's upload path (`upload_file`, as the uploader runs it) against a
//! plain object_store multipart put of the same files to the same server (moto on loopback,
//! started here from the project venv). Prints both rates and their ratio (target >= 0.9).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};
use pcapd::upload::uploader::upload_file;

const PART: usize = 8 << 20;

struct Moto(Child);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto(root: &Path) -> (Moto, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(root.join(".venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server: run scripts/setup first");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/bench")])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    (Moto(child), endpoint)
}

async fn plain_put(store: &dyn ObjectStore, key: &ObjectPath, path: &Path) -> u64 {
    let data = tokio::fs::read(path).await.unwrap();
    let mut up = store.put_multipart(key).await.unwrap();
    for chunk in data.chunks(PART) {
        up.put_part(PutPayload::from(chunk.to_vec())).await.unwrap();
    }
    up.complete().await.unwrap();
    data.len() as u64
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let full = std::env::args().any(|a| a == "--bench");
    let (files, mb) = if full { (4, 32) } else { (1, 12) };
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| {
            let p = dir.path().join(format!("f{i}.pcap"));
            std::fs::write(&p, (0..mb << 20).map(|b: usize| (b * 31 + i) as u8).collect::<Vec<u8>>()).unwrap();
            p
        })
        .collect();
    let (_moto, endpoint) = moto(&root);
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name("bench")
            .with_region("us-east-1")
            .with_endpoint(&endpoint)
            .with_access_key_id("x")
            .with_secret_access_key("x")
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rounds = if full { 3 } else { 1 };
    let (mut plain, mut ours) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        for (label, out) in [("plain", &mut plain), ("pcapd", &mut ours)] {
            let started = Instant::now();
            let mut bytes = 0;
            for (i, p) in paths.iter().enumerate() {
                let key = ObjectPath::from(format!("{label}/{r}/{i}"));
                bytes += rt.block_on(async {
                    if label == "plain" {
                        plain_put(store.as_ref(), &key, p).await
                    } else {
                        upload_file(store.as_ref(), &key, p, PART as u64, PART).await.unwrap()
                    }
                });
            }
            out.push(bytes as f64 / started.elapsed().as_secs_f64() / 1e6);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (p, o) = (median(&mut plain), median(&mut ours));
    println!("upload: plain object_store multipart {p:.1} MB/s, pcapd upload path {o:.1} MB/s, ratio {:.2}", o / p);
}
