//! PCAP output: the format (pure), the rotation policy (pure), tcpdump's file names (pure)
//! and the file sink.
pub mod format;
pub mod merge;
pub mod naming;
pub mod rotation;
pub mod sink;

pub use format::Precision;
pub use naming::TcpdumpNames;
pub use rotation::RotatePolicy;
pub use sink::{PcapSink, SinkError};
