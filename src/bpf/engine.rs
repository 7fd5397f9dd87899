//! The DPDK side: `rte_bpf_convert`, the rewrite, `rte_bpf_load`, and running the program on
//! mbufs through its JIT code or DPDK's interpreter.
//!
//! Invariants: a `Program` owns one `rte_bpf` (destroyed on drop, with its JIT code); the
//! program it holds passed `rewrite::rewrite` (no store outside its stack, no call), so running
//! it only reads the mbuf it is given. The JIT function pointer is code inside that `rte_bpf`
//! and is never copied out of `Program`.
use std::ffi::c_void;
use std::ptr::NonNull;

use dpdk_sys as sys;

use super::rewrite::{self, Insn, MbufLayout};
use super::{BpfError, Engine, Expression};
use crate::dpdk::log::{self, DriverSaid};
use crate::dpdk::{Burst, Eal, Errno, Packet, BURST};

/// The JIT's entry point: `uint64_t (*func)(void *ctx)`, `ctx` being the mbuf.
type JitFn = unsafe extern "C" fn(*mut c_void) -> u64;

// `matches_burst` reports one bit per packet of a burst.
const _: () = assert!(BURST <= 32);

/// What was loaded: sizes and what the rewrite changed (for logs and the API's echo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramInfo {
    /// libpcap's classic BPF instructions.
    pub cbpf_insns: usize,
    /// eBPF instructions loaded (after the rewrite).
    pub ebpf_insns: usize,
    /// `jset #k` rewritten to use a register.
    pub jsets_rewritten: usize,
    /// Indexed loads given X and a bound check.
    pub indexed_loads_rewritten: usize,
    /// Shifts by X given libpcap's result for X >= 32.
    pub shifts_rewritten: usize,
    /// Bytes of native code, 0 when the interpreter runs the program.
    pub jit_bytes: usize,
}

/// Whether the converted program is rewritten (always, outside the tests that show why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewrite {
    On,
    /// The converter's output as is: only for tests that reproduce DPDK's bugs, in a child
    /// process.
    #[cfg(test)]
    Off,
}

/// A tcpdump expression loaded into DPDK for matching mbufs: owns its `rte_bpf`.
///
/// `Send + Sync`: RX cores may share one (`Arc<Program>`) and run it concurrently.
pub struct Program {
    bpf: NonNull<sys::rte_bpf>,
    /// Native code inside `bpf`, when the JIT produced it and it was asked for.
    jit: Option<JitFn>,
    expression: Expression,
    info: ProgramInfo,
    /// `rte_bpf_convert` needed the EAL; holding it keeps DPDK initialised while the program
    /// exists, whatever order owners drop things in.
    _eal: Eal,
}

// SAFETY: a loaded rte_bpf is immutable (rte_bpf_load leaves it read-only) and both the
// interpreter and the JIT code keep all run-time state on the calling thread's stack; the
// program only reads the mbuf passed in. Destruction needs `&mut self` (Drop). So moving a
// Program to another thread, or running it from several threads at once, is sound.
unsafe impl Send for Program {}
// SAFETY: see `Send`: every `&self` method only reads the rte_bpf.
unsafe impl Sync for Program {}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("expression", &self.expression.text())
            .field("engine", &self.engine())
            .field("info", &self.info)
            .finish()
    }
}

/// A pointer from `rte_zmalloc` (here: `rte_bpf_convert`'s result), `rte_free`d on drop.
struct RteAlloc(NonNull<c_void>);

impl Drop for RteAlloc {
    fn drop(&mut self) {
        // SAFETY: the pointer came from rte_zmalloc (inside rte_bpf_convert), is freed once,
        // here, and nothing borrowed from it outlives this guard.
        unsafe { sys::rte_free(self.0.as_ptr()) };
    }
}

/// Where `ld #pktlen` reads: `offsetof(struct rte_mbuf, pkt_len)`, as the converter emits it.
const LAYOUT: MbufLayout = {
    let off = std::mem::offset_of!(sys::rte_mbuf, pkt_len);
    assert!(off < 64, "pkt_len lies in the first cache line of rte_mbuf");
    MbufLayout { pkt_len_off: off as i16 }
};

fn from_sys(i: &sys::ebpf_insn) -> Insn {
    Insn { code: i.code, dst: i.dst_reg(), src: i.src_reg(), off: i.off, imm: i.imm }
}

