//! The appliance end to end: `pcapd run` on a finite net_pcap source, driven over real HTTP.
//! Oracles: the input file (which packets the sampler must have taken), tcpdump/tshark.
mod common;

use common::appliance::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const ONE_IN: usize = 3;

/// The write token's header (TOKEN is "test-write-token").
const AUTH: (&str, &str) = ("Authorization", "Bearer test-write-token");

fn post_json(app: &Appliance, body: &Value) -> Resp {
    call("POST", &app.url("/pcaps"), &[AUTH, ("Content-Type", "application/json")], Some(body.to_string().as_bytes()))
}

fn simple(time_limit: u64, packet_limit: u64, filter: Value) -> Value {
    json!({"system": "magic-transit", "type": "simple", "time_limit": time_limit, "packet_limit": packet_limit, "filter_v1": filter})
}

/// Waits until the capture's status is final; returns the PCAP object.
fn wait_done(app: &Appliance, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call("GET", &app.url(&format!("/pcaps/{id}")), &[AUTH], None);
        assert_eq!(r.status, 200);
        let v = r.json()["result"].clone();
        if v["status"] == "success" || v["status"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "capture {id} still {}", v["status"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The packets the sampler takes from a single-queue replay: every ONE_IN-th, from the first.
fn sampled_subset(input: &Path, dir: &Path) -> std::path::PathBuf {
    let all = read_pcap(input);
    let out = dir.join("sampled.pcap");
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&262144u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for p in all.iter().step_by(ONE_IN) {
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&p.orig_len.to_le_bytes());
        b.extend_from_slice(&p.data);
    }
    std::fs::write(&out, b).unwrap();
    out
}

fn download(app: &Appliance, id: &str, dir: &Path) -> (Resp, Vec<Pkt>) {
    let r = call(
        "GET",
        &app.url(&format!("/pcaps/{id}/download")),
        &[("Authorization", &bearer(TOKEN)), ("Accept", "application/vnd.tcpdump.pcap")],
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let path = dir.join(format!("{id}.pcap"));
    std::fs::write(&path, &r.body).unwrap();
    let pkts = read_pcap(&path);
    (r, pkts)
}

#[test]
fn simple_captures_hold_exactly_the_sampled_matching_packets() {
    assert_eq!(AUTH.1, bearer(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let app = Appliance::start(&Opts {
        source: &input,
        one_in: ONE_IN as u32,
        simple_interval: 0,
        data: &dir.path().join("data"),
        infinite: false,
        iface: None,
        extra: "",
    });
    let n = read_pcap(&input).len();
    wait_replayed(&app, n);
    let subset = sampled_subset(&input, dir.path());
    // /metrics agrees with the input: every packet counted on its queue, 1 in 3 sampled.
    let metrics = String::from_utf8(call("GET", &format!("{}/metrics", app.base), &[], None).body).unwrap();
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("pcapd_queue_rx_packets_total{port=\"net_pcap0\",queue=\"0\"}"), n as u64);
    assert_eq!(value("pcapd_nic_ipackets_total{port=\"net_pcap0\"}"), n as u64);
    assert_eq!(value("pcapd_samples_sampled_total"), read_pcap(&subset).len() as u64);
    let cases = [
        (json!({}), "", 10_000u64),
        // tcpdump does not check the IPv4 version/IHL; pcapd does: the oracle adds the check.
        (json!({"protocol": 17}), "(ip[0] >= 0x45 and ip[0] <= 0x4f and ip proto 17) or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17))))", 10_000),
        (json!({"source_address": "1.2.3.4"}), "ip src host 1.2.3.4 or (vlan and (ip src host 1.2.3.4 or (vlan and ip src host 1.2.3.4)))", 10_000),
        (json!({"destination_address": "2001:db8::2"}), "ip6 dst host 2001:db8::2 or (vlan and ip6 dst host 2001:db8::2)", 10_000),
        (json!({}), "", 5),
    ];
    let created_at = chrono::Utc::now();
    for (filter, expr, limit) in cases {
        let r = post_json(&app, &simple(300, limit, filter.clone()));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["success"], true);
        assert_eq!(v["result"]["status"], "pending");
        assert_eq!(v["result"]["filter_v1"], filter);
        let id = v["result"]["id"].as_str().unwrap().to_string();
        let done = wait_done(&app, &id);
        assert_eq!(done["status"], "success", "{done}");
        let (resp, got) = download(&app, &id, dir.path());
        assert_eq!(resp.header("content-type"), Some("application/vnd.tcpdump.pcap"));
        // Oracle: the sampled input, filtered by tcpdump, truncated to 160 bytes.
        let want = if expr.is_empty() { read_pcap(&subset) } else { tcpdump(&subset, expr, dir.path()) };
        let want: Vec<&Pkt> = want.iter().take(limit as usize).collect();
        assert_eq!(got.len(), want.len(), "filter {filter}");
        assert_eq!(done["packets_captured"], got.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.data, w.data[..w.data.len().min(160)], "filter {filter}");
            assert_eq!(g.orig_len, w.orig_len);
            assert!(g.data.len() <= 160);
            let ts = g.ts_ns as i64;
            let end = chrono::DateTime::parse_from_rfc3339(done["offset_time"].as_str().unwrap())
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            assert!(ts <= end && ts >= end - 300_000_000_000, "timestamp inside the window");
            assert!(ts <= created_at.timestamp_nanos_opt().unwrap() + 1_000_000_000);
        }
    }
    // The list holds all of them, newest first; GET returns the same object.
    let list = call("GET", &app.url("/pcaps"), &[AUTH], None).json();
    let items = list["result"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let submitted: Vec<&str> = items.iter().map(|i| i["submitted"].as_str().unwrap()).collect();
    let mut sorted = submitted.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(submitted, sorted);
    for i in items {
        assert!(i["submitted"].as_str().unwrap().ends_with('Z') && i["submitted"].as_str().unwrap().len() == 27);
        assert!(i.get("error_message").is_none() && i.get("byte_limit").is_none(), "absent fields are omitted: {i}");
    }
}

#[test]
fn bad_input_gets_a_clear_4xx_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let app = Appliance::start(&Opts {
        source: &input,
        one_in: ONE_IN as u32,
        simple_interval: 60,
        data: &dir.path().join("data"),
        infinite: false,
        iface: None,
        extra: "",
    });
    let base = simple(60, 100, json!({}));
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let filt = |k: &str, v: Value| with("filter_v1", json!({ k: v }));
    let now = chrono::Utc::now();
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("time_limit", json!(0)), 400, "time_limit: must be between 1 and 300"),
        (with("time_limit", json!(301)), 400, "time_limit: must be between 1 and 300"),
        (with("time_limit", json!(60.5)), 400, "time_limit: must be a whole number"),
        (with("time_limit", json!("60")), 400, "time_limit: must be a number"),
        (with("time_limit", json!(null)), 400, "time_limit: must be a number"),
        (with("packet_limit", json!(0)), 400, "packet_limit: must be between 1 and 10000"),
        (with("packet_limit", json!(10001)), 400, "packet_limit: must be between 1 and 10000"),
        (with("packet_limit", json!(-5)), 400, "packet_limit: must be between 1 and 10000"),
        (with("packet_limit", json!(1e20)), 400, "packet_limit: must be between 1 and 10000"),
        (json!({"system": "magic-transit", "type": "simple", "time_limit": 60}), 400, "packet_limit: is required"),
        (json!({"type": "simple", "time_limit": 60, "packet_limit": 1}), 400, "system: is required"),
        (with("system", json!("magic-wan")), 400, "system: \"magic-wan\" is not supported"),
        (with("type", json!("sampled")), 400, "type: \"sampled\" is not a capture type"),
        (with("type", json!(1)), 400, "type: must be a string"),
        (with("unknown_field", json!(1)), 400, "unknown_field: unknown field"),
        (with("byte_limit", json!(100)), 400, "byte_limit: is not allowed in a simple capture"),
        (with("offset_time", json!("not a time")), 400, "offset_time: \"not a time\" is not an RFC 3339 time"),
        (
            with("offset_time", json!((now - chrono::Duration::hours(25)).to_rfc3339())),
            400,
            "offset_time: is more than 24 hours ago",
        ),
        (
            with("offset_time", json!((now + chrono::Duration::hours(1)).to_rfc3339())),
            400,
            "offset_time: is in the future",
        ),
        (filt("source_port", json!(65536)), 400, "filter_v1.source_port: 65536 is out of range"),
        (filt("destination_port", json!(80.5)), 400, "filter_v1.destination_port: 80.5 is not a whole number"),
        (filt("destination_port", json!("80")), 400, "filter_v1.destination_port: must be an integer"),
        (filt("protocol", json!(256)), 400, "filter_v1.protocol: 256 is out of range"),
        (
            filt("source_address", json!("1.2.3.256")),
            400,
            "filter_v1.source_address: \"1.2.3.256\" is not an IPv4 or IPv6 address",
        ),
        (
            filt("source_address", json!("::ffff:1.2.3.4")),
            400,
            "filter_v1.source_address: \"::ffff:1.2.3.4\" is an IPv4-mapped IPv6 address",
        ),
        (
            filt("destination_address", json!("2001:db8::zz")),
            400,
            "filter_v1.destination_address: \"2001:db8::zz\" is not an IPv4 or IPv6 address",
        ),
        (filt("dport", json!(80)), 400, "filter_v1.dport: unknown field"),
        (with("filter_v1", json!("tcp port 80")), 400, "filter_v1: must be an object"),
        (json!([1, 2]), 400, "body: must be a JSON object"),
        (
            json!({"system": "magic-transit", "type": "full", "time_limit": 60, "colo_name": "x", "destination_conf": "s3://b/d"}),
            400,
            "colo_name: \"x\" is not served by this appliance",
        ),
    ];
    assert!(cases.len() >= 30);
    for (body, status, msg) in &cases {
        let r = post_json(&app, body);
        assert_eq!(r.status, *status, "{body}: {}", String::from_utf8_lossy(&r.body));
        let m = r.error();
        assert!(m.contains(msg), "{body}: message {m:?} lacks {msg:?}");
    }
    let raw = |body: &[u8], hs: &[(&str, &str)]| call("POST", &app.url("/pcaps"), hs, Some(body));
    let tok = bearer(TOKEN);
    let r = raw(b"{\"system\": ", &[("Authorization", &tok)]);
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("body: malformed JSON"));
    // A 1 MiB body: refused from its Content-Length. curl sends `Expect: 100-continue` for a
    // body this size, so it reads the 413 instead of writing into a closed connection.
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b' '; 1 << 20]).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: {tok}"),
            "-H",
            "Content-Type: application/json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", big.path().display()))
        .arg(app.url("/pcaps"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "413", "{text}");
    let r = Resp { status: 413, headers: Vec::new(), body: body.as_bytes().to_vec() };
    assert!(r.error().contains("too large"));

    // Ids, routes, methods.
    let r = call("GET", &app.url("/pcaps/00000000000000000000000000000000"), &[("Authorization", &tok)], None);
    assert_eq!((r.status, r.error().as_str()), (404, "capture not found"));
    let r = call("GET", &app.url("/pcaps/not-an-id"), &[("Authorization", &tok)], None);
    assert_eq!(r.status, 404);
    assert!(r.error().contains("not found"));
    let r = call("GET", &app.url("/pcaps/00000000000000000000000000000000/download"), &[("Authorization", &tok)], None);
    assert_eq!(r.status, 404);
    let r = call("GET", &format!("{}/client/v4/nothing/here", app.base), &[], None);
    assert_eq!((r.status, r.error().as_str()), (404, "No route for the URI"));
    // Without [fleet] there are no node-to-node routes at all (not even a 401).
    let r = call("GET", &format!("{}/internal/v1/node", app.base), &[], None);
    assert_eq!((r.status, r.error().as_str()), (404, "No route for the URI"));
    let r = call("DELETE", &app.url("/pcaps"), &[("Authorization", &tok)], None);
    assert_eq!(r.status, 405);
    assert!(r.error().contains("Method not allowed"));

    // Credentials.
    let list = |hs: &[(&str, &str)]| call("GET", &app.url("/pcaps"), hs, None);
    let r = list(&[]);
    assert_eq!(r.status, 401);
    assert!(r.error().starts_with("Authentication error"));
    let r = list(&[("Authorization", "Bearer wrong-token")]);
    assert_eq!((r.status, r.error().as_str()), (403, "Authentication error: invalid credentials"));
    let other = bearer(OTHER_TOKEN);
    let r = list(&[("Authorization", &other)]);
    assert_eq!(r.status, 403, "a valid token of another account");
    assert!(r.error().contains("no access to this account"));
    let r = list(&[("X-Auth-Email", EMAIL), ("X-Auth-Key", "wrong")]);
    assert_eq!(r.status, 403);
    r.error();
    assert_eq!(list(&[("X-Auth-Email", EMAIL), ("X-Auth-Key", KEY)]).status, 200);
    let read = bearer(READ_TOKEN);
    assert_eq!(list(&[("Authorization", &read)]).status, 200);
    let r = raw(base.to_string().as_bytes(), &[("Authorization", &read)]);
    assert_eq!((r.status, r.error().as_str()), (403, "Authentication error: this credential is read-only"));

    // One simple request per interval: the second is a 429 the SDK must not retry.
    let first = post_json(&app, &base);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let second = post_json(&app, &base);
    assert_eq!(second.status, 429);
    assert_eq!(second.header("x-should-retry"), Some("false"));
    let retry: u64 = second.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(second.error().contains("only one simple capture request per 60 seconds"));
    // ...per account: another account is not limited by it.
    let r = call(
        "POST",
        &format!("{}/client/v4/accounts/{OTHER_ACCOUNT}/pcaps", app.base),
        &[("Authorization", &other)],
        Some(base.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200);
    // Downloading before success, or a capture of another account.
    let id = first.json()["result"]["id"].as_str().unwrap().to_string();
    let r = call(
        "GET",
        &format!("{}/client/v4/accounts/{OTHER_ACCOUNT}/pcaps/{id}", app.base),
        &[("Authorization", &other)],
        None,
    );
    assert_eq!(r.status, 404, "another account's capture is not visible");
    let r = call(
        "PUT",
        &app.url(&format!("/pcaps/{id}/stop")),
        &[("Authorization", &tok), ("Content-Type", "application/json")],
        None,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("only full captures can be stopped"));
}

#[test]
fn captures_survive_a_restart_and_interrupted_conversions_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = fixture("frames.pcap");
    let opts = Opts {
        source: &input,
        one_in: ONE_IN as u32,
        simple_interval: 0,
        data: &data,
        infinite: false,
        iface: None,
        extra: "",
    };
    let mut app = Appliance::start(&opts);
    wait_replayed(&app, read_pcap(&input).len());
    let r = post_json(&app, &simple(300, 50, json!({"protocol": 17})));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let before = wait_done(&app, &id);
    assert_eq!(before["status"], "success");
    let (_, pkts_before) = download(&app, &id, dir.path());
    let (status, stderr) = app.stop();
    assert!(status.success(), "clean exit on SIGTERM: {stderr}");
    assert!(files_ending(&data, ".partial").is_empty() && files_ending(&data.join("captures"), ".partial").is_empty());
    // Pretend the appliance died mid-conversion: status back to conversion_running, no file.
    let db = rusqlite::Connection::open(data.join("pcapd.db")).unwrap();
    let body: String = db.query_row("SELECT body FROM captures WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    let mut stored: Value = serde_json::from_str(&body).unwrap();
    stored["status"] = json!("conversion_running");
    db.execute(
        "UPDATE captures SET status = 'conversion_running', body = ?2 WHERE id = ?1",
        rusqlite::params![id, stored.to_string()],
    )
    .unwrap();
    drop(db);
    std::fs::remove_file(data.join("captures").join(format!("{id}.pcap"))).unwrap();
    drop(app);

    let app = Appliance::start(&opts);
    let after = wait_done(&app, &id);
    assert_eq!(after["status"], "success");
    for k in [
        "id",
        "submitted",
        "offset_time",
        "time_limit",
        "packet_limit",
        "filter_v1",
        "type",
        "system",
        "packets_captured",
    ] {
        assert_eq!(after[k], before[k], "{k} survives the restart");
    }
    let (_, pkts_after) = download(&app, &id, dir.path());
    assert_eq!(datas(&pkts_after), datas(&pkts_before), "rebuilt from the samples kept on disk");
}

fn opts<'a>(input: &'a Path, data: &'a Path, simple_interval: u64) -> Opts<'a> {
    Opts { source: input, one_in: ONE_IN as u32, simple_interval, data, infinite: false, iface: None, extra: "" }
}

/// Regression: one `captures` row with a corrupt body (bad JSON, an unknown status) made list,
/// get and download of the whole account answer 500.
#[test]
fn one_corrupt_captures_row_does_not_hide_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = fixture("frames.pcap");
    let mut app = Appliance::start(&opts(&input, &data, 0));
    wait_replayed(&app, read_pcap(&input).len());
    let ids: Vec<String> = (0..3)
        .map(|_| post_json(&app, &simple(300, 5, json!({}))).json()["result"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.iter().for_each(|id| assert_eq!(wait_done(&app, id)["status"], "success"));
    let (status, stderr) = app.stop();
    assert!(status.success(), "{stderr}");
    let db = rusqlite::Connection::open(data.join("pcapd.db")).unwrap();
    db.execute("UPDATE captures SET body = '{not json' WHERE id = ?1", [&ids[0]]).unwrap();
    let body: String = db.query_row("SELECT body FROM captures WHERE id = ?1", [&ids[1]], |r| r.get(0)).unwrap();
    db.execute("UPDATE captures SET body = ?2 WHERE id = ?1", [&ids[1], &body.replace("\"success\"", "\"exploded\"")])
        .unwrap();
    // A damaged time column (found by a probe) costs nothing: the body has the time too.
    db.execute("UPDATE captures SET submitted_us = 'notanint' WHERE id = ?1", [&ids[2]]).unwrap();
    drop(db);
    drop(app);

    let app = Appliance::start(&opts(&input, &data, 0));
    let r = call("GET", &app.url("/pcaps"), &[AUTH], None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let listed: Vec<String> =
        r.json()["result"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, vec![ids[2].clone()], "the readable capture is listed, the corrupt ones left out");
    for id in &ids[..2] {
        let r = call("GET", &app.url(&format!("/pcaps/{id}")), &[AUTH], None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let c = r.json()["result"].clone();
        assert_eq!((c["id"].as_str(), c["status"].as_str()), (Some(id.as_str()), Some("failed")));
        assert!(c["error_message"].as_str().unwrap().contains("corrupt"), "{c}");
        let r = call("GET", &app.url(&format!("/pcaps/{id}/download")), &[AUTH], None);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.error().contains("failed"), "{}", r.error());
    }
    assert_eq!(download(&app, &ids[2], dir.path()).0.status, 200);
}

/// Regression: a simple capture whose file had gone from the data dir stayed `success` and its
/// download answered 500.
#[test]
fn a_capture_whose_file_is_missing_answers_410_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = fixture("frames.pcap");
    let app = Appliance::start(&opts(&input, &data, 0));
    wait_replayed(&app, read_pcap(&input).len());
    let id = post_json(&app, &simple(300, 5, json!({}))).json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_done(&app, &id)["status"], "success");
    let file = data.join("captures").join(format!("{id}.pcap"));
    std::fs::remove_file(&file).unwrap();
    let r = call("GET", &app.url(&format!("/pcaps/{id}/download")), &[AUTH], None);
    assert_eq!(r.status, 410, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["success"], false);
    assert!(r.error().contains("missing"), "{}", r.error());
    let c = call("GET", &app.url(&format!("/pcaps/{id}")), &[AUTH], None).json()["result"].clone();
    assert_eq!(c["status"], "failed", "{c}");
    // A symlink in its place is not followed.
    let secret = dir.path().join("secret.pcap");
    std::fs::copy(fixture("frames.pcap"), &secret).unwrap();
    let id2 = {
        std::thread::sleep(std::time::Duration::from_millis(10));
        post_json(&app, &simple(300, 5, json!({}))).json()["result"]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(wait_done(&app, &id2)["status"], "success");
    let file2 = data.join("captures").join(format!("{id2}.pcap"));
    std::fs::remove_file(&file2).unwrap();
    std::os::unix::fs::symlink(&secret, &file2).unwrap();
    let r = call("GET", &app.url(&format!("/pcaps/{id2}/download")), &[AUTH], None);
    assert_eq!(r.status, 410, "a symlink is never followed: {}", String::from_utf8_lossy(&r.body));
}

/// Regression: the one-simple-capture-a-minute rule was kept in memory only, so each restart
/// let another request through.
#[test]
fn the_one_a_minute_simple_rule_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = fixture("frames.pcap");
    let mut app = Appliance::start(&opts(&input, &data, 60));
    assert_eq!(post_json(&app, &simple(60, 5, json!({}))).status, 200);
    assert_eq!(post_json(&app, &simple(60, 5, json!({}))).status, 429);
    let (status, stderr) = app.stop();
    assert!(status.success(), "{stderr}");
    drop(app);
    let app = Appliance::start(&opts(&input, &data, 60));
    let r = post_json(&app, &simple(60, 5, json!({})));
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

/// An appliance on the fixture whose config has `edits` applied (`(from, to)` replacements of
/// `write_config`'s text), e.g. to add keys to the sections it already writes.
fn start_edited(data: &Path, edits: &[(&str, &str)]) -> Appliance {
    let o = Opts::fixture(data);
    let port = free_port();
    let config = write_config(&o, port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the test config");
        text = text.replace(from, to);
    }
    std::fs::write(&config, text).unwrap();
    Appliance::start_config(config, data, port)
}

/// Sends `request` on a fresh TCP connection; returns the status and the body of the answer.
fn raw_request(app: &Appliance, request: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", app.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.as_bytes().to_vec()).unwrap_or_default();
    (status, body)
}

fn envelope_error(body: &[u8]) -> String {
    Resp { status: 0, headers: Vec::new(), body: body.to_vec() }.error()
}

/// Regression: hyper answered a 100 KB URL itself: 414 with an empty body, no envelope.
#[test]
fn a_100kb_url_gets_414_with_the_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let app = start_edited(tmp.path(), &[]);
    let long = format!(
        "GET /client/v4/accounts/{ACCOUNT}/pcaps?x={} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let (status, body) = raw_request(&app, long.as_bytes());
    assert_eq!(status, 414);
    assert!(envelope_error(&body).starts_with("URI too long"), "{}", String::from_utf8_lossy(&body));
    // Between hyper's limit and ours (10 KB), and after a good request on the same connection.
    let mid = format!(
        "GET /client/v4/accounts/{ACCOUNT}/pcaps?x={} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "a".repeat(10_000)
    );
    let two = format!("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n{mid}");
    let (status, body) = raw_request(&app, two.as_bytes());
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("HTTP/1.1 414 URI Too Long") && text.contains("\"success\":false"), "{text}");
    // Below the limit the request goes through.
    let ok = call("GET", &app.url(&format!("/pcaps?x={}", "a".repeat(4000))), &[AUTH], None);
    assert_eq!(ok.status, 200);
}

/// Regression: 100 KB of headers passed (hyper's buffer holds ~400 KB); and past hyper's own
/// limit its 431 had an empty body.
#[test]
fn oversized_headers_get_431_with_the_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let app = start_edited(tmp.path(), &[]);
    for (n, size) in [(25, 4096), (1, 100 * 1024), (2, 300 * 1024)] {
        let pad: String = (0..n).map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(size))).collect();
        let req = format!(
            "GET /client/v4/accounts/{ACCOUNT}/pcaps HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n{pad}\r\n"
        );
        let (status, body) = raw_request(&app, req.as_bytes());
        assert_eq!(status, 431, "{n} x {size}");
        let e = envelope_error(&body);
        assert!(e.starts_with("Request header fields too large"), "{e}");
    }
    let ok = call("GET", &app.url("/pcaps"), &[AUTH, ("X-Pad", &"c".repeat(4000))], None);
    assert_eq!(ok.status, 200);
}

