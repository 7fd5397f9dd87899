//! libpcap, the owner of tcpdump's grammar: compiles an expression to classic BPF and runs it
//! on bytes (`pcap_offline_filter`, libpcap's own interpreter). Needs no EAL.
//!
//! The compiled instructions are copied out of libpcap's allocation into a `Cbpf` (plain data,
//! so `Send + Sync` and `Clone` without unsafe impls); `pcap_freecode` runs right after the copy.
use std::ffi::{c_int, CStr};
use std::ptr::NonNull;
use std::sync::Mutex;

use dpdk_sys as sys;

/// The snapshot length expressions are compiled for (tcpdump's default): what a matching
/// program returns, and the largest packet libpcap's code generator assumes.
pub const SNAPLEN: c_int = 262_144;

/// libpcap's code generator and optimizer keep state in the `pcap_t` and are reentrant in
/// 1.10, but older releases were not: compiles are rare (an API call, a CLI start), so they
/// are serialised rather than relied on.
static COMPILE: Mutex<()> = Mutex::new(());

/// A classic BPF program compiled by libpcap for Ethernet (`DLT_EN10MB`).
#[derive(Clone)]
pub(crate) struct Cbpf(Box<[sys::bpf_insn]>);

impl std::fmt::Debug for Cbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cbpf({} instructions)", self.0.len())
    }
}

/// Why libpcap did not compile an expression.
#[derive(Debug)]
pub(crate) enum CompileError {
    /// `pcap_open_dead` returned NULL (out of memory).
    NoHandle,
    /// libpcap's own message (`pcap_geterr`).
    Rejected(String),
}

/// A `pcap_t` from `pcap_open_dead`, closed on drop.
struct DeadHandle(NonNull<sys::pcap_t>);

impl Drop for DeadHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from pcap_open_dead and is closed once, here.
        unsafe { sys::pcap_close(self.0.as_ptr()) };
    }
}

impl Cbpf {
    /// `pcap_compile(pcap_open_dead(DLT_EN10MB, SNAPLEN), text, optimize = 1,
    /// PCAP_NETMASK_UNKNOWN)`, as tcpdump and dpdk-dumpcap do. Host names in the expression are
    /// resolved here (libpcap calls the resolver): this may block.
    pub(crate) fn compile(text: &CStr) -> Result<Cbpf, CompileError> {
        let _one_at_a_time = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: no preconditions; returns NULL when it cannot allocate.
        let raw = unsafe { sys::pcap_open_dead(sys::DLT_EN10MB as c_int, SNAPLEN) };
        let handle = DeadHandle(NonNull::new(raw).ok_or(CompileError::NoHandle)?);
        let mut prog = sys::bpf_program::default();
        // SAFETY: `handle` is a live pcap_t, `prog` a valid out-parameter, `text` a NUL-terminated
        // string that outlives the call; libpcap keeps no pointer to it.
        let rc =
            unsafe { sys::pcap_compile(handle.0.as_ptr(), &mut prog, text.as_ptr(), 1, sys::PCAP_NETMASK_UNKNOWN) };
        if rc != 0 {
            // SAFETY: `handle` is live; pcap_geterr returns its NUL-terminated error buffer.
            let msg = unsafe { sys::pcap_geterr(handle.0.as_ptr()) };
            let text = if msg.is_null() {
                "libpcap could not compile the expression".to_string()
            } else {
                // SAFETY: non-null, NUL-terminated, valid until `handle` is closed (after this).
                unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
            };
            return Err(CompileError::Rejected(text));
        }
        let insns: Box<[sys::bpf_insn]> = if prog.bf_insns.is_null() {
            Box::default()
        } else {
            // SAFETY: after a successful pcap_compile, `bf_insns` points to `bf_len` instructions
            // that stay allocated until pcap_freecode below.
            unsafe { std::slice::from_raw_parts(prog.bf_insns, prog.bf_len as usize) }.into()
        };
        // SAFETY: `prog` was filled by a successful pcap_compile and is freed once; `insns` is a copy.
        unsafe { sys::pcap_freecode(&mut prog) };
        if insns.is_empty() {
            return Err(CompileError::Rejected("libpcap returned an empty program".into()));
        }
        Ok(Cbpf(insns))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the program is a single `ret #k`: `Some(true)` accepts every packet,
    /// `Some(false)` none.
    pub(crate) fn constant(&self) -> Option<bool> {
        const RET_K: u16 = 0x06;
        match &*self.0 {
            [only] if only.code == RET_K => Some(only.k != 0),
            _ => None,
        }
    }

    /// The `struct bpf_program` C functions take, pointing at these instructions. They only
    /// read through it (`const struct bpf_program *`), for as long as `self` is borrowed.
    pub(crate) fn as_program(&self) -> sys::bpf_program {
        sys::bpf_program { bf_len: self.0.len() as u32, bf_insns: self.0.as_ptr().cast_mut() }
    }

    /// libpcap's verdict on a packet of which `data` was captured and `orig_len` bytes were on
    /// the wire: `len`, `greater` and `less` read `orig_len`, loads beyond `data` fail (no match).
    #[inline]
    pub(crate) fn matches(&self, data: &[u8], orig_len: u32) -> bool {
        let hdr = sys::pcap_pkthdr {
            caplen: u32::try_from(data.len()).unwrap_or(u32::MAX),
            len: orig_len,
            ..Default::default()
        };
        let prog = self.as_program();
        // SAFETY: `prog` points at our instructions, alive while `self` is borrowed and only
        // read; libpcap reads at most `hdr.caplen <= data.len()` bytes from `data`; it keeps no
        // pointer after returning. bpf_filter is reentrant (all its state is on its stack).
        unsafe { sys::pcap_offline_filter(&prog, &hdr, data.as_ptr()) != 0 }
    }
}

/// libpcap's version string (`pcap_lib_version`), e.g. "libpcap version 1.10.3 (with TPACKET_V3)".
pub fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let v = unsafe { sys::pcap_lib_version() };
    if v.is_null() {
        return String::new();
    }
    // SAFETY: non-null, static and NUL-terminated.
    unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned()
}
