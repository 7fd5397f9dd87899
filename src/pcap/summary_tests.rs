//! The capture summary against tshark, the oracle: every decoded column of every frame of
//! tests/fixtures/frames.pcap (truncated and malformed frames included) and summary.pcap (DNS,
//! TCP flags, ICMP types, 40 talkers), read in both precisions and both byte orders; protocol
//! counts, top talkers and the histogram against sums of tshark's fields.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::pcap::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const FIELDS: &[&str] = &[
    "frame.time_epoch",
    "frame.len",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmpv6.type",
    "dns.qry.name",
    "frame.protocols",
    "_ws.malformed",
];

/// tshark's fields of every frame, by name (first occurrence; `*name` holds all of them).
fn tshark(path: &Path) -> Vec<HashMap<String, String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark (scripts/setup installs it)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut m = HashMap::new();
            for (name, v) in FIELDS.iter().zip(l.split('\t')) {
                if !v.is_empty() {
                    m.insert(format!("*{name}"), v.to_string());
                    m.insert(name.to_string(), v.split(',').next().unwrap_or_default().to_string());
                }
            }
            m
        })
        .collect()
}

/// The file in the given precision and byte order (the fixtures are microsecond little-endian).
fn variant(src: &[u8], nanos: bool, big_endian: bool) -> Vec<u8> {
    let mut out = src.to_vec();
    let word = |b: &mut [u8], at: usize, f: &dyn Fn(u32) -> u32| {
        let v = f(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()));
        b[at..at + 4].copy_from_slice(&if big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
    };
    word(&mut out, 0, &|_| if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    for at in [4usize, 6] {
        let v = u16::from_le_bytes([out[at], out[at + 1]]);
        out[at..at + 2].copy_from_slice(&if big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    for at in [8, 12, 16, 20] {
        word(&mut out, at, &|v| v);
    }
    let mut at = FILE_HEADER_LEN;
    while at + RECORD_HEADER_LEN <= out.len() {
        let caplen = u32::from_le_bytes(out[at + 8..at + 12].try_into().unwrap()) as usize;
        word(&mut out, at, &|v| v);
        // A few nanoseconds more than the microseconds say, so nanoseconds are really read.
        word(&mut out, at + 4, &|v| if nanos { v * 1000 + 7 } else { v });
        word(&mut out, at + 8, &|v| v);
        word(&mut out, at + 12, &|v| v);
        at += RECORD_HEADER_LEN + caplen;
    }
    out
}

const ALL: Limits = Limits { decoded: 100_000, buckets: 60, protocols: 64, talkers_tracked: 4096, talkers_shown: 4096 };

fn ipv6_upper(t: &HashMap<String, String>) -> Option<u8> {
    ["ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.routing.nxt", "ipv6.dstopts.nxt", "ipv6.fraghdr.nxt"]
        .iter()
        .filter_map(|f| t.get(&format!("*{f}")))
        .flat_map(|v| v.split(','))
        .filter_map(|v| v.parse::<u8>().ok())
        .find(|v| ![0, 43, 44, 51, 60].contains(v))
}

/// Compares one decoded row with tshark's fields. A frame tshark calls malformed is held to
/// "absent or equal" (tshark guesses more from a broken header); fragments' ports are not
/// compared (tshark reassembles and shows the datagram's ports on the last fragment).
fn check_row(what: &str, row: &Row, t: &HashMap<String, String>) {
    let d = &row.decoded;
    let tshark_malformed = t.contains_key("_ws.malformed");
    let fragment = t.get("ip.flags.mf").is_some_and(|v| v == "1" || v == "True")
        || t.get("ip.frag_offset").is_some_and(|v| v != "0")
        || t.contains_key("ipv6.fraghdr.nxt");
    assert_eq!(&row.time, &t["frame.time_epoch"], "{what}: time");
    assert_eq!(row.length.to_string(), t["frame.len"], "{what}: length");
    let check = |name: &str, ours: Option<String>, theirs: Option<&String>, lenient: bool| match (ours, theirs) {
        (Some(a), Some(b)) => assert_eq!(&a, b, "{what}: {name}"),
        (None, None) => {}
        (None, Some(_)) if lenient => {}
        (a, b) => panic!("{what}: {name}: ours {a:?}, tshark {b:?}\n{d:?}\n{t:?}"),
    };
    let src = t.get("ip.src").or(t.get("ipv6.src"));
    let dst = t.get("ip.dst").or(t.get("ipv6.dst"));
    check("source", d.src.map(|a| a.to_string()), src, tshark_malformed);
    check("destination", d.dst.map(|a| a.to_string()), dst, tshark_malformed);
    let proto = t.get("ip.proto").cloned().or_else(|| ipv6_upper(t).map(|p| p.to_string()));
    check("ip protocol", d.ip_proto.map(|p| p.to_string()), proto.as_ref(), tshark_malformed);
    // Inside a tunnel (GRE, IP-in-IP) tshark's L4 fields are the inner packet's; ours the outer.
    let tunnel = t.get("*ip.src").or(t.get("*ipv6.src")).is_some_and(|v| v.contains(','));
    if !fragment && !tunnel {
        let sport = t.get("tcp.srcport").or(t.get("udp.srcport"));
        let dport = t.get("tcp.dstport").or(t.get("udp.dstport"));
        // SCTP's ports are ours alone (the fields above are TCP's and UDP's).
        if d.ip_proto != Some(132) {
            check("source port", d.src_port.map(|p| p.to_string()), sport, tshark_malformed);
            check("destination port", d.dst_port.map(|p| p.to_string()), dport, tshark_malformed);
        }
        check("dns name", d.dns_name.clone(), t.get("dns.qry.name"), false);
    }
    if d.ip_proto == Some(6) && !tunnel {
        let theirs =
            t.get("tcp.flags").map(|f| u16::from_str_radix(f.trim_start_matches("0x"), 16).unwrap().to_string());
        check("tcp flags", d.tcp_flags.map(|f| f.to_string()), theirs.as_ref(), tshark_malformed);
    }
    let icmp = t.get("icmp.type").or(t.get("icmpv6.type"));
    check("icmp type", d.icmp_type.map(|v| v.to_string()), icmp, tshark_malformed);
    if t.get("frame.protocols").is_some_and(|p| p.ends_with(":arp")) {
        assert_eq!(d.protocol, "ARP", "{what}");
    }
    if tshark_malformed && d.malformed.is_none() {
        // tshark found a header broken; we must agree unless the damage is above what we read
        // (a DNS message, where we then show no name) or in a reassembled datagram.
        let above = t["frame.protocols"].ends_with(":dns") || fragment;
        assert!(above, "{what}: tshark calls it malformed, we do not: {d:?}");
    }
}

#[test]
fn decoded_columns_match_tshark_in_every_precision_and_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for name in ["frames.pcap", "summary.pcap"] {
        let original = std::fs::read(fixture(name)).unwrap();
        for (nanos, be) in [(false, false), (true, false), (false, true), (true, true)] {
            let path = dir.path().join(format!("{name}-{nanos}-{be}.pcap"));
            std::fs::write(&path, variant(&original, nanos, be)).unwrap();
            let oracle = tshark(&path);
            let s = summarize(std::fs::File::open(&path).unwrap(), ALL).unwrap();
            assert_eq!(s.packets as usize, oracle.len(), "{name}");
            assert_eq!(s.decoded.len(), oracle.len());
            assert!(s.notes.is_empty(), "{:?}", s.notes);
            for (row, t) in s.decoded.iter().zip(&oracle) {
                check_row(&format!("{name} ns={nanos} be={be} frame {}", row.number), row, t);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 4 * (87 + 178));
}

#[test]
fn dns_tcp_flags_and_icmp_read_as_tshark_reads_them() {
    // The fixture's point, spelled out: these must be decoded (not merely absent on both sides).
    let s = summarize(std::fs::File::open(fixture("summary.pcap")).unwrap(), ALL).unwrap();
    let names: Vec<_> = s.decoded.iter().filter_map(|r| r.decoded.dns_name.clone()).collect();
    assert_eq!(names, ["www.example.com", "www.example.com", "ipv6.example.org", "tcp.example.net"]);
    assert_eq!(s.decoded[0].decoded.info, "40000 → 53 · DNS query www.example.com A");
    assert_eq!(s.decoded[1].decoded.info, "53 → 40000 · DNS response www.example.com A");
    assert_eq!(s.decoded[11].decoded.info, "51000 → 443 [SYN, ECE, CWR] len=20");
    assert!(s.decoded[14].decoded.info.starts_with("destination unreachable (type 3, code 3)"));
    assert!(s.decoded[16].decoded.info.starts_with("neighbor solicitation"));
}

/// Per tshark: (packets, bytes) by source address (the outer header's), of frames tshark reads
/// whole.
fn tshark_talkers(oracle: &[HashMap<String, String>]) -> HashMap<String, (u64, u64)> {
    let mut m: HashMap<String, (u64, u64)> = HashMap::new();
    for t in oracle.iter().filter(|t| !t.contains_key("_ws.malformed") || t["frame.protocols"].ends_with(":dns")) {
        if let Some(src) = t.get("ip.src").or(t.get("ipv6.src")) {
            let e = m.entry(src.clone()).or_default();
            e.0 += 1;
            e.1 += t["frame.len"].parse::<u64>().unwrap();
        }
    }
    m
}

#[test]
fn top_talkers_are_tsharks_sums_and_space_saving_bounds_hold() {
    let path = fixture("summary.pcap");
    let truth = tshark_talkers(&tshark(&path));
    assert_eq!(truth.len(), 47);
    // Exact while every address fits.
    let s = summarize(std::fs::File::open(&path).unwrap(), Limits { talkers_shown: 5, ..Limits::default() }).unwrap();
    assert!(s.talkers.exact);
    let mut by_bytes: Vec<_> = truth.iter().collect();
    by_bytes.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
    let want: Vec<_> = by_bytes.iter().take(5).map(|(a, (p, b))| (a.to_string(), *p, *b)).collect();
    let got: Vec<_> = s.talkers.by_bytes.iter().map(|t| (t.address.to_string(), t.packets, t.bytes)).collect();
    assert_eq!(got, want);
    let top_packets = truth.values().map(|v| v.0).max().unwrap();
    assert_eq!(s.talkers.by_packets[0].packets, top_packets);
    // Tracking 8 of 50 addresses: counts never understate, the error bounds the overstatement,
    // and an address above total/8 (here: the biggest by bytes holds > 1/8? checked) is kept.
    let s = summarize(
        std::fs::File::open(&path).unwrap(),
        Limits { talkers_tracked: 8, talkers_shown: 8, ..Limits::default() },
    )
    .unwrap();
    assert!(!s.talkers.exact);
    for t in &s.talkers.by_bytes {
        let (_, true_bytes) = truth[&t.address.to_string()];
        assert!(t.bytes >= true_bytes && t.bytes - t.error <= true_bytes, "{t:?} vs {true_bytes}");
    }
    let total: u64 = truth.values().map(|v| v.1).sum();
    for (addr, (_, b)) in &truth {
        if *b > total / 8 {
            assert!(s.talkers.by_bytes.iter().any(|t| &t.address.to_string() == addr), "{addr} is heavy");
        }
    }
}

#[test]
fn protocol_counts_match_tshark() {
    for name in ["frames.pcap", "summary.pcap"] {
        let oracle = tshark(&fixture(name));
        let s = summarize(std::fs::File::open(fixture(name)).unwrap(), ALL).unwrap();
        let count = |p: &str| s.protocols.iter().find(|c| c.protocol == p).map_or(0, |c| c.packets);
        // tshark's IP protocol of frames it reads whole (ARP by its dissector).
        let mut want: HashMap<String, u64> = HashMap::new();
        let mut unsure = 0;
        for t in &oracle {
            if t.contains_key("_ws.malformed") && !t["frame.protocols"].ends_with(":dns") {
                unsure += 1;
                continue;
            }
            let p = t.get("ip.proto").and_then(|p| p.parse::<u8>().ok()).or_else(|| ipv6_upper(t));
            let label = match p {
                Some(p) => crate::pcap::decode::proto_name(p),
                None if t["frame.protocols"].ends_with(":arp") => "ARP".into(),
                None => continue,
            };
            *want.entry(label).or_default() += 1;
        }
        for (label, n) in &want {
            let got = count(label);
            assert!(got >= *n && got <= n + unsure, "{name}: {label}: ours {got}, tshark {n} (+{unsure} unsure)");
        }
        assert_eq!(s.protocols.iter().map(|c| c.packets).sum::<u64>(), oracle.len() as u64);
        let bytes: u64 = oracle.iter().map(|t| t["frame.len"].parse::<u64>().unwrap()).sum();
        assert_eq!(s.protocols.iter().map(|c| c.bytes).sum::<u64>(), bytes);
        assert_eq!(s.bytes, bytes);
    }
}

fn ns_of(epoch: &str) -> u64 {
    let (s, f) = epoch.split_once('.').unwrap();
    s.parse::<u64>().unwrap() * 1_000_000_000 + f.parse::<u64>().unwrap()
}

#[test]
fn histogram_buckets_count_tsharks_timestamps() {
    for (name, buckets) in [("summary.pcap", 60), ("summary.pcap", 7), ("frames.pcap", 60), ("frames.pcap", 1)] {
        let times: Vec<u64> = tshark(&fixture(name)).iter().map(|t| ns_of(&t["frame.time_epoch"])).collect();
        let lens: Vec<u64> = tshark(&fixture(name)).iter().map(|t| t["frame.len"].parse().unwrap()).collect();
        let s =
            summarize(std::fs::File::open(fixture(name)).unwrap(), Limits { buckets, ..Limits::default() }).unwrap();
        let h = s.histogram.unwrap();
        let (start, w) = (ns_of(&h.start), h.bucket_ns);
        assert!(h.packets.len() <= buckets);
        let mut want = vec![0u64; h.packets.len()];
        let mut want_bytes = vec![0u64; h.packets.len()];
        for (t, l) in times.iter().zip(&lens) {
            let i = ((t - start) / w) as usize;
            want[i] += 1;
            want_bytes[i] += l;
        }
        assert_eq!(h.packets, want, "{name}");
        assert_eq!(h.bytes, want_bytes);
        // The narrowest doubling that holds the span.
        let span = times.iter().max().unwrap() - times.iter().min().unwrap();
        assert!(span >= (buckets as u64 - 1) * (w / 2) || w == 1, "{name}: width {w} is not the narrowest");
    }
}

#[test]
fn decoding_stops_at_the_limit_but_counting_does_not() {
    let s = summarize(std::fs::File::open(fixture("summary.pcap")).unwrap(), Limits::default()).unwrap();
    assert_eq!((s.decoded.len(), s.packets), (100, 178));
    assert_eq!(s.decoded[99].number, 100);
}

#[test]
fn damaged_streams_summarize_what_is_whole_and_never_panic() {
    let f = std::fs::read(fixture("frames.pcap")).unwrap();
    // Every cut: the records before it, and a note unless the cut falls between records.
    for cut in FILE_HEADER_LEN..f.len() {
        let s = summarize(&f[..cut], Limits::default()).unwrap();
        assert!(s.packets <= 87);
    }
    let s = summarize(&f[..f.len() - 1], Limits::default()).unwrap();
    assert_eq!(s.packets, 86);
    assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
    assert!(s.notes[0].contains("record 87 is cut short"), "{:?}", s.notes);
    // Bytes flipped anywhere (a cheap deterministic fuzz): an answer or a typed error.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut g = f.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % g.len();
            g[at] = (seed >> 32) as u8;
        }
        let _ = summarize(&g[..], Limits::default());
    }
    assert!(matches!(summarize(&b"not a pcap file at all, no"[..], Limits::default()), Err(ReadError::NotPcap(_))));
}
