//! Writer threads: drain the RX rings, write each capture's records into its `PcapSink`, rotate
//! on idle ticks, and close captures on command (after draining, so a capture's file holds every
//! record RX handed off before the close).
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use super::active::{Budget, CaptureCounters};
use super::clock::realtime_ns;
use super::handoff::{Consumer, Run};
use super::lease::{Lease, LeaseTag, SlotTable, SLOTS_PER_WRITER};
use crate::pcap::PcapSink;

/// Bytes taken from one ring before looking at the next (fairness between RX cores).
const DRAIN_BYTES: usize = 256 << 10;
const IDLE_MIN: Duration = Duration::from_micros(50);
const IDLE_MAX: Duration = Duration::from_millis(2);
/// How long an `Open` reply waits for its caller (who waits in `recv_timeout`): a caller that
/// gave up has dropped its end and the send fails at once.
const OPEN_REPLY_WAIT: Duration = Duration::from_secs(1);

pub enum WriterCmd {
    /// Take a free slot, write records tagged with its lease into `sink`, and reply with the
    /// `Lease` (or why not). `reply` is a rendezvous channel: if the caller gave up waiting, the
    /// send fails, the slot is taken back and the sink dropped (its partial file removed).
    Open {
        sink: Box<PcapSink>,
        counters: Arc<CaptureCounters>,
        watch: Option<Watch>,
        reply: Sender<Result<Lease, OpenRefused>>,
    },
    /// Drain the rings, close the sink of `tag`, free its slot, and report (if asked to).
    /// Sent only by `Lease` (closing or dropped): a slot is closed by its holder, once.
    Close { tag: LeaseTag, reply: Option<Sender<CloseReport>> },
    /// Drop the sink of `tag` (removing its partial file) and free its slot: for a capture that
    /// never reached the RX cores. Sent only by `Lease::discard`.
    Discard { tag: LeaseTag },
    /// Drain the rings, close every sink, and exit.
    Shutdown,
}

/// Why a writer refused to open a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefused {
    #[error("{writer}: all {SLOTS_PER_WRITER} capture slots are in use")]
    NoFreeSlot { writer: String },
    #[error("{writer} is shutting down")]
    ShuttingDown { writer: String },
}

/// What the writer tells the capture's owner about it while it runs (full captures; a one-shot
/// capture polls its counters instead).
pub struct Watch {
    /// Reported once with `LimitReached` when exhausted.
    pub budget: Arc<Budget>,
    pub events: Sender<WriterEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterEventKind {
    /// The capture's packet or byte budget is used up: it is complete.
    LimitReached,
    /// The sink failed (disk full, I/O error); later records are dropped and counted.
    Failed(String),
}

/// An event of the capture holding lease `tag` of writer `writer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterEvent {
    pub writer: usize,
    pub tag: LeaseTag,
    pub kind: WriterEventKind,
}

/// The outcome of a closed capture. Sent once the slot is free again.
#[derive(Debug)]
pub struct CloseReport {
    pub writer: usize,
    pub tag: LeaseTag,
    /// Finished files in order: all of them, or after a write error what reached the disk
    /// (cut to the last whole record).
    pub files: Vec<PathBuf>,
    /// The first write error, if any.
    pub error: Option<String>,
    /// Records in `files`.
    pub packets: u64,
    pub bytes: u64,
}

struct SinkSlot {
    tag: LeaseTag,
    sink: PcapSink,
    counters: Arc<CaptureCounters>,
    error: Option<String>,
    written_unpublished: u64,
    watch: Option<Watch>,
    /// `LimitReached` / `Failed` already sent.
    told_limit: bool,
    told_failure: bool,
}

pub struct Writer {
    index: usize,
    name: String,
    /// Consumer ends, one per RX core.
    rings: Vec<Consumer>,
    cmds: Receiver<WriterCmd>,
    /// Our own command channel, handed to each lease so that it can close itself.
    cmds_tx: Sender<WriterCmd>,
    slots: SlotTable,
    /// Open captures, by slot.
    sinks: Vec<Option<SinkSlot>>,
    /// Records whose lease was not (or no longer) the one on their slot: dropped, counted.
    stray: Arc<AtomicU64>,
}

