//! The Captures web page in real headless Chromium against a running appliance.
mod common;

use common::appliance::*;
use common::*;

#[test]
fn captures_page_in_headless_chromium() {
    let python = root().join(".venv/bin/python");
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "run scripts/setup (it installs Debian's chromium)");
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let app = Appliance::start(&Opts {
        source: &input,
        one_in: 2,
        simple_interval: 0,
        data: &dir.path().join("data"),
        infinite: false,
        iface: None,
        extra: "",
    });
    // Screenshots are kept as test artifacts.
    let artifacts = root().join("target/web-artifacts");
    let out = std::process::Command::new(python)
        .arg(root().join("tests/web/web_test.py"))
        .arg(&app.base)
        .arg(TOKEN)
        .arg(BOTH_TOKEN)
        .arg(&artifacts)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "web test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(summary["wrong_token"].as_str().unwrap().contains("does not accept this credential"), "{summary}");
    assert_eq!(summary["overflow_375"], false, "no horizontal scrolling at 375 px");
    assert_eq!(summary["overflow_375_form"], false);
    assert_eq!(summary["session_after_sign_out"], serde_json::Value::Null);
    assert_eq!(summary["accounts"], serde_json::json!([ACCOUNT, format!("other · {OTHER_ACCOUNT}")]));
    assert_eq!(summary["page_errors"], serde_json::json!([]));
    // The downloaded file is the capture: a PCAP of UDP packets (protocol 17), read independently.
    let pkts = read_pcap(std::path::Path::new(summary["download"].as_str().unwrap()));
    assert!(!pkts.is_empty());
    let udp = tcpdump(
        std::path::Path::new(summary["download"].as_str().unwrap()),
        "(ip proto 17 or ip6 protochain 17) or (vlan and (ip proto 17 or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17))))",
        dir.path(),
    );
    assert_eq!(udp.len(), pkts.len());
    for shot in ["list-1440.png", "form-1440.png", "list-375.png", "form-375.png"] {
        let meta = std::fs::metadata(artifacts.join(shot)).unwrap();
        assert!(meta.len() > 5_000, "{shot} is a real screenshot");
    }
}