fn to_sys(i: &Insn) -> sys::ebpf_insn {
    let mut s = sys::ebpf_insn { code: i.code, off: i.off, imm: i.imm, ..Default::default() };
    s.set_dst_reg(i.dst);
    s.set_src_reg(i.src);
    s
}

/// `rte_bpf_convert`: the eBPF instructions and the argument description DPDK chose.
fn convert(expression: &Expression) -> Result<(Vec<Insn>, sys::rte_bpf_arg), BpfError> {
    let prog = expression.cbpf().as_program();
    let mark = log::mark();
    // SAFETY: `prog` points at the expression's instructions, alive for the call and only read;
    // the EAL is initialised (our caller holds an `Eal`), which rte_zmalloc inside needs.
    let raw = unsafe { sys::rte_bpf_convert(&prog) };
    let Some(prm) = NonNull::new(raw) else {
        return Err(BpfError::Convert { errno: Errno::last(), driver: DriverSaid(log::errors_since(mark)) });
    };
    let _free = RteAlloc(prm.cast());
    // SAFETY: a non-null result is an initialised rte_bpf_prm, valid until `_free` drops.
    let prm: &sys::rte_bpf_prm = unsafe { prm.as_ref() };
    if prm.ins.is_null() || prm.prog_arg.type_ != sys::rte_bpf_arg_type_RTE_BPF_ARG_PTR_MBUF {
        return Err(BpfError::Convert { errno: Errno(-libc::EINVAL), driver: DriverSaid::default() });
    }
    // SAFETY: `ins` points at `nb_ins` initialised instructions in the same allocation.
    let ins = unsafe { std::slice::from_raw_parts(prm.ins, prm.nb_ins as usize) };
    Ok((ins.iter().map(from_sys).collect(), prm.prog_arg))
}

impl Program {
    /// Compiles `text` with libpcap and loads it, with the JIT when DPDK has one.
    pub fn compile(eal: &Eal, text: &str) -> Result<Program, BpfError> {
        Program::load(eal, &Expression::compile(text)?, Engine::Jit)
    }

    /// Converts, checks, rewrites and loads `expression`. `engine` is the one wanted: `Jit`
    /// runs native code when DPDK's JIT produced it and falls back to the interpreter
    /// otherwise; `Interpreter` always interprets. [`Program::engine`] tells which one runs.
    pub fn load(eal: &Eal, expression: &Expression, engine: Engine) -> Result<Program, BpfError> {
        Program::load_with(eal, expression, engine, Rewrite::On)
    }

    pub(crate) fn load_with(
        eal: &Eal,
        expression: &Expression,
        engine: Engine,
        how: Rewrite,
    ) -> Result<Program, BpfError> {
        let (converted, prog_arg) = convert(expression)?;
        let (insns, jsets, indexed, shifts) = match how {
            Rewrite::On => {
                let r = rewrite::rewrite(&converted, LAYOUT)?;
                (r.insns, r.jsets, r.indexed_loads, r.shifts)
            }
            #[cfg(test)]
            Rewrite::Off => (converted, 0, 0, 0),
        };
        let raw: Vec<sys::ebpf_insn> = insns.iter().map(to_sys).collect();
        let prm = sys::rte_bpf_prm {
            ins: raw.as_ptr(),
            nb_ins: u32::try_from(raw.len())
                .map_err(|_| BpfError::Load { errno: Errno(-libc::E2BIG), driver: DriverSaid::default() })?,
            xsym: std::ptr::null(),
            nb_xsym: 0,
            prog_arg,
        };
        let mark = log::mark();
        // SAFETY: `prm` points at `raw`, alive for the call; rte_bpf_load verifies the program,
        // copies the instructions into its own allocation and keeps no pointer to ours. There
        // are no external symbols (xsym is NULL, nb_xsym 0).
        let loaded = unsafe { sys::rte_bpf_load(&prm) };
        let Some(bpf) = NonNull::new(loaded) else {
            return Err(BpfError::Load { errno: Errno::last(), driver: DriverSaid(log::errors_since(mark)) });
        };
        let mut program = Program {
            bpf,
            jit: None,
            expression: expression.clone(),
            info: ProgramInfo {
                cbpf_insns: expression.cbpf_len(),
                ebpf_insns: raw.len(),
                jsets_rewritten: jsets,
                indexed_loads_rewritten: indexed,
                shifts_rewritten: shifts,
                jit_bytes: 0,
            },
            _eal: eal.clone(),
        };
        let mut jit = sys::rte_bpf_jit::default();
        // SAFETY: `bpf` is a live handle from rte_bpf_load; `jit` is a valid out-parameter.
        let rc = unsafe { sys::rte_bpf_get_jit(program.bpf.as_ptr(), &mut jit) };
        // DPDK's JIT failing is only a warning inside rte_bpf_load: `func` says whether it ran.
        if rc == 0 && engine == Engine::Jit {
            if let Some(func) = jit.func {
                program.jit = Some(func);
                program.info.jit_bytes = jit.sz;
            }
        }
        Ok(program)
    }

