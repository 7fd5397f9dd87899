//! Differential tests of `Program` against libpcap's `pcap_offline_filter`, the oracle.
//!
//! Everything that starts the EAL runs in a child process: the test binary runs itself again
//! with only the ignored test `child` and `PCAPD_BPF_CHILD` set. A JIT crash (SIGSEGV, SIGILL)
//! then fails the parent test with the signal instead of killing the test runner, and each child
//! has its own EAL (one per process). The parent holds the machine's DPDK test lock meanwhile.
//!
//! Packets: the 29 kinds of frames of `tests/fixtures/frames.pcap` (VLAN, QinQ, IPv6 extension
//! headers, fragments, a jumbo frame, truncated headers) and generated ones (synthesised
//! headers with values the corpus asks about, and mutated fixture frames), each as a
//! single-segment mbuf (a jumbo frame needs several: mbufs hold 2 KiB) and as a chain cut at
//! random places (loads straddle segments and take DPDK's slow path).
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::Rewrite;
use super::{BpfError, Engine, Expression, Program};
use crate::dpdk::{Burst, Eal, Mempool, PktBuf, BURST, MBUF_DEFAULT_BUF_SIZE};

const CHILD_ENV: &str = "PCAPD_BPF_CHILD";
const EXPR_ENV: &str = "PCAPD_BPF_EXPR";
const ENGINE_ENV: &str = "PCAPD_BPF_ENGINE";
/// The test the child runs: this module's `child`, by its path in the crate.
const CHILD_TEST: &str = "bpf::difftest::child";
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Data bytes of one mbuf of the test pool (the default 2 KiB room).
const SEG_ROOM: usize = MBUF_DEFAULT_BUF_SIZE as usize - 128;
/// Packets turned into mbufs at a time (two layouts each: about 8,000 mbufs).
const CHUNK: usize = 2048;
/// Generated packets in the corpus run, in the unrewritten runs.
const GENERATED: usize = 100_000;
const GENERATED_RAW: usize = 20_000;

/// The expressions checked against libpcap: what issue 14 names, and the forms that exercise
/// every instruction shape the converter emits (indexed loads of each size, `jset` with small
/// and large constants, compares with constants >= 2^31, arithmetic with X, scratch memory,
/// `len`).
const CORPUS: &[&str] = &[
    "",
    "tcp",
    "udp",
    "icmp",
    "arp",
    "ip",
    "ip6",
    "ip6 and tcp",
    "ip6 and udp port 53",
    "icmp6",
    "sctp",
    "vlan",
    "vlan and tcp",
    "vlan 100",
    "vlan and (host 1.2.3.4 or ip6)",
    "ether proto 0x88a8",
    // Indexed loads: byte, word, half-word.
    "icmp[icmptype] == icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "udp[8:4] == 0",
    "udp[8:2] > 1000",
    "tcp[tcpflags] & tcp-push != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[13] & 2 != 0",
    "tcp[12:1] & 0xf0 > 0x50",
    "ether[ether[0] - 1] == 0",
    "ether[ether[12] & 0x3f : 4] == 0",
    // Flags with small constants (the JIT's `test $imm8`), and large ones.
    "not broadcast and not multicast",
    "broadcast",
    "multicast",
    "ip multicast",
    "ether[0] & 1 != 0",
    "udp[8:4] & 0x80000000 != 0",
    "ip[12:4] > 0x80000000",
    // Lengths.
    "greater 100",
    "less 60",
    "len > 200",
    "len <= 64",
    "greater 1000",
    "len - 14 > ip[2:2]",
    // Fragments.
    "ip[6:2] & 0x1fff != 0",
    "ip[6] & 0x20 != 0",
    "ip[6:2] & 0x3fff != 0",
    // Hosts, nets, ports.
    "host 10.0.0.1",
    "src host 1.2.3.4",
    "dst host 5.6.7.8",
    "net 10.0.0.0/8",
    "src net 192.168.0.0/16",
    "host 2001:db8::1",
    "net 2001:db8::/32",
    "port 53",
    "tcp port 80",
    "tcp dst port 443",
    "udp src port 53",
    "portrange 1000-2000",
    "tcp portrange 1-1023",
    "ether host 02:00:00:00:00:01",
    "ether src 02:00:00:00:00:01 and ether dst ff:ff:ff:ff:ff:ff",
    "ip proto 47",
    // Arithmetic (X operands, division by X, scratch memory).
    "ip[2:2] * 2 > 3000",
    "ip[2:2] / ip[8] > 10",
    "ip[2:2] % 7 == 3",
    "(0 - ip[8]) & 0xff == 1",
    "ip[2:2] ^ 0xffff == 0xffbf",
    "ip[0] << ip[1] = 0",
    "ip[0] & 0xf > 5",
    // Combined.
    "tcp and (port 80 or port 443) and not host 10.0.0.1",
    "(icmp or icmp6) and greater 80",
    "ip and (udp[8:4] == 0 or tcp[tcpflags] & tcp-fin != 0)",
    "not (tcp or udp) and ip",
    "(vlan and tcp[tcpflags] & tcp-push != 0) or (not vlan and icmp[icmptype] == icmp-echo)",
    "not broadcast and not multicast and tcp dst port 443 and len > 100",
];

