//! Fleet mode (issue 13) against real processes: an etcd cluster (`/usr/bin/etcd`, installed by
//! scripts/setup; a missing etcd fails these tests) and `pcapd run` appliances with `[fleet]`.
//! Signatures are computed by `openssl dgst -hmac`, independently of pcapd's code. Every process
//! is killed by pid when its guard drops; the appliances of one test run under one DPDK lock.
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::appliance::{call, free_port, send_signal, wait_replayed, Appliance, Resp};
use common::fleet::*;
use common::*;
use pcapd::config::{FleetConfig, NodeConfig};
use pcapd::fleet::Fleet;

#[test]
fn three_nodes_register_and_see_each_other() {
    let etcd = Etcd::start(3);
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    let colos: [(&str, &[&str]); 3] = [("n1", &["ord01"]), ("n2", &["ord02"]), ("n3", &["ams01"])];
    let mut nodes: Vec<Appliance> = colos.iter().map(|(n, c)| start_node(dir.path(), n, c, &etcd, &lock)).collect();

    for (a, (name, colos)) in nodes.iter().zip(colos) {
        let t = now_secs();
        let r = internal(&a.base, "GET", "/internal/v1/node", Some((SECRET, t)));
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["result"]["name"], *name, "{v}");
        assert_eq!(v["result"]["colos"], serde_json::json!(colos), "{v}");
        assert_eq!(v["result"]["advertise"], a.base, "{v}");
        let clock_ms = v["result"]["clock_unix_ms"].as_i64().expect("clock_unix_ms");
        assert!((clock_ms / 1000 - t).abs() <= 2, "{name}: clock {clock_ms} vs {t}");
    }
    // Every node sees all three (its member list refreshes every second).
    for a in &nodes {
        wait_for(Duration::from_secs(5), "3 live nodes in /metrics", || {
            metric(&a.base, "pcapd_fleet_live_nodes") == Some(3.0)
        });
        let latency = metric(&a.base, "pcapd_fleet_etcd_latency_seconds").expect("etcd latency metric");
        assert!(latency > 0.0 && latency < 5.0, "{latency}");
        // At least the lease grant, the registration and the member lists.
        let requests = metric(&a.base, "pcapd_fleet_etcd_requests_total").expect("etcd request counter");
        assert!(requests >= 3.0, "{requests}");
    }
    // Each node measures its clock offset to both peers as soon as it sees them (then every
    // 10 s): one clock on this machine, so well within a second.
    for (a, (name, _)) in nodes.iter().zip(colos) {
        let peers: Vec<&str> = colos.iter().map(|(n, _)| *n).filter(|n| *n != name).collect();
        let offset = |peer: &str| metric(&a.base, &format!("pcapd_fleet_clock_offset_seconds{{node=\"{peer}\"}}"));
        wait_for(Duration::from_secs(5), &format!("{name}: clock offsets to {peers:?}"), || {
            peers.iter().all(|p| offset(p).is_some())
        });
        for p in &peers {
            let o = offset(p).unwrap();
            assert!(o.abs() < 1.0, "{name} to {p}: offset {o} s");
            let rtt = metric(&a.base, &format!("pcapd_fleet_clock_rtt_seconds{{node=\"{p}\"}}")).unwrap();
            assert!(rtt > 0.0 && rtt < 2.0, "{name} to {p}: round trip {rtt} s");
            println!("{name} to {p}: clock offset {:.3} ms, round trip {:.3} ms", o * 1e3, rtt * 1e3);
        }
        let max = metric(&a.base, "pcapd_fleet_clock_offset_max_seconds").expect("max offset");
        assert!((0.0..1.0).contains(&max), "{name}: {max}");
        assert!(
            metric(&a.base, &format!("pcapd_fleet_clock_offset_seconds{{node=\"{name}\"}}")).is_none(),
            "not itself"
        );
    }
    // etcd itself holds the three records, each with the URL and pid of its node.
    let mut records = etcd.nodes();
    records.sort_by_key(|r| r["name"].as_str().unwrap().to_string());
    assert_eq!(records.len(), 3, "{records:?}");
    for (r, a) in records.iter().zip(&nodes) {
        assert_eq!(r["advertise"], a.base, "{r}");
        assert_eq!(r["pid"], a.pid(), "{r}");
    }

    // SIGKILL: no clean leave; the lease expires and the others stop listing it.
    let mut n3 = nodes.pop().unwrap();
    n3.kill();
    let took = wait_for(Duration::from_secs(2 * TTL_SECS + 2), "n3 gone from n1's live nodes", || {
        metric(&nodes[0].base, "pcapd_fleet_live_nodes") == Some(2.0)
    });
    println!("a SIGKILLed node disappeared after {took:?}");
    let names: Vec<String> = etcd.nodes().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&"n3".to_string()), "{names:?}");
    wait_for(Duration::from_secs(3), "n2 sees 2", || metric(&nodes[1].base, "pcapd_fleet_live_nodes") == Some(2.0));

    // SIGTERM: the node leaves at once (its lease is revoked), well before the TTL.
    let mut n2 = nodes.pop().unwrap();
    let (st, err) = n2.stop();
    assert!(st.success(), "{st}: {err}");
    assert_eq!(etcd.nodes().len(), 1, "n2 left but is still registered");
    drop(nodes);
    drop(lock);
}

