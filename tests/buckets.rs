//! Full captures to buckets, end to end: `pcapd run` replaying a file forever through net_pcap,
//! a real S3 server (moto, SigV4 checked), objects read back with boto3 and compared with the
//! replayed input (tcpdump as the filter oracle).
mod common;

use common::appliance::*;
use common::moto::Moto;
use common::veth::Veth;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AUTH: (&str, &str) = ("Authorization", "Bearer test-write-token");
const BUCKET: &str = "pcaps";

fn s3_extra(m: &Moto, rotate_bytes: u64, timeout_secs: u64) -> String {
    format!(
        r#"
[node]
name = "lab1"
colos = ["sfo", "lhr"]

[writer]
rotate_bytes = {rotate_bytes}

[upload]
multipart_threshold = 5242880
part_size = 5242880
retry_initial_ms = 200
retry_max_ms = 2000
request_timeout_secs = {timeout_secs}

[upload.s3]
endpoint = "{}"
access_key_id = "{}"
secret_access_key = "{}"
"#,
        m.endpoint, m.access, m.secret
    )
}

fn post(app: &Appliance, path: &str, body: &Value) -> Resp {
    call("POST", &app.url(path), &[AUTH, ("Content-Type", "application/json")], Some(body.to_string().as_bytes()))
}

fn dest(dir: &str) -> String {
    format!("s3://{BUCKET}/{dir}?region=us-east-1")
}

