//! PCAP output: the format (pure), the rotation policy (pure) and the file sink.
pub mod format;
pub mod rotation;
pub mod sink;

pub use format::Precision;
pub use rotation::RotatePolicy;
pub use sink::{PcapSink, SinkError};
