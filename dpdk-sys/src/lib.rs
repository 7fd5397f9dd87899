//! Raw FFI bindings to the system DPDK, generated at build time by bindgen (see `build.rs`).
//!
//! Generated code only: the safe layer lives in pcapd's `src/dpdk/`, the only code that names
//! this crate. DPDK's static-inline fast-path functions (`rte_eth_rx_burst`, `rte_pktmbuf_free`,
//! `rte_rdtsc`, ...) are reached through bindgen's `wrap_static_fns` C wrappers, exported under
//! their own names with the `__extern` suffix stripped by bindgen.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all, clippy::pedantic, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#![allow(unsafe_op_in_unsafe_fn, improper_ctypes)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