impl Writer {
    pub fn new(index: usize, rings: Vec<Consumer>, cmds: Receiver<WriterCmd>, cmds_tx: Sender<WriterCmd>) -> Self {
        Writer {
            index,
            name: format!("pcapd-writer{index}"),
            rings,
            cmds,
            cmds_tx,
            slots: SlotTable::new(),
            sinks: (0..SLOTS_PER_WRITER).map(|_| None).collect(),
            stray: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records dropped because no open sink held their lease (see `lease.rs`).
    pub fn stray_records(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.stray)
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
                self.tell();
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
            self.tell();
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

    /// Sends each watched capture's news once: its budget ran out, its sink failed.
    fn tell(&mut self) {
        let writer = self.index;
        for s in self.sinks.iter_mut().flatten() {
            let Some(w) = &s.watch else { continue };
            let send = |kind| {
                let _ = w.events.send(WriterEvent { writer, tag: s.tag, kind });
            };
            if !s.told_failure {
                if let Some(e) = &s.error {
                    s.told_failure = true;
                    send(WriterEventKind::Failed(e.clone()));
                }
            }
            if !s.told_limit && w.budget.is_exhausted() {
                s.told_limit = true;
                send(WriterEventKind::LimitReached);
            }
        }
    }

    /// Returns false when the thread should exit.
    fn handle(&mut self, cmd: WriterCmd) -> bool {
        match cmd {
            WriterCmd::Open { sink, counters, watch, reply } => {
                let Some(tag) = self.slots.take() else {
                    // The sink (and its partial file) goes before the caller hears of it.
                    drop(sink);
                    let _ =
                        reply.send_timeout(Err(OpenRefused::NoFreeSlot { writer: self.name.clone() }), OPEN_REPLY_WAIT);
                    return true;
                };
                self.sinks[tag.slot()] = Some(SinkSlot {
                    tag,
                    sink: *sink,
                    counters,
                    error: None,
                    written_unpublished: 0,
                    watch,
                    told_limit: false,
                    told_failure: false,
                });
                let lease = Lease::issue(self.index, tag, self.cmds_tx.clone());
                if let Err(refused) = reply.send_timeout(Ok(lease), OPEN_REPLY_WAIT) {
                    // Nobody waits for it: take the slot back (no record can carry its tag yet:
                    // only the lease's holder could have published it to RX cores).
                    if let Ok(lease) = refused.into_inner() {
                        lease.disarm();
                    }
                    self.slots.give_back(tag);
                    self.sinks[tag.slot()] = None;
                }
                true
            }
            WriterCmd::Close { tag, reply } => {
                self.drain_published();
                let report = match self.take_sink(tag) {
                    Some(s) => close(self.index, s),
                    None => CloseReport {
                        writer: self.index,
                        tag,
                        files: Vec::new(),
                        error: Some(format!("{}: capture {tag} is not open", self.name)),
                        packets: 0,
                        bytes: 0,
                    },
                };
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                } else if let Some(e) = &report.error {
                    tracing::warn!("{}: capture {tag} closed without its owner: {e}", self.name);
                }
                true
            }
            WriterCmd::Discard { tag } => {
                // Dropping the sink removes its partial file.
                drop(self.take_sink(tag));
                true
            }
            WriterCmd::Shutdown => {
                self.drain_published();
                // Commands queued behind the shutdown still get their answers.
                while let Ok(cmd) = self.cmds.try_recv() {
                    match cmd {
                        WriterCmd::Open { reply, sink, .. } => {
                            drop(sink);
                            let _ = reply.send_timeout(
                                Err(OpenRefused::ShuttingDown { writer: self.name.clone() }),
                                OPEN_REPLY_WAIT,
                            );
                        }
                        cmd @ (WriterCmd::Close { .. } | WriterCmd::Discard { .. }) => {
                            self.handle(cmd);
                        }
                        WriterCmd::Shutdown => {}
                    }
                }
                for slot in 0..self.sinks.len() {
                    let Some(tag) = self.sinks[slot].as_ref().map(|s| s.tag) else { continue };
                    if let Some(s) = self.take_sink(tag) {
                        if let Some(e) = close(self.index, s).error {
                            tracing::error!("{}: capture {tag} closed at shutdown: {e}", self.name);
                        }
                    }
                }
                false
            }
        }
    }

    /// Takes the sink of `tag` out of its slot and frees the slot (if `tag` holds it).
    fn take_sink(&mut self, tag: LeaseTag) -> Option<SinkSlot> {
        if !self.slots.give_back(tag) {
            return None;
        }
        self.sinks[tag.slot()].take()
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
        let (sinks, stray) = (&mut self.sinks, &self.stray);
        for ring in &mut self.rings {
            moved += ring.drain(DRAIN_BYTES, |runs| runs.map(|run| write_run(sinks, stray, &run, now)).sum::<u64>());
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

/// Writes one run (whole PCAP records of one capture) into the sink that holds its lease, or
/// counts its records as dropped once that sink has failed, or as stray when no open sink holds
/// the lease (an ended capture's late records: never written into another capture's file).
/// Returns how many records the run held.
fn write_run(sinks: &mut [Option<SinkSlot>], stray: &AtomicU64, run: &Run<'_>, now: u64) -> u64 {
    let s = match sinks.get_mut(run.tag.slot()) {
        Some(Some(s)) if s.tag == run.tag => s,
        _ => {
            stray.fetch_add(run.count, Relaxed);
            return run.count;
        }
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

fn close(writer: usize, s: SinkSlot) -> CloseReport {
    s.counters.written.fetch_add(s.written_unpublished, Relaxed);
    let bytes = s.sink.bytes();
    let (files, error, packets) = match s.error {
        None => {
            let packets = s.sink.packets();
            match s.sink.finish() {
                Ok(files) => (files, None, packets),
                Err(e) => (Vec::new(), Some(e.to_string()), 0),
            }
        }
        Some(e) => {
            let (files, packets) = s.sink.salvage();
            (files, Some(e), packets)
        }
    };
    CloseReport { writer, tag: s.tag, files, error, packets, bytes }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use crossbeam::channel;

    use crate::dataplane::active::{ActiveCapture, ActiveSet, Budget, CaptureCounters};
    use crate::dataplane::lease::Lease;
    use crate::dataplane::testing::without_dpdk;
    use crate::filter::FilterV1;
    use crate::pcap::{PcapSink, Precision, RotatePolicy};

    /// An Ethernet frame whose last byte says which one it is.
    pub(crate) fn frame(n: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        f[59] = n;
        f
    }

    /// The frames of a classic PCAP file, read without pcapd's code.
    pub(crate) fn frames_in(path: &Path) -> Vec<Vec<u8>> {
        let b = std::fs::read(path).unwrap();
        let (mut at, mut out) = (24, Vec::new());
        while at < b.len() {
            let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            out.push(b[at + 16..at + 16 + caplen].to_vec());
            at += 16 + caplen;
        }
        out
    }

    fn set_of(lease: &Lease) -> ActiveSet {
        ActiveSet::new(vec![ActiveCapture::new(
            lease,
            FilterV1::default().compile(),
            65_535,
            Precision::Nanos,
            Arc::new(Budget::new(None, None)),
            Arc::new(CaptureCounters::default()),
        )])
    }

    #[test]
    fn records_of_an_ended_lease_never_reach_the_next_capture_in_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (control, mut rx, stop) = without_dpdk(1, 1);
        let open = |name: &str| {
            let sink = PcapSink::create(&dir.path().join(name), RotatePolicy::default(), Precision::Nanos, 65_535);
            let counters = Arc::new(CaptureCounters::default());
            control.open(0, sink.unwrap(), counters, None, Duration::from_secs(5)).unwrap()
        };
        let close = |lease: Lease| {
            let (tx, report) = channel::bounded(1);
            assert!(lease.close(tx));
            report.recv().unwrap()
        };
        let a = open("a.pcap");
        let a_set = set_of(&a);
        let a_tag = a.tag();
        rx[0].step_with(&a_set, &[frame(1)], 1);
        let r = close(a);
        assert_eq!((r.tag, r.packets), (a_tag, 1));

        // The slot is free again and goes to the next capture, under a new generation.
        let b = open("b.pcap");
        assert_eq!(b.tag().slot(), a_tag.slot());
        assert_ne!(b.tag(), a_tag);
        let b_set = set_of(&b);
        // An RX core still on A's set hands off a record of A late; then one of B.
        rx[0].step_with(&a_set, &[frame(2)], 2);
        rx[0].step_with(&b_set, &[frame(3)], 3);
        let r = close(b);
        assert_eq!(r.packets, 1);
        assert_eq!(frames_in(&dir.path().join("a.pcap")), vec![frame(1)]);
        assert_eq!(frames_in(&dir.path().join("b.pcap")), vec![frame(3)], "A's late record is not in B's file");
        assert_eq!(stop.stray_records(), 1, "it was counted as stray");
    }

    #[test]
    fn a_writer_with_every_slot_leased_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (control, _rx, _stop) = without_dpdk(1, 1);
        let open = |i: usize| {
            let sink =
                PcapSink::create(&dir.path().join(format!("{i}.pcap")), RotatePolicy::default(), Precision::Nanos, 100);
            control.open(0, sink.unwrap(), Arc::default(), None, Duration::from_secs(5))
        };
        let leases: Vec<Lease> = (0..crate::dataplane::lease::SLOTS_PER_WRITER).map(|i| open(i).unwrap()).collect();
        let err = open(999).unwrap_err();
        assert!(err.to_string().contains("all 64 capture slots are in use"), "{err}");
        assert!(!dir.path().join("999.pcap").exists() && !dir.path().join(".999.pcap.partial").exists());
        // A dropped lease gives its slot back (the writer closes it).
        drop(leases);
        let mut again = open(1000);
        for _ in 0..100 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            again = open(1000);
        }
        assert!(again.is_ok());
    }
}
