//! Captures: the model (Cloudflare's PCAP object), request validation and the manager that runs
//! them (simple captures from the sample store).
pub mod full;
pub mod manager;
pub mod model;
pub mod request;
