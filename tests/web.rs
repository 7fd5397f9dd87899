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
        extra: "[node]\ncolos = [\"lab02\", \"test01\"]\n",
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
    // The details view's packet table is what tshark reads in the downloaded file.
    let oracle = std::process::Command::new("tshark")
        .arg("-r")
        .arg(summary["download"].as_str().unwrap())
        .args(["-T", "fields", "-E", "occurrence=f", "-e", "frame.time_relative", "-e", "ip.src", "-e", "ipv6.src"])
        .args(["-e", "ip.dst", "-e", "ipv6.dst", "-e", "frame.len", "-e", "_ws.malformed"])
        .output()
        .unwrap();
    let oracle: Vec<Vec<String>> = String::from_utf8(oracle.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    let rows = summary["packet_rows"].as_array().unwrap();
    assert_eq!(rows.len(), pkts.len().min(100), "{summary}");
    for (i, (row, t)) in rows.iter().zip(&oracle).enumerate() {
        let cell = |n: usize| row[n].as_str().unwrap().to_string();
        assert_eq!(cell(0), (i + 1).to_string());
        assert_eq!(cell(1), t[0], "row {i}: time");
        assert_eq!(cell(5), t[5], "row {i}: length");
        if t[6].is_empty() {
            let (src, dst) = (if t[1].is_empty() { &t[2] } else { &t[1] }, if t[3].is_empty() { &t[4] } else { &t[3] });
            assert_eq!(cell(2), if src.is_empty() { "–" } else { src }, "row {i}: source");
            assert_eq!(cell(3), if dst.is_empty() { "–" } else { dst }, "row {i}: destination");
        }
        // Every packet of this capture is UDP (protocol 17 and "udp").
        assert_eq!(cell(4), "UDP", "row {i}");
    }
    assert!(summary["chart_bars"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["protocol_rows"][0][0], "UDP");
    assert_eq!(summary["protocol_rows"][0][1], pkts.len().to_string());
    assert!(!summary["talkers_rows"].as_array().unwrap().is_empty());
    assert_eq!(summary["overflow_375_details"], false);
    assert!(summary["appliance"].as_str().unwrap().contains("pkt/s"), "{summary}");
    assert_eq!(summary["colos"], serde_json::json!(["lab02", "test01"]));
    for r in summary["radios"].as_array().unwrap() {
        assert!(r["radio_width"].as_f64().unwrap() < 30.0 && r["label_height"].as_f64().unwrap() < 40.0, "{r}");
        assert_eq!(r["radio_left_of_text"], true, "{r}");
    }
    // Mocked full captures (see web_test.py): progress, and the files list.
    let running = summary["running_row"].as_str().unwrap();
    assert!(running.contains("stop requested") && running.contains("1,234") && running.contains(" left"), "{running}");
    assert_eq!(summary["files_on_404"], false);
    assert_eq!(summary["error_on_404"], false);
    assert_eq!(
        summary["files_rows"][0],
        serde_json::json!([
            "n1",
            format!("pcaps/{0}/n1-0/pcap_{0}.pcap", "cd".repeat(16)),
            "12.3 MB",
            "60",
            "uploaded"
        ])
    );
    for shot in [
        "list-1440.png",
        "form-1440.png",
        "list-375.png",
        "form-375.png",
        "details-1440.png",
        "details-375.png",
        "details-full-mocked-1440.png",
    ] {
        let meta = std::fs::metadata(artifacts.join(shot)).unwrap();
        assert!(meta.len() > 5_000, "{shot} is a real screenshot");
    }
}