/// Registers and validates `destination_conf` the way a user does: read the challenge file.
fn own(app: &Appliance, m: &Moto, bucket: &str, destination_conf: &str, dir: &str, tmp: &Path) -> Value {
    let r = post(app, "/pcaps/ownership", &json!({ "destination_conf": destination_conf }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let o = r.json()["result"].clone();
    assert_eq!(o["status"], "pending");
    assert_eq!(o["validated"], "");
    let file = tmp.join("challenge.txt");
    let key = if dir.is_empty() {
        o["filename"].as_str().unwrap().to_string()
    } else {
        format!("{dir}/{}", o["filename"].as_str().unwrap())
    };
    m.get(bucket, &key, &file);
    let token = std::fs::read_to_string(&file).unwrap();
    let r = post(
        app,
        "/pcaps/ownership/validate",
        &json!({ "destination_conf": destination_conf, "ownership_challenge": token }),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["result"].clone()
}

fn full(filter: Value, limits: Value, destination_conf: &str) -> Value {
    let mut b = json!({"system": "magic-transit", "type": "full", "time_limit": 300, "colo_name": "sfo",
                       "destination_conf": destination_conf, "filter_v1": filter});
    for (k, v) in limits.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn wait_status(app: &Appliance, id: &str, want: &[&str], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = call("GET", &app.url(&format!("/pcaps/{id}")), &[AUTH], None).json()["result"].clone();
        if want.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "capture {id} is {v} after {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The capture's objects, in part order, read back and concatenated.
fn bucket_packets(m: &Moto, bucket: &str, prefix: &str, tmp: &Path) -> (Vec<String>, Vec<Pkt>) {
    let mut keys: Vec<String> = m.list(bucket, prefix).into_iter().map(|(k, _)| k).collect();
    let seq = |k: &str| -> u32 {
        k.split('/').rev().nth(1).and_then(|p| p.rsplit('-').next()).and_then(|s| s.parse().ok()).unwrap()
    };
    keys.sort_by_key(|k| seq(k));
    let mut pkts = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let f = tmp.join(format!("obj{i}.pcap"));
        m.get(bucket, k, &f);
        pkts.extend(read_pcap(&f));
    }
    (keys, pkts)
}

/// `got` must follow the endless replay of `cycle`: every packet one that was sent, in the order
/// sent, none twice. Packets the kernel dropped before pcapd saw them (a veth socket buffer
/// overflows when a busy test machine descheduled the RX core) are allowed as gaps, and counted.
fn assert_in_replay_order(got: &[Vec<u8>], cycle: &[Vec<u8>]) {
    assert!(!got.is_empty() && !cycle.is_empty());
    let n = cycle.len();
    let start = cycle.iter().position(|c| *c == got[0]).expect("the first packet is one that was sent");
    let (mut at, mut skipped) = (start, 0usize);
    for (i, g) in got.iter().enumerate().skip(1) {
        // The next occurrence of `g` after `at`, within one lap of the replay.
        let step = (1..=n).find(|d| cycle[(at + d) % n] == *g);
        let Some(step) = step else {
            panic!("packet {i} of {} is not one the replay sent after packet {}", got.len(), i - 1)
        };
        skipped += step - 1;
        at = (at + step) % n;
    }
    println!("{} packets in replay order, {skipped} not seen (dropped before pcapd)", got.len());
    assert!(skipped <= got.len(), "more packets missing ({skipped}) than captured ({})", got.len());
}

/// What a live-traffic test starts from: a temp dir, moto with the bucket, a veth pair, the
/// frames to send (`cycle`: their bytes, as an endless replay repeats them) and a data dir path.
struct Rig {
    tmp: tempfile::TempDir,
    m: Moto,
    veth: Veth,
    input: PathBuf,
    cycle: Vec<Vec<u8>>,
    data: PathBuf,
}

impl Rig {
    fn new(veth: &str) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let m = Moto::start(&[BUCKET]);
        let veth = Veth::new(veth);
        let input = sendable(tmp.path());
        let cycle = datas(&read_pcap(&input));
        let data = tmp.path().join("data");
        Rig { tmp, m, veth, input, cycle, data }
    }
}

/// An appliance receiving from `veth` and uploading to `m`, writer files rotated at `rotate_bytes`.
fn live_appliance(m: &Moto, veth: &Veth, input: &Path, data: &Path, rotate_bytes: u64) -> Appliance {
    let extra = s3_extra(m, rotate_bytes, 10);
    Appliance::start(&Opts {
        source: input,
        one_in: 100,
        simple_interval: 0,
        data,
        infinite: false,
        iface: Some(&veth.rx),
        extra: &extra,
    })
}

/// The fixture's frames a veth can carry (all but the 10-byte runt).
fn sendable(tmp: &Path) -> PathBuf {
    let out = tmp.join("sendable.cap");
    let st = std::process::Command::new("tcpdump")
        .arg("-r")
        .arg(fixture("frames.pcap"))
        .arg("-w")
        .arg(&out)
        .arg("len >= 14")
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn no_spool_left(data: &Path, id: &str) {
    let spool = data.join("spool").join(id);
    let left: Vec<PathBuf> =
        std::fs::read_dir(&spool).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "spool files left: {left:?}");
}

#[test]
fn ownership_then_full_captures_land_in_the_bucket() {
    let Rig { tmp, m, veth, input, cycle, data } = Rig::new("a");
    let app = live_appliance(&m, &veth, &input, &data, 6_000_000);
    let d = dest("site1");

    // Refused before validation; wrong colo; bad destinations.
    let r = post(&app, "/pcaps", &full(json!({}), json!({"packet_limit": 10}), &d));
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no validated ownership"), "{}", r.error());
    let mut wrong_colo = full(json!({}), json!({}), &d);
    wrong_colo["colo_name"] = json!("ams");
    let r = post(&app, "/pcaps", &wrong_colo);
    assert_eq!((r.status, r.error().contains("colo_name: \"ams\" is not served")), (400, true));
    for (bad, msg) in [
        ("ftp://pcaps/x", "is not s3://"),
        ("s3://key:secret@pcaps/x", "credentials"),
        ("s3://no-such-bucket/x?region=us-east-1", "cannot write the ownership challenge to this destination"),
    ] {
        let r = post(&app, "/pcaps/ownership", &json!({ "destination_conf": bad }));
        assert_eq!(r.status, 400, "{bad}");
        let e = r.error();
        assert!(e.contains(msg), "{bad}: {e}");
    }

    // Ownership: the challenge file is in the bucket; a wrong answer keeps it pending.
    let r = post(&app, "/pcaps/ownership", &json!({ "destination_conf": d }));
    let o = r.json()["result"].clone();
    let keys: Vec<String> = m.list(BUCKET, "site1/").into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&format!("site1/{}", o["filename"].as_str().unwrap())), "{keys:?}");
    let r = post(&app, "/pcaps/ownership/validate", &json!({"destination_conf": d, "ownership_challenge": "not-it"}));
    assert_eq!(r.status, 400);
    assert!(r.error().contains("ownership_challenge: does not match"));
    let listed = call("GET", &app.url("/pcaps/ownership"), &[AUTH], None).json()["result"].clone();
    assert_eq!(listed[0]["status"], "pending");
    let v = own(&app, &m, BUCKET, &d, "site1", tmp.path());
    assert_eq!(v["status"], "success");
    assert!(v["validated"].as_str().unwrap().ends_with('Z'));

    // Everything, up to 12 MB: rotated at 6 MB, uploaded in 5 MiB parts.
    let r = post(&app, "/pcaps", &full(json!({}), json!({"byte_limit": 12_000_000}), &d));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["result"]["status"], "running");
    // ~40 kB a pass: 400 passes are 16 MB, more than the limit.
    veth.replay(&input, 20_000, 400);
    let done = wait_status(&app, &id, &["success", "failed"], 120);
    assert_eq!(done["status"], "success", "{done}");
    let (keys, pkts) = bucket_packets(&m, BUCKET, &format!("site1/{id}/"), tmp.path());
    assert!(keys.len() >= 2, "rotation made several parts: {keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with(&format!("site1/{id}/lab1-")) && k.ends_with(&format!("/pcap_{id}.pcap"))),
        "{keys:?}"
    );
    assert_eq!(done["packets_captured"], pkts.len());
    let bytes: usize = pkts.iter().map(|p| p.data.len()).sum();
    assert!(bytes <= 12_000_000, "byte_limit is a hard limit");
    assert!(bytes > 12_000_000 - 9_100, "byte_limit is reached (the next packet would not fit): {bytes}");
    assert!(pkts.iter().all(|p| p.data.len() as u32 == p.orig_len), "whole packets");
    assert_in_replay_order(&datas(&pkts), &cycle);
    no_spool_left(&data, &id);

    // A filter: the objects, merged, are exactly what tcpdump selects from what was sent.
    let oracle = datas(&tcpdump(
        &input,
        "(ip[0] >= 0x45 and ip[0] <= 0x4f and ip proto 17) or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17))))",
        tmp.path(),
    ));
    let r = post(&app, "/pcaps", &full(json!({"protocol": 17}), json!({"packet_limit": oracle.len()}), &d));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    veth.replay(&input, 5_000, 1);
    assert_eq!(wait_status(&app, &id, &["success", "failed"], 60)["status"], "success");
    let (keys, pkts) = bucket_packets(&m, BUCKET, &format!("site1/{id}/"), tmp.path());
    assert_eq!(datas(&pkts), oracle, "byte for byte, in order");
    let merged = tmp.path().join("merged.pcap");
    let files: Vec<PathBuf> = (0..keys.len()).map(|i| tmp.path().join(format!("obj{i}.pcap"))).collect();
    assert!(std::process::Command::new("mergecap")
        .args(["-F", "pcap", "-w"])
        .arg(&merged)
        .args(&files)
        .status()
        .unwrap()
        .success());
    assert_eq!(datas(&read_pcap(&merged)), oracle, "mergecap agrees");
    assert_eq!(m.multipart_uploads(BUCKET), 0, "no multipart upload left open");

    // Forget the bucket: full captures to it are refused again.
    let r = call(
        "DELETE",
        &app.url(&format!("/pcaps/ownership/{}", v["id"].as_str().unwrap())),
        &[AUTH, ("Content-Type", "application/json")],
        None,
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = call("DELETE", &app.url(&format!("/pcaps/ownership/{}", v["id"].as_str().unwrap())), &[AUTH], None);
    assert_eq!(r.status, 404);
    let r = post(&app, "/pcaps", &full(json!({}), json!({"packet_limit": 10}), &d));
    assert_eq!(r.status, 400);
}

#[test]
fn stop_conflict_and_the_python_sdk() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Moto::start(&[BUCKET]);
    let input = small_frames(tmp.path());
    let data = tmp.path().join("data");
    let extra = s3_extra(&m, 100_000_000, 10);
    let app = Appliance::start(&Opts {
        source: &input,
        one_in: 100,
        simple_interval: 0,
        data: &data,
        infinite: true,
        iface: None,
        extra: &extra,
    });
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/sdk/sdk_full.py"))
        .arg(format!("{}/client/v4", app.base))
        .args([ACCOUNT, TOKEN, &m.endpoint, &m.access, &m.secret, BUCKET])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["conflict"][0], 409);
    assert_eq!(summary["conflict"][1], "false");
    let id = summary["id"].as_str().unwrap();
    let done = wait_status(&app, id, &["success", "failed"], 60);
    assert_eq!(done["status"], "success", "{done}");
    assert!(done["stop_requested"].as_str().unwrap().ends_with('Z'));
    // It stopped long before its 300 s: every packet it wrote is in the bucket.
    let (_, pkts) = bucket_packets(&m, BUCKET, &format!("sdk/{id}/"), tmp.path());
    assert_eq!(done["packets_captured"], pkts.len());
    assert!(!pkts.is_empty());
}

