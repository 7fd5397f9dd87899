//! Differential tests of `Program` against libpcap's `pcap_offline_filter`, the oracle.
//!
//! Everything that starts the EAL runs in a child process: the test binary runs itself again
//! with only the ignored test `child` and `PCAPD_BPF_CHILD` set. A JIT crash (SIGSEGV, SIGILL)
//! then fails the parent test with the signal instead of killing the test runner, and each child
//! has its own EAL (one per process). The parent holds the machine's DPDK test lock meanwhile.
//!
//! Packets (`testpackets.rs`): the 29 kinds of frames of `tests/fixtures/frames.pcap` (VLAN,
//! QinQ, IPv6 extension headers, fragments, a jumbo frame, truncated headers) and generated ones
//! (synthesised headers with values the corpus asks about, and mutated fixture frames), each as a
//! single-segment mbuf (a jumbo frame needs several: mbufs hold 2 KiB) and as a chain cut at
//! random places (loads straddle segments and take DPDK's slow path).
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::Rewrite;
use super::testpackets::{packets, segments, Rng};
use super::{BpfError, Engine, Expression, Program};
use crate::dpdk::{Burst, Eal, Mempool, PktBuf, BURST, MBUF_DEFAULT_BUF_SIZE};

const CHILD_ENV: &str = "PCAPD_BPF_CHILD";
const EXPR_ENV: &str = "PCAPD_BPF_EXPR";
const ENGINE_ENV: &str = "PCAPD_BPF_ENGINE";
/// The test the child runs: this module's `child`, by its path in the crate.
const CHILD_TEST: &str = "bpf::difftest::child";
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

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
    let args = crate::dpdk::testing::eal_args("pcapd-bpf", 256);
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
    assert!(matches!(Program::compile(&eal, "tcp port"), Err(BpfError::Compile(_))));
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
    let t = Instant::now();
    let p = Program::compile(&eal, "tcp[tcpflags] & tcp-push != 0").unwrap();
    println!("COMPILED and loaded in {:?}", t.elapsed());
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
    // Held while the child runs DPDK.
    let _lock = crate::dpdk::testing::lock();
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
