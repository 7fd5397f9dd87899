//! Fleet mode (issue 13): capture records and ownerships answered by every node, downloads
//! streamed from the node that holds the file, and full captures across a colo's nodes with
//! exact limits, stopped from any node, and surviving a node's death. Real etcd, real pcapd
//! nodes receiving live traffic (one veth: every node's af_packet socket sees every frame), a
//! real S3 server (moto); objects read back with boto3 and counted independently.
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::appliance::{bearer, call, Appliance, Resp, TOKEN};
use common::fleet::*;
use common::moto::Moto;
use common::veth::Veth;
use common::*;
use serde_json::{json, Value};

const BUCKET: &str = "pcaps";

fn s3(m: &Moto) -> String {
    format!(
        "[upload]\nretry_initial_ms = 200\nretry_max_ms = 2000\nrequest_timeout_secs = 10\n\n\
         [upload.s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        m.endpoint, m.access, m.secret
    )
}

struct Fleet {
    tmp: tempfile::TempDir,
    etcd: Etcd,
    m: Moto,
    veth: Veth,
    input: PathBuf,
    cycle: Vec<Vec<u8>>,
    lock: DpdkLock,
}

impl Fleet {
    fn new(tag: &str) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(3);
        let m = Moto::start(&[BUCKET]);
        let veth = Veth::new(tag);
        // The fixture's frames a veth can carry (all but the 10-byte runt).
        let input = tmp.path().join("sendable.pcap");
        let st = std::process::Command::new("tcpdump")
            .arg("-r")
            .arg(fixture("frames.pcap"))
            .arg("-w")
            .arg(&input)
            .arg("len >= 14")
            .status()
            .unwrap();
        assert!(st.success());
        let cycle = datas(&read_pcap(&input));
        let lock = dpdk_lock();
        Fleet { tmp, etcd, m, veth, input, cycle, lock }
    }

    fn config(&self, name: &str, colos: &[&str]) -> (PathBuf, PathBuf, u16) {
        self.config_on(name, colos, &self.veth.rx)
    }

    /// A node receiving from `iface`.
    fn config_on(&self, name: &str, colos: &[&str], iface: &str) -> (PathBuf, PathBuf, u16) {
        let more = s3(&self.m);
        node_config_with(self.tmp.path(), name, colos, &self.etcd.endpoints, Some(iface), &more)
    }

    fn node(&self, name: &str, colos: &[&str]) -> Appliance {
        let (config, data, port) = self.config(name, colos);
        Appliance::start_config_held(config, &data, port, &self.lock)
    }

    fn dest(dir: &str) -> String {
        format!("s3://{BUCKET}/{dir}?region=us-east-1")
    }

    /// Registers `destination_conf` on `on` and validates it on `validate_on` (the challenge read
    /// from the bucket, as a user does).
    fn own(&self, on: &Appliance, validate_on: &Appliance, dir: &str) -> Value {
        let d = Self::dest(dir);
        let r = post(on, "/pcaps/ownership", &json!({ "destination_conf": d }));
        assert_eq!(r.status, 200, "{}", r.error());
        let o = r.json()["result"].clone();
        let file = self.tmp.path().join("challenge.txt");
        self.m.get(BUCKET, &format!("{dir}/{}", o["filename"].as_str().unwrap()), &file);
        let token = std::fs::read_to_string(&file).unwrap();
        let r = post(
            validate_on,
            "/pcaps/ownership/validate",
            &json!({ "destination_conf": d, "ownership_challenge": token }),
        );
        assert_eq!(r.status, 200, "validated on another node: {}", r.error());
        r.json()["result"].clone()
    }

    /// The packets of the capture's objects under `prefix`, by node name (`<node>-<seq>`).
    fn objects_by_node(&self, prefix: &str) -> Vec<(String, Vec<Pkt>)> {
        let mut keys: Vec<String> = self.m.list(BUCKET, prefix).into_iter().map(|(k, _)| k).collect();
        keys.sort();
        let mut out: Vec<(String, Vec<Pkt>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let part = k.split('/').rev().nth(1).unwrap();
            let node = part.rsplit_once('-').unwrap().0.to_string();
            let f = self.tmp.path().join(format!("obj{i}.pcap"));
            self.m.get(BUCKET, k, &f);
            let pkts = read_pcap(&f);
            match out.iter_mut().find(|(n, _)| *n == node) {
                Some((_, v)) => v.extend(pkts),
                None => out.push((node, pkts)),
            }
        }
        out
    }
}

