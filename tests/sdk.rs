//! Cloudflare's official Python SDK against a real `pcapd run`.
mod common;

use common::appliance::*;
use common::*;

#[test]
fn cloudflare_python_sdk_drives_simple_captures() {
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "run scripts/setup first (it installs the SDK in .venv)");
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let app = Appliance::start(&Opts {
        source: &input,
        one_in: 2,
        simple_interval: 60,
        data: &dir.path().join("data"),
        infinite: false,
        iface: None,
        extra: "",
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = std::process::Command::new(&python)
        .arg(root().join("tests/sdk/sdk_pcaps.py"))
        .arg(format!("{}/client/v4", app.base))
        .args([ACCOUNT, TOKEN, EMAIL, KEY])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let errors = &summary["errors"];
    assert_eq!(errors["bad_request"][0], 400);
    assert!(errors["bad_request"][1].as_str().unwrap().contains("time_limit"));
    assert_eq!(errors["rate_limited"][0], 429);
    assert_eq!(errors["rate_limited"][1], "false");
    assert!(errors["rate_limited"][2].as_f64().unwrap() < 2.0, "the SDK did not retry the 429");
    assert_eq!(errors["permission_denied"], 403);
    assert_eq!(errors["not_found"], 404);
    // The downloaded file: every packet UDP (tshark), as many as the API reported.
    let path = std::path::PathBuf::from(summary["path"].as_str().unwrap());
    let pkts = read_pcap(&path);
    assert!(!pkts.is_empty());
    let udp = tcpdump(&path, "(ip proto 17 or ip6 protochain 17) or (vlan and (ip proto 17 or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17))))", dir.path());
    assert_eq!(udp.len(), pkts.len());
}
