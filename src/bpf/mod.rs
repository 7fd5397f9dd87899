//! tcpdump expressions (issue 14): compiled by libpcap, converted to eBPF by DPDK, checked and
//! rewritten by pcapd, then JIT-compiled (or interpreted) by DPDK and run on mbufs.
//!
//! # The path
//! 1. [`Expression::compile`]: libpcap's `pcap_compile` on `pcap_open_dead(DLT_EN10MB, 262144)`
//!    with the optimizer on and `PCAP_NETMASK_UNKNOWN`, exactly as tcpdump and dpdk-dumpcap.
//!    libpcap owns the grammar; its error message is returned as is. The text is capped at
//!    [`MAX_EXPRESSION_BYTES`]; an empty or blank expression matches everything (tcpdump's rule).
//!    No EAL needed: an API can validate a request's expression with this alone, and the
//!    sample store can filter its records with [`Expression::matches_bytes`].
//! 2. [`Program::load`]: `rte_bpf_convert` turns the classic program into eBPF (DPDK's
//!    experimental API; it allocates with `rte_zmalloc`, so the EAL must be up: the `&Eal`
//!    argument proves it). The instructions are copied out and the allocation `rte_free`d.
//! 3. [`rewrite`]: every instruction must have a shape the converter emits, with its register
//!    roles, or the expression is **refused** ([`BpfError::Refused`]) and never loaded. Then
//!    four rewrites work around DPDK bugs (present in 22.11.11 and in DPDK main):
//!    - *indexed loads*: the converter picks the index register from a bit of the size
//!      field, so `ldb [x + k]` and `ld [x + k]` index with A instead of X. Every indexed
//!      load is given X. (Unrewritten, `icmp[icmptype] == icmp-echo`, `udp[8:4] == 0` and
//!      `tcp[tcpflags] & tcp-push != 0` disagree with libpcap on hundreds of test packets.)
//!    - *bounded index*: DPDK computes `X + k` in 32 bits and `rte_pktmbuf_read` checks
//!      `off + len` in 32 bits, so an X near 2^32 (`ether[ether[0] - 1]` on a zero byte)
//!      passes the check and reads 4 GiB away. An indexed load now runs only with X < 2^31,
//!      otherwise the program returns 0, which is libpcap's answer for a load beyond the packet.
//!    - *`jset` with an immediate*: DPDK's x86 JIT emits `test $imm8, %reg`, which x86 does not
//!      have: the bytes that follow are garbage (SIGSEGV, SIGILL on an RX core). Every `jset
//!      dst, #k` becomes `mov64 r9, #k; jset dst, r9` (the converter never uses r9).
//!    - *shift by X*: libpcap gives 0 for a shift by 32 or more, DPDK shifts by `X mod 32`
//!      (`ip[0] << ip[1] = 0` disagreed on 23 % of the test packets): X >= 32 now sets A = 0.
//!
//!    Jump offsets are recomputed around the inserted instructions.
//! 4. `rte_bpf_load` with `prog_arg.type = RTE_BPF_ARG_PTR_MBUF`: DPDK's verifier, then its JIT.
//!    A JIT failure is only a warning in DPDK: `rte_bpf_get_jit(..).func` is checked, and
//!    without it the program runs in DPDK's interpreter (`rte_bpf_exec`), correct in all
//!    cases once rewritten. [`Program::engine`] says which one runs (a metric reports it).
//!
//! # Why running it is safe
//! The check in [`rewrite`] admits only the converter's instruction forms, and each of them was
//! read in DPDK's JIT and interpreter: ALU on A with X or a constant (shifts by 0..=31, no
//! division by a zero constant; the converter guards division by X), loads from the packet
//! through the mbuf (the JIT's fast path checks `data_len`, else `rte_pktmbuf_read` copies
//! across segments or fails) at offsets up to 1 GiB, loads and stores of classic BPF's 16
//! scratch words on the program's own stack, a load of `pkt_len`, forward jumps inside the
//! program, and `exit`. There is no call, no store outside the stack and no pointer arithmetic,
//! so a program can only read the mbuf it is given and its own stack, and it always ends. The
//! two JIT encodings that are wrong (`test $imm8`, and `shl`/`shr` by an immediate of 128 or
//! more, excluded by the shift range) never reach the JIT. The differential test
//! (`difftest.rs`) runs a corpus of expressions over fixture frames and generated packets, on
//! single- and multi-segment mbufs, with the JIT and the interpreter, against libpcap's
//! `pcap_offline_filter`, in a child process (so a crash fails the test): 0 mismatches; and
//! shows the unrewritten programs mismatch or crash (SIGSEGV, SIGILL).
//!
//! # Semantics to know
//! - On an mbuf, `len`/`greater`/`less` read `pkt_len`: the wire length on the RX path. On a
//!   stored sample, pass the original length to [`Expression::matches_bytes`] (libpcap's `len`
//!   then reads it, loads beyond the captured bytes fail).
//! - No VLAN awareness, as in tcpdump: `tcp` does not match a tagged frame; write `vlan and
//!   tcp`. NIC VLAN stripping must stay off or the tag vanishes from the filter's view.
//! - DPDK's interpreter logs a DEBUG line for every load beyond a packet: keep DPDK's log level
//!   above DEBUG where programs run interpreted (the JIT logs nothing).
//! - libpcap resolves host names while compiling (`host example.com`): compile off the RX
//!   cores, and expect it to block on DNS.
//!
//! # Cost (benches/bpf.rs, 256 hot packets, ns/packet on this 2-vCPU machine, noisy)
//! `tcp dst port 443`: JIT 10.5, interpreter 43, libpcap 22.5, filter_v1 4.2. Across six
//! expressions the JIT ran 5–13 ns, the interpreter 23–52, libpcap 13–23. filter_v1's
//! matcher stays the fast path for what it can express. Compile + convert + load + JIT took
//! 0.3 ms for `tcp[tcpflags] & tcp-push != 0`, 0.12–0.18 s for a 4 KiB list of IPv6 hosts
//! (3,488 instructions): load programs off the RX cores and swap them in.
//!
//! # Layering
//! This module names `dpdk_sys` (in `libpcap.rs` and `engine.rs`, the only files with unsafe
//! code) because `rte_bpf` and libpcap are its C doors, as `dpdk/` is the door to the rest of
//! DPDK. `mod.rs` and `rewrite.rs` compile under `deny(unsafe_code)`.
#![deny(unsafe_code)]
use std::ffi::CString;