#[test]
fn faults_wrong_credentials_kill_and_an_unreachable_store() {
    let Rig { tmp, m, veth, input, cycle, data } = Rig::new("f");
    let d = dest("faults");
    let good = s3_extra(&m, 4_000_000, 2);
    let opts = Opts {
        source: &input,
        one_in: 100,
        simple_interval: 0,
        data: &data,
        infinite: false,
        iface: Some(&veth.rx),
        extra: &good,
    };
    // Traffic all along: 3,000 packets/s for the whole test.
    let mut sender = veth.replay_bg(&input, 3_000, 100_000);
    let port = free_port();
    let config = write_config(&opts, port);

    // SIGKILL mid-capture, then restart: what was written before the kill reaches the bucket.
    let mut app = Appliance::start_config(config.clone(), &data, port);
    own(&app, &m, BUCKET, &d, "faults", tmp.path());
    let r = post(&app, "/pcaps", &full(json!({}), json!({}), &d));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    app.kill();
    drop(app);
    let app = Appliance::start_config(config.clone(), &data, port);
    let done = wait_status(&app, &id, &["success", "failed"], 120);
    assert_eq!(done["status"], "success", "{done}");
    let (_, pkts) = bucket_packets(&m, BUCKET, &format!("faults/{id}/"), tmp.path());
    assert!(pkts.len() > 1000, "a second and a half at 3,000 packets/s: {}", pkts.len());
    assert_eq!(done["packets_captured"], pkts.len());
    assert_in_replay_order(&datas(&pkts), &cycle);
    no_spool_left(&data, &id);
    assert!(files_ending(&data.join("spool"), ".partial").is_empty());
    assert_eq!(m.multipart_uploads(BUCKET), 0);

    // The store unreachable (frozen) for 30 s while the capture uploads: retried, then success.
    let r = post(&app, "/pcaps", &full(json!({"protocol": 17}), json!({"packet_limit": 2000}), &d));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    m.freeze();
    let pending = wait_status(&app, &id, &["conversion_pending", "failed", "success"], 30);
    assert_eq!(pending["status"], "conversion_pending", "{pending}");
    std::thread::sleep(Duration::from_secs(30));
    let still = call("GET", &app.url(&format!("/pcaps/{id}")), &[AUTH], None).json()["result"].clone();
    assert_eq!(still["status"], "conversion_pending", "nothing is lost or given up while the store is away");
    m.thaw();
    let done = wait_status(&app, &id, &["success", "failed"], 60);
    assert_eq!(done["status"], "success", "{done}");
    let (_, pkts) = bucket_packets(&m, BUCKET, &format!("faults/{id}/"), tmp.path());
    assert_eq!(pkts.len(), 2000);
    let metrics = String::from_utf8(call("GET", &format!("{}/metrics", app.base), &[], None).body).unwrap();
    let retries: u64 = metrics
        .lines()
        .find(|l| l.starts_with("pcapd_upload_retries_total"))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries > 0, "{metrics}");
    drop(app);

    // Wrong credentials: the capture fails with the store's reason.
    let bad = good.replace(&m.secret, "not-the-secret");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace(&good, &bad)).unwrap();
    let app = Appliance::start_config(config, &data, port);
    let r = post(&app, "/pcaps", &full(json!({}), json!({"packet_limit": 50}), &d));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let done = wait_status(&app, &id, &["success", "failed"], 60);
    assert_eq!(done["status"], "failed");
    let msg = done["error_message"].as_str().unwrap();
    assert!(
        msg.contains("SignatureDoesNotMatch") || msg.contains("AccessDenied") || msg.contains("Forbidden"),
        "{msg}"
    );
    let _ = sender.kill();
    let _ = sender.wait();
}

