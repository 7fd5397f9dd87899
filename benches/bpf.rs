//! ns/packet of a tcpdump expression (issue 14) per engine: DPDK's JIT (single- and 2-segment
//! mbufs), DPDK's interpreter, libpcap's `pcap_offline_filter`, and filter_v1's compiled
//! matcher where filter_v1 can say the same thing. 256 cache-hot packets per iteration.
//!
//! Starts an EAL (`--no-huge`, its own file prefix) and holds the machine's DPDK test lock
//! meanwhile. Run briefly: `cargo bench --bench bpf -- --warm-up-time 0.3 --measurement-time 1`.
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

use pcapd::bpf::{Engine, Expression, Program};
use pcapd::dpdk::{Eal, Mempool, PktBuf, MBUF_DEFAULT_BUF_SIZE};
use pcapd::filter::{FilterV1, Matcher};
use pcapd::wire::{self, PlainV4};

const PACKETS: usize = 256;
/// Where the 2-segment variant cuts each packet: after the IPv4 header and the ports, before the
/// TCP flags, so some loads take DPDK's slow path (`rte_pktmbuf_read` across segments).
const SPLIT_AT: usize = 40;

/// (expression, the same filter as filter_v1 JSON if it has one)
const CASES: &[(&str, Option<&str>)] = &[
    ("tcp dst port 443", Some(r#"{"protocol": 6, "destination_port": 443}"#)),
    ("src host 10.0.0.7", Some(r#"{"source_address": "10.0.0.7"}"#)),
    ("not broadcast and not multicast", None),
    ("tcp[tcpflags] & tcp-push != 0", None),
    ("icmp[icmptype] == icmp-echo", None),
    ("vlan and tcp", None),
];

/// A mix of frames: IPv4 TCP (10 % to port 443, some with PSH), UDP, ICMP echo, VLAN-tagged
/// TCP, broadcast and multicast destinations; 64 to 1500 bytes.
fn frames() -> Vec<Vec<u8>> {
    let mut x = 0x1234_5678u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    (0..PACKETS)
        .map(|i| {
            let r = next();
            let mut f = match i % 10 {
                0 => vec![0xff; 6],
                1 => vec![0x01, 0x00, 0x5e, 0, 0, 1],
                _ => vec![2, 0, 0, 0, 0, 2],
            };
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
            if i % 8 == 7 {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
            }
            f.extend_from_slice(&[0x08, 0x00]);
            let proto = match i % 7 {
                5 => 17,
                6 => 1,
                _ => 6,
            };
            let ip = f.len();
            f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&[10, 0, 0, (r & 0xf) as u8]);
            f.extend_from_slice(&[192, 168, 1, 2]);
            let dport: u16 = if i % 10 == 3 { 443 } else { 1024 + (r >> 8) as u16 % 5000 };
            match proto {
                6 => {
                    f.extend_from_slice(&(40000u16 + i as u16).to_be_bytes());
                    f.extend_from_slice(&dport.to_be_bytes());
                    f.extend_from_slice(&[0; 8]);
                    f.extend_from_slice(&[0x50, if r & 4 == 0 { 0x18 } else { 0x10 }, 0xff, 0xff, 0, 0, 0, 0]);
                }
                17 => {
                    f.extend_from_slice(&53u16.to_be_bytes());
                    f.extend_from_slice(&dport.to_be_bytes());
                    f.extend_from_slice(&[0, 8, 0, 0]);
                }
                _ => f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]),
            }
            let len = [64usize, 128, 576, 1500][(r >> 20) as usize % 4].max(f.len());
            f.resize(len, 0);
            let ip_len = (len - ip) as u16;
            f[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
            f
        })
        .collect()
}

fn filter_v1(m: &Matcher, f: &[u8]) -> bool {
    match PlainV4::of(f) {
        Some(h) => m.matches_plain_v4(&h),
        None => m.matches(&wire::parse_general(f)),
    }
}

fn main() {
    let _lock = pcapd::dpdk::testing::lock();
    let args = pcapd::dpdk::testing::eal_args("pcapd-bench-bpf", 256);
    let eal = Eal::init(&args).expect("EAL");
    let pool = Arc::new(Mempool::new(&eal, "bench_bpf", 2047, 0, MBUF_DEFAULT_BUF_SIZE, -1).expect("mempool"));
    let frames = frames();
    let one: Vec<PktBuf> = frames.iter().map(|f| PktBuf::from_segments(&pool, &[f]).expect("mbuf")).collect();
    let two: Vec<PktBuf> =
        frames.iter().map(|f| PktBuf::from_segments(&pool, &[&f[..SPLIT_AT], &f[SPLIT_AT..]]).expect("mbuf")).collect();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    for &(text, v1) in CASES {
        let expr = Expression::compile(text).expect("expression");
        let jit = Program::load(&eal, &expr, Engine::Jit).expect("load");
        assert!(jit.is_jit(), "no JIT code for {text:?}");
        let interp = Program::load(&eal, &expr, Engine::Interpreter).expect("load");
        let want: usize = frames.iter().filter(|f| expr.matches_bytes(f, f.len() as u32)).count();
        let mut g = c.benchmark_group(format!("bpf/{text}"));
        g.throughput(Throughput::Elements(PACKETS as u64));
        let mut run = |name: &str, f: &mut dyn FnMut() -> usize| {
            let got = f();
            // filter_v1 also looks inside VLAN tags, tcpdump's expressions do not.
            assert!(got == want || name == "filter_v1", "{name}: {got} matches, libpcap {want}, on {text:?}");
            println!("bpf/{text}/{name}: {got} of {PACKETS} packets match");
            g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(&mut *f));
        };
        run("jit", &mut || one.iter().filter(|p| jit.matches(black_box(p.packet()))).count());
        run("jit-2seg", &mut || two.iter().filter(|p| jit.matches(black_box(p.packet()))).count());
        run("interpreter", &mut || one.iter().filter(|p| interp.matches(black_box(p.packet()))).count());
        run("libpcap", &mut || frames.iter().filter(|f| expr.matches_bytes(black_box(f), f.len() as u32)).count());
        if let Some(json) = v1 {
            let m = FilterV1::from_json_str(json).expect("filter_v1").compile();
            run("filter_v1", &mut || frames.iter().filter(|f| filter_v1(&m, black_box(f))).count());
        }
        g.finish();
    }
    c.final_summary();
}
