//! tcpdump expressions end to end, with tcpdump itself as the oracle: `pcapd capture
//! [EXPRESSION...]` on a replayed file (JIT'd programs on the RX core), and the API's
//! `filter_expression` on a simple capture (libpcap over the stored samples with their wire
//! length).
mod common;

use common::appliance::{call, wait_replayed, Appliance, Opts};
use common::*;
use serde_json::json;

/// Expressions that hit both DPDK bugs of BPF.md (indexed byte/word loads, `jset` with a small
/// constant), lengths, VLANs, IPv6, fragments and ports.
const CORPUS: &[&str] = &[
    "tcp",
    "udp port 53",
    "icmp[icmptype] == icmp-echo",
    "udp[8:4] == 0",
    "tcp[tcpflags] & tcp-push != 0",
    "not broadcast and not multicast",
    "greater 200",
    "less 80",
    "vlan and tcp",
    "ip6",
    "ip[6:2] & 0x1fff != 0",
    "tcp dst port 443 or (udp and portrange 1-1024)",
];

#[test]
fn pcapd_capture_with_an_expression_keeps_what_tcpdump_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let mut selective = 0;
    for expr in CORPUS {
        let out = dir.path().join("out.pcap");
        let mut args = vec!["--vdev".to_string(), vdev_pcap(&[&input]), "-w".into(), out.display().to_string()];
        args.extend(expr.split(' ').map(str::to_string));
        let r = capture(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(r.code, 0, "{expr}: {}", r.stderr);
        let want = datas(&tcpdump(&input, expr, dir.path()));
        assert_eq!(datas(&read_pcap(&out)), want, "{expr}: the packets tcpdump keeps, in order");
        selective += usize::from(!want.is_empty() && want.len() < 29);
    }
    assert!(selective >= 8, "the corpus selects something, not everything: {selective} of {}", CORPUS.len());
    // With --filter too: both must match.
    let out = dir.path().join("both.pcap");
    let r = capture(&[
        "--vdev",
        &vdev_pcap(&[&input]),
        "--filter",
        r#"{"protocol":6}"#,
        "-w",
        out.to_str().unwrap(),
        "greater 100",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = tcpdump(&input, "(ip[0] >= 0x45 and ip[0] <= 0x4f and ip proto 6) or ip6 protochain 6 or (vlan and (ip proto 6 or ip6 protochain 6 or (vlan and (ip proto 6 or ip6 protochain 6))))", dir.path());
    let want: Vec<Vec<u8>> = datas(&want).into_iter().filter(|d| d.len() > 100).collect();
    assert_eq!(datas(&read_pcap(&out)), want);
}

#[test]
fn a_bad_expression_is_one_line_exit_2_and_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let out = dir.path().join("never.pcap");
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-w", out.to_str().unwrap(), "tcp", "and", "nonsense"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("expression \"tcp and nonsense\""), "{}", r.stderr);
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
}

#[test]
fn a_simple_capture_with_filter_expression_holds_what_tcpdump_selects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = Appliance::start(&Opts::fixture(&data));
    let input = fixture("frames.pcap");
    let total = read_pcap(&input).len();
    wait_replayed(&app, total);
    let auth = ("Authorization", "Bearer test-write-token");
    let post = |body: serde_json::Value| {
        call(
            "POST",
            &app.url("/pcaps"),
            &[auth, ("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    // A bad expression: 400 naming the field, with libpcap's message.
    let r = post(json!({"system":"magic-transit","type":"simple","time_limit":300,"packet_limit":100,
                        "filter_expression":"tcp and"}));
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("filter_expression: "), "{}", r.error());
    assert!(r.error().contains("syntax error"), "libpcap's message: {}", r.error());
    // `greater` reads the wire length even though samples hold 160 bytes.
    for expr in ["greater 200", "udp port 53", "vlan and tcp"] {
        let r = post(json!({"system":"magic-transit","type":"simple","time_limit":300,"packet_limit":1000,
                            "filter_expression": expr}));
        assert_eq!(r.status, 200, "{}", r.error());
        let c = r.json()["result"].clone();
        assert_eq!(c["filter_expression"], expr);
        let id = c["id"].as_str().unwrap().to_string();
        let mut done = serde_json::Value::Null;
        for _ in 0..300 {
            done = call("GET", &app.url(&format!("/pcaps/{id}")), &[auth], None).json()["result"].clone();
            if done["status"] == "success" || done["status"] == "failed" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(done["status"], "success", "{done}");
        let got = call("GET", &app.url(&format!("/pcaps/{id}/download")), &[auth], None);
        let file = dir.path().join("got.pcap");
        std::fs::write(&file, &got.body).unwrap();
        let got = read_pcap(&file);
        let want = tcpdump(&input, expr, dir.path());
        assert_eq!(got.len(), want.len(), "{expr}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.data, w.data[..w.data.len().min(160)], "{expr}");
            assert_eq!(g.orig_len, w.orig_len);
        }
    }
}
