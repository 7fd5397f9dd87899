//! The check and rewrite of a program `rte_bpf_convert` produced, before `rte_bpf_load` sees it.
//!
//! Pure code over plain instructions (`Insn`, the fields of DPDK's `struct ebpf_insn`): no FFI.
//!
//! **Check.** Every instruction must have one of the shapes the converter emits (the list in
//! `classify`, written from DPDK's `lib/bpf/bpf_convert.c`), with the converter's register
//! roles: r0 = A, r7 = X, r8 = the converter's temporary, r6 = the mbuf, r10 = the stack, r1
//! read once by the prologue. Anything else (another register, a call, a store that does not
//! target the stack, a 64-bit immediate, a shift by 32 or more, a packet offset beyond
//! `MAX_LOAD_OFFSET`, a jump out of the program) is refused: the program is never loaded.
//! So what reaches DPDK's verifier, JIT and interpreter is a small, known set of forms, each of
//! which was read in DPDK's x86 JIT (`bpf_jit_x86.c`) and interpreter (`bpf_exec.c`).
//!
//! **Rewrite.** Four transformations, each keeping the program's meaning under libpcap's
//! semantics:
//! 1. *Indexed loads* (`ld{b,h,w} [x + k]`): the converter takes the index register from a bit
//!    of the size field, so only `ldh` uses X; `ldb`/`ld` index with r0 (A). Every `BPF_LD |
//!    BPF_IND` gets `src_reg = r7` (X), which is what classic BPF means.
//! 2. *Bounded index*: before each indexed load, `jgt r7, #0x7fffffff → return 0`. libpcap
//!    rejects a packet when `X + k` lies beyond it (checked without wrapping); DPDK computes the
//!    offset in 32 bits, and `rte_pktmbuf_read`'s `off + len` wraps, so `X` near 2^32 (from
//!    `ether[ether[0] - 1]` on a zero byte) made DPDK read gigabytes past the buffer. With X <
//!    2^31 and k <= 2^30 (`MAX_LOAD_OFFSET`), `X + k + 4` never wraps and lies beyond any packet,
//!    so the load fails and the program returns 0, as libpcap does.
//! 3. *`jset` with an immediate*: DPDK's x86 JIT encodes `test $imm, %reg` with a 1-byte
//!    immediate when the constant fits in 8 bits; x86 has no such form, so the bytes after it
//!    decode as garbage (SIGSEGV, SIGILL). Every `jset dst, #imm` becomes `mov64 r9, #imm; jset
//!    dst, r9` (`mov64` sign-extends its immediate exactly as `jset #imm` does, and `test %reg,
//!    %reg` has no short form). The converter never uses r9: the check refuses a program that does.
//! 4. *Shift by X*: libpcap shifts A by X < 32 and sets A = 0 for X >= 32; DPDK's interpreter
//!    and JIT shift by `X mod 32` (x86 masks the count). `lsh A, X` becomes `jgt r7, #31 → A =
//!    0; lsh A, X` (`rsh` likewise): `ip[0] << ip[1] = 0` disagreed with libpcap on 23 % of the
//!    differential test's packets before this.
//!
//! Inserted instructions move the others: jump offsets are recomputed from a map of old to new
//! positions, a jump to an instruction landing on the first instruction emitted for it (so a
//! jump to an indexed load goes through its bound check). An offset that no longer fits in 16
//! bits is refused.
#![deny(unsafe_code)]
use std::fmt;

/// One eBPF instruction: the fields of DPDK's `struct ebpf_insn` (`bpf_def.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, dst, src, off, imm }
    }
}

impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {:#04x} dst r{} src r{} off {} imm {}", self.code, self.dst, self.src, self.off, self.imm)
    }
}

/// Opcode parts, as in DPDK's `bpf_def.h` (classic values where eBPF shares them).
pub mod op {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const ALU64: u8 = 0x07;

    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;

    pub const ABS: u8 = 0x20;
    pub const IND: u8 = 0x40;
    pub const MEM: u8 = 0x60;

    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;

    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const DIV: u8 = 0x30;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const NEG: u8 = 0x80;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;

    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JSET: u8 = 0x40;
    pub const JNE: u8 = 0x50;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;

