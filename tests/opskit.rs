//! The operator's kit against a real `pcapd run`: /metrics parsed by the reference Prometheus
//! parser, the Grafana dashboard's metric names, the OpenAPI document (validator, served copy,
//! schemathesis), the systemd unit, and the README's shell examples pasted into bash.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::appliance::*;
use common::*;
use serde_json::Value;

fn python() -> std::path::PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(p.exists(), "run scripts/setup first (it makes .venv)");
    p
}

/// Runs a Python script of tests/opskit; its last stdout line is JSON.
fn py(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python()).arg(root().join("tests/opskit").join(script)).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// A scrape of `app`'s /metrics, checked by prometheus_client's parser (check_metrics.py).
fn scrape(app: &Appliance, dir: &Path) -> Value {
    let r = call("GET", &format!("{}/metrics", app.base), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let path = dir.join("metrics.txt");
    std::fs::write(&path, &r.body).unwrap();
    py("check_metrics.py", &[path.to_str().unwrap()])
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn metrics_of_a_running_appliance_parse_with_the_reference_parser() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(&Opts::fixture(&dir.path().join("data")));
    // Requests of several routes and status classes, so the latency histogram has series.
    let auth = bearer(TOKEN);
    assert_eq!(call("GET", &app.url("/pcaps"), &[("Authorization", &auth)], None).status, 200);
    assert_eq!(
        call("GET", &app.url("/pcaps/00000000000000000000000000000000"), &[("Authorization", &auth)], None).status,
        404
    );
    assert_eq!(call("GET", &app.url("/pcaps"), &[], None).status, 401);
    let m = scrape(&app, dir.path());
    let families = names(&m["families"]);
    for want in [
        // Existing names that tests, scripts and benches read.
        "pcapd_rx_packets",
        "pcapd_queue_rx_packets",
        "pcapd_samples_sampled",
        "pcapd_writer_stray_records",
        "pcapd_expressions_loaded",
        "pcapd_upload_bytes",
        "pcapd_captures_full_running",
        "pcapd_api_requests",
        "pcapd_api_request_duration_seconds",
        // New: the histogram, build info, the process.
        "pcapd_api_request_latency_seconds",
        "pcapd_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(families.contains(want), "no {want} in {families:?}");
    }
    assert_eq!(m["types"]["pcapd_api_request_latency_seconds"], "histogram");
    assert_eq!(m["types"]["pcapd_api_request_duration_seconds"], "summary");
    // GET list 2xx, GET one 4xx, GET list 4xx (401), at least.
    assert!(m["histogram_series"].as_u64().unwrap() >= 3, "{m}");
    let body = String::from_utf8(call("GET", &format!("{}/metrics", app.base), &[], None).body).unwrap();
    assert!(
        body.contains(
            "pcapd_api_request_latency_seconds_count{method=\"GET\",route=\"/client/v4/accounts/{account_id}/pcaps/{pcap_id}\",status_class=\"4xx\"} 1\n"
        ),
        "the route template, not the raw path:\n{body}"
    );
}