    /// The engine that runs this program: `Jit` only if native code exists and was wanted.
    pub fn engine(&self) -> Engine {
        if self.jit.is_some() {
            Engine::Jit
        } else {
            Engine::Interpreter
        }
    }

    pub fn is_jit(&self) -> bool {
        self.jit.is_some()
    }

    pub fn expression(&self) -> &Expression {
        &self.expression
    }

    pub fn info(&self) -> ProgramInfo {
        self.info
    }

    /// Whether the packet matches. `len` is its `pkt_len`; segments are followed.
    #[inline]
    pub fn matches(&self, packet: &Packet) -> bool {
        // SAFETY: a `&Packet` borrows a valid mbuf chain for the duration of the call.
        unsafe { self.matches_mbuf(packet.as_ptr()) }
    }

    /// One bit per packet of the burst (packet i at bit i), as the RX loop's masks.
    #[inline]
    pub fn matches_burst(&self, burst: &Burst) -> u32 {
        let mut bits = 0u32;
        for (i, p) in burst.iter().enumerate() {
            bits |= u32::from(self.matches(p)) << i;
        }
        bits
    }

    /// Whether the mbuf matches.
    ///
    /// # Safety
    /// `m` must point to a valid mbuf (its `next` chain, `data_off`, `data_len`, `pkt_len` and
    /// `buf_addr` consistent, as DPDK's RX and `rte_pktmbuf_*` leave them), not modified or freed
    /// by anyone during the call. The program only reads it.
    #[inline]
    pub unsafe fn matches_mbuf(&self, m: *const sys::rte_mbuf) -> bool {
        // The program never writes through its argument (`rewrite` admits stores only to the
        // stack), so a pointer from a shared borrow is enough despite the C type.
        let ctx = m.cast_mut().cast::<c_void>();
        match self.jit {
            // SAFETY: `f` is native code of this program, alive as long as `self.bpf`; the
            // caller guarantees the mbuf; the program was verified by rte_bpf_load and checked
            // by `rewrite` (see the module doc of `bpf` for what it may do).
            Some(f) => unsafe { f(ctx) != 0 },
            // SAFETY: `self.bpf` is a live loaded program; the caller guarantees the mbuf.
            None => unsafe { sys::rte_bpf_exec(self.bpf.as_ptr(), ctx) != 0 },
        }
    }

    /// libpcap's verdict on bytes (see [`Expression::matches_bytes`]); needs no mbuf.
    #[inline]
    pub fn matches_bytes(&self, data: &[u8], orig_len: u32) -> bool {
        self.expression.matches_bytes(data, orig_len)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `bpf` came from rte_bpf_load and is destroyed once, here. `&mut self` proves no
        // `matches*` call is running, and the JIT code it unmaps is reachable only through
        // `self.jit`. The EAL is still up (`_eal` drops after this).
        unsafe { sys::rte_bpf_destroy(self.bpf.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_cross_the_ffi_unchanged() {
        let i = Insn::new(0x45, 7, 9, -3, -123456);
        assert_eq!(from_sys(&to_sys(&i)), i);
        assert_eq!(std::mem::size_of::<sys::ebpf_insn>(), 8);
        // offsetof(struct rte_mbuf, pkt_len) on DPDK 22.11, which the converter's `ld #pktlen` uses.
        assert_eq!(LAYOUT.pkt_len_off, 36);
    }

    #[test]
    fn programs_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Program>();
    }
}