#[test]
fn gcs_destinations_through_object_stores_gcs_client() {
    let tmp = tempfile::tempdir().unwrap();
    // moto answers the GCS XML API; it cannot check Google's bearer tokens, so no auth here.
    // (object_store percent-encodes every "-" of a GCS path, which moto does not decode.)
    let m = Moto::start_no_auth(&["pcapsgcs"]);
    std::env::set_var("PCAPD_TEST_GCS_TOKEN", "test-bearer-token");
    let input = small_frames(tmp.path());
    let cycle = datas(&read_pcap(&input));
    let data = tmp.path().join("data");
    let extra = format!(
        "[node]\nname = \"lab1\"\ncolos = [\"sfo\"]\n\n[upload.gcs]\nbase_url = \"{}\"\nbearer_token_env = \"PCAPD_TEST_GCS_TOKEN\"\n",
        m.endpoint
    );
    let app = Appliance::start(&Opts {
        source: &input,
        one_in: 100,
        simple_interval: 0,
        data: &data,
        infinite: true,
        iface: None,
        extra: &extra,
    });
    let d = "gs://pcapsgcs/gdir";
    let v = own(&app, &m, "pcapsgcs", d, "gdir", tmp.path());
    assert_eq!(v["status"], "success");
    let r = post(&app, "/pcaps", &full(json!({}), json!({"packet_limit": 100}), d));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_status(&app, &id, &["success", "failed"], 60)["status"], "success");
    let (_, pkts) = bucket_packets(&m, "pcapsgcs", &format!("gdir/{id}/"), tmp.path());
    assert_eq!(pkts.len(), 100);
    assert_in_replay_order(&datas(&pkts), &cycle);
}

