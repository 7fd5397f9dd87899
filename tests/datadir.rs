//! Regressions of issue 12's data-dir items that need the real binary: two instances on one
//! data dir both started, shared the SQLite file and appended to the same sample segment.
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::appliance::{bearer, call, free_port, write_config, Appliance, Opts, TOKEN};
use common::*;

#[test]
fn second_instance_on_one_data_dir_is_refused_naming_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Appliance::start(&Opts::fixture(&data));
    let pid = first.child.as_ref().unwrap().id();

    // The same data dir, another API port and its own DPDK file prefix (should it get as far as
    // DPDK, it must not collide with the first; the test holds the DPDK lock for both).
    let text = std::fs::read_to_string(&first.config).unwrap();
    let port = free_port();
    let second_text = text
        .replace(&format!("127.0.0.1:{}", first.port()), &format!("127.0.0.1:{port}"))
        .replace(r#""--no-shconf"]"#, r#""--no-shconf", "--file-prefix", "pcapd-second"]"#);
    assert_ne!(second_text, text);
    let second_cfg = dir.path().join("second.toml");
    std::fs::write(&second_cfg, second_text).unwrap();
    let mut second = pcapd()
        .arg("run")
        .arg("--config")
        .arg(&second_cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = second.kill();
        let out = second.wait_with_output().unwrap();
        panic!("the second pcapd kept running on the same data dir: {}", String::from_utf8_lossy(&out.stderr));
    };
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{status}: {stderr}");
    let lock = data.join("pcapd.lock");
    let want = format!("data dir {} is in use by another pcapd (pid {pid}, lock {})", data.display(), lock.display());
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    assert!(!stderr.contains("EAL"), "DPDK was started: {stderr}");

    // The first one keeps working.
    let r = call("GET", &first.url("/pcaps"), &[("Authorization", &bearer(TOKEN))], None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), pid.to_string());
}

/// Regression: on a full data disk `POST /pcaps` answered 500 "store: database or disk is full"
/// and /readyz said "ready". Now new captures get 507 with the envelope, /readyz says why, and
/// both recover once space is freed.
#[test]
fn a_full_data_disk_is_507_and_readyz_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(tmpfs) = Tmpfs::mount(&data, "16m") else { return };
    let app = Appliance::start(&Opts::fixture(&data));
    let readyz = || call("GET", &format!("{}/readyz", app.base), &[], None);
    assert_eq!(readyz().status, 200);
    let body = serde_json::json!({"system":"magic-transit","type":"simple","time_limit":60,"packet_limit":10});
    let post = || {
        call(
            "POST",
            &app.url("/pcaps"),
            &[("Authorization", &bearer(TOKEN)), ("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    let filler = tmpfs.fill("filler");
    let r = post();
    assert_eq!(r.status, 507, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["success"], false);
    assert!(r.error().contains("data disk is full"), "{}", r.error());
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let r = readyz();
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 503, "{text}");
    assert!(text.contains(&format!("data dir {}", data.display())) && text.contains("bytes free"), "{text}");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(post().status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz().status != 200 {
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&readyz().body));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regression (probe): `DATA/pcapd.db` as a symlink was followed: the whole database lived
/// outside the data dir (or pcapd wrote into whatever file the link named).
#[test]
fn a_symlinked_database_is_refused() {
    let _g = dpdk_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let outside = dir.path().join("outside.db");
    std::fs::write(&outside, "precious").unwrap();
    std::os::unix::fs::symlink(&outside, data.join("pcapd.db")).unwrap();
    let cfg = write_config(&Opts::fixture(&data), free_port());
    let out = pcapd().arg("run").arg("--config").arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("pcapd.db is a symlink, not a regular file"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
}

/// Regression (probe): with the data disk full (after a crash, say) pcapd could not start at
/// all ("store: disk I/O error"), although old sample segments were there to give back.
#[test]
fn a_full_disk_at_start_gives_back_old_samples_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(tmpfs) = Tmpfs::mount(&data, "16m") else { return };
    // Old segments (valid, empty PCAP files padded out), then the rest of the disk filled.
    let samples = data.join("samples");
    std::fs::create_dir_all(&samples).unwrap();
    let old = (chrono_secs() - 3600) / 10 * 10;
    for i in 0..4u64 {
        let start = old + i * 10;
        let mut f = pcapd::pcap::format::file_header(pcapd::pcap::Precision::Nanos, 160).to_vec();
        let mut n = 0u64;
        while f.len() < 2 << 20 {
            let ts = start * 1_000_000_000 + n * 1000;
            pcapd::pcap::format::encode_record(
                &mut f,
                pcapd::pcap::Precision::Nanos,
                ts,
                60,
                60,
                std::iter::once(&[7u8; 60][..]),
            );
            n += 1;
        }
        std::fs::write(samples.join(format!("{start}.pcap")), f).unwrap();
    }
    let port = free_port();
    let cfg = write_config(&Opts::fixture(&data), port);
    let _filler = tmpfs.fill("filler");
    let app = Appliance::start_config(cfg, &data, port);
    let r = call("GET", &app.url("/pcaps"), &[("Authorization", &bearer(TOKEN))], None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let left = (0..4u64).filter(|i| samples.join(format!("{}.pcap", old + i * 10)).exists()).count();
    assert!(left < 4, "old segments were given back: {left} left");
}

fn chrono_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