    pub const fn class(code: u8) -> u8 {
        code & 0x07
    }
    pub const fn size(code: u8) -> u8 {
        code & 0x18
    }
    pub const fn mode(code: u8) -> u8 {
        code & 0xe0
    }
    pub const fn alu_op(code: u8) -> u8 {
        code & 0xf0
    }
    pub const fn src(code: u8) -> u8 {
        code & 0x08
    }
}

/// Registers of converted programs (DPDK's `bpf_convert.c` names).
pub mod reg {
    /// The accumulator A, and the return value.
    pub const A: u8 = 0;
    /// The program's argument (the mbuf), read once by the prologue.
    pub const ARG: u8 = 1;
    /// The mbuf, which `BPF_LD | BPF_ABS/IND` read implicitly.
    pub const CTX: u8 = 6;
    /// The index register X.
    pub const X: u8 = 7;
    /// The converter's temporary (negative compare constants, `ldxb 4*([k]&0xf)`).
    pub const TMP: u8 = 8;
    /// Free in converted programs: holds `jset` constants after the rewrite.
    pub const JSET_K: u8 = 9;
    /// The frame pointer (classic BPF's scratch memory M[] lives below it).
    pub const FP: u8 = 10;
}

/// Largest packet offset `k` an absolute or indexed load may name (1 GiB: far beyond any
/// packet, small enough that `X + k + 4` cannot wrap in 32 bits with X < 2^31).
pub const MAX_LOAD_OFFSET: i32 = 1 << 30;

/// Largest X an indexed load runs with; a larger X returns 0 (the packet does not match).
pub const MAX_INDEX: i32 = i32::MAX;

/// Classic BPF's 16 scratch words, as the converter places them below the frame pointer.
const SCRATCH_BYTES: i16 = 16 * 4;

/// Why a converted program was not loaded: the instruction and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction {pc} of the converted program ({insn}): {reason}")]
pub struct Refusal {
    pub pc: usize,
    pub insn: Insn,
    pub reason: &'static str,
}

/// A checked and rewritten program, and how many instructions each rewrite touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub insns: Vec<Insn>,
    /// `jset #imm` turned into `mov64 r9, #imm; jset r9`.
    pub jsets: usize,
    /// Indexed loads given X as their index and a bound check.
    pub indexed_loads: usize,
    /// Shifts by X given libpcap's meaning for X >= 32.
    pub shifts: usize,
}

/// Where the converted program reads `len` (`ld #pktlen`): `offsetof(struct rte_mbuf, pkt_len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbufLayout {
    pub pkt_len_off: i16,
}

/// How one instruction is carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Copied as is.
    Plain,
    /// Copied with its offset recomputed; the target is an old index.
    Jump { target: usize },
    /// `jset dst, #imm` → `mov64 r9, #imm; jset dst, r9`.
    JsetImm { target: usize },
    /// `ld? [x + k]` → `jgt r7, #MAX_INDEX → return 0; ld? [r7 + k]`.
    IndexedLoad,
    /// `lsh/rsh A, X` → `jgt r7, #31, +2; lsh/rsh A, X; ja +1; mov32 A, #0`.
    ShiftByX,
}

/// Instructions emitted for one of each kind.
const fn expansion(k: Kind) -> usize {
    match k {
        Kind::Plain | Kind::Jump { .. } => 1,
        Kind::JsetImm { .. } | Kind::IndexedLoad => 2,
        Kind::ShiftByX => 4,
    }
}

/// The converter's first three instructions: A = 0, X = 0, ctx = r1.
const PROLOGUE: [Insn; 3] = [
    Insn::new(op::ALU64 | op::XOR | op::X, reg::A, reg::A, 0, 0),
    Insn::new(op::ALU64 | op::XOR | op::X, reg::X, reg::X, 0, 0),
    Insn::new(op::ALU64 | op::MOV | op::X, reg::CTX, reg::ARG, 0, 0),
];

