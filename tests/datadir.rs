//! Regressions of issue 12's data-dir items that need the real binary: two instances on one
//! data dir both started, shared the SQLite file and appended to the same sample segment.
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::appliance::{bearer, call, free_port, Appliance, Opts, TOKEN};
use common::*;

#[test]
fn second_instance_on_one_data_dir_is_refused_naming_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Appliance::start(&Opts {
        source: &fixture("frames.pcap"),
        one_in: 1,
        simple_interval: 0,
        data: &data,
        infinite: false,
        iface: None,
        extra: "",
    });
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
    let app = Appliance::start(&Opts {
        source: &fixture("frames.pcap"),
        one_in: 1,
        simple_interval: 0,
        data: &data,
        infinite: false,
        iface: None,
        extra: "",
    });
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