/// Regression: a full capture that hit ENOSPC ended `failed` and discarded its spool although
/// thousands of packets had been written. Now what reached the disk (cut to whole records) goes
/// to the bucket, `packets_captured` says how many, and the capture fails saying so; nothing
/// else is affected.
#[test]
fn a_full_capture_that_hits_enospc_uploads_what_was_written() {
    let Rig { tmp, m, veth, input, cycle, data } = Rig::new("d");
    // The data directory on a 24 MiB tmpfs: a full capture of everything fills it.
    let Some(_tmpfs) = Tmpfs::mount(&data, "24m") else { return };
    let app = live_appliance(&m, &veth, &input, &data, 100_000_000);
    let d = dest("full");
    own(&app, &m, BUCKET, &d, "full", tmp.path());
    let r = post(&app, "/pcaps", &full(json!({}), json!({}), &d));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    // ~40 MB of traffic into 24 MiB of disk.
    veth.replay(&input, 20_000, 1_000);
    let done = wait_status(&app, &id, &["failed", "success"], 60);
    assert_eq!(done["status"], "failed", "{done}");
    let msg = done["error_message"].as_str().unwrap();
    // It stops at the headroom the appliance keeps (or at a true ENOSPC).
    assert!(msg.contains("kept free for the appliance") || msg.contains("No space left on device"), "{msg}");
    let (_, pkts) = bucket_packets(&m, BUCKET, &format!("full/{id}/"), tmp.path());
    assert!(pkts.len() > 1000, "what was written before the disk filled is in the bucket: {}", pkts.len());
    assert_eq!(done["packets_captured"], pkts.len(), "{done}");
    assert!(msg.contains(&format!("those {} packets are uploaded to the bucket", pkts.len())), "{msg}");
    // Whole, real packets (the cut is at a record boundary). Not checked for contiguity: at
    // 20,000 packets/s a busy machine may drop some in the kernel or in a full ring (counted).
    let frames: std::collections::HashSet<&Vec<u8>> = cycle.iter().collect();
    assert!(datas(&pkts).iter().all(|p| frames.contains(p)), "a packet in the bucket is not one that was sent");
    no_spool_left(&data, &id);
    // The API and the other kinds of capture keep working, and the space is given back.
    let r = call(
        "POST",
        &app.url("/pcaps"),
        &[AUTH],
        Some(
            json!({"system":"magic-transit","type":"simple","time_limit":60,"packet_limit":10}).to_string().as_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sid = r.json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_status(&app, &sid, &["success", "failed"], 30)["status"], "success");
    let r = post(&app, "/pcaps", &full(json!({}), json!({"packet_limit": 20}), &d));
    assert_eq!(r.status, 200, "a new full capture may start: {}", String::from_utf8_lossy(&r.body));
    let id2 = r.json()["result"]["id"].as_str().unwrap().to_string();
    veth.replay(&input, 5_000, 1);
    assert_eq!(wait_status(&app, &id2, &["success", "failed"], 60)["status"], "success");
}

/// A call as the other account (B).
fn call_other(app: &Appliance, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let url = format!("{}/client/v4/accounts/{OTHER_ACCOUNT}{path}", app.base);
    let body = body.map(|b| b.to_string().into_bytes());
    call(
        method,
        &url,
        &[("Authorization", &bearer(OTHER_TOKEN)), ("Content-Type", "application/json")],
        body.as_deref(),
    )
}

fn post_other(app: &Appliance, path: &str, body: &Value) -> Resp {
    call_other(app, "POST", path, Some(body))
}

/// Account B registers and validates its own destination (`<dir>/` of the bucket).
fn own_other(app: &Appliance, m: &Moto, destination_conf: &str, dir: &str, tmp: &Path) {
    let o =
        post_other(app, "/pcaps/ownership", &json!({ "destination_conf": destination_conf })).json()["result"].clone();
    let file = tmp.join("b.txt");
    m.get(BUCKET, &format!("{dir}/{}", o["filename"].as_str().unwrap()), &file);
    let r = post_other(
        app,
        "/pcaps/ownership/validate",
        &json!({"destination_conf": destination_conf, "ownership_challenge": std::fs::read_to_string(&file).unwrap()}),
    );
    assert_eq!(r.status, 200);
}

/// UDP anywhere the filter looks (IPv4, IPv6 with extension headers, up to two VLAN tags).
const TCPDUMP_UDP: &str = "(ip[0] >= 0x45 and ip[0] <= 0x4f and ip proto 17) or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17 or (vlan and (ip proto 17 or ip6 protochain 17))))";
const TCPDUMP_TCP: &str = "(ip[0] >= 0x45 and ip[0] <= 0x4f and ip proto 6) or ip6 protochain 6 or (vlan and (ip proto 6 or ip6 protochain 6 or (vlan and (ip proto 6 or ip6 protochain 6))))";

#[test]
fn two_accounts_capture_at_once_each_gets_only_its_packets() {
    let Rig { tmp, m, veth, input, data, .. } = Rig::new("t");
    let app = live_appliance(&m, &veth, &input, &data, 100_000_000);
    let (da, db) = (dest("acct-a"), dest("acct-b"));
    own(&app, &m, BUCKET, &da, "acct-a", tmp.path());
    own_other(&app, &m, &db, "acct-b", tmp.path());
    // A's validation does not let B use A's bucket.
    let r = post_other(&app, "/pcaps", &full(json!({}), json!({"packet_limit": 5}), &da));
    assert_eq!(r.status, 400);

    let udp = datas(&tcpdump(&input, TCPDUMP_UDP, tmp.path()));
    let v6 = datas(&tcpdump(&input, "ip6 src host 2001:db8::1 or (vlan and ip6 src host 2001:db8::1)", tmp.path()));
    let ra = post(&app, "/pcaps", &full(json!({"protocol": 17}), json!({"packet_limit": udp.len()}), &da));
    let rb = post_other(
        &app,
        "/pcaps",
        &full(json!({"source_address": "2001:db8::1"}), json!({"packet_limit": v6.len()}), &db),
    );
    assert_eq!(
        (ra.status, rb.status),
        (200, 200),
        "{} {}",
        String::from_utf8_lossy(&ra.body),
        String::from_utf8_lossy(&rb.body)
    );
    let (ida, idb) = (
        ra.json()["result"]["id"].as_str().unwrap().to_string(),
        rb.json()["result"]["id"].as_str().unwrap().to_string(),
    );
    veth.replay(&input, 5_000, 1);
    assert_eq!(wait_status(&app, &ida, &["success", "failed"], 60)["status"], "success");
    let url_b = format!("{}/client/v4/accounts/{OTHER_ACCOUNT}/pcaps/{idb}", app.base);
    let deadline = Instant::now() + Duration::from_secs(60);
    while call("GET", &url_b, &[("Authorization", &bearer(OTHER_TOKEN))], None).json()["result"]["status"] != "success"
    {
        assert!(Instant::now() < deadline, "B's capture did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(datas(&bucket_packets(&m, BUCKET, &format!("acct-a/{ida}/"), tmp.path()).1), udp);
    assert_eq!(datas(&bucket_packets(&m, BUCKET, &format!("acct-b/{idb}/"), tmp.path()).1), v6);
    // Neither account sees the other's capture.
    assert_eq!(call("GET", &app.url(&format!("/pcaps/{idb}")), &[AUTH], None).status, 404);
}

/// Stress for the cross-account write (a full capture's slot was freed before the RX cores left
/// it, so the next capture, of another account, could get its packets): two accounts start and
/// stop full captures with disjoint filters over and over on live traffic, each start right
/// after the other account's stop; every object in each account's prefix holds only packets
/// its filter selects, as tcpdump decides.
#[test]
fn two_accounts_starting_and_stopping_full_captures_never_share_packets() {
    let Rig { tmp, m, veth, input, data, .. } = Rig::new("s");
    let app = live_appliance(&m, &veth, &input, &data, 100_000_000);
    let (da, db) = (dest("stress-a"), dest("stress-b"));
    own(&app, &m, BUCKET, &da, "stress-a", tmp.path());
    own_other(&app, &m, &db, "stress-b", tmp.path());
    let udp: std::collections::HashSet<Vec<u8>> =
        datas(&tcpdump(&input, TCPDUMP_UDP, tmp.path())).into_iter().collect();
    let tcp: std::collections::HashSet<Vec<u8>> =
        datas(&tcpdump(&input, TCPDUMP_TCP, tmp.path())).into_iter().collect();
    assert!(!udp.is_empty() && !tcp.is_empty() && udp.is_disjoint(&tcp));

    let mut sender = veth.replay_bg(&input, 4_000, 100_000);
    // Start, retrying while the account's previous capture is still closing (409).
    let start = |as_b: bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = if as_b {
                post_other(&app, "/pcaps", &full(json!({"protocol": 6}), json!({}), &db))
            } else {
                post(&app, "/pcaps", &full(json!({"protocol": 17}), json!({}), &da))
            };
            if r.status == 200 {
                return r.json()["result"]["id"].as_str().unwrap().to_string();
            }
            assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
            assert!(Instant::now() < deadline, "the account's previous capture did not close");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let stop = |id: &str, as_b: bool| {
        let path = format!("/pcaps/{id}/stop");
        let r = if as_b { call_other(&app, "PUT", &path, None) } else { call("PUT", &app.url(&path), &[AUTH], None) };
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    let (mut ids_a, mut ids_b) = (Vec::new(), Vec::new());
    ids_a.push(start(false));
    for round in 0..12u64 {
        std::thread::sleep(Duration::from_millis(40 + round * 17 % 150));
        ids_b.push(start(true));
        stop(ids_a.last().unwrap(), false);
        ids_a.push(start(false));
        std::thread::sleep(Duration::from_millis(30 + round * 29 % 120));
        stop(ids_b.last().unwrap(), true);
    }
    stop(ids_a.last().unwrap(), false);
    let _ = sender.kill();
    let _ = sender.wait();

    let status_of = |id: &str, as_b: bool| -> Value {
        let r = if as_b {
            call_other(&app, "GET", &format!("/pcaps/{id}"), None)
        } else {
            call("GET", &app.url(&format!("/pcaps/{id}")), &[AUTH], None)
        };
        r.json()["result"].clone()
    };
    let (mut total_a, mut total_b) = (0, 0);
    for (ids, as_b, dir, want) in [(&ids_a, false, "stress-a", &udp), (&ids_b, true, "stress-b", &tcp)] {
        for id in ids {
            let deadline = Instant::now() + Duration::from_secs(60);
            let done = loop {
                let v = status_of(id, as_b);
                if v["status"] == "success" || v["status"] == "failed" {
                    break v;
                }
                assert!(Instant::now() < deadline, "capture {id} is {v}");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert_eq!(done["status"], "success", "{done}");
            let (_, pkts) = bucket_packets(&m, BUCKET, &format!("{dir}/{id}/"), tmp.path());
            assert_eq!(done["packets_captured"], pkts.len(), "{done}");
            for p in datas(&pkts) {
                assert!(want.contains(&p), "{dir}/{id} holds a packet its filter does not select: {p:02x?}");
            }
            *(if as_b { &mut total_b } else { &mut total_a }) += pkts.len();
        }
    }
    assert!(total_a > 0 && total_b > 0, "both accounts captured something: {total_a} {total_b}");
    // No record ever outlived its capture's lease: the slots were reused only after the closes.
    let metrics = String::from_utf8(call("GET", &format!("{}/metrics", app.base), &[], None).body).unwrap();
    let stray: Vec<&str> = metrics.lines().filter(|l| l.starts_with("pcapd_writer_stray_records_total{")).collect();
    assert!(!stray.is_empty() && stray.iter().all(|l| l.ends_with(" 0")), "{stray:?}");
}

/// Regression: a failed challenge write quoted the store ("NoSuchBucket", "AccessDenied"), so
/// any account could probe which buckets exist and what the appliance's credentials reach.
#[test]
fn ownership_errors_do_not_tell_whether_a_bucket_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Moto::start(&[BUCKET]);
    let extra = s3_extra(&m, 6_000_000, 5);
    let data = tmp.path().join("data");
    let mut app = Appliance::start(&Opts {
        source: &fixture("frames.pcap"),
        one_in: 100,
        simple_interval: 0,
        data: &data,
        infinite: false,
        iface: None,
        extra: &extra,
    });
    let generic = "destination_conf: cannot write the ownership challenge to this destination";
    let r = post(&app, "/pcaps/ownership", &json!({ "destination_conf": "s3://no-such-bucket/x?region=us-east-1" }));
    assert_eq!((r.status, r.error().as_str()), (400, generic));
    // An existing bucket works (the refusal above is about that bucket, not the set-up).
    assert_eq!(post(&app, "/pcaps/ownership", &json!({ "destination_conf": dest("ok") })).status, 200);
    let (_, stderr) = app.stop();
    assert!(stderr.contains("NoSuchBucket"), "the detail belongs in the log:\n{stderr}");
}

/// A full capture with a tcpdump expression (JIT'd on the RX core, ANDed with filter_v1): its
/// objects hold exactly what tcpdump selects from the sent frames, in order. An expression
/// DPDK's converter refuses is a 400 naming the field, and nothing is stored.
#[test]
fn a_full_capture_with_filter_expression_keeps_what_tcpdump_keeps() {
    let Rig { tmp, m, veth, input, data, .. } = Rig::new("x");
    let app = live_appliance(&m, &veth, &input, &data, 100_000_000);
    let d = dest("expr");
    own(&app, &m, BUCKET, &d, "expr", tmp.path());
    let mut body = full(json!({}), json!({}), &d);
    body["filter_expression"] = json!("ip6 protochain 6");
    let r = post(&app, "/pcaps", &body);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().starts_with("filter_expression: "), "{}", r.error());
    assert_eq!(call("GET", &app.url("/pcaps"), &[AUTH], None).json()["result"], json!([]), "nothing stored");

    let expr = "tcp[tcpflags] & tcp-push != 0 or icmp[icmptype] == icmp-echo or greater 1000";
    let want = datas(&tcpdump(&input, expr, tmp.path()));
    assert!(!want.is_empty());
    let mut body = full(json!({}), json!({"packet_limit": want.len()}), &d);
    body["filter_expression"] = json!(expr);
    let r = post(&app, "/pcaps", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["result"]["filter_expression"], expr);
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    veth.replay(&input, 5_000, 1);
    assert_eq!(wait_status(&app, &id, &["success", "failed"], 60)["status"], "success");
    assert_eq!(datas(&bucket_packets(&m, BUCKET, &format!("expr/{id}/"), tmp.path()).1), want);
    let metrics = String::from_utf8(call("GET", &format!("{}/metrics", app.base), &[], None).body).unwrap();
    let loaded = |engine: &str| -> u64 {
        let name = format!("pcapd_expressions_loaded_total{{engine=\"{engine}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&name)?.parse().ok()).unwrap()
    };
    // Loaded twice: checked when the request came, then for the RX cores.
    assert_eq!(loaded("jit") + loaded("interpreter"), 2, "{metrics}");
}

/// Packets in a pcap file, counted by capinfos (the oracle).
fn capinfos_count(file: &Path) -> u64 {
    let out = std::process::Command::new("capinfos").args(["-c", "-M", "-T", "-r"]).arg(file).output().unwrap();
    assert!(out.status.success(), "capinfos: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.trim().rsplit('\t').next().unwrap().parse().unwrap_or_else(|_| panic!("capinfos said {line:?}"))
}

/// Issue 15: a running full capture counts its packets live, uploads each rotated file as soon
/// as it is closed, lists its files (`/files`), refuses the merged download while it runs, and
/// once done downloads as ONE pcap that is mergecap's merge of its objects.
#[test]
fn a_running_full_capture_counts_uploads_as_it_rotates_lists_its_files_and_downloads_merged() {
    let Rig { tmp, m, veth, input, cycle, data } = Rig::new("l");
    let app = live_appliance(&m, &veth, &input, &data, 400_000);
    let d = dest("live");
    own(&app, &m, BUCKET, &d, "live", tmp.path());
    let r = post(&app, "/pcaps", &full(json!({}), json!({}), &d));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let get = |path: &str| call("GET", &app.url(&format!("/pcaps/{id}{path}")), &[AUTH], None);

    // About 0.9 MB/s: a file every half second.
    let mut traffic = veth.replay_bg(&input, 2_000, 1_000_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut counts, mut listed_counts) = (Vec::new(), Vec::new());
    let mut uploaded_while_running = Vec::new();
    while counts.len() < 8 || uploaded_while_running.is_empty() {
        assert!(Instant::now() < deadline, "counts {counts:?}, objects {uploaded_while_running:?}");
        std::thread::sleep(Duration::from_millis(1000));
        let c = get("").json()["result"].clone();
        assert_eq!(c["status"], "running", "{c}");
        counts.push(c["packets_captured"].as_u64().unwrap());
        let list = call("GET", &app.url("/pcaps"), &[AUTH], None).json()["result"].clone();
        let mine = list.as_array().unwrap().iter().find(|c| c["id"] == id.as_str()).unwrap().clone();
        listed_counts.push(mine["packets_captured"].as_u64().unwrap());
        let files = get("/files").json()["result"].clone();
        let uploaded: Vec<String> = files
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["state"] == "uploaded")
            .map(|f| f["key"].as_str().unwrap().to_string())
            .collect();
        let in_bucket: Vec<String> = m.list(BUCKET, &format!("live/{id}/")).into_iter().map(|(k, _)| k).collect();
        if get("").json()["result"]["status"] == "running" {
            uploaded_while_running = in_bucket.clone();
            assert!(uploaded.iter().all(|k| in_bucket.contains(k)), "uploaded {uploaded:?}, bucket {in_bucket:?}");
        }
    }
    println!("packets_captured once a second while running: {counts:?} (list: {listed_counts:?})");
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "the count grows every second: {counts:?}");
    assert!(listed_counts.windows(2).all(|w| w[0] < w[1]), "in the list too: {listed_counts:?}");
    // The status route counts it (it counted only simple captures being made).
    let st = call("GET", &format!("{}/client/v4/pcapd/status", app.base), &[AUTH], None);
    assert_eq!(st.json()["result"]["captures_running"], 1, "{}", String::from_utf8_lossy(&st.body));

    // Not downloadable while running: 409 in Cloudflare's envelope, not to be retried.
    let r = get("/download");
    assert_eq!((r.status, r.header("x-should-retry")), (409, Some("false")), "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["success"], false);
    assert!(r.error().contains("capture is running"), "{}", r.error());

    let _ = traffic.kill();
    let _ = traffic.wait();
    let r = call("PUT", &app.url(&format!("/pcaps/{id}/stop")), &[AUTH], None);
    assert_eq!(r.status, 200);
    let done = wait_status(&app, &id, &["success", "failed"], 60);
    assert_eq!(done["status"], "success", "{done}");
    let total = done["packets_captured"].as_u64().unwrap();
    assert!(total >= *counts.last().unwrap(), "final {total} after {counts:?}");

    // The files: exactly the bucket's objects, each with capinfos' packet count.
    let files = get("/files");
    assert_eq!(files.status, 200);
    let v = files.json();
    assert_eq!((v["success"].clone(), v["errors"].clone()), (json!(true), json!([])));
    let files = v["result"].as_array().unwrap().clone();
    let (keys, pkts) = bucket_packets(&m, BUCKET, &format!("live/{id}/"), tmp.path());
    assert!(keys.len() >= 4, "rotated into several objects: {keys:?}");
    let mut listed: Vec<String> = files.iter().map(|f| f["key"].as_str().unwrap().to_string()).collect();
    let mut in_bucket = keys.clone();
    listed.sort();
    in_bucket.sort();
    assert_eq!(listed, in_bucket, "one entry per object, no object missing or twice");
    for (i, k) in keys.iter().enumerate() {
        let f = files.iter().find(|f| f["key"] == k.as_str()).unwrap();
        let obj = tmp.path().join(format!("obj{i}.pcap"));
        assert_eq!((f["node"].as_str(), f["state"].as_str()), (Some("lab1"), Some("uploaded")), "{f}");
        assert_eq!(f["packets"].as_u64().unwrap(), capinfos_count(&obj), "{k}");
        assert_eq!(f["bytes"].as_u64().unwrap(), std::fs::metadata(&obj).unwrap().len(), "{k}");
    }
    assert_eq!(pkts.len() as u64, total);
    assert_in_replay_order(&datas(&pkts), &cycle);
    no_spool_left(&data, &id);

    // ONE merged pcap: what mergecap makes of the objects (same packets, same order), in time
    // order, as many as captured.
    let r = get("/download");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/vnd.tcpdump.pcap"));
    let merged = tmp.path().join("download.pcap");
    std::fs::write(&merged, &r.body).unwrap();
    let oracle = tmp.path().join("mergecap.pcap");
    let objs: Vec<PathBuf> = (0..keys.len()).map(|i| tmp.path().join(format!("obj{i}.pcap"))).collect();
    let st = std::process::Command::new("mergecap").args(["-F", "nsecpcap", "-w"]).arg(&oracle).args(&objs).status();
    assert!(st.unwrap().success());
    let (got, want) = (read_pcap(&merged), read_pcap(&oracle));
    assert_eq!(capinfos_count(&merged), total);
    assert_eq!(got.len(), want.len());
    assert!(got.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns), "time order");
    let key = |p: &Pkt| (p.ts_ns, p.data.clone(), p.orig_len);
    let (mut g, mut w): (Vec<_>, Vec<_>) = (got.iter().map(key).collect(), want.iter().map(key).collect());
    assert_eq!(got.iter().map(|p| p.ts_ns).collect::<Vec<_>>(), want.iter().map(|p| p.ts_ns).collect::<Vec<_>>());
    g.sort();
    w.sort();
    assert_eq!(g, w, "the same packets as mergecap's merge");

    // Its summary reads the same merged objects: mergecap's packets, lengths and first times.
    let r = get("/summary");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sum = r.json()["result"].clone();
    assert_eq!(sum["packets"], total);
    assert_eq!(sum["bytes"], want.iter().map(|p| u64::from(p.orig_len)).sum::<u64>());
    let times: Vec<u128> = sum["decoded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let (s, ns) = row["time"].as_str().unwrap().split_once('.').unwrap();
            s.parse::<u128>().unwrap() * 1_000_000_000 + ns.parse::<u128>().unwrap()
        })
        .collect();
    assert!(!times.is_empty());
    assert_eq!(
        times,
        want.iter().take(times.len()).map(|p| p.ts_ns).collect::<Vec<_>>(),
        "the first packets, in order"
    );

    // The Captures page shows the same: its files (key and packets, as /files) and its first
    // packets, in headless Chromium.
    let page = page_script("full_details.py", &[&app.base, AUTH.1.trim_start_matches("Bearer "), &id]);
    assert_eq!(page["page_errors"], json!([]), "{page}");
    assert_eq!(page["error"], "", "{page}");
    let mut rows: Vec<(String, u64)> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[1].as_str().unwrap().to_string(), r[3].as_str().unwrap().replace(',', "").parse().unwrap()))
        .collect();
    let mut want_rows: Vec<(String, u64)> =
        files.iter().map(|f| (f["key"].as_str().unwrap().to_string(), f["packets"].as_u64().unwrap())).collect();
    rows.sort();
    want_rows.sort();
    assert_eq!(rows, want_rows, "the page's files are the capture's objects");
    assert_eq!(page["packets"], times.len(), "{page}");

    // Unknown capture, another account's capture, a malformed id: 404 envelopes.
    let unknown = "0".repeat(32);
    for r in [
        call("GET", &app.url(&format!("/pcaps/{unknown}/files")), &[AUTH], None),
        call_other(&app, "GET", &format!("/pcaps/{id}/files"), None),
        call_other(&app, "GET", &format!("/pcaps/{id}/download"), None),
        call("GET", &app.url("/pcaps/not-an-id/files"), &[AUTH], None),
    ] {
        assert_eq!((r.status, r.json()["success"].clone()), (404, json!(false)));
    }
}
