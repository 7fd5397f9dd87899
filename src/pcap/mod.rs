//! PCAP output: the format (pure), the rotation policy (pure), tcpdump's file names (pure)
//! and the file sink; PCAP input: a streaming reader, a packet decoder and a capture's summary.
pub mod decode;
pub mod format;
pub mod merge;
pub mod naming;
pub mod reader;
pub mod rotation;
pub mod sink;
pub mod summary;

pub use format::Precision;
pub use naming::TcpdumpNames;
pub use rotation::RotatePolicy;
pub use sink::{PcapSink, SinkError};