#[test]
fn internal_calls_need_the_fleet_secret() {
    let etcd = Etcd::start(1);
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    let a = start_node(dir.path(), "solo", &["ams01"], &etcd, &lock);
    let path = "/internal/v1/node";

    let r = internal(&a.base, "GET", path, None);
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("without the x-pcapd-node header"), "{}", r.error());
    assert_eq!(r.json()["errors"][0]["code"], 10000);

    let r = internal(&a.base, "GET", path, Some(("another-secret-0123456789", now_secs())));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("wrong signature"), "{}", r.error());
    // Signed for another path or method: refused.
    let other_path = signed_headers(SECRET, "GET", "/internal/v1/other", now_secs(), b"");
    assert_eq!(call_with("GET", &format!("{}{path}", a.base), &other_path, None).status, 403);
    // Regression: the signature did not cover the body, nor stop a second use. A signed
    // request sent again is refused; so is its signature on another body.
    let url = format!("{}{path}", a.base);
    let once = signed_headers(SECRET, "GET", path, now_secs(), b"");
    assert_eq!(call_with("GET", &url, &once, None).status, 200);
    let again = call_with("GET", &url, &once, None);
    assert_eq!(again.status, 403, "{}", again.error());
    assert!(again.error().contains("already received once"), "{}", again.error());
    let samples = "/internal/v1/samples";
    let body = br#"{"start_ns":0,"end_ns":1,"filter_v1":{},"limit":1}"#;
    let h = signed_headers(SECRET, "POST", samples, now_secs(), body);
    let swapped = br#"{"start_ns":0,"end_ns":1,"filter_v1":{},"limit":9}"#;
    let r = call_with("POST", &format!("{}{samples}", a.base), &h, Some(swapped));
    assert_eq!(r.status, 403, "{}", r.error());
    assert!(r.error().contains("wrong signature"), "{}", r.error());
    let h = signed_headers(SECRET, "POST", samples, now_secs(), body);
    assert_eq!(call_with("POST", &format!("{}{samples}", a.base), &h, Some(body)).status, 200);

    // Correctly signed, but outside the 30 s replay window (either side).
    for skew in [-90, 90] {
        let r = internal(&a.base, "GET", path, Some((SECRET, now_secs() + skew)));
        assert_eq!(r.status, 403, "skew {skew}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.error().contains("from this node's clock"), "{}", r.error());
    }

    let r = internal(&a.base, "GET", path, Some((SECRET, now_secs())));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["result"]["name"], "solo");
    // Within the window on either side is accepted.
    assert_eq!(internal(&a.base, "GET", path, Some((SECRET, now_secs() - 20))).status, 200);

    // Every path under /internal is guarded, unknown ones included; signed, they are 404.
    assert_eq!(internal(&a.base, "GET", "/internal/v1/nope", None).status, 401);
    let r = internal(&a.base, "GET", "/internal/v1/nope", Some((SECRET, now_secs())));
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // The public API is not affected by the fleet's guard.
    assert_eq!(call("GET", &format!("{}/healthz", a.base), &[], None).status, 200);

    // pcapd's own client side: this test process joins the fleet as a node (no DPDK), sees the
    // appliance, calls it with `Fleet::call` (signed), and leaves.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let cfg = FleetConfig {
        etcd: etcd.endpoints.clone(),
        advertise: format!("http://127.0.0.1:{}", free_port()),
        secret: Some(SECRET.to_string()),
        secret_env: None,
    };
    let me = NodeConfig { name: "caller".to_string(), colos: vec![] };
    let listen: std::net::SocketAddr = cfg.advertise.trim_start_matches("http://").parse().unwrap();
    rt.block_on(async {
        let fleet = Fleet::join(&cfg, &me, listen).await.expect("join");
        assert_eq!(fleet.name(), "caller");
        let names: Vec<String> = fleet.live_nodes().iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, ["caller", "solo"]);
        let solo = fleet.live_nodes().iter().find(|n| n.name == "solo").cloned().unwrap();
        assert_eq!(solo.advertise, a.base);
        let r = fleet.call(&solo, reqwest::Method::GET, "/internal/v1/node", None).await.expect("call solo");
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["result"]["name"], "solo", "{v}");
        // A path with a query is signed as sent.
        let r = fleet.call(&solo, reqwest::Method::GET, "/internal/v1/nope?x=1", None).await.unwrap();
        assert_eq!(r.status(), 404);
        // Another secret: refused by the appliance.
        let mut wrong = cfg.clone();
        wrong.secret = Some("not-the-fleet-secret".to_string());
        let other = Fleet::join(&wrong, &NodeConfig { name: "intruder".to_string(), colos: vec![] }, listen)
            .await
            .expect("join (etcd has no notion of the secret)");
        let r = other.call(&solo, reqwest::Method::GET, "/internal/v1/node", None).await.unwrap();
        assert_eq!(r.status(), 403);
        other.leave().await;
        fleet.leave().await;
    });
    let names: Vec<String> = etcd.nodes().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["solo"], "leave revokes the lease at once");
    drop(a);
    drop(lock);
}

