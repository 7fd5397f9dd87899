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
    grafana_dashboard_uses_only_exported_metrics(&names(&m["samples"]));
}

/// config/grafana/pcapd.json is valid JSON and every metric its queries name is exported: by
/// this scrape, or (fleet mode only) by the fleet's families rendered here.
fn grafana_dashboard_uses_only_exported_metrics(scraped: &BTreeSet<String>) {
    let text = std::fs::read_to_string(root().join("config/grafana/pcapd.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut known = scraped.clone();
    let fleet = pcapd::fleet::FleetStats::default();
    *fleet.clock_offsets.lock().unwrap() =
        vec![pcapd::fleet::clock::PeerClock { node: "n2".into(), offset_secs: 0.1, rtt_secs: 0.01 }];
    fleet.parts.lock().unwrap().push(("running", 1));
    let mut o = String::new();
    pcapd::api::metrics::render_fleet(&mut o, &fleet);
    known
        .extend(o.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).map(String::from));
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut used = BTreeSet::new();
    for e in &exprs {
        // Metric names: identifiers starting pcapd_ or process_ (label names and functions don't).
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("pcapd_") || word.starts_with("process_") {
                used.insert(word.to_string());
            }
        }
    }
    let missing: Vec<_> = used.iter().filter(|n| !known.contains(*n)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics /metrics does not have: {missing:?}");
    for want in [
        "pcapd_api_request_latency_seconds_bucket",
        "pcapd_rx_packets_total",
        "pcapd_fleet_live_nodes",
        "pcapd_upload_backlog",
    ] {
        assert!(used.contains(want), "the dashboard has no {want}");
    }
    assert!(exprs.iter().any(|e| e.starts_with("histogram_quantile(0.99,")), "no p99 from the histogram");
}

/// The checked-in document is valid OpenAPI (openapi-spec-validator) and is what the appliance
/// serves at /client/v4/openapi.json, without credentials.
#[test]
fn openapi_document_is_valid_and_served_without_credentials() {
    let path = root().join("src/api/openapi.json");
    let out = Command::new(python()).args(["-m", "openapi_spec_validator"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(pcapd::api::OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(&Opts::fixture(&dir.path().join("data")));
    let r = call("GET", &format!("{}/client/v4/openapi.json", app.base), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), doc);
    // Every documented operation is routed: no 7003 "No route" and no 405.
    let auth = bearer(TOKEN);
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!("{}{}", app.base, path)
            .replace("{account_id}", ACCOUNT)
            .replace("{pcap_id}", "00000000000000000000000000000000")
            .replace("{ownership_id}", "00000000000000000000000000000000");
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let m = method.to_uppercase();
            let body = (m == "POST").then_some(&b"{}"[..]);
            let r = call(&m, &url, &[("Authorization", &auth), ("Content-Type", "application/json")], body);
            assert_ne!(r.status, 405, "{m} {path}");
            if r.status == 404 {
                assert_ne!(r.json()["errors"][0]["code"], 7003, "{m} {path} is not routed");
            }
        }
    }
}

/// schemathesis (bounded: tests/opskit/schemathesis.toml) against a real appliance: no input
/// makes a 5xx, and every response matches the document.
#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(&Opts::fixture(&dir.path().join("data")));
    let report = dir.path().join("schemathesis");
    let out = Command::new(root().join(".venv/bin/schemathesis"))
        .arg("--config-file")
        .arg(root().join("tests/opskit/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/client/v4/openapi.json", app.base))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-time", "90", "--seed", "15", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .arg("--report-dir")
        .arg(&report)
        .env("PCAPD_ACCOUNT", ACCOUNT)
        .env("PCAPD_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        // Its cache (.schemathesis/) goes into the temporary dir, not the checkout.
        .current_dir(dir.path())
        .output()
        .expect("schemathesis (run scripts/setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    // It tested something: the summary counts passed test cases.
    assert!(stdout.contains("passed"), "{stdout}");
}

/// scripts/install (given the test binary, not a release build) twice into a temporary prefix:
/// everything in place, the unit's paths adjusted, an edited config kept; the installed unit
/// passes `systemd-analyze verify` with no warning (an unknown or misspelled key is only a
/// warning there, so stderr must be empty too).
#[test]
fn install_is_idempotent_and_the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, etc) = (dir.path().join("usr"), dir.path().join("etc/pcapd"));
    let install = || {
        let out = Command::new(root().join("scripts/install"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--sysconfdir")
            .arg(&etc)
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_pcapd"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(install().contains("wrote"));
    for f in [
        "bin/pcapd",
        "share/man/man1/pcapd.1",
        "share/man/man1/pcapd-run.1",
        "share/bash-completion/completions/pcapd",
        "share/zsh/site-functions/_pcapd",
        "share/fish/vendor_completions.d/pcapd.fish",
        "lib/systemd/system/pcapd.service",
    ] {
        assert!(prefix.join(f).is_file(), "no {f}");
    }
    let config = etc.join("pcapd.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("dir = \"/var/lib/pcapd\""), "the data dir is the unit's StateDirectory");
    // The installed config is valid as it is (its demo pcap beside it).
    let check = Command::new(prefix.join("bin/pcapd")).arg("check-config").arg(&config).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    std::fs::write(&config, format!("{toml}\n# edited\n")).unwrap();
    assert!(install().contains("kept"));
    assert!(std::fs::read_to_string(&config).unwrap().ends_with("# edited\n"), "an edited config is kept");
    let dropin = prefix.join("lib/systemd/system/pcapd.service.d/data-dir.conf");
    assert!(!dropin.exists(), "the default data dir needs no drop-in");
    // A kept config whose data dir is elsewhere: the read-only unit (ProtectSystem=strict) gets
    // it writable through a drop-in (pcapd failed at start before).
    std::fs::write(&config, toml.replace("dir = \"/var/lib/pcapd\"", "dir = \"/srv/captures\"")).unwrap();
    install();
    assert_eq!(
        std::fs::read_to_string(&dropin).unwrap().lines().last(),
        Some("ReadWritePaths=/srv/captures"),
        "the config's data dir is writable"
    );
    std::fs::write(&config, format!("{toml}\n# edited\n")).unwrap();
    install();
    assert!(!dropin.exists(), "back to the default: the drop-in goes");
    let unit_path = prefix.join("lib/systemd/system/pcapd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}/bin/pcapd run --config {}/pcapd.toml\n", prefix.display(), etc.display())),
        "{unit}"
    );
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        // Documentation=man:pcapd(1) is checked with man(1): the installed pages.
        .env("MANPATH", prefix.join("share/man"))
        .output()
    else {
        eprintln!("systemd-analyze not installed (apt systemd): unit not verified");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify:\n{stderr}");
}

/// The README's fenced blocks of `lang` (```sh, ```python) that contain `marker`.
fn readme_blocks(lang: &str, marker: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```\n").expect("a closed block");
        if body[..end].contains(marker) {
            out.push(body[..end].to_string());
        }
        rest = &body[end..];
    }
    out
}

/// The README's simple-capture examples pasted as they are (demo account, token and address
/// swapped for the test appliance's): the shell block (curl, jq, the wait loop, curl -f) under
/// `bash -eu -o pipefail`, and the Python SDK block with its wait loop. Both must end with a
/// finished capture's file.
#[test]
fn readme_simple_capture_examples_work_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(&Opts::fixture(&dir.path().join("data")));
    let paste = |block: &str| {
        let swapped = block
            .replace("http://127.0.0.1:8080", &app.base)
            .replace("023e105f4ecef8ad9ca31a8372d0c353", ACCOUNT)
            .replace("pcapd-demo-token", TOKEN);
        assert_ne!(swapped, block, "the block no longer names the demo address, account or token");
        swapped
    };
    let sh = readme_blocks("sh", "\"type\":\"simple\"");
    assert_eq!(sh.len(), 1, "one shell example of a simple capture");
    let out = Command::new("bash")
        .args(["-eu", "-o", "pipefail", "-c", &paste(&sh[0])])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the shell example failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.trim_end().ends_with(": success"), "{stdout}");
    let id = stdout.trim_end().trim_end_matches(": success");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{stdout}");
    read_pcap(&dir.path().join("capture.pcap"));

    let py_blocks = readme_blocks("python", "pcaps.create");
    assert_eq!(py_blocks.len(), 1, "one SDK example");
    let out = Command::new(python()).args(["-c", &paste(&py_blocks[0])]).current_dir(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "the SDK example failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    read_pcap(&dir.path().join("c.pcap"));
}