/// Regression: out-of-range numbers were "body: malformed JSON", naming no field.
#[test]
fn out_of_range_numbers_name_the_field_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let app = start_edited(tmp.path(), &[]);
    let digits = "9".repeat(5000);
    for field in ["time_limit", "packet_limit"] {
        let other = if field == "time_limit" { "packet_limit" } else { "time_limit" };
        for n in ["1e400", digits.as_str()] {
            let body = format!(r#"{{"system":"magic-transit","type":"simple","{other}":10,"{field}":{n}}}"#);
            let r =
                call("POST", &app.url("/pcaps"), &[AUTH, ("Content-Type", "application/json")], Some(body.as_bytes()));
            assert_eq!(r.status, 400);
            let e = r.error();
            assert!(e.starts_with(&format!("{field}: ")) && e.contains("out of range"), "{field}={}: {e}", &n[..5]);
        }
    }
}

/// Regression: the start-up banner printed the accounts' write tokens.
#[test]
fn banner_prints_no_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let o = Opts::fixture(data);
    let port = free_port();
    let config = write_config(&o, port);
    let _lock = dpdk_lock();
    let stdout = std::fs::File::create(data.join("stdout")).unwrap();
    let child = pcapd()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call().is_err() {
        assert!(Instant::now() < deadline, "pcapd did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let all =
        format!("{}{}", std::fs::read_to_string(data.join("stdout")).unwrap(), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains(&format!("pcapd: account {ACCOUNT}")), "no banner:\n{all}");
    assert!(all.contains("Authorization: Bearer $TOKEN"), "{all}");
    for secret in [TOKEN, READ_TOKEN, OTHER_TOKEN, BOTH_TOKEN, KEY] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
}

/// Regression: an unauthenticated /metrics showed running captures' ids and counters.
#[test]
fn metrics_need_the_metrics_token_and_hide_captures_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let app = start_edited(tmp.path(), &[("[api]\n", "[api]\nmetrics_token = \"scrape-me\"\n")]);
    let metrics = format!("{}/metrics", app.base);
    let r = call("GET", &metrics, &[], None);
    assert_eq!(r.status, 401);
    assert!(r.error().starts_with("Authentication error"), "{}", r.error());
    for wrong in ["Bearer scrape-m", "Bearer scrape-me-too", "Basic scrape-me", &bearer(TOKEN)] {
        let r = call("GET", &metrics, &[("Authorization", wrong)], None);
        assert_eq!(r.status, 403, "{wrong}");
        r.error();
    }
    let r = call("GET", &metrics, &[("Authorization", "Bearer scrape-me")], None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("pcapd_rx_packets_total{"), "{text}");
    assert!(text.contains("pcapd_captures_full_running 0"), "{text}");
    assert!(!text.contains("pcap_id="), "{text}");
    for open in ["/healthz", "/readyz"] {
        assert_eq!(call("GET", &format!("{}{open}", app.base), &[], None).status, 200, "{open}");
    }
}

/// Regression: `POST /pcaps/ownership` (a write into a bucket each time) was unthrottled.
#[test]
fn ownership_requests_are_throttled_per_account() {
    let tmp = tempfile::tempdir().unwrap();
    let app = start_edited(tmp.path(), &[("[limits]\n", "[limits]\nownership_per_minute = 2\n")]);
    let post = |account: &str, token: &str| {
        call(
            "POST",
            &format!("{}/client/v4/accounts/{account}/pcaps/ownership", app.base),
            &[("Authorization", &bearer(token)), ("Content-Type", "application/json")],
            Some(br#"{"destination_conf":"s3://some-bucket/dir?region=us-east-1"}"#),
        )
    };
    // No [upload.s3] here: each attempt fails, and each counts.
    for _ in 0..2 {
        let r = post(ACCOUNT, TOKEN);
        assert_eq!(r.status, 400);
        assert!(r.error().contains("not configured"), "{}", r.error());
    }
    let r = post(ACCOUNT, TOKEN);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(r.error().contains("too many ownership registrations"), "{}", r.error());
    // Another account has its own allowance.
    assert_eq!(post(OTHER_ACCOUNT, OTHER_TOKEN).status, 400);
}
