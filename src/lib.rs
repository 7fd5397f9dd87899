//! pcapd: a DPDK kernel-bypass packet-capture appliance.
//!
//! Data path: `dpdk` (the only door to C) → `rx` (poll, `wire` parse, `filter` match, `active`
//! budgets) → `handoff` rings → `writer` threads → `pcap` files. `oneshot` wires them together
//! for `pcapd capture`; `config` is the strict TOML front door.
pub mod active;
pub mod api;
pub mod app;
pub mod captures;
pub mod clock;
pub mod config;
pub mod dataplane;
pub mod dpdk;
pub mod filter;
pub mod handoff;
pub mod metrics;
pub mod oneshot;
pub mod pcap;
pub mod rx;
pub mod samples;
pub mod simd;
pub mod stats;
pub mod store;
pub mod upload;
pub mod wire;
pub mod writer;