/// Runs of the converter's programs without the rewrite: (expression, engine, what must happen).
const UNREWRITTEN: &[(&str, Engine, Expect)] = &[
    ("icmp[icmptype] == icmp-echo", Engine::Interpreter, Expect::Wrong),
    ("udp[8:4] == 0", Engine::Interpreter, Expect::Wrong),
    ("tcp[tcpflags] & tcp-push != 0", Engine::Interpreter, Expect::Wrong),
    ("tcp[tcpflags] & tcp-push != 0", Engine::Jit, Expect::WrongOrCrash),
    ("not broadcast and not multicast", Engine::Jit, Expect::WrongOrCrash),
    ("not broadcast and not multicast", Engine::Interpreter, Expect::Right),
    ("ether[ether[0] - 1] == 0", Engine::Interpreter, Expect::WrongOrCrash),
    ("ether[ether[0] - 1] == 0", Engine::Jit, Expect::WrongOrCrash),
    ("ip[0] << ip[1] = 0", Engine::Interpreter, Expect::Wrong),
    ("ip[0] << ip[1] = 0", Engine::Jit, Expect::Wrong),
    ("tcp dst port 443", Engine::Jit, Expect::Right),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Runs and disagrees with libpcap on some packets.
    Wrong,
    /// Disagrees, or crashes the process.
    WrongOrCrash,
    /// Agrees everywhere (controls: the bug needs its trigger).
    Right,
}

// ---------------------------------------------------------------------------------------------
// Packets

/// xorshift64*: deterministic packets without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        out.extend((0..n).map(|_| self.byte()));
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
}

fn fixture_frames() -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/frames.pcap");
    let bytes = std::fs::read(path).unwrap();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for rec in crate::pcap::format::records(&bytes[24..]) {
        let data = rec[16..].to_vec();
        if !out.contains(&data) {
            out.push(data);
        }
    }
    out
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=29 => 0,
        30..=69 => rng.below(64),
        70..=95 => 64 + rng.below(1500),
        _ => 1500 + rng.below(7500),
    }
}

const PORTS: &[u16] = &[80, 443, 53, 22, 8080, 999, 1000, 1500, 2000, 2001, 1023, 1024, 5353, 0];

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(75) {
        rng.pick(PORTS)
    } else {
        rng.u16()
    }
}