/// Checks a converted program and returns it rewritten (see the module doc), or the first
/// instruction it cannot prove safe.
pub fn rewrite(prog: &[Insn], layout: MbufLayout) -> Result<Rewritten, Refusal> {
    let refuse = |pc: usize, reason: &'static str| Refusal { pc, insn: prog[pc], reason };
    if prog.len() < PROLOGUE.len() + 1 {
        return Err(Refusal { pc: 0, insn: prog.first().copied().unwrap_or_default(), reason: "program too short" });
    }
    if let Some(pc) = (0..PROLOGUE.len()).find(|&pc| prog[pc] != PROLOGUE[pc]) {
        return Err(refuse(pc, "not the converter's prologue (A = 0, X = 0, r6 = mbuf)"));
    }
    let last = prog.len() - 1;
    if !matches!(prog[last].code, c if c == op::JMP | op::EXIT || c == op::JMP | op::JA) {
        return Err(refuse(last, "the program can run past its last instruction"));
    }
    let kinds: Vec<Kind> =
        (0..prog.len()).map(|pc| classify(prog, pc, layout).map_err(|r| refuse(pc, r))).collect::<Result<_, _>>()?;

    // Old index → index of the first instruction emitted for it.
    let mut at = Vec::with_capacity(prog.len());
    let mut len = 0usize;
    for &k in &kinds {
        at.push(len);
        len += expansion(k);
    }
    let indexed_loads = kinds.iter().filter(|k| **k == Kind::IndexedLoad).count();
    let jsets = kinds.iter().filter(|k| matches!(k, Kind::JsetImm { .. })).count();
    let shifts = kinds.iter().filter(|k| **k == Kind::ShiftByX).count();
    // Where a bound check that fails goes: `return 0`, appended only when used (DPDK's
    // verifier refuses unreachable instructions).
    let reject_at = len;
    let mut out = Vec::with_capacity(len + 2);
    // (index in `out`, old pc it came from, new target).
    let mut fixups: Vec<(usize, usize, usize)> = Vec::new();
    for (pc, (&insn, kind)) in prog.iter().zip(&kinds).enumerate() {
        match *kind {
            Kind::Plain => out.push(insn),
            Kind::Jump { target } => {
                fixups.push((out.len(), pc, at[target]));
                out.push(insn);
            }
            Kind::JsetImm { target } => {
                out.push(Insn::new(op::ALU64 | op::MOV | op::K, reg::JSET_K, 0, 0, insn.imm));
                fixups.push((out.len(), pc, at[target]));
                out.push(Insn::new(op::JMP | op::JSET | op::X, insn.dst, reg::JSET_K, 0, 0));
            }
            Kind::IndexedLoad => {
                fixups.push((out.len(), pc, reject_at));
                out.push(Insn::new(op::JMP | op::JGT | op::K, reg::X, 0, 0, MAX_INDEX));
                out.push(Insn { src: reg::X, ..insn });
            }
            Kind::ShiftByX => {
                // Jumps inside the four instructions: their offsets are fixed.
                out.push(Insn::new(op::JMP | op::JGT | op::K, reg::X, 0, 2, 31));
                out.push(insn);
                out.push(Insn::new(op::JMP | op::JA, 0, 0, 1, 0));
                out.push(Insn::new(op::ALU | op::MOV | op::K, reg::A, 0, 0, 0));
            }
        }
    }
    debug_assert_eq!(out.len(), len);
    if indexed_loads > 0 {
        out.push(Insn::new(op::ALU | op::MOV | op::K, reg::A, 0, 0, 0));
        out.push(Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0));
    }
    for (i, pc, target) in fixups {
        let off = target as i64 - i as i64 - 1;
        out[i].off = i16::try_from(off).map_err(|_| refuse(pc, "jump too long once rewritten (16-bit offset)"))?;
    }
    Ok(Rewritten { insns: out, jsets, indexed_loads, shifts })
}