/// Runs `pcapd run` on `config`, which must fail to start; returns its stderr.
fn refused_start(config: &Path) -> String {
    let mut child =
        pcapd().arg("run").arg("--config").arg(config).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("pcapd kept running: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn a_node_name_in_use_is_refused() {
    let etcd = Etcd::start(1);
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    let first = start_node(dir.path(), "n1", &["ord01"], &etcd, &lock);
    let pid = first.pid();

    // Another appliance (own data dir, port, DPDK prefix) with the same [node] name.
    let (config, _, _) = node_config(&dir.path().join("second"), "n1", &["ord02"], &etcd.endpoints);
    let stderr = refused_start(&config);
    let want = format!("pcapd: fleet: node name \"n1\" is in use by a live node (advertise {}, pid {pid}", first.base);
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");

    // The first keeps its registration and answers.
    let records = etcd.nodes();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["pid"], pid);
    assert_eq!(internal(&first.base, "GET", "/internal/v1/node", Some((SECRET, now_secs()))).status, 200);
    drop(first);
    drop(lock);
}

#[test]
fn unreachable_etcd_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    // Nothing listens on these ports.
    let endpoints = vec![format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port())];
    let (config, _, _) = node_config(dir.path(), "lonely", &[], &endpoints);
    let stderr = refused_start(&config);
    let want = format!("pcapd: fleet: cannot reach etcd at {}, {}: ", endpoints[0], endpoints[1]);
    let line = stderr.lines().find(|l| l.starts_with("pcapd: ")).unwrap_or_default();
    assert!(line.starts_with(&want), "want {want:?} in:\n{stderr}");
    drop(lock);
}

#[test]
fn base64_round_trips() {
    for s in ["", "a", "ab", "abc", "/pcapd/nodes/"] {
        assert_eq!(unbase64(&base64(s.as_bytes())), s.as_bytes());
    }
    assert_eq!(base64(b"/pcapd/nodes/"), "L3BjYXBkL25vZGVzLw==");
}

