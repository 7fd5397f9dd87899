//! Writer threads: drain the RX rings, write each capture's records into its `PcapSink`, rotate
//! on idle ticks, and close captures on command (after draining, so a capture's file holds every
//! record RX handed off before the close).
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use super::active::CaptureCounters;
use super::clock::realtime_ns;
use super::handoff::{Consumer, Run};
use crate::pcap::PcapSink;

/// Bytes taken from one ring before looking at the next (fairness between RX cores).
const DRAIN_BYTES: usize = 256 << 10;
const IDLE_MIN: Duration = Duration::from_micros(50);
const IDLE_MAX: Duration = Duration::from_millis(2);

pub enum WriterCmd {
    /// Start writing records of `slot` into `sink`.
    Open { slot: u16, sink: Box<PcapSink>, counters: Arc<CaptureCounters>, ack: Option<Sender<()>> },
    /// Drain the rings, close the sink of `slot`, and report.
    Close { slot: u16, reply: Sender<CloseReport> },
    /// Drain the rings, close every sink, and exit.
    Shutdown,
}

/// The outcome of a closed capture.
#[derive(Debug)]
pub struct CloseReport {
    pub slot: u16,
    /// Finished files in order, or the first error (its files are removed).
    pub files: Result<Vec<PathBuf>, String>,
    pub packets: u64,
    pub bytes: u64,
}

struct SinkSlot {
    sink: PcapSink,
    counters: Arc<CaptureCounters>,
    error: Option<String>,
    written_unpublished: u64,
}

pub struct Writer {
    name: String,
    /// Consumer ends, one per RX core.
    rings: Vec<Consumer>,
    cmds: Receiver<WriterCmd>,
    /// Open captures, by slot.
    sinks: Vec<Option<SinkSlot>>,
}

impl Writer {
    pub fn new(name: String, rings: Vec<Consumer>, cmds: Receiver<WriterCmd>) -> Self {
        Writer { name, rings, cmds, sinks: Vec::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn run(mut self) {
        let mut idle = IDLE_MIN;
        loop {
            // Commands first: an `Open` must be in place before that capture's records are drained.
            while let Ok(cmd) = self.cmds.try_recv() {
                if !self.handle(cmd) {
                    return;
                }
            }
            if self.drain_once() > 0 {
                idle = IDLE_MIN;
                continue;
            }
            let now = realtime_ns();
            for s in self.sinks.iter_mut().flatten() {
                if s.error.is_none() {
                    if let Err(e) = s.sink.tick(now) {
                        s.error = Some(e.to_string());
                    }
                }
            }
            match self.cmds.recv_timeout(idle) {
                Ok(cmd) => {
                    if !self.handle(cmd) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => idle = (idle * 2).min(IDLE_MAX),
                Err(RecvTimeoutError::Disconnected) => {
                    self.handle(WriterCmd::Shutdown);
                    return;
                }
            }
        }
    }

    /// Returns false when the thread should exit.
    fn handle(&mut self, cmd: WriterCmd) -> bool {
        match cmd {
            WriterCmd::Open { slot, sink, counters, ack } => {
                let i = usize::from(slot);
                if self.sinks.len() <= i {
                    self.sinks.resize_with(i + 1, || None);
                }
                self.sinks[i] = Some(SinkSlot { sink: *sink, counters, error: None, written_unpublished: 0 });
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                true
            }
            WriterCmd::Close { slot, reply } => {
                self.drain_published();
                let report = match self.sinks.get_mut(usize::from(slot)).and_then(Option::take) {
                    Some(s) => close(slot, s),
                    None => CloseReport {
                        slot,
                        files: Err(format!("capture slot {slot} is not open")),
                        packets: 0,
                        bytes: 0,
                    },
                };
                let _ = reply.send(report);
                true
            }
            WriterCmd::Shutdown => {
                self.drain_published();
                for (slot, s) in self.sinks.iter_mut().enumerate() {
                    if let Some(s) = s.take() {
                        let r = close(slot as u16, s);
                        if let Err(e) = r.files {
                            tracing::error!("capture slot {slot} closed at shutdown: {e}");
                        }
                    }
                }
                false
            }
        }
    }

    /// Drains what the RX cores had published when called (their records of a capture that is
    /// closing are all in there), however fast other captures keep adding records.
    fn drain_published(&mut self) {
        let marks: Vec<usize> = self.rings.iter().map(Consumer::mark).collect();
        while !self.rings.iter().zip(&marks).all(|(r, &m)| r.reached(m)) {
            self.drain_once();
        }
    }

    /// One pass over every ring; returns how many records were taken.
    fn drain_once(&mut self) -> usize {
        let now = realtime_ns();
        let mut moved = 0;
        let (name, sinks) = (&self.name, &mut self.sinks);
        for ring in &mut self.rings {
            moved += ring.drain(DRAIN_BYTES, |runs| runs.map(|run| write_run(name, sinks, &run, now)).sum::<u64>());
        }
        if moved > 0 {
            for s in self.sinks.iter_mut().flatten() {
                if s.written_unpublished > 0 {
                    s.counters.written.fetch_add(s.written_unpublished, Relaxed);
                    s.written_unpublished = 0;
                }
            }
        }
        moved as usize
    }
}

/// Writes one run (whole PCAP records of one capture), or counts its records as dropped once
/// the capture's sink has failed. Returns how many records the run held.
fn write_run(name: &str, sinks: &mut [Option<SinkSlot>], run: &Run<'_>, now: u64) -> u64 {
    let Some(Some(s)) = sinks.get_mut(usize::from(run.slot)) else {
        // The control side opens a sink before publishing its capture to RX cores and closes it
        // only after they stopped producing for it: a bug if reached.
        tracing::error!("{name}: {} records for capture slot {} without an open file", run.count, run.slot);
        return run.count;
    };
    if s.error.is_none() {
        match s.sink.write_records(run.records, run.count, now) {
            Ok(n) => {
                s.written_unpublished += n;
                return n;
            }
            Err(e) => s.error = Some(e.to_string()),
        }
    }
    s.counters.dropped_writer_error.fetch_add(run.count, Relaxed);
    run.count
}

fn close(slot: u16, s: SinkSlot) -> CloseReport {
    let (packets, bytes) = (s.sink.packets(), s.sink.bytes());
    s.counters.written.fetch_add(s.written_unpublished, Relaxed);
    let files = match s.error {
        // Dropping the sink removes its partial file.
        Some(e) => Err(e),
        None => s.sink.finish().map_err(|e| e.to_string()),
    };
    CloseReport { slot, files, packets, bytes }
}