/// tcpreplay sending until dropped (a failing test too).
struct Traffic(std::process::Child);

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn auth() -> (&'static str, String) {
    ("Authorization", bearer(TOKEN))
}

fn post(app: &Appliance, path: &str, body: &Value) -> Resp {
    let (k, v) = auth();
    call("POST", &app.url(path), &[(k, &v), ("Content-Type", "application/json")], Some(body.to_string().as_bytes()))
}

fn get(app: &Appliance, path: &str) -> Resp {
    let (k, v) = auth();
    call("GET", &app.url(path), &[(k, &v)], None)
}

fn full(colo: &str, dir: &str, time_limit: u64, limits: Value) -> Value {
    let mut b = json!({"system": "magic-transit", "type": "full", "time_limit": time_limit, "colo_name": colo,
                       "destination_conf": Fleet::dest(dir), "filter_v1": {}});
    for (k, v) in limits.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn wait_status(app: &Appliance, id: &str, want: &[&str], within: Duration) -> Value {
    let mut last = Value::Null;
    wait_for(within, &format!("capture {id} reaches {want:?}"), || {
        last = get(app, &format!("/pcaps/{id}")).json()["result"].clone();
        want.contains(&last["status"].as_str().unwrap_or(""))
    });
    last
}

fn node_names(c: &Value) -> Vec<String> {
    c["nodes"]
        .as_array()
        .map(|a| a.iter().map(|p| p["node"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Every packet one of the replayed frames.
fn all_replayed(pkts: &[Pkt], cycle: &[Vec<u8>]) {
    assert!(pkts.iter().all(|p| cycle.contains(&p.data)), "a packet that was never sent");
}

#[test]
fn every_node_answers_for_every_capture_and_ownership_and_full_captures_run_on_their_colo() {
    let f = Fleet::new("fc");
    let n1 = f.node("n1", &["ord01"]);
    let n2 = f.node("n2", &["ord02"]);
    let n3 = f.node("n3", &["ams01"]);
    let nodes = [&n1, &n2, &n3];
    for a in nodes {
        wait_for(Duration::from_secs(5), "3 live nodes", || metric(&a.base, "pcapd_fleet_live_nodes") == Some(3.0));
    }
    let _traffic = Traffic(f.veth.replay_bg(&f.input, 2_000, 1_000_000));

    // Ownership: registered on n1, validated on n2, valid on n3.
    let o = f.own(&n1, &n2, "fleet");
    assert_eq!(o["status"], "success");
    let listed = get(&n3, "/pcaps/ownership").json()["result"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], o["id"]);
    assert_eq!(listed[0]["status"], "success");

    // No live node serves the colo: 400 naming colo_name and what the fleet serves.
    let r = post(&n1, "/pcaps", &full("xyz01", "fleet", 60, json!({"packet_limit": 10})));
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(r.error().contains("colo_name") && r.error().contains("ams01, ord01, ord02"), "{}", r.error());

    // One full capture per account across the fleet: the same request to all three at once,
    // with a tcpdump expression every part runs.
    let body = full("ORD", "fleet", 120, json!({"packet_limit": 3000, "filter_expression": "tcp"}));
    let tcp = datas(&tcpdump(&f.input, "tcp", f.tmp.path()));
    assert!(!tcp.is_empty() && tcp.len() < f.cycle.len());
    let answers: Vec<Resp> =
        std::thread::scope(|s| nodes.map(|a| s.spawn(|| post(a, "/pcaps", &body))).map(|h| h.join().unwrap()).into());
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), 2, "{statuses:?}");
    let created = answers.iter().find(|r| r.status == 200).unwrap().json()["result"].clone();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(node_names(&created), ["n1", "n2"], "the ORD region's nodes: {created}");

    // Read on the node that did not take part; exact limit across the two nodes.
    let done = wait_status(&n3, &id, &["success", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["packets_captured"], 3000, "{done}");
    let by_node = f.objects_by_node(&format!("fleet/{id}/"));
    let names: Vec<&str> = by_node.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n1", "n2"], "objects only from the colo's nodes");
    let total: usize = by_node.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(total, 3000, "exactly the packet limit in the bucket");
    for (node, pkts) in &by_node {
        assert!(!pkts.is_empty(), "{node} took part");
        assert!(pkts.iter().all(|p| tcp.contains(&p.data)), "{node}: a packet tcpdump's `tcp` does not keep");
        let part = done["nodes"].as_array().unwrap().iter().find(|p| p["node"] == node.as_str()).unwrap();
        assert_eq!(part["packets_captured"], pkts.len(), "{done}");
        assert_eq!(part["status"], "success");
    }
    for a in nodes {
        let c = get(a, &format!("/pcaps/{id}")).json()["result"].clone();
        assert_eq!(c["packets_captured"], 3000, "the same record on every node");
        assert_eq!(c["filter_expression"], "tcp");
    }
    // The Captures page of the node that did not take part lists the two that did.
    let page = page_script("fleet_page.py", &[&n3.base, TOKEN, &id]);
    let want: Vec<String> = by_node.iter().map(|(n, p)| format!("{n} · success · {} packets", p.len())).collect();
    assert_eq!(page["nodes"], json!(want), "{page}");
    assert_eq!(page["page_errors"], json!([]));

    // Stop from a node that does not run it: the part on n2 ends, the capture succeeds.
    let r = post(&n1, "/pcaps", &full("ord02", "fleet", 300, json!({})));
    assert_eq!(r.status, 200, "{}", r.error());
    let id2 = r.json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(node_names(&r.json()["result"]), ["n2"]);
    // Any node's /metrics counts the fleet's running parts.
    wait_for(Duration::from_secs(6), "n3 counts one running part", || {
        metric(&n3.base, r#"pcapd_fleet_parts{state="running"}"#) == Some(1.0)
    });
    let r = call("PUT", &n3.url(&format!("/pcaps/{id2}/stop")), &[(auth().0, &auth().1)], None);
    assert_eq!(r.status, 200, "{}", r.error());
    assert!(r.json()["result"]["stop_requested"].is_string(), "{}", r.json());
    let t = Instant::now();
    let stopped = wait_status(&n1, &id2, &["success", "failed"], Duration::from_secs(30));
    assert_eq!(stopped["status"], "success", "{stopped}");
    assert!(t.elapsed() < Duration::from_secs(20), "stopped long before its 300 s");
    assert!(stopped["stop_requested"].is_string());
    let got = f.objects_by_node(&format!("fleet/{id2}/"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "n2");
    assert_eq!(stopped["packets_captured"], got[0].1.len());
    // A finished capture cannot be stopped, on any node.
    let r = call("PUT", &n2.url(&format!("/pcaps/{id2}/stop")), &[(auth().0, &auth().1)], None);
    assert_eq!(r.status, 400, "{}", r.error());

    // A simple capture built on n1: read on n2, downloaded from n3 (streamed from n1).
    let r = post(&n1, "/pcaps", &json!({"system":"magic-transit","type":"simple","time_limit":300,"packet_limit":50}));
    assert_eq!(r.status, 200, "{}", r.error());
    let sid = r.json()["result"]["id"].as_str().unwrap().to_string();
    let s = wait_status(&n2, &sid, &["success", "failed"], Duration::from_secs(30));
    assert_eq!(s["status"], "success", "{s}");
    let (k, v) = auth();
    let here = call("GET", &n1.url(&format!("/pcaps/{sid}/download")), &[(k, &v)], None);
    let there = call("GET", &n3.url(&format!("/pcaps/{sid}/download")), &[(k, &v)], None);
    assert_eq!((here.status, there.status), (200, 200), "{}", there.error());
    assert_eq!(here.body, there.body, "the same file through another node");
    let tmpf = f.tmp.path().join("simple.pcap");
    std::fs::write(&tmpf, &there.body).unwrap();
    assert_eq!(read_pcap(&tmpf).len(), 50);
    // The list, newest first, the same on every node.
    for a in nodes {
        let ids: Vec<String> = get(a, "/pcaps").json()["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, [sid.clone(), id2.clone(), id.clone()]);
    }
    // Ownership deleted on n3: gone everywhere.
    let r = call("DELETE", &n3.url(&format!("/pcaps/ownership/{}", o["id"].as_str().unwrap())), &[(k, &v)], None);
    assert_eq!(r.status, 204, "{}", r.error());
    assert_eq!(get(&n1, "/pcaps/ownership").json()["result"], json!([]));
}

/// Regression: a node without traffic kept its share of the limit (its first chunk) for the
/// whole time limit, so the capture stopped short of its packet limit and ran until the time
/// limit. Now an idle part gives its grant back, and the busy node takes the whole limit.
#[test]
fn a_full_capture_reaches_its_exact_limit_when_only_one_node_has_traffic() {
    let f = Fleet::new("fu");
    let quiet = Veth::new("fq");
    let n1 = f.node("n1", &["ord01"]);
    let (config, data, port) = f.config_on("n2", &["ord02"], &quiet.rx);
    let n2 = Appliance::start_config_held(config, &data, port, &f.lock);
    for a in [&n1, &n2] {
        wait_for(Duration::from_secs(5), "2 live nodes", || metric(&a.base, "pcapd_fleet_live_nodes") == Some(2.0));
    }
    let _traffic = Traffic(f.veth.replay_bg(&f.input, 2_000, 1_000_000));
    f.own(&n1, &n2, "uneven");
    let r = post(&n2, "/pcaps", &full("ord", "uneven", 120, json!({"packet_limit": 3000})));
    assert_eq!(r.status, 200, "{}", r.error());
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    let done = wait_status(&n2, &id, &["success", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    assert!(t.elapsed() < Duration::from_secs(40), "at its packet limit long before its 120 s: {:?}", t.elapsed());
    assert_eq!(done["packets_captured"], 3000, "{done}");
    let by_node = f.objects_by_node(&format!("uneven/{id}/"));
    let count = |node: &str| by_node.iter().find(|(n, _)| n == node).map_or(0, |(_, p)| p.len());
    assert_eq!((count("n1"), count("n2")), (3000, 0), "the busy node took the whole limit");
    all_replayed(&by_node[0].1, &f.cycle);
}

/// A node SIGKILLed mid-capture: its part is lost after the grace period and the capture
/// succeeds with the other node's part, naming the lost node; restarted, the node uploads what
/// it wrote before it died.
#[test]
fn a_node_killed_mid_capture_is_named_lost_and_uploads_its_part_when_it_returns() {
    let f = Fleet::new("fk");
    let n1 = f.node("n1", &["ord01"]);
    let (config2, data2, port2) = f.config("n2", &["ord02"]);
    let mut n2 = Appliance::start_config_held(config2.clone(), &data2, port2, &f.lock);
    for a in [&n1, &n2] {
        wait_for(Duration::from_secs(5), "2 live nodes", || metric(&a.base, "pcapd_fleet_live_nodes") == Some(2.0));
    }
    let _traffic = Traffic(f.veth.replay_bg(&f.input, 2_000, 1_000_000));
    f.own(&n1, &n1, "lost");
    let r = post(&n1, "/pcaps", &full("ord", "lost", 15, json!({})));
    assert_eq!(r.status, 200, "{}", r.error());
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3));
    n2.kill();

    // n1 ends at 15 s; n2's registration lapses within 2 TTLs, then the grace period.
    let within = Duration::from_secs(15 + 2 * TTL_SECS + 15);
    let done = wait_status(&n1, &id, &["success", "failed"], within);
    assert_eq!(done["status"], "success", "{done}");
    let msg = done["error_message"].as_str().unwrap_or_default();
    assert!(msg.contains("node n2: lost"), "{done}");
    let parts = done["nodes"].as_array().unwrap();
    assert_eq!(parts.iter().find(|p| p["node"] == "n2").unwrap()["status"], "lost", "{done}");
    let n1_packets = done["packets_captured"].as_u64().unwrap();
    assert_eq!(metric(&n1.base, "pcapd_fleet_parts_given_up_total"), Some(1.0), "n1 gave n2's part up");
    let before = f.objects_by_node(&format!("lost/{id}/"));
    assert_eq!(before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["n1"]);
    assert_eq!(before[0].1.len() as u64, n1_packets);

    // n2 returns: what it wrote before the kill is uploaded, and the record counts it.
    let _n2 = Appliance::start_config_held(config2, &data2, port2, &f.lock);
    let mut last = Value::Null;
    wait_for(Duration::from_secs(60), "n2's part uploads", || {
        last = get(&n1, &format!("/pcaps/{id}")).json()["result"].clone();
        last["nodes"].as_array().unwrap().iter().any(|p| p["node"] == "n2" && p["status"] == "success")
    });
    let after = f.objects_by_node(&format!("lost/{id}/"));
    assert_eq!(after.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
    let n2_pkts = &after[1].1;
    assert!(n2_pkts.len() > 1000, "about 3 s at 2,000 packets/s before the kill: {}", n2_pkts.len());
    all_replayed(n2_pkts, &f.cycle);
    assert_eq!(last["status"], "success", "a finished capture stays finished: {last}");
    assert_eq!(last["packets_captured"].as_u64().unwrap(), n1_packets + n2_pkts.len() as u64, "{last}");
}

/// One API answer under load: (what was asked, status, x-should-retry, when, capture id).
struct Answer {
    what: &'static str,
    status: u16,
    retry: Option<String>,
    at: Duration,
    id: Option<String>,
    error: String,
}

/// SIGKILL of the etcd leader while two nodes take creates, stops and reads; then of a second
/// member (no quorum). Nothing is lost or doubled, 503s say "retry" and stay within the
/// election, and without quorum reads still answer while creates and stops are 503 retry.
#[test]
fn the_etcd_leader_killed_under_api_load_loses_nothing_and_without_quorum_reads_answer() {
    let mut f = Fleet::new("fl");
    let n1 = f.node("n1", &["ord01"]);
    let n2 = f.node("n2", &["ord01"]);
    for a in [&n1, &n2] {
        wait_for(Duration::from_secs(5), "2 live nodes", || metric(&a.base, "pcapd_fleet_live_nodes") == Some(2.0));
    }
    let _traffic = Traffic(f.veth.replay_bg(&f.input, 1_000, 1_000_000));
    f.own(&n1, &n2, "load");
    let nodes = [&n1, &n2];
    let started = Instant::now();
    let load_for = Duration::from_secs(14);
    let ask = |what: &'static str, a: &Appliance| -> Answer {
        let (k, v) = auth();
        let r = match what {
            "full" => post(a, "/pcaps", &full("ord01", "load", 300, json!({}))),
            "simple" => {
                post(a, "/pcaps", &json!({"system":"magic-transit","type":"simple","time_limit":60,"packet_limit":5}))
            }
            _ => call("GET", &a.url("/pcaps"), &[(k, &v)], None),
        };
        let id = (r.status == 200 && what != "list").then(|| r.json()["result"]["id"].as_str().unwrap().to_string());
        let retry = r.header("x-should-retry").map(str::to_string);
        let error = if r.status == 200 { String::new() } else { r.error() };
        Answer { what, status: r.status, retry, at: started.elapsed(), id, error }
    };
    let (answers, killed_at) = std::thread::scope(|s| {
        let load: Vec<_> = [("full", 400u64), ("simple", 500), ("list", 100)]
            .into_iter()
            .map(|(what, every_ms)| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut i = 0;
                    while started.elapsed() < load_for {
                        out.push(ask(what, nodes[i % 2]));
                        i += 1;
                        std::thread::sleep(Duration::from_millis(every_ms));
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(4));
        let leader = f.etcd.leader();
        let killed_at = started.elapsed();
        f.etcd.kill(leader);
        let answers: Vec<Answer> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (answers, killed_at)
    });
    let mut unavailable = 0;
    for a in answers.iter().filter(|a| a.status != 200) {
        eprintln!("{} {} at {:?}: {}", a.what, a.status, a.at, a.error);
    }
    for a in &answers {
        match (a.what, a.status) {
            (_, 200) | ("full", 409) => {}
            (_, 503) => {
                unavailable += 1;
                assert_eq!(a.retry.as_deref(), Some("true"), "a 503 says retry");
                assert!(
                    a.at >= killed_at && a.at < killed_at + Duration::from_secs(10),
                    "503 at {:?}, the leader killed at {killed_at:?}",
                    a.at
                );
            }
            (what, status) => panic!("{what}: {status} at {:?}: {}", a.at, a.error),
        }
    }
    let fulls: Vec<&String> = answers.iter().filter(|a| a.what == "full").filter_map(|a| a.id.as_ref()).collect();
    assert_eq!(fulls.len(), 1, "one full capture for the account, whichever node was asked");
    let simples: Vec<&String> = answers.iter().filter(|a| a.what == "simple").filter_map(|a| a.id.as_ref()).collect();
    assert!(simples.len() >= 15, "simple captures kept being created: {}", simples.len());
    assert!(answers.iter().filter(|a| a.what == "list" && a.status == 200).count() >= 80);
    eprintln!("{} answers, {unavailable} of them 503 (retry)", answers.len());
    // No record lost: every created capture on both nodes, each simple one finished.
    for id in simples.iter().chain(&fulls) {
        for a in nodes {
            let r = get(a, &format!("/pcaps/{id}"));
            assert_eq!(r.status, 200, "{id} on {}: {}", a.base, r.error());
        }
    }
    for id in &simples {
        let c = wait_status(&n2, id, &["success", "failed"], Duration::from_secs(30));
        assert_eq!(c["status"], "success", "{c}");
    }
    let full_id = fulls[0].clone();
    let listed = get(&n2, "/pcaps").json()["result"].clone();
    let running_fulls = listed.as_array().unwrap().iter().filter(|c| c["type"] == "full").count();
    assert_eq!(running_fulls, 1, "{listed}");

    // A second member killed: no quorum. Creates and stops: 503 retry, within the deadline.
    let second = (0..3).find(|&i| f.etcd.members[i].try_wait().unwrap().is_none()).unwrap();
    f.etcd.kill(second);
    for a in nodes {
        let t = Instant::now();
        let r = post(a, "/pcaps", &json!({"system":"magic-transit","type":"simple","time_limit":60,"packet_limit":5}));
        assert_eq!(r.status, 503, "{}", r.error());
        assert_eq!(r.header("x-should-retry"), Some("true"));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let (k, v) = auth();
        let r = call("PUT", &a.url(&format!("/pcaps/{full_id}/stop")), &[(k, &v)], None);
        assert_eq!(r.status, 503, "{}", r.error());
        assert_eq!(r.header("x-should-retry"), Some("true"));
        // Reads still answer: the capture, from the remaining member's copy.
        let r = get(a, &format!("/pcaps/{full_id}"));
        assert_eq!(r.status, 200, "{}", r.error());
        assert_eq!(r.json()["result"]["status"], "running");
        assert_eq!(get(a, "/pcaps").status, 200);
    }
}

/// Unary etcd requests served so far by all members (their /metrics).
fn etcd_requests(etcd: &Etcd) -> f64 {
    etcd.endpoints
        .iter()
        .map(|e| {
            let text = String::from_utf8(call("GET", &format!("{e}/metrics"), &[], None).body).unwrap();
            text.lines()
                .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("grpc_type=\"unary\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// etcd requests per second over `secs`.
fn etcd_rate(etcd: &Etcd, secs: u64) -> f64 {
    let before = etcd_requests(etcd);
    std::thread::sleep(Duration::from_secs(secs));
    (etcd_requests(etcd) - before) / secs as f64
}

/// Issue 15 in a fleet: a full capture's count grows every second on any node while it runs
/// (each part publishes its count; the etcd requests it costs are measured), any node lists
/// every node's files, and any node downloads the objects of all nodes as ONE merged pcap that
/// is mergecap's merge of them.
#[test]
fn a_fleet_capture_counts_live_lists_every_nodes_files_and_downloads_merged_from_any_node() {
    let f = Fleet::new("fm");
    let more = format!("{}\n[writer]\nrotate_bytes = 400000\n", s3(&f.m));
    let node = |name: &str, colo: &str| {
        let (config, data, port) =
            node_config_with(f.tmp.path(), name, &[colo], &f.etcd.endpoints, Some(&f.veth.rx), &more);
        Appliance::start_config_held(config, &data, port, &f.lock)
    };
    let (n1, n2) = (node("n1", "ord01"), node("n2", "ord02"));
    for a in [&n1, &n2] {
        wait_for(Duration::from_secs(5), "2 live nodes", || metric(&a.base, "pcapd_fleet_live_nodes") == Some(2.0));
    }
    f.own(&n1, &n2, "live");
    let idle = etcd_rate(&f.etcd, 5);
    let _traffic = Traffic(f.veth.replay_bg(&f.input, 2_000, 1_000_000));
    let r = post(&n1, "/pcaps", &full("ORD", "live", 120, json!({})));
    assert_eq!(r.status, 200, "{}", r.error());
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();

    let mut counts = Vec::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(1000));
        let c = get(&n2, &format!("/pcaps/{id}")).json()["result"].clone();
        assert_eq!(c["status"], "running", "{c}");
        counts.push(c["packets_captured"].as_u64().unwrap());
    }
    println!("packets_captured on n2 once a second: {counts:?}");
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "the count grows every second: {counts:?}");
    let running = etcd_rate(&f.etcd, 5);
    let per_part = (running - idle) / 2.0;
    println!(
        "etcd requests/s: idle fleet {idle:.1}, one capture running on 2 nodes {running:.1}: {per_part:.1} per part"
    );
    assert!(per_part < 20.0, "a running part costs {per_part:.1} etcd requests/s");

    // Every node's files, asked on either node, while it runs.
    let files = get(&n2, &format!("/pcaps/{id}/files")).json()["result"].clone();
    let nodes: std::collections::BTreeSet<&str> =
        files.as_array().unwrap().iter().map(|f| f["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["n1", "n2"], "{files}");

    let (k, v) = auth();
    assert_eq!(call("PUT", &n2.url(&format!("/pcaps/{id}/stop")), &[(k, &v)], None).status, 200);
    let done = wait_status(&n1, &id, &["success", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    let total = done["packets_captured"].as_u64().unwrap();

    let prefix = format!("live/{id}/");
    let mut keys: Vec<String> = f.m.list(BUCKET, &prefix).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    let v = get(&n1, &format!("/pcaps/{id}/files")).json();
    assert_eq!(v["messages"], json!([]), "every node answered");
    let files = v["result"].as_array().unwrap().clone();
    let mut listed: Vec<String> = files.iter().map(|f| f["key"].as_str().unwrap().to_string()).collect();
    listed.sort();
    assert_eq!(listed, keys, "one entry per object of either node");
    let mut objs = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let obj = f.tmp.path().join(format!("fobj{i}.pcap"));
        f.m.get(BUCKET, k, &obj);
        let e = files.iter().find(|e| e["key"] == k.as_str()).unwrap();
        assert_eq!(e["state"], "uploaded");
        assert_eq!(e["packets"].as_u64().unwrap(), read_pcap(&obj).len() as u64, "{k}");
        objs.push(obj);
    }
    assert!(keys.iter().any(|k| k.contains("/n1-")) && keys.iter().any(|k| k.contains("/n2-")), "{keys:?}");

    // ONE pcap from n2, merged from both nodes' objects: mergecap's merge.
    let r = get(&n2, &format!("/pcaps/{id}/download"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let merged = f.tmp.path().join("merged.pcap");
    std::fs::write(&merged, &r.body).unwrap();
    let oracle = f.tmp.path().join("mergecap.pcap");
    let st = std::process::Command::new("mergecap").args(["-F", "nsecpcap", "-w"]).arg(&oracle).args(&objs).status();
    assert!(st.unwrap().success());
    let (got, want) = (read_pcap(&merged), read_pcap(&oracle));
    assert_eq!(got.len() as u64, total);
    assert_eq!(got.iter().map(|p| p.ts_ns).collect::<Vec<_>>(), want.iter().map(|p| p.ts_ns).collect::<Vec<_>>());
    let (mut g, mut w) = (got.clone(), want.clone());
    g.sort();
    w.sort();
    assert_eq!(g, w, "the same packets as mergecap's merge of both nodes' objects");
}
