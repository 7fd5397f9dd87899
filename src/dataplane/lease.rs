//! Capture slots as leases. A writer thread owns a table of slots (one open PCAP sink each); it
//! issues a `Lease` when it opens a capture's sink and takes it back when it closes that sink.
//!
//! Invariants, kept by types rather than by callers:
//! - Only the writer creates a `Lease` (its constructor is private to this module and used by
//!   `writer.rs` alone), for a slot it has just found free: an occupied slot is never reopened.
//! - A `Lease` is neither `Clone` nor `Copy`: one holder, closed at most once. `Lease::close`
//!   consumes it; dropping it unclosed asks the writer to close (so a slot cannot leak).
//! - Records in the rings carry the lease's `LeaseTag` (slot and generation). The writer writes
//!   a run only into the sink whose tag is equal, so records of an ended capture that an RX
//!   core handed off late can never reach the file of the next capture in that slot: they are
//!   counted as stray and dropped. The slot is free again only once the writer has drained the
//!   rings and closed the sink, i.e. when it sends the `CloseReport`.
use std::fmt;

use crossbeam::channel::Sender;

use super::writer::{CloseReport, WriterCmd};

/// Slots per writer (the tag keeps 6 bits for the slot).
pub const SLOTS_PER_WRITER: usize = 64;
const SLOT_BITS: u32 = 6;
/// Generations per slot (10 bits, minus the all-ones tag the rings reserve for padding).
const GENERATIONS: u16 = (1 << (16 - SLOT_BITS)) - 1;

/// Whose records these are: a writer slot and the generation of the lease on it. Never equal to
/// the rings' padding marker (`u16::MAX`). Cheap to copy into every RX core's capture set.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseTag(u16);

impl LeaseTag {
    fn new(slot: usize, generation: u16) -> LeaseTag {
        debug_assert!(slot < SLOTS_PER_WRITER && generation < GENERATIONS);
        LeaseTag((generation << SLOT_BITS) | slot as u16)
    }

    /// The slot in the writer's table.
    pub fn slot(self) -> usize {
        usize::from(self.0 & ((1 << SLOT_BITS) - 1))
    }

    pub fn generation(self) -> u16 {
        self.0 >> SLOT_BITS
    }

    /// The ring encoding (never `u16::MAX`).
    pub(crate) fn raw(self) -> u16 {
        self.0
    }

    /// A tag read back from a ring (or made up by a bench). Harmless: RX tags records only with
    /// tags of real leases (`ActiveCapture::new` takes a `Lease`), and a writer writes a record
    /// only into the sink that holds its tag.
    pub fn from_raw(raw: u16) -> LeaseTag {
        LeaseTag(raw)
    }
}

impl fmt::Debug for LeaseTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot{}.gen{}", self.slot(), self.generation())
    }
}

impl fmt::Display for LeaseTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Hands out tags for one writer's slots. Lives in the writer thread.
#[derive(Debug)]
pub(crate) struct SlotTable {
    /// Per slot: the tag of the lease now out, if any.
    held: Vec<Option<LeaseTag>>,
    /// Per slot: the generation the next lease on it gets.
    next_generation: Vec<u16>,
}

impl SlotTable {
    pub(crate) fn new() -> SlotTable {
        SlotTable { held: vec![None; SLOTS_PER_WRITER], next_generation: vec![0; SLOTS_PER_WRITER] }
    }

    /// Takes the lowest free slot, or `None` when all are held.
    pub(crate) fn take(&mut self) -> Option<LeaseTag> {
        let slot = self.held.iter().position(Option::is_none)?;
        let generation = self.next_generation[slot];
        self.next_generation[slot] = (generation + 1) % GENERATIONS;
        let tag = LeaseTag::new(slot, generation);
        self.held[slot] = Some(tag);
        Some(tag)
    }

    /// Whether `tag` is the lease out on its slot right now.
    pub(crate) fn is_held(&self, tag: LeaseTag) -> bool {
        self.held[tag.slot()] == Some(tag)
    }