fn l4(rng: &mut Rng, proto: u8, f: &mut Vec<u8>) {
    let start = f.len();
    match proto {
        6 => {
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend_from_slice(&port(rng).to_be_bytes());
            rng.fill(f, 8);
            let doff = rng.pick(&[5u8, 5, 5, 8, 15, 2]);
            f.push(doff << 4);
            f.push(rng.pick(&[0x02, 0x12, 0x10, 0x18, 0x11, 0x08, 0x01, 0x04]) | (rng.byte() & rng.byte()));
            rng.fill(f, 6);
            let opts = (usize::from(doff) * 4).saturating_sub(20);
            rng.fill(f, opts);
        }
        17 => {
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend_from_slice(&port(rng).to_be_bytes());
            rng.fill(f, 4);
            if rng.chance(40) {
                f.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        1 | 58 => {
            let types: &[u8] = if proto == 1 { &[0, 8, 8, 3, 11, 5, 13] } else { &[128, 129, 135, 136, 1] };
            f.push(if rng.chance(85) { rng.pick(types) } else { rng.byte() });
            rng.fill(f, 7);
        }
        _ => rng.fill(f, 8),
    }
    let n = payload_len(rng);
    rng.fill(f, n);
    debug_assert!(f.len() >= start);
}

const V4: &[[u8; 4]] = &[
    [10, 0, 0, 1],
    [10, 0, 0, 2],
    [1, 2, 3, 4],
    [5, 6, 7, 8],
    [192, 168, 1, 1],
    [224, 0, 0, 251],
    [255, 255, 255, 255],
    [10, 200, 3, 4],
];

fn ipv4(rng: &mut Rng, f: &mut Vec<u8>) {
    let ihl = rng.pick(&[5u8, 5, 5, 5, 5, 6, 7, 15, 4]);
    let proto = if rng.chance(90) { rng.pick(&[6u8, 6, 6, 17, 17, 17, 1, 1, 132, 47, 58]) } else { rng.byte() };
    let start = f.len();
    f.push(0x40 | ihl);
    f.push(rng.byte());
    f.extend_from_slice(&[0, 0]); // total length, set below
    f.extend_from_slice(&rng.u16().to_be_bytes());
    let frag: u16 = match rng.below(10) {
        0..=4 => 0,
        5 | 6 => 0x4000,
        7 => 0x2000,
        8 => 0x2000 | (rng.u16() & 0x1fff),
        _ => rng.u16() & 0x1fff,
    };
    f.extend_from_slice(&frag.to_be_bytes());
    f.push(rng.byte());
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    for _ in 0..2 {
        let a = if rng.chance(85) { rng.pick(V4) } else { (rng.next() as u32).to_be_bytes() };
        f.extend_from_slice(&a);
    }
    rng.fill(f, (usize::from(ihl) * 4).saturating_sub(20));
    l4(rng, proto, f);
    let total = if rng.chance(90) { (f.len() - start) as u16 } else { rng.u16() };
    f[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
}

fn ipv6_addr(rng: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    match rng.below(6) {
        0 | 1 => a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]),
        2 => a[..2].copy_from_slice(&[0xff, 0x02]),
        3 => a[..2].copy_from_slice(&[0xfe, 0x80]),
        _ => a.iter_mut().for_each(|b| *b = rng.byte()),
    }
    a[15] = rng.pick(&[1, 2, 1, 2, 99]);
    a
}

fn ipv6(rng: &mut Rng, f: &mut Vec<u8>) {
    let start = f.len();
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0]);
    let mut nh = if rng.chance(90) { rng.pick(&[6u8, 6, 17, 17, 58, 0, 44, 43, 60, 132]) } else { rng.byte() };
    f.push(nh);
    f.push(64);
    f.extend_from_slice(&ipv6_addr(rng));
    f.extend_from_slice(&ipv6_addr(rng));
    // Up to two extension headers.
    for _ in 0..2 {
        if !matches!(nh, 0 | 43 | 44 | 60) {
            break;
        }
        let next = rng.pick(&[6u8, 17, 58, 60]);
        if nh == 44 {
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&(if rng.chance(50) { 1u16 } else { rng.u16() & 0xfff9 }).to_be_bytes());
            rng.fill(f, 4);
        } else {
            f.extend_from_slice(&[next, 0]);
            rng.fill(f, 6);
        }
        nh = next;
    }
    l4(rng, nh, f);
    let plen = if rng.chance(90) { (f.len() - start - 40) as u16 } else { rng.u16() };
    f[start + 4..start + 6].copy_from_slice(&plen.to_be_bytes());
}