use crate::dpdk::log::DriverSaid;
use crate::dpdk::Errno;

#[cfg(test)]
#[allow(unsafe_code)]
mod difftest;
#[allow(unsafe_code)]
mod engine;
#[allow(unsafe_code)]
mod libpcap;
pub mod rewrite;
#[cfg(test)]
mod testpackets;

pub use engine::{Program, ProgramInfo};
pub use libpcap::{version as libpcap_version, SNAPLEN};
pub use rewrite::Refusal;

use libpcap::{Cbpf, CompileError};

/// Longest expression accepted, in bytes (a long host list is still far below this; DPDK's
/// verifier cost grows with the program).
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// Which of DPDK's engines runs a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Native code from DPDK's JIT (x86-64, arm64).
    Jit,
    /// DPDK's interpreter (`rte_bpf_exec`).
    Interpreter,
}

impl Engine {
    /// "jit" or "interpreter", for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Jit => "jit",
            Engine::Interpreter => "interpreter",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an expression was not compiled or loaded: one variant per decision the caller can make.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("the expression is {len} bytes long; at most {max} bytes are allowed")]
    TooLong { len: usize, max: usize },
    #[error("the expression contains a NUL byte")]
    NulByte,
    /// libpcap did not compile it: its own message, e.g. "can't parse filter expression: syntax
    /// error", "illegal port number 99999 > 65535", "expression rejects all packets".
    #[error("{0}")]
    Compile(String),
    #[error("libpcap could not allocate a handle to compile with (pcap_open_dead returned NULL)")]
    NoMemory,
    /// DPDK's converter gave up (`rte_errno` is kept, but the converter sets it to 1 for
    /// whatever it does not support: `protochain`, whose loop is a backward jump).
    #[error("DPDK's rte_bpf_convert cannot convert the expression to eBPF (it does not support `protochain`){driver}")]
    Convert { errno: Errno, driver: DriverSaid },
    #[error("the expression is refused: {0}; pcapd only runs programs whose every instruction it can prove safe")]
    Refused(#[from] Refusal),
    #[error("rte_bpf_load rejected the program: {errno}{driver}")]
    Load { errno: Errno, driver: DriverSaid },
}

impl BpfError {
    /// Whether the expression is at fault (an API answers 400, the CLI exits with 2), rather
    /// than the machine (out of memory).
    pub fn is_bad_input(&self) -> bool {
        match self {
            BpfError::TooLong { .. } | BpfError::NulByte | BpfError::Compile(_) | BpfError::Refused(_) => true,
            BpfError::Convert { errno, .. } | BpfError::Load { errno, .. } => errno.0.abs() != libc::ENOMEM,
            BpfError::NoMemory => false,
        }
    }
}

/// A tcpdump expression compiled by libpcap: runs on bytes, and is what [`Program::load`]
/// loads for mbufs. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Expression {
    text: String,
    cbpf: Cbpf,
}

