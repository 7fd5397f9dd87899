//! End-to-end RX rate with 1, 4, 16 and 64 active captures (issue 14), as ratios to one capture
//! measured in the same process: one data plane (net_pcap `infinite_rx` on the file in
//! `PCAPD_BENCH_PCAP`, one RX core, one writer), each capture set published in turn, the RX
//! counter read over `PCAPD_BENCH_SECS` (default 3) per set, `PCAPD_BENCH_ROUNDS` (default 3)
//! rounds interleaved, medians reported. Captures write 96-byte snaps to files under /dev/shm.
//!
//! Kinds: filter_v1 captures (three filter shapes with distinct values, as many accounts'
//! captures would be; capture 0 keeps UDP to port 443, ~10 % of scripts/bench's traffic, the
//! others next to nothing), the same selections as tcpdump expressions (each runs its own program
//! on every packet), and N captures sharing one expression that keeps nothing of this traffic
//! (loaded once, run once a packet for all of them).
//!
//! `scripts/bench` runs it; alone: `PCAPD_BENCH_PCAP=mixed.pcap cargo bench --bench rx_captures`.
//! Holds the machine's DPDK test lock while it runs.
#[path = "../tests/common/many_captures.rs"]
mod many;

use std::time::{Duration, Instant};

use many::Spec;

const COUNTS: [usize; 4] = [1, 4, 16, 64];
const SNAPLEN: u32 = 96;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Filter,
    Expression,
    SharedExpression,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Filter => "filter_v1",
            Kind::Expression => "expression",
            Kind::SharedExpression => "shared 'icmp' (keeps 0)",
        }
    }

    /// Capture `k`'s (filter_v1, expression).
    fn capture(self, k: usize) -> (String, Option<String>) {
        let (filter, expression) = match (self, k, k % 3) {
            // Nothing in scripts/bench's traffic is ICMP: the captures write nothing, the cost
            // is the program's (once a packet) and the bookkeeping's.
            (Kind::SharedExpression, ..) => ("{}".to_string(), "icmp".to_string()),
            (_, 0, _) => (r#"{"destination_port":443}"#.into(), "dst port 443".into()),
            (_, _, 0) => (format!(r#"{{"destination_address":"192.168.{k}.0"}}"#), format!("dst host 192.168.{k}.0")),
            (_, _, 1) => (
                format!(r#"{{"destination_address":"192.168.{k}.1","destination_port":443}}"#),
                format!("dst host 192.168.{k}.1 and dst port 443"),
            ),
            _ => (
                format!(r#"{{"protocol":17,"source_port":{}}}"#, 1024 + 61 * k),
                format!("udp src port {}", 1024 + 61 * k),
            ),
        };
        match self {
            Kind::Filter => (filter, None),
            _ => ("{}".into(), Some(expression)),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let Ok(file) = std::env::var("PCAPD_BENCH_PCAP") else {
        eprintln!("rx_captures: set PCAPD_BENCH_PCAP to a pcap file to replay (scripts/bench does)");
        return;
    };
    let secs: f64 = env_or("PCAPD_BENCH_SECS", 3.0);
    let rounds: usize = env_or("PCAPD_BENCH_ROUNDS", 3);
    let mut eal: Vec<String> = std::env::var("PCAPD_BENCH_EAL")
        .unwrap_or_else(|_| "--no-huge -m 2048 --no-shconf --no-pci".into())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    eal.extend(["--file-prefix".into(), format!("bench-rxcap-{}", std::process::id())]);
    let _lock = pcapd::dpdk::testing::lock();
    let dir = tempfile::Builder::new().prefix("pcapd-rxcap").tempdir_in("/dev/shm").expect("a directory in /dev/shm");
    let mut dp = many::start(&format!("net_pcap0,rx_pcap={file},infinite_rx=1"), eal);
    dp.launch_rx().expect("launch RX");

    let kinds = [Kind::Filter, Kind::Expression, Kind::SharedExpression];
    let mut rates = vec![vec![Vec::new(); COUNTS.len()]; kinds.len()];
    for _ in 0..rounds {
        for (ki, kind) in kinds.iter().enumerate() {
            for (ni, &n) in COUNTS.iter().enumerate() {
                let specs: Vec<Spec> = (0..n)
                    .map(|k| {
                        let (filter, expression) = kind.capture(k);
                        Spec { filter, expression, out: dir.path().join(format!("{k}.pcap")) }
                    })
                    .collect();
                let running = many::open(&dp, &specs, SNAPLEN);
                std::thread::sleep(Duration::from_millis(500));
                let (a, t) = (dp.stats.totals().rx_packets, Instant::now());
                std::thread::sleep(Duration::from_secs_f64(secs));
                let (b, dt) = (dp.stats.totals().rx_packets, t.elapsed().as_secs_f64());
                many::close(&dp, running);
                for s in &specs {
                    let _ = std::fs::remove_file(&s.out);
                }
                rates[ki][ni].push((b - a) as f64 / dt);
            }
        }
    }
    let base = median(rates[0][0].clone());
    println!(
        "RX packets/s with N active captures ({rounds} rounds of {secs} s, medians; ratio to one filter_v1 capture):"
    );
    println!("{:<24} {:>12} {:>12} {:>12} {:>12}", "kind", "N=1", "N=4", "N=16", "N=64");
    for (ki, kind) in kinds.iter().enumerate() {
        let cells: Vec<String> = rates[ki]
            .iter()
            .map(|r| {
                let m = median(r.clone());
                format!("{:.2}M {:.2}", m / 1e6, m / base)
            })
            .collect();
        println!("{:<24} {:>12} {:>12} {:>12} {:>12}", kind.name(), cells[0], cells[1], cells[2], cells[3]);
    }
}
