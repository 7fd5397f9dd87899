//! Several captures on one data plane at once (as many accounts' full captures run): each file
//! holds what tcpdump keeps for its filter_v1 and expression, also when captures share an
//! expression (loaded once, run once a packet for all of them).
mod common;
#[path = "common/many_captures.rs"]
mod many;

use common::*;
use many::Spec;
use pcapd::dataplane::EXPRESSIONS_LOADED;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// filter_v1 `{"protocol": 17}` as a tcpdump expression (as tests/capture.rs checks it: pcapd
/// also checks the IPv4 version and header length, and looks inside up to two VLAN tags).
const PROTO_UDP: &str = "(((ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5) and ip proto 17 or ip6 protochain 17) or (vlan and (((ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5) and ip proto 17 or ip6 protochain 17) or (vlan and ((ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5) and ip proto 17 or ip6 protochain 17)))))";

#[test]
fn captures_sharing_an_expression_each_keep_what_tcpdump_keeps() {
    let _lock = pcapd::dpdk::testing::lock();
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let total = read_pcap(&input).len() as u64;
    let dp = many::start(&vdev_pcap(&[&input]), pcapd::dpdk::testing::eal_args("many-captures", 256));
    let control = dp.control();

    // One program per distinct expression text, while a capture holds it.
    let loaded = || EXPRESSIONS_LOADED.iter().map(|c| c.load(Relaxed)).sum::<u64>();
    let before = loaded();
    let (a, b) = (control.load_expression("tcp").unwrap(), control.load_expression("tcp").unwrap());
    assert!(Arc::ptr_eq(&a, &b), "the same expression is loaded once");
    assert!(!Arc::ptr_eq(&a, &control.load_expression("udp").unwrap()));
    assert_eq!(loaded() - before, 2);

    // (filter_v1, expression, tcpdump's equivalent of both)
    let cases: &[(&str, Option<&str>, String)] = &[
        ("{}", Some("udp"), "udp".into()),
        (r#"{"protocol":17}"#, Some("udp"), format!("udp and {PROTO_UDP}")),
        ("{}", Some("greater 100"), "greater 100".into()),
        (r#"{"protocol":17}"#, Some("greater 100"), format!("greater 100 and {PROTO_UDP}")),
        (r#"{"protocol":17}"#, None, PROTO_UDP.into()),
        ("{}", Some("tcp"), "tcp".into()),
        ("{}", None, String::new()),
    ];
    let specs: Vec<Spec> = cases
        .iter()
        .enumerate()
        .map(|(i, (filter, expression, _))| Spec {
            filter: filter.to_string(),
            expression: expression.map(str::to_string),
            out: dir.path().join(format!("{i}.pcap")),
        })
        .collect();
    let running = many::open(&dp, &specs, 65535);
    let mut dp = dp;
    dp.launch_rx().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dp.stats.totals().rx_packets < total {
        assert!(Instant::now() < deadline, "the file was not replayed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let reports = many::close(&dp, running);

    // Packets as their indices in the input (each frame there is distinct).
    let frames = datas(&read_pcap(&input));
    let indices =
        |p: Vec<Vec<u8>>| -> Vec<Option<usize>> { p.iter().map(|d| frames.iter().position(|f| f == d)).collect() };
    let mut distinct = std::collections::BTreeSet::new();
    for ((_, _, oracle), (spec, report)) in cases.iter().zip(specs.iter().zip(&reports)) {
        let want = indices(datas(&tcpdump(&input, oracle, dir.path())));
        let got = indices(datas(&read_pcap(&spec.out)));
        assert_eq!(got, want, "{} / {:?}: the packets tcpdump keeps, in order", spec.filter, spec.expression);
        assert_eq!(report.packets, want.len() as u64);
        distinct.insert(want.len());
    }
    assert!(distinct.len() >= 5, "the cases select different packets: {distinct:?}");
}