fn synthesised(rng: &mut Rng) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    let dst: [u8; 6] = match rng.below(8) {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb],
        2 => [0x33, 0x33, 0, 0, 0, 1],
        3 => [2, 0, 0, 0, 0, 2],
        4 => [2, 0, 0, 0, 0, 1],
        5 => [0, 0x1b, 0x21, 1, 2, 3],
        6 => [0xff, 0xff, 0xff, 0xff, 0, 0],
        _ => std::array::from_fn(|_| rng.byte()),
    };
    f.extend_from_slice(&dst);
    let src: [u8; 6] =
        if rng.chance(60) { [2, 0, 0, 0, 0, rng.pick(&[1, 2])] } else { std::array::from_fn(|_| rng.byte()) };
    f.extend_from_slice(&src);
    let tci =
        |rng: &mut Rng| (rng.pick(&[100u16, 200, 300, 1, 2, 4095]) | (u16::from(rng.byte() & 0xe0) << 8)).to_be_bytes();
    match rng.below(10) {
        0..=6 => {}
        7 | 8 => {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci(rng));
        }
        _ => {
            f.extend_from_slice(&[0x88, 0xa8]);
            f.extend_from_slice(&tci(rng));
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci(rng));
        }
    }
    match rng.below(20) {
        0..=10 => {
            f.extend_from_slice(&[0x08, 0x00]);
            ipv4(rng, &mut f);
        }
        11..=15 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            ipv6(rng, &mut f);
        }
        16 => {
            f.extend_from_slice(&[0x08, 0x06]);
            rng.fill(&mut f, 28);
        }
        _ => {
            f.extend_from_slice(&rng.u16().to_be_bytes());
            let n = payload_len(rng);
            rng.fill(&mut f, n);
        }
    }
    if rng.chance(10) {
        let keep = rng.below(f.len() + 1);
        f.truncate(keep);
    }
    f
}

fn mutated(rng: &mut Rng, fixtures: &[Vec<u8>]) -> Vec<u8> {
    let mut f = fixtures[rng.below(fixtures.len())].clone();
    if f.is_empty() {
        return f;
    }
    for _ in 0..1 + rng.below(4) {
        let window = if rng.chance(80) { 80 } else { usize::MAX };
        let at = rng.below(f.len().min(window));
        f[at] = rng.byte();
    }
    if rng.chance(20) {
        let keep = rng.below(f.len() + 1);
        f.truncate(keep);
    } else if rng.chance(10) {
        let n = rng.below(2000);
        rng.fill(&mut f, n);
    }
    f
}

/// The fixture frames, then `n` generated packets (deterministic for a given `seed`).
fn packets(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let fixtures = fixture_frames();
    let mut rng = Rng(seed | 1);
    let mut out = fixtures.clone();
    for _ in 0..n {
        out.push(if rng.chance(70) { synthesised(&mut rng) } else { mutated(&mut rng, &fixtures) });
    }
    out
}