impl Expression {
    /// Compiles `text` (tcpdump syntax, as `tcpdump` joins its arguments: callers join argv
    /// words with spaces). Leading and trailing whitespace is dropped; an empty expression
    /// matches everything. Host names are resolved by libpcap here, which may block.
    pub fn compile(text: &str) -> Result<Expression, BpfError> {
        let text = text.trim();
        if text.len() > MAX_EXPRESSION_BYTES {
            return Err(BpfError::TooLong { len: text.len(), max: MAX_EXPRESSION_BYTES });
        }
        let c = CString::new(text).map_err(|_| BpfError::NulByte)?;
        let cbpf = Cbpf::compile(&c).map_err(|e| match e {
            CompileError::NoHandle => BpfError::NoMemory,
            CompileError::Rejected(msg) => BpfError::Compile(msg),
        })?;
        Ok(Expression { text: text.to_string(), cbpf })
    }

    /// The expression as compiled (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether every packet matches (an empty expression, or one libpcap's optimizer reduced to
    /// "accept", such as `ip or not ip`): the RX path can skip filtering altogether.
    pub fn is_match_all(&self) -> bool {
        self.cbpf.constant() == Some(true)
    }

    /// Classic BPF instructions libpcap produced.
    pub fn cbpf_len(&self) -> usize {
        self.cbpf.len()
    }

    /// libpcap's verdict (`pcap_offline_filter`) on a packet of which `data` was captured and
    /// `orig_len` bytes were on the wire: for the sample store's truncated records. `len`,
    /// `greater` and `less` compare `orig_len`; a load beyond `data` means no match.
    #[inline]
    pub fn matches_bytes(&self, data: &[u8], orig_len: u32) -> bool {
        self.cbpf.matches(data, orig_len)
    }

    pub(crate) fn cbpf(&self) -> &Cbpf {
        &self.cbpf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(len: usize, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; len.max(54)];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f
    }

    #[test]
    fn libpcap_messages_are_returned_as_they_are() {
        let e = Expression::compile("tcp port").unwrap_err();
        assert!(matches!(e, BpfError::Compile(_)), "{e:?}");
        assert_eq!(e.to_string(), "can't parse filter expression: syntax error");
        assert!(e.is_bad_input());
        assert_eq!(Expression::compile("tcp port 99999").unwrap_err().to_string(), "illegal port number 99999 > 65535");
        assert_eq!(Expression::compile("tcp and udp").unwrap_err().to_string(), "expression rejects all packets");
        assert_eq!(Expression::compile("tcp\0").unwrap_err().to_string(), "the expression contains a NUL byte");
    }

    #[test]
    fn the_length_is_capped_and_blank_means_everything() {
        let long = format!("host 10.0.0.1{}", " or host 10.0.0.1".repeat(300));
        let e = Expression::compile(&long).unwrap_err();
        assert!(matches!(e, BpfError::TooLong { len, max: 4096 } if len == long.len()), "{e}");
        assert!(e.to_string().contains("at most 4096 bytes"));
        // Surrounding whitespace does not count.
        let padded = format!("{}tcp{}", " ".repeat(3000), "\n".repeat(3000));
        assert_eq!(Expression::compile(&padded).unwrap().text(), "tcp");
        for blank in ["", "   ", "\t\n"] {
            let e = Expression::compile(blank).unwrap();
            assert!(e.is_match_all());
            assert_eq!(e.text(), "");
            assert!(e.matches_bytes(&[], 0));
        }
        assert!(Expression::compile("ip or not ip").unwrap().is_match_all());
        assert!(!Expression::compile("tcp").unwrap().is_match_all());
    }

    #[test]
    fn bytes_are_matched_with_their_wire_length() {
        let frame = tcp_frame(1500, 443, 0x18);
        let sample = &frame[..160];
        let greater = Expression::compile("greater 1000").unwrap();
        assert!(greater.matches_bytes(sample, 1500), "len is the wire length");
        assert!(!greater.matches_bytes(sample, 160));
        assert!(Expression::compile("less 200").unwrap().matches_bytes(sample, 160));
        assert!(!Expression::compile("less 200").unwrap().matches_bytes(sample, 1500));
        let port = Expression::compile("tcp dst port 443 and tcp[tcpflags] & tcp-push != 0").unwrap();
        assert!(port.matches_bytes(sample, 1500));
        assert!(!port.matches_bytes(&tcp_frame(60, 80, 0x18), 60));
        // A load beyond the captured bytes: no match, however long the packet was.
        assert!(!Expression::compile("ether[200] == 0").unwrap().matches_bytes(sample, 1500));
        assert!(!port.matches_bytes(&frame[..40], 1500));
    }

    #[test]
    fn expressions_are_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Expression>();
        let e = Expression::compile("udp").unwrap();
        let copy = e.clone();
        let t = std::thread::spawn(move || copy.cbpf_len());
        assert_eq!(t.join().unwrap(), e.cbpf_len());
    }

    #[test]
    fn bad_input_is_told_from_a_lack_of_memory() {
        assert!(!BpfError::NoMemory.is_bad_input());
        let load = |errno| BpfError::Load { errno: Errno(errno), driver: DriverSaid::default() };
        assert!(!load(-libc::ENOMEM).is_bad_input());
        assert!(load(-libc::EINVAL).is_bad_input());
    }
}
