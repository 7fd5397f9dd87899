//! pcapd: a DPDK kernel-bypass packet-capture appliance.
//!
//! Data path: `dpdk` (the door to C) → `dataplane` (RX cores poll, `wire` parse, `filter`
//! match, budget and hand off through SPSC rings to writer threads, which write `pcap` files).
//! `bpf` compiles tcpdump expressions (libpcap → DPDK's eBPF JIT), not yet wired into RX.
//! `capture` wires it up for `pcapd capture`; `app` for the appliance, whose control plane is
//! `captures` (capture lifecycle and slot leases), `samples` (the sample store), `upload`
//! (buckets: object stores), `db` (the SQLite database), `fleet` (etcd membership and
//! node-to-node calls, with `[fleet]`) and `api`. `config` is the strict TOML
//! front door.
pub mod api;
pub mod app;
pub mod bpf;
pub mod capture;
pub mod captures;
pub mod config;
pub mod datadir;
pub mod dataplane;
pub mod db;
pub mod doctor;
pub mod dpdk;
pub mod filter;
pub mod fleet;
pub mod pcap;
pub mod samples;
pub mod simd;
pub mod upload;
pub mod wire;