/// Fleet-wide rule (issue 13): one simple capture request per account per interval, whichever
/// node each request reaches, decided in one etcd transaction (no race between nodes); without
/// etcd quorum a create is a 503 the SDKs may retry, and reads still answer.
#[test]
fn one_simple_request_per_interval_for_the_whole_fleet_and_503_without_quorum() {
    use common::appliance::{bearer, ACCOUNT, OTHER_ACCOUNT, OTHER_TOKEN, TOKEN};
    let mut etcd = Etcd::start(3);
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    let nodes: Vec<Appliance> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| {
            let (config, data, port) = node_config(dir.path(), name, &["ord01"], &etcd.endpoints);
            let text = std::fs::read_to_string(&config).unwrap();
            let text = text.replace("simple_interval_seconds = 0", "simple_interval_seconds = 60");
            assert!(text.contains("simple_interval_seconds = 60"));
            std::fs::write(&config, text).unwrap();
            Appliance::start_config_held(config, &data, port, &lock)
        })
        .collect();
    let body =
        serde_json::json!({"system":"magic-transit","type":"simple","time_limit":60,"packet_limit":5}).to_string();
    let post = |base: &str, account: &str, token: &str| {
        call(
            "POST",
            &format!("{base}/client/v4/accounts/{account}/pcaps"),
            &[("Authorization", &bearer(token)), ("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    };
    // 12 requests at once, spread over the three nodes: exactly one is admitted.
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..12)
            .map(|i| {
                let base = nodes[i % 3].base.clone();
                let post = &post;
                s.spawn(move || post(&base, ACCOUNT, TOKEN))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-should-retry"), Some("false"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    assert_eq!(post(&nodes[2].base, OTHER_ACCOUNT, OTHER_TOKEN).status, 200, "the rule is per account");

    // No quorum (two of three members gone): a create cannot be decided; reads still answer.
    for m in etcd.members.iter_mut().skip(1) {
        let _ = m.kill();
        let _ = m.wait();
    }
    let t = Instant::now();
    let r = post(&nodes[0].base, OTHER_ACCOUNT, OTHER_TOKEN);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-should-retry"), Some("true"));
    assert!(t.elapsed() < Duration::from_secs(10), "bounded: {:?}", t.elapsed());
    let r = call(
        "GET",
        &format!("{}/client/v4/accounts/{ACCOUNT}/pcaps", nodes[1].base),
        &[("Authorization", &bearer(TOKEN))],
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// A microsecond pcap of `pkts`, written here (not by pcapd).
fn write_pcap_file(path: &Path, pkts: &[Pkt]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&262144u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for p in pkts {
        b.extend_from_slice(&((p.ts_ns / 1_000_000_000) as u32).to_le_bytes());
        b.extend_from_slice(&((p.ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        b.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&p.orig_len.to_le_bytes());
        b.extend_from_slice(&p.data);
    }
    std::fs::write(path, b).unwrap();
}

/// A node's samples as stored: its segments in name (= time) order, read with the test's reader.
fn stored_samples(data: &Path) -> Vec<Pkt> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    segs.sort();
    segs.iter().flat_map(|p| read_pcap(p)).collect()
}

/// The oracle: every node's stored samples sorted by (timestamp, node name, order in the node),
/// the first `limit`, as nanosecond little-endian record bytes (headers and data).
fn expected_records(nodes: &[(&str, Vec<Pkt>)], limit: usize) -> (Vec<u8>, Vec<String>) {
    let mut all: Vec<(u128, &str, usize, &Pkt)> = Vec::new();
    for (name, pkts) in nodes {
        all.extend(pkts.iter().enumerate().map(|(i, p)| (p.ts_ns, *name, i, p)));
    }
    all.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    all.truncate(limit);
    let mut b = Vec::new();
    for (_, _, _, p) in &all {
        b.extend_from_slice(&((p.ts_ns / 1_000_000_000) as u32).to_le_bytes());
        b.extend_from_slice(&((p.ts_ns % 1_000_000_000) as u32).to_le_bytes());
        b.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&p.orig_len.to_le_bytes());
        b.extend_from_slice(&p.data);
    }
    let mut from: Vec<String> = all.iter().map(|e| e.1.to_string()).collect();
    from.dedup();
    from.sort();
    from.dedup();
    (b, from)
}

/// Three nodes n1, n2, n3 in colo ord01, each replaying a distinct third of the fixture (its
/// packets dealt round-robin) once; returns them once each has received all of its part and all
/// three see each other, with the whole fixture.
fn start_split_nodes(dir: &Path, etcd: &Etcd, lock: &DpdkLock) -> (Vec<Appliance>, Vec<Pkt>) {
    let all = read_pcap(&fixture("frames.pcap"));
    let mut nodes: Vec<Appliance> = Vec::new();
    for (k, name) in NAMES.iter().enumerate() {
        let part: Vec<Pkt> = all.iter().skip(k).step_by(3).cloned().collect();
        let input = dir.join(format!("input-{name}.pcap"));
        write_pcap_file(&input, &part);
        let (config, data, port) = node_config(dir, name, &["ord01"], &etcd.endpoints);
        let text = std::fs::read_to_string(&config).unwrap();
        let from = format!("rx_pcap={}", fixture("frames.pcap").display());
        assert!(text.contains(&from), "{text}");
        std::fs::write(&config, text.replace(&from, &format!("rx_pcap={}", input.display()))).unwrap();
        let a = Appliance::start_config_held(config, &data, port, lock);
        wait_replayed(&a, part.len());
        nodes.push(a);
    }
    for a in &nodes {
        wait_for(Duration::from_secs(5), "3 live nodes", || metric(&a.base, "pcapd_fleet_live_nodes") == Some(3.0));
    }
    (nodes, all)
}

const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// POSTs a simple capture of `limit` packets (the last 300 s) to `base` and waits (up to 30 s)
/// until it is neither pending nor converting; returns its last `result`.
fn simple_capture(base: &str, limit: usize) -> serde_json::Value {
    use common::appliance::{bearer, ACCOUNT, TOKEN};
    let auth = bearer(TOKEN);
    let body = serde_json::json!({"system":"magic-transit","type":"simple","time_limit":300,"packet_limit":limit});
    let r = call(
        "POST",
        &format!("{base}/client/v4/accounts/{ACCOUNT}/pcaps"),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let mut last = serde_json::Value::Null;
    wait_for(Duration::from_secs(30), "the capture finishes", || {
        let r =
            call("GET", &format!("{base}/client/v4/accounts/{ACCOUNT}/pcaps/{id}"), &[("Authorization", &auth)], None);
        last = r.json()["result"].clone();
        last["status"] != "pending" && last["status"] != "conversion_running"
    });
    last
}

/// The bytes of a finished simple capture, downloaded from `base`.
fn download(base: &str, id: &str) -> Vec<u8> {
    use common::appliance::{bearer, ACCOUNT, TOKEN};
    let r = call(
        "GET",
        &format!("{base}/client/v4/accounts/{ACCOUNT}/pcaps/{id}/download"),
        &[("Authorization", &bearer(TOKEN))],
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.body
}

/// A downloaded capture is a nanosecond pcap of `count` records whose bytes are `want`.
fn check_download(got: &[u8], want: &[u8], count: usize) {
    assert!(got.len() >= 24, "no pcap header");
    assert_eq!(&got[0..4], &0xa1b23c4du32.to_le_bytes(), "nanosecond pcap");
    assert_eq!(read_pcap_bytes_count(got), count);
    assert!(got[24..] == *want, "records differ from the oracle's merge ({} vs {} bytes)", got.len() - 24, want.len());
}

/// Issue 13: a simple capture sent to one node holds the earliest `packet_limit` samples of the
/// whole fleet; a node that is down is skipped and named, the capture still succeeds.
#[test]
fn a_simple_capture_merges_every_nodes_samples() {
    let etcd = Etcd::start(3);
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    let (mut nodes, all) = start_split_nodes(dir.path(), &etcd, &lock);

    // More than any two nodes hold, fewer than all three: every node contributes, some are cut.
    let total = all.len();
    let limit = total - (total / 3) / 2;
    for lim in [limit, 10] {
        let c = simple_capture(&nodes[0].base, lim);
        assert_eq!(c["status"], "success", "{c}");
        assert!(c.get("error_message").is_none(), "every node answered: {c}");
        assert_eq!(c["packets_captured"], lim, "{c}");
        let got = download(&nodes[0].base, c["id"].as_str().unwrap());
        // After the capture every node has flushed what it sampled.
        let stored: Vec<(&str, Vec<Pkt>)> =
            NAMES.iter().zip(&nodes).map(|(n, a)| (*n, stored_samples(&a.data))).collect();
        for ((n, s), k) in stored.iter().zip(0..) {
            assert_eq!(s.len(), all.iter().skip(k).step_by(3).count(), "{n} sampled all of its input");
        }
        let (want, from) = expected_records(&stored, lim);
        if lim == limit {
            assert_eq!(from, NAMES, "the oracle's first {lim} come from every node");
        }
        check_download(&got, &want, lim);
    }

    // n3 dies (SIGKILL): it is still listed until its lease expires, and cannot answer.
    let stored: Vec<(&str, Vec<Pkt>)> = NAMES.iter().zip(&nodes).map(|(n, a)| (*n, stored_samples(&a.data))).collect();
    nodes[2].kill();
    let c = simple_capture(&nodes[1].base, limit);
    assert_eq!(c["status"], "success", "{c}");
    let note = c["error_message"].as_str().unwrap_or_default();
    assert!(note.contains("n3 ("), "names the dead node: {c}");
    assert!(!note.contains("n1 (") && !note.contains("n2 ("), "{c}");
    let (want, from) = expected_records(&stored[..2], limit);
    assert_eq!(from, ["n1", "n2"]);
    let count = stored[0].1.len() + stored[1].1.len();
    assert!(count < limit);
    assert_eq!(c["packets_captured"], count, "{c}");
    check_download(&download(&nodes[1].base, c["id"].as_str().unwrap()), &want, count);
    drop(nodes);
    drop(lock);
}

/// SIGCONTs a SIGSTOPped process when dropped, also when the test fails, so that its clean-up
/// (SIGTERM, then wait) works.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        send_signal(pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        send_signal(self.0, "CONT");
    }
}

/// Issue 13: a node that hangs (alive, registered, its port accepting connections, but never
/// answering) must not hang a simple capture: the gather gives up on it after ANSWER_TIMEOUT
/// (5 s, src/fleet/gather.rs), names it, and the capture holds the other nodes' samples.
#[test]
fn a_hung_node_is_skipped_by_name_within_the_answer_timeout() {
    let etcd = Etcd::start(3);
    let dir = tempfile::tempdir().unwrap();
    let lock = dpdk_lock();
    let (nodes, all) = start_split_nodes(dir.path(), &etcd, &lock);

    // Declared after `nodes`: dropped (SIGCONT) before them.
    let hung = Stopped::stop(nodes[2].pid());
    let started = Instant::now();
    let c = simple_capture(&nodes[0].base, all.len());
    let took = started.elapsed();
    println!("a simple capture with a hung node took {took:?}: {c}");
    assert_eq!(c["status"], "success", "{c}");
    let note = c["error_message"].as_str().unwrap_or_default();
    assert!(note.contains("n3 ("), "names the hung node: {c}");
    assert!(!note.contains("n1 (") && !note.contains("n2 ("), "{c}");
    // Bounded: the answer timeout and a margin for the conversion and the polling, no hang. And
    // not shorter than the timeout: n3 really was waited for (not refused at once).
    assert!(took < Duration::from_secs(12), "the capture took {took:?}");
    assert!(took >= pcapd::fleet::gather::ANSWER_TIMEOUT, "n3 did not hang: {took:?}");

    // n1 and n2 flushed their stores to answer: their samples as stored, merged independently.
    let stored: Vec<(&str, Vec<Pkt>)> =
        NAMES.iter().zip(&nodes).take(2).map(|(n, a)| (*n, stored_samples(&a.data))).collect();
    let count = stored[0].1.len() + stored[1].1.len();
    assert!(count > 0 && count < all.len());
    assert_eq!(c["packets_captured"], count, "{c}");
    let (want, from) = expected_records(&stored, all.len());
    assert_eq!(from, ["n1", "n2"]);
    check_download(&download(&nodes[0].base, c["id"].as_str().unwrap()), &want, count);
    drop(hung);
    drop(nodes);
    drop(lock);
}

/// Records in a pcap held in memory (via the test's own reader).
fn read_pcap_bytes_count(b: &[u8]) -> usize {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), b).unwrap();
    read_pcap(f.path()).len()
}