    /// Frees the slot of `tag`; false if that lease was not out (already returned or stale).
    pub(crate) fn give_back(&mut self, tag: LeaseTag) -> bool {
        let held = self.is_held(tag);
        if held {
            self.held[tag.slot()] = None;
        }
        held
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.held.iter().flatten().count()
    }
}

/// The right to one slot of one writer, from the `Open` that issued it until the close.
#[must_use = "dropping a lease closes its capture's file"]
pub struct Lease {
    writer: usize,
    tag: LeaseTag,
    /// The issuing writer's command channel (`None` once closed).
    cmds: Option<Sender<WriterCmd>>,
}

impl Lease {
    /// Only the writer thread calls this, for a tag its `SlotTable` has just issued.
    pub(super) fn issue(writer: usize, tag: LeaseTag, cmds: Sender<WriterCmd>) -> Lease {
        Lease { writer, tag, cmds: Some(cmds) }
    }

    /// For a capture never published to the RX cores (its start failed): the writer drops the
    /// sink, removing its partial file, and frees the slot.
    pub fn discard(mut self) {
        if let Some(cmds) = self.cmds.take() {
            let _ = cmds.send(WriterCmd::Discard { tag: self.tag });
        }
    }

    /// The writer takes back a lease it could not deliver, without a `Close` to itself.
    pub(super) fn disarm(mut self) {
        self.cmds = None;
    }

    /// Index of the writer thread that holds the capture's sink.
    pub fn writer(&self) -> usize {
        self.writer
    }

    pub fn tag(&self) -> LeaseTag {
        self.tag
    }

    /// Asks the writer to drain the rings, close the sink and free the slot, then send the
    /// outcome to `reply`. Returns false if the writer thread is gone (its sinks are closed by
    /// its own shutdown).
    pub fn close(mut self, reply: Sender<CloseReport>) -> bool {
        let Some(cmds) = self.cmds.take() else { return false };
        cmds.send(WriterCmd::Close { tag: self.tag, reply: Some(reply) }).is_ok()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(cmds) = self.cmds.take() {
            // Unclosed: the holder went away (an error path). The generation check keeps any
            // record still in flight for this lease out of the slot's next sink.
            let _ = cmds.send(WriterCmd::Close { tag: self.tag, reply: None });
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lease(writer{} {})", self.writer, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_never_collide_with_the_ring_padding_marker() {
        for slot in 0..SLOTS_PER_WRITER {
            for g in 0..GENERATIONS {
                let t = LeaseTag::new(slot, g);
                assert_ne!(t.raw(), u16::MAX);
                assert_eq!((t.slot(), t.generation()), (slot, g));
            }
        }
    }

    #[test]
    fn a_held_slot_is_not_issued_again_and_a_reissued_slot_has_a_new_generation() {
        let mut t = SlotTable::new();
        let a = t.take().unwrap();
        let b = t.take().unwrap();
        assert_ne!(a.slot(), b.slot(), "an occupied slot is never handed out");
        assert!(t.give_back(a));
        assert!(!t.give_back(a), "a lease is returned once");
        let c = t.take().unwrap();
        assert_eq!(c.slot(), a.slot());
        assert_ne!(c, a, "the slot's next lease has another generation");
        assert!(!t.is_held(a) && t.is_held(c));
    }

    #[test]
    fn running_out_of_slots_is_none() {
        let mut t = SlotTable::new();
        let tags: Vec<_> = (0..SLOTS_PER_WRITER).map(|_| t.take().unwrap()).collect();
        assert_eq!(t.in_use(), SLOTS_PER_WRITER);
        assert!(t.take().is_none());
        assert!(t.give_back(tags[7]));
        assert_eq!(t.take().map(LeaseTag::slot), Some(7));
    }

    #[test]
    fn generations_wrap_without_hitting_padding() {
        let mut t = SlotTable::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(3 * GENERATIONS as usize) {
            let tag = t.take().unwrap();
            assert_ne!(tag.raw(), u16::MAX);
            seen.insert(tag.generation());
            assert!(t.give_back(tag));
        }
        assert_eq!(seen.len(), GENERATIONS as usize);
    }
}