/// The shape of instruction `pc`, or why it is refused.
fn classify(prog: &[Insn], pc: usize, layout: MbufLayout) -> Result<Kind, &'static str> {
    let i = prog[pc];
    if i.dst > reg::FP || i.src > reg::FP {
        return Err("no such register");
    }
    let jump_target = || -> Result<usize, &'static str> {
        let t = pc as i64 + 1 + i64::from(i.off);
        if t <= pc as i64 {
            // Classic BPF jumps only forward: converted programs always end.
            return Err("backward jump");
        }
        if t >= prog.len() as i64 {
            return Err("jump target outside the program");
        }
        Ok(t as usize)
    };
    let is_scratch = |off: i16| (-SCRATCH_BYTES..0).contains(&off) && off % 4 == 0;
    let a_or_x = |r: u8| r == reg::A || r == reg::X;
    match op::class(i.code) {
        op::ALU64 => match i.code {
            c if c == op::ALU64 | op::XOR | op::X && i.dst == i.src && a_or_x(i.dst) => Ok(Kind::Plain),
            c if c == op::ALU64 | op::MOV | op::X => {
                let scalar = |r: u8| a_or_x(r) || r == reg::TMP;
                if (pc == 2 && i.dst == reg::CTX && i.src == reg::ARG) || (scalar(i.dst) && scalar(i.src)) {
                    Ok(Kind::Plain)
                } else {
                    Err("64-bit move between registers converted programs do not use so")
                }
            }
            _ => Err("64-bit ALU instruction converted programs do not contain"),
        },
        op::ALU => {
            let code = i.code;
            match op::alu_op(code) {
                op::NEG if code == op::ALU | op::NEG && i.dst == reg::A => Ok(Kind::Plain),
                op::MOV if op::src(code) == op::K && (a_or_x(i.dst) || i.dst == reg::TMP) => Ok(Kind::Plain),
                op::MOV if op::src(code) == op::X && a_or_x(i.dst) && a_or_x(i.src) => Ok(Kind::Plain),
                op::ADD | op::SUB | op::MUL | op::DIV | op::OR | op::AND | op::LSH | op::RSH | op::MOD | op::XOR
                    if i.dst == reg::A =>
                {
                    let alu = op::alu_op(code);
                    if op::src(code) == op::X {
                        // `xor A, A` zeroes A before the converter's exit on division by X = 0.
                        let zeroing = alu == op::XOR && i.src == reg::A;
                        return match i.src {
                            reg::X if alu == op::LSH || alu == op::RSH => Ok(Kind::ShiftByX),
                            reg::X => Ok(Kind::Plain),
                            _ if zeroing => Ok(Kind::Plain),
                            _ => Err("ALU operand is not X"),
                        };
                    }
                    if (alu == op::LSH || alu == op::RSH) && !(0..32).contains(&i.imm) {
                        return Err("shift by a constant outside 0..=31");
                    }
                    if (alu == op::DIV || alu == op::MOD) && i.imm == 0 {
                        return Err("division by the constant 0");
                    }
                    Ok(Kind::Plain)
                }
                _ => Err("32-bit ALU instruction converted programs do not contain"),
            }
        }
        op::LD => {
            let sized = matches!(op::size(i.code), op::W | op::H | op::B);
            let offset_ok = (0..=MAX_LOAD_OFFSET).contains(&i.imm);
            match op::mode(i.code) {
                op::ABS if sized && i.dst == reg::A && i.src == 0 && i.off == 0 => {
                    if offset_ok {
                        Ok(Kind::Plain)
                    } else {
                        Err("packet offset beyond 1 GiB")
                    }
                }
                // src is r0 (the converter's bug) or r7; it becomes r7 either way.
                op::IND if sized && i.dst == reg::A && a_or_x(i.src) && i.off == 0 => {
                    if offset_ok {
                        Ok(Kind::IndexedLoad)
                    } else {
                        Err("packet offset beyond 1 GiB")
                    }
                }
                _ => Err("load converted programs do not contain"),
            }
        }
        op::LDX if i.code == op::LDX | op::MEM | op::W && a_or_x(i.dst) => {
            if (i.src == reg::FP && is_scratch(i.off)) || (i.src == reg::CTX && i.off == layout.pkt_len_off) {
                Ok(Kind::Plain)
            } else {
                Err("memory load other than scratch memory or the mbuf's pkt_len")
            }
        }
        op::STX if i.code == op::STX | op::MEM | op::W && i.dst == reg::FP && a_or_x(i.src) && is_scratch(i.off) => {
            Ok(Kind::Plain)
        }
        op::JMP => {
            let code = i.code;
            if code == op::JMP | op::EXIT {
                return Ok(Kind::Plain);
            }
            if code == op::JMP | op::JA {
                return Ok(Kind::Jump { target: jump_target()? });
            }
            if code == op::JMP | op::CALL {
                return Err("call (converted programs call nothing)");
            }
            let cond = op::alu_op(code);
            if !matches!(cond, op::JEQ | op::JGT | op::JGE | op::JSET | op::JNE) {
                return Err("jump converted programs do not contain");
            }
            if op::src(code) == op::X {
                return if i.dst == reg::A && (i.src == reg::X || i.src == reg::TMP) {
                    Ok(Kind::Jump { target: jump_target()? })
                } else {
                    Err("compare between registers other than A and X/tmp")
                };
            }
            if !a_or_x(i.dst) {
                return Err("compare of a register other than A or X");
            }
            if cond == op::JSET {
                return Ok(Kind::JsetImm { target: jump_target()? });
            }
            // eBPF sign-extends the immediate; classic BPF compares unsigned 32-bit values. The
            // converter moves constants >= 2^31 into r8 for that reason.
            if i.imm < 0 {
                return Err("compare with a negative immediate");
            }
            Ok(Kind::Jump { target: jump_target()? })
        }
        _ => Err("instruction converted programs do not contain"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: MbufLayout = MbufLayout { pkt_len_off: 36 };

    fn ret(k: i32) -> [Insn; 2] {
        [Insn::new(op::ALU | op::MOV | op::K, 0, 0, 0, k), Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0)]
    }

    fn prog(body: &[Insn]) -> Vec<Insn> {
        let mut p = PROLOGUE.to_vec();
        p.extend_from_slice(body);
        p
    }

    fn ldb_abs(k: i32) -> Insn {
        Insn::new(op::LD | op::ABS | op::B, 0, 0, 0, k)
    }

    /// `tcp[tcpflags] & tcp-push != 0` as DPDK 22.11's converter emits it (tail of it).
    fn converted_tcp_push() -> Vec<Insn> {
        let [mov_ok, exit] = ret(262144);
        let [mov_no, exit2] = ret(0);
        prog(&[
            // 3: ldxb 4*([14]&0xf)
            Insn::new(op::ALU64 | op::MOV | op::X, reg::TMP, reg::A, 0, 0),
            ldb_abs(14),
            Insn::new(op::ALU | op::AND | op::K, 0, 0, 0, 0xf),
            Insn::new(op::ALU | op::LSH | op::K, 0, 0, 0, 2),
            Insn::new(op::ALU64 | op::MOV | op::X, reg::X, reg::A, 0, 0),
            Insn::new(op::ALU64 | op::MOV | op::X, reg::A, reg::TMP, 0, 0),
            // 9: ldb [x + 27], with the converter's wrong index register r0
            Insn::new(op::LD | op::IND | op::B, 0, 0, 0, 27),
            // 10: jset #0x8 → 12 (match), else 11: ja 14 (no match)
            Insn::new(op::JMP | op::JSET | op::K, 0, 0, 1, 8),
            Insn::new(op::JMP | op::JA, 0, 0, 2, 0),
            mov_ok,
            exit,
            mov_no,
            exit2,
        ])
    }

    /// Runs a converted program the way DPDK's interpreter does, for the forms `classify`
    /// accepts (enough to check that the rewrite keeps jumps pointing at the same places).
    fn run(p: &[Insn], pkt: &[u8]) -> u64 {
        let mut r = [0u64; 11];
        let mut stack = [0u32; 16];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            pc += 1;
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            let imm = i.imm as i64 as u64;
            let load = |off: u64, n: usize| -> Option<u64> {
                let off = usize::try_from(off).ok()?;
                let b = pkt.get(off..off.checked_add(n)?)?;
                Some(b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
            };
            let size = |c: u8| match op::size(c) {
                op::B => 1,
                op::H => 2,
                _ => 4,
            };
            match op::class(i.code) {
                op::ALU64 if i.code == op::ALU64 | op::XOR | op::X => r[d] ^= r[s],
                op::ALU64 if i.code == op::ALU64 | op::MOV | op::X => r[d] = r[s],
                op::ALU64 if i.code == op::ALU64 | op::MOV | op::K => r[d] = imm,
                op::ALU => {
                    let b = if op::src(i.code) == op::X { r[s] as u32 } else { i.imm as u32 };
                    let a = r[d] as u32;
                    r[d] = u64::from(match op::alu_op(i.code) {
                        op::ADD => a.wrapping_add(b),
                        op::SUB => a.wrapping_sub(b),
                        op::AND => a & b,
                        op::OR => a | b,
                        // DPDK (and x86) shift by the count mod 32.
                        op::LSH => a.wrapping_shl(b),
                        op::RSH => a.wrapping_shr(b),
                        op::MOV => b,
                        _ => unimplemented!("{i}"),
                    });
                }
                op::LD => {
                    let off = if op::mode(i.code) == op::IND { u64::from(r[s] as u32 + i.imm as u32) } else { imm };
                    match load(off, size(i.code)) {
                        Some(v) => r[0] = v,
                        None => return 0,
                    }
                }
                op::LDX => r[d] = u64::from(stack[((64 + i.off) / 4) as usize]),
                op::STX => stack[((64 + i.off) / 4) as usize] = r[s] as u32,
                op::JMP => {
                    let b = if op::src(i.code) == op::X { r[s] } else { imm };
                    let taken = match op::alu_op(i.code) {
                        op::EXIT => return r[0],
                        op::JA => true,
                        op::JEQ => r[d] == b,
                        op::JNE => r[d] != b,
                        op::JGT => r[d] > b,
                        op::JGE => r[d] >= b,
                        op::JSET => r[d] & b != 0,
                        _ => unimplemented!("{i}"),
                    };
                    if taken {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                _ => unimplemented!("{i}"),
            }
        }
    }

    #[test]
    fn indexed_loads_use_x_and_are_bounded_and_jsets_use_r9() {
        let p = converted_tcp_push();
        let w = rewrite(&p, LAYOUT).unwrap();
        assert_eq!((w.jsets, w.indexed_loads), (1, 1));
        assert_eq!(w.insns.len(), p.len() + 2 + 2);
        // The bound check, then the load with X as its index.
        assert_eq!(w.insns[9], Insn::new(op::JMP | op::JGT | op::K, reg::X, 0, 8, i32::MAX));
        assert_eq!(w.insns[10], Insn::new(op::LD | op::IND | op::B, 0, reg::X, 0, 27));
        assert_eq!(w.insns[11], Insn::new(op::ALU64 | op::MOV | op::K, reg::JSET_K, 0, 0, 8));
        assert_eq!(w.insns[12], Insn::new(op::JMP | op::JSET | op::X, 0, reg::JSET_K, 1, 0));
        // The reject block at the end, where the bound check jumps.
        assert_eq!(&w.insns[w.insns.len() - 2..], &ret(0));
        assert_eq!(9 + 1 + 8, w.insns.len() - 2);
    }

    #[test]
    fn the_rewrite_keeps_the_meaning_of_classic_bpf() {
        let p = converted_tcp_push();
        let w = rewrite(&p, LAYOUT).unwrap().insns;
        let mut pkt = vec![0u8; 60];
        pkt[14] = 0x45; // IHL 5: TCP flags at 14 + 20 + 13 = 47
        for flags in [0u8, 0x08, 0x18, 0x10, 0xff] {
            pkt[47] = flags;
            let want = if flags & 0x08 != 0 { 262144 } else { 0 };
            assert_eq!(run(&w, &pkt), want, "flags {flags:#x}");
        }
        // Unrewritten, the load indexes with A (0 here): it reads byte 27, not 47.
        pkt[47] = 0x08;
        assert_eq!(run(&p, &pkt), 0, "the converter's program misses the PSH flag");
        // A packet too short for the load: no match, as libpcap.
        assert_eq!(run(&w, &pkt[..40]), 0);
    }

    #[test]
    fn a_huge_index_returns_zero_before_loading() {
        // X = 0xffffffff (ether[0] - 1 on a zero byte), then ldb [x + 0].
        let p = prog(&[
            ldb_abs(0),
            Insn::new(op::ALU | op::SUB | op::K, 0, 0, 0, 1),
            Insn::new(op::ALU64 | op::MOV | op::X, reg::X, reg::A, 0, 0),
            Insn::new(op::LD | op::IND | op::B, 0, 0, 0, 0),
            ret(1)[0],
            ret(1)[1],
        ]);
        let w = rewrite(&p, LAYOUT).unwrap().insns;
        assert_eq!(run(&w, &[0, 9, 9]), 0);
        assert_eq!(run(&w, &[2, 9, 9]), 1);
    }

    #[test]
    fn a_shift_by_x_of_32_or_more_clears_a_as_in_libpcap() {
        // A = ip[0]-ish byte 0, X = byte 1, A <<= X, match if A == 0.
        let p = prog(&[
            ldb_abs(1),
            Insn::new(op::ALU64 | op::MOV | op::X, reg::X, reg::A, 0, 0),
            ldb_abs(0),
            Insn::new(op::ALU | op::LSH | op::X, reg::A, reg::X, 0, 0),
            Insn::new(op::JMP | op::JEQ | op::K, 0, 0, 2, 0),
            ret(0)[0],
            ret(0)[1],
            ret(1)[0],
            ret(1)[1],
        ]);
        let w = rewrite(&p, LAYOUT).unwrap();
        assert_eq!(w.shifts, 1);
        assert_eq!(w.insns.len(), p.len() + 3);
        let libpcap = |a: u32, x: u32| u64::from((if x < 32 { a << x } else { 0 }) == 0);
        for (a, x) in [(0x45u8, 0u8), (0x45, 26), (0x45, 31), (0x45, 32), (0x45, 58), (1, 255), (0, 40)] {
            assert_eq!(run(&w.insns, &[a, x]), libpcap(a.into(), x.into()), "{a:#x} << {x}");
        }
    }

    #[test]
    fn jumps_over_inserted_instructions_are_moved() {
        // A forward jump over a jset and a backward-looking layout: every target keeps its
        // instruction, whatever was inserted before or between.
        let p = prog(&[
            ldb_abs(0),                                           // 3
            Insn::new(op::JMP | op::JEQ | op::K, 0, 0, 2, 1),     // 4 → 7
            Insn::new(op::JMP | op::JSET | op::K, 0, 0, 1, 2),    // 5 → 7 else 6
            Insn::new(op::JMP | op::JA, 0, 0, 2, 0),              // 6 → 9
            Insn::new(op::JMP | op::JSET | op::K, 0, 0, 0, 0x10), // 7 → 8
            Insn::new(op::ALU | op::MOV | op::K, 0, 0, 0, 7),     // 8
            Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0),            // 9
        ]);
        let w = rewrite(&p, LAYOUT).unwrap();
        assert_eq!(w.jsets, 2);
        for b in 0..=255u8 {
            assert_eq!(run(&w.insns, &[b]), run(&p, &[b]), "byte {b}");
        }
    }

    #[test]
    fn unknown_shapes_are_refused() {
        let bad = [
            (Insn::new(op::JMP | op::CALL, 0, 0, 0, 1), "call"),
            (Insn::new(op::ALU64 | op::MOV | op::K, reg::JSET_K, 0, 0, 1), "64-bit ALU"),
            (Insn::new(op::ALU64 | op::MOV | op::X, reg::JSET_K, reg::A, 0, 0), "64-bit move"),
            (Insn::new(op::ALU | op::ADD | op::X, 0, 3, 0, 0), "not X"),
            (Insn::new(op::ALU | op::LSH | op::K, 0, 0, 0, 32), "shift"),
            (Insn::new(op::ALU | op::DIV | op::K, 0, 0, 0, 0), "division"),
            (Insn::new(op::LD | op::ABS | op::B, 0, 0, 0, (1 << 30) + 1), "beyond 1 GiB"),
            (Insn::new(op::LD | op::ABS | op::B, 0, 0, 0, -4), "beyond 1 GiB"),
            (Insn::new(op::LD | op::IND | op::W, 0, reg::TMP, 0, 0), "load converted"),
            (Insn::new(op::LD | op::DW, 0, 0, 0, 0), "load converted"),
            (Insn::new(op::STX | op::MEM | op::W, reg::CTX, 0, 0, 0), "instruction converted"),
            (Insn::new(op::ST | op::MEM | op::W, reg::FP, 0, -4, 0), "instruction converted"),
            (Insn::new(op::LDX | op::MEM | op::W, 0, reg::CTX, 8, 0), "pkt_len"),
            (Insn::new(op::LDX | op::MEM | op::W, 0, reg::FP, -68, 0), "scratch"),
            (Insn::new(op::JMP | op::JA, 0, 0, 100, 0), "outside the program"),
            (Insn::new(op::JMP | op::JA, 0, 0, -5, 0), "backward"),
            (Insn::new(op::JMP | op::JA, 0, 0, -1, 0), "backward"),
            (Insn::new(op::JMP | op::JGT | op::K, 0, 0, 0, -1), "negative"),
            (Insn::new(op::JMP | 0xa0 | op::K, 0, 0, 0, 0), "jump converted"),
            (Insn::new(op::JMP | op::JEQ | op::X, 0, 2, 0, 0), "compare between"),
            (Insn::new(op::ALU | 0xd0, 0, 0, 0, 16), "32-bit ALU"),
            (Insn::new(0x04, 12, 0, 0, 0), "no such register"),
        ];
        for (insn, why) in bad {
            let mut body = vec![insn];
            body.extend_from_slice(&ret(0));
            let err = rewrite(&prog(&body), LAYOUT).unwrap_err();
            assert_eq!(err.pc, 3, "{insn}");
            assert!(err.reason.contains(why), "{insn}: {err}");
        }
        // No prologue, or falling off the end.
        assert!(rewrite(&ret(0), LAYOUT).unwrap_err().reason.contains("too short"));
        let mut p = prog(&ret(0));
        p[1].dst = reg::TMP;
        assert!(rewrite(&p, LAYOUT).unwrap_err().reason.contains("prologue"));
        let p = prog(&[ldb_abs(0)]);
        assert!(rewrite(&p, LAYOUT).unwrap_err().reason.contains("past its last"));
        // Legitimate memory accesses, and the converter's guard of a division by X, pass.
        let p = prog(&[
            Insn::new(op::STX | op::MEM | op::W, reg::FP, reg::A, -60, 0),
            Insn::new(op::LDX | op::MEM | op::W, reg::X, reg::FP, -60, 0),
            Insn::new(op::LDX | op::MEM | op::W, reg::A, reg::CTX, 36, 0),
            Insn::new(op::ALU | op::MOV | op::X, reg::X, reg::X, 0, 0),
            Insn::new(op::JMP | op::JNE | op::K, reg::X, 0, 2, 0),
            Insn::new(op::ALU | op::XOR | op::X, reg::A, reg::A, 0, 0),
            Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0),
            Insn::new(op::ALU | op::DIV | op::X, reg::A, reg::X, 0, 0),
            ret(0)[0],
            ret(0)[1],
        ]);
        assert_eq!(rewrite(&p, LAYOUT).unwrap().insns, p);
    }

    #[test]
    fn a_jump_that_no_longer_fits_is_refused() {
        // 20000 jsets between a jump and its target: 40000 instructions once rewritten.
        let mut body = vec![Insn::new(op::JMP | op::JA, 0, 0, 20000, 0)];
        body.extend((0..20000).map(|_| Insn::new(op::JMP | op::JSET | op::K, 0, 0, 0, 1)));
        body.extend_from_slice(&ret(0));
        let err = rewrite(&prog(&body), LAYOUT).unwrap_err();
        assert_eq!(err.pc, 3);
        assert!(err.reason.contains("too long"), "{err}");
    }
}
