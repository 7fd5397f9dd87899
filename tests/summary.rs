//! The capture summary route (`GET .../pcaps/{id}/summary`) against tshark reading the same
//! capture's download, and the page's status and colos routes (`/client/v4/pcapd/...`), over
//! HTTP on a real `pcapd run`.
mod common;

use std::time::{Duration, Instant};

use common::appliance::*;
use serde_json::{json, Value};

fn get(url: &str, token: &str) -> Resp {
    call("GET", url, &[("Authorization", &bearer(token))], None)
}

/// tshark's (time, source, destination, length) of every frame.
fn tshark_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-E", "occurrence=f", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ipv6.src"])
        .args(["-e", "ip.dst", "-e", "ipv6.dst", "-e", "frame.len", "-e", "_ws.malformed"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

#[test]
fn summary_of_a_simple_capture_is_what_tshark_reads_in_its_download() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = Appliance::start(&Opts { extra: "[node]\ncolos = [\"lab02\", \"test01\"]\n", ..Opts::fixture(&data) });
    wait_replayed(&app, 87);
    let auth = [("Authorization", bearer(TOKEN)), ("Content-Type", "application/json".to_string())];
    let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = json!({"system":"magic-transit","type":"simple","time_limit":300,"packet_limit":60});
    let r = call("POST", &app.url("/pcaps"), &headers, Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&app.url(&format!("/pcaps/{id}")), TOKEN).json()["result"]["status"] != "success" {
        assert!(Instant::now() < deadline, "capture did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dl = get(&app.url(&format!("/pcaps/{id}/download")), TOKEN);
    assert_eq!(dl.status, 200);
    let file = dir.path().join("c.pcap");
    std::fs::write(&file, &dl.body).unwrap();
    let oracle = tshark_rows(&file);
    assert_eq!(oracle.len(), 60);

    let r = get(&app.url(&format!("/pcaps/{id}/summary")), READ_TOKEN);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["success"], true);
    let s = &v["result"];
    assert_eq!(s["pcap_id"], id.as_str());
    assert_eq!(s["packets"], 60);
    let bytes: u64 = oracle.iter().map(|r| r[5].parse::<u64>().unwrap()).sum();
    assert_eq!(s["bytes"], bytes);
    let rows = s["decoded"].as_array().unwrap();
    assert_eq!(rows.len(), 60);
    for (row, t) in rows.iter().zip(&oracle) {
        assert_eq!(row["time"], t[0].as_str(), "{row}");
        assert_eq!(row["length"].to_string(), t[5], "{row}");
        let src = if t[1].is_empty() { &t[2] } else { &t[1] };
        let dst = if t[3].is_empty() { &t[4] } else { &t[3] };
        if t[6].is_empty() {
            assert_eq!(row["src"].as_str().unwrap_or(""), src, "{row}");
            assert_eq!(row["dst"].as_str().unwrap_or(""), dst, "{row}");
        }
    }
    let hist: u64 = s["histogram"]["packets"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).sum();
    assert_eq!(hist, 60);
    let protos: u64 = s["protocols"].as_array().unwrap().iter().map(|p| p["packets"].as_u64().unwrap()).sum();
    assert_eq!(protos, 60);
    assert!(!s["talkers"]["by_bytes"].as_array().unwrap().is_empty());

    // Errors: unknown id, a malformed id, another account's capture, no credential.
    let unknown = get(&app.url("/pcaps/0123456789abcdef0123456789abcdef/summary"), TOKEN);
    assert_eq!(unknown.status, 404);
    unknown.error();
    assert_eq!(get(&app.url("/pcaps/nope/summary"), TOKEN).status, 404);
    let other = get(&format!("{}/client/v4/accounts/{OTHER_ACCOUNT}/pcaps/{id}/summary", app.base), OTHER_TOKEN);
    assert_eq!(other.status, 404, "{}", other.error());
    assert_eq!(call("GET", &app.url(&format!("/pcaps/{id}/summary")), &[], None).status, 401);
    assert_eq!(get(&app.url(&format!("/pcaps/{id}/summary")), OTHER_TOKEN).status, 403);

    // The page's status: RX as /metrics counts it, and the disk.
    let rx = common::appliance::rx_packets(&app);
    let st = get(&format!("{}/client/v4/pcapd/status", app.base), OTHER_TOKEN);
    assert_eq!(st.status, 200);
    let st: Value = st.json()["result"].clone();
    assert_eq!(st["rx_packets"], rx);
    assert_eq!(st["drops"], 0);
    assert!(st["disk"]["free_bytes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(call("GET", &format!("{}/client/v4/pcapd/status", app.base), &[], None).status, 401);
    assert_eq!(get(&format!("{}/client/v4/pcapd/status", app.base), "wrong").status, 403);
    // The colos of [node] colos.
    let colos = get(&format!("{}/client/v4/pcapd/colos", app.base), READ_TOKEN).json();
    assert_eq!(colos["result"], json!([{"colo": "lab02", "nodes": []}, {"colo": "test01", "nodes": []}]));
}