/// Segments of a packet: the fewest mbufs (`split` false), or cut at 1 to 3 random places.
fn segments<'a>(data: &'a [u8], split: bool, rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut cuts = vec![0, data.len()];
    if split && data.len() >= 2 {
        for _ in 0..1 + rng.below(3) {
            cuts.push(1 + rng.below(data.len() - 1));
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut segs = Vec::new();
    for w in cuts.windows(2) {
        segs.extend(data[w[0]..w[1]].chunks(SEG_ROOM));
    }
    if segs.is_empty() {
        segs.push(&data[..0]);
    }
    segs
}

/// `packets` as bursts of single-segment mbufs (as few segments as fit) and as split chains.
fn mbufs(pool: &Arc<Mempool>, packets: &[Vec<u8>], rng: &mut Rng) -> (Vec<Burst>, Vec<PktBuf>) {
    let mut bursts = Vec::new();
    for group in packets.chunks(BURST) {
        let mut b = Burst::default();
        let slots = b.slots();
        for (slot, p) in slots.iter_mut().zip(group) {
            *slot = PktBuf::from_segments(pool, &segments(p, false, rng)).expect("mbufs for a packet").into_raw();
        }
        // SAFETY: the first `group.len()` slots hold chains whose ownership passed to the burst.
        unsafe { b.set_len(group.len()) };
        bursts.push(b);
    }
    let split = packets
        .iter()
        .map(|p| PktBuf::from_segments(pool, &segments(p, true, rng)).expect("mbufs for a packet"))
        .collect();
    (bursts, split)
}

// ---------------------------------------------------------------------------------------------
// The child

fn start_eal() -> (Eal, Arc<Mempool>) {
    let args: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
        "-l",
        "0",
        "--log-level=notice",
        "--file-prefix",
        &format!("pcapd-bpf-{}", std::process::id()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL");
    let pool = Arc::new(Mempool::new(&eal, "bpf_diff", 16383, 256, MBUF_DEFAULT_BUF_SIZE, -1).expect("mempool"));
    (eal, pool)
}

/// Mismatches of one program over one chunk: (single-segment, split).
fn mismatches(
    prog: &Program,
    oracle: &[bool],
    bursts: &[Burst],
    split: &[PktBuf],
    examples: &mut Vec<usize>,
) -> (u64, u64) {
    let (mut single, mut multi) = (0, 0);
    for (bi, b) in bursts.iter().enumerate() {
        let bits = prog.matches_burst(b);
        for i in 0..b.len() {
            let at = bi * BURST + i;
            if (bits >> i & 1 == 1) != oracle[at] {
                single += 1;
                examples.push(at);
            }
        }
    }
    for (at, p) in split.iter().enumerate() {
        if prog.matches(p.packet()) != oracle[at] {
            multi += 1;
            examples.push(at);
        }
    }
    (single, multi)
}

fn hex(p: &[u8]) -> String {
    p.iter().take(96).map(|b| format!("{b:02x}")).collect()
}

/// Every corpus expression, JIT and interpreter, both layouts, against libpcap.
fn child_corpus() {
    let (eal, pool) = start_eal();
    let exprs: Vec<Expression> = CORPUS.iter().map(|e| Expression::compile(e).unwrap()).collect();
    let mut progs = Vec::new();
    for e in &exprs {
        let jit = Program::load(&eal, e, Engine::Jit).unwrap_or_else(|err| panic!("{:?}: {err}", e.text()));
        assert_eq!(jit.engine(), Engine::Jit, "DPDK's x86-64 JIT produced no code for {:?}", e.text());
        let int = Program::load(&eal, e, Engine::Interpreter).unwrap();
        assert_eq!(int.engine(), Engine::Interpreter);
        progs.push([jit, int]);
    }
    let all = packets(GENERATED, 0x5eed_0014);
    let mut rng = Rng(7);
    // Per expression: [jit single, jit split, interpreter single, interpreter split], matched.
    let mut wrong = vec![[0u64; 4]; exprs.len()];
    let mut matched = vec![0u64; exprs.len()];
    let mut examples: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
    let started = Instant::now();
    for chunk in all.chunks(CHUNK) {
        let (bursts, split) = mbufs(&pool, chunk, &mut rng);
        for (ei, e) in exprs.iter().enumerate() {
            let oracle: Vec<bool> = chunk.iter().map(|p| e.matches_bytes(p, p.len() as u32)).collect();
            matched[ei] += oracle.iter().filter(|&&m| m).count() as u64;
            for (pi, prog) in progs[ei].iter().enumerate() {
                let mut ex = Vec::new();
                let (s, m) = mismatches(prog, &oracle, &bursts, &split, &mut ex);
                wrong[ei][pi * 2] += s;
                wrong[ei][pi * 2 + 1] += m;
                let kept = examples.entry(ei).or_default();
                kept.extend(ex.into_iter().take(3usize.saturating_sub(kept.len())).map(|at| chunk[at].clone()));
            }
        }
    }
    let n = all.len() as u64;
    let mut total = 0;
    for (ei, e) in exprs.iter().enumerate() {
        let w = wrong[ei];
        total += w.iter().sum::<u64>();
        println!(
            "EXPR matched={:>6}/{n} mismatches jit={}+{} interpreter={}+{} ebpf={} {:?}",
            matched[ei],
            w[0],
            w[1],
            w[2],
            w[3],
            progs[ei][0].info().ebpf_insns,
            e.text()
        );
        for p in examples.get(&ei).into_iter().flatten() {
            println!("  e.g. {} ({} bytes)", hex(p), p.len());
        }
    }
    println!(
        "RESULT expressions={} packets={n} runs={} mismatches={total} secs={:.1}",
        exprs.len(),
        n * exprs.len() as u64 * 4,
        started.elapsed().as_secs_f64()
    );
}

/// One expression, unrewritten, on one engine: prints its mismatches, or crashes.
fn child_unrewritten() {
    let text = std::env::var(EXPR_ENV).unwrap();
    let engine = if std::env::var(ENGINE_ENV).unwrap() == "jit" { Engine::Jit } else { Engine::Interpreter };
    let (eal, pool) = start_eal();
    let e = Expression::compile(&text).unwrap();
    let prog = Program::load_with(&eal, &e, engine, Rewrite::Off).unwrap();
    assert_eq!(prog.engine(), engine);
    let all = packets(GENERATED_RAW, 0x0bad_c0de);
    let mut rng = Rng(11);
    let (mut wrong, mut matched) = (0u64, 0u64);
    // Printed (and flushed) once the program loaded: a crash after it is the program's.
    println!("\nLOADED");
    std::io::stdout().flush().unwrap();
    for chunk in all.chunks(CHUNK) {
        let (bursts, split) = mbufs(&pool, chunk, &mut rng);
        let oracle: Vec<bool> = chunk.iter().map(|p| e.matches_bytes(p, p.len() as u32)).collect();
        matched += oracle.iter().filter(|&&m| m).count() as u64;
        let (s, m) = mismatches(&prog, &oracle, &bursts, &split, &mut Vec::new());
        wrong += s + m;
    }
    println!("RESULT packets={} matched={matched} mismatches={wrong}", all.len());
}

/// The API's behaviour where it needs the EAL: refusals, engines, sharing between threads.
fn child_api() {
    let (eal, pool) = start_eal();
    // A refused expression never loads, and says why.
    let err = Program::compile(&eal, "ether[2000000000] = 1").unwrap_err();
    assert!(matches!(err, BpfError::Refused(_)), "{err:?}");
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(msg.contains("packet offset beyond 1 GiB") && msg.contains("instruction 3"), "{msg}");
    println!("REFUSED {msg}");
    assert!(matches!(Program::compile(&eal, "tcp port"), Err(BpfError::Syntax(_))));
    // libpcap implements `protochain` with a backward jump, which classic BPF elsewhere never
    // has: DPDK's converter gives up on it (and the check would refuse it).
    let err = Program::compile(&eal, "ip6 protochain 6").unwrap_err();
    println!("PROTOCHAIN {err}");
    assert!(matches!(err, BpfError::Convert { .. } | BpfError::Refused(_)), "{err:?}");

    // The longest expression allowed: a list of IPv6 hosts (DPDK's verifier took seconds on
    // such lists before 22.11.6).
    let mut hosts = String::from("host 2001:db8::1");
    for i in 2.. {
        let next = format!(" or host 2001:db8::{i:x}");
        if hosts.len() + next.len() > super::MAX_EXPRESSION_BYTES {
            break;
        }
        hosts.push_str(&next);
    }
    let t = Instant::now();
    let long = Program::compile(&eal, &hosts).unwrap();
    println!("LONG {} bytes, {:?}, loaded in {:?}", hosts.len(), long.info(), t.elapsed());
    assert!(long.is_jit());

    // What the rewrite touched.
    let p = Program::compile(&eal, "tcp[tcpflags] & tcp-push != 0").unwrap();
    let info = p.info();
    println!("INFO {info:?} engine={}", p.engine());
    assert_eq!((info.jsets_rewritten, info.indexed_loads_rewritten), (2, 1), "{info:?}");
    assert!(p.is_jit() && info.jit_bytes > 0);
    assert_eq!(p.expression().text(), "tcp[tcpflags] & tcp-push != 0");
    let interp = Program::load(&eal, p.expression(), Engine::Interpreter).unwrap();
    assert_eq!((interp.engine(), interp.info().jit_bytes), (Engine::Interpreter, 0));

    // Shared between threads (RX cores share one program), and the EAL handle may go first.
    let p = Arc::new(Program::compile(&eal, "tcp dst port 443 or icmp[icmptype] == icmp-echo").unwrap());
    let all = packets(2000, 3);
    let want: Vec<bool> = all.iter().map(|d| p.matches_bytes(d, d.len() as u32)).collect();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let bufs: Vec<PktBuf> =
                all.iter().map(|d| PktBuf::from_segments(&pool, &segments(d, t == 1, &mut Rng(5))).unwrap()).collect();
            let (p, want) = (Arc::clone(&p), want.clone());
            std::thread::spawn(move || {
                let mut wrong = 0;
                for _ in 0..20 {
                    wrong += bufs.iter().zip(&want).filter(|(b, w)| p.matches(b.packet()) != **w).count();
                }
                wrong
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
    drop(pool);
    drop(eal);
    // The program keeps the EAL up: it still runs, and its drop comes before the cleanup.
    assert_eq!(p.matches_bytes(&all[40], all[40].len() as u32), want[40]);
    drop(p);
    println!("RESULT api ok");
}

/// Entry point of the child processes (ignored in normal runs: it needs `PCAPD_BPF_CHILD`).
#[test]
#[ignore = "runs only as a child process of the differential tests"]
fn child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("corpus") => child_corpus(),
        Ok("unrewritten") => child_unrewritten(),
        Ok("api") => child_api(),
        other => panic!("{CHILD_ENV} = {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

/// The machine's DPDK test lock (see tests/common), held while a child runs DPDK.
struct DpdkLock(#[allow(dead_code)] std::fs::File);

fn dpdk_lock() -> DpdkLock {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("pcapd-tests-dpdk.lock"))
        .unwrap();
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    DpdkLock(file)
}

struct Outcome {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal()
    }

    /// `key=value` of the `RESULT` line.
    fn result(&self, key: &str) -> Option<u64> {
        let line = self.stdout.lines().find(|l| l.starts_with("RESULT "))?;
        line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }
}

fn run_child(mode: &str, env: &[(&str, &str)]) -> Outcome {
    let _lock = dpdk_lock();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([CHILD_TEST, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome { status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

/// The rewritten programs agree with libpcap on every packet, JIT and interpreter, one
/// segment or several.
#[test]
fn rewritten_programs_agree_with_libpcap_on_every_packet() {
    let o = run_child("corpus", &[]);
    println!("{}", o.stdout);
    assert!(o.status.success(), "child failed ({:?}, signal {:?}):\n{}\n{}", o.status, o.signal(), o.stdout, o.stderr);
    assert_eq!(o.result("expressions"), Some(CORPUS.len() as u64));
    assert!(o.result("packets").unwrap() > GENERATED as u64);
    assert_eq!(o.result("mismatches"), Some(0), "{}", o.stdout);
    // The corpus is not trivial: most expressions match some packets and miss others.
    let n = o.result("packets").unwrap();
    let split = o
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("EXPR matched="))
        .filter_map(|l| l.split('/').next()?.trim().parse::<u64>().ok())
        .filter(|&m| m > 0 && m < n)
        .count();
    assert!(split >= CORPUS.len() - 2, "only {split} expressions both match and miss packets:\n{}", o.stdout);
}

/// Without the rewrite, DPDK's converter and JIT get these expressions wrong, or crash.
#[test]
fn the_converters_programs_reproduce_dpdks_bugs() {
    let mut report = String::new();
    let mut failures = Vec::new();
    for &(expr, engine, expect) in UNREWRITTEN {
        let o = run_child("unrewritten", &[(EXPR_ENV, expr), (ENGINE_ENV, engine.as_str())]);
        let crashed = o.signal().is_some();
        let wrong = o.result("mismatches");
        let started = o.stdout.lines().any(|l| l == "LOADED");
        let line = format!(
            "{expr:?} on the {engine}: {}\n",
            match (o.signal(), wrong) {
                (Some(sig), _) => format!("killed by signal {sig}"),
                (None, Some(w)) => format!("{w} mismatches of {} packets", o.result("packets").unwrap_or(0)),
                (None, None) => format!("failed: {}", o.stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")),
            }
        );
        report.push_str(&line);
        let ok = match expect {
            Expect::Wrong => wrong.is_some_and(|w| w > 0),
            Expect::WrongOrCrash => (crashed && started) || wrong.is_some_and(|w| w > 0),
            Expect::Right => wrong == Some(0),
        };
        if !ok {
            failures.push(format!("expected {expect:?}: {line}{}\n{}", o.stdout, o.stderr));
        }
    }
    println!("{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_api_refuses_shares_and_reports_its_engine() {
    let o = run_child("api", &[]);
    println!("{}", o.stdout);
    assert!(o.status.success(), "child failed ({:?}):\n{}\n{}", o.status, o.stdout, o.stderr);
    assert!(o.stdout.contains("RESULT api ok"));
}
