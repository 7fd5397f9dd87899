//! RX → writer hand-off: bounded lock-free rings, one per (RX core, writer), so each ring has one
//! producer and one consumer. A full ring means drop and count; RX never blocks.
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::dpdk::Mbuf;

/// One packet for one capture: the mbuf travels zero-copy, the writer frees it.
pub struct Record {
    pub slot: u16,
    pub ts_ns: u64,
    pub mbuf: Mbuf,
}

pub type Ring = ArrayQueue<Record>;

/// All rings: `by_core[c][w]` carries records from RX core `c` to writer `w`.
pub struct Rings {
    by_core: Vec<Vec<Arc<Ring>>>,
}

impl Rings {
    pub fn new(rx_cores: usize, writers: usize, capacity: usize) -> Self {
        let by_core =
            (0..rx_cores).map(|_| (0..writers).map(|_| Arc::new(ArrayQueue::new(capacity))).collect()).collect();
        Rings { by_core }
    }

    /// The producer ends for RX core `c` (index = writer).
    pub fn for_core(&self, c: usize) -> Vec<Arc<Ring>> {
        self.by_core[c].clone()
    }

    /// The consumer ends for writer `w` (one per RX core).
    pub fn for_writer(&self, w: usize) -> Vec<Arc<Ring>> {
        self.by_core.iter().map(|rings| Arc::clone(&rings[w])).collect()
    }
}
