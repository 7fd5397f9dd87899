//! The sample-store thread: appends sampled packets to one PCAP segment file per
//! `segment_seconds` (`samples/<start secs>.pcap`, nanosecond PCAP, snaplen = the sample
//! snaplen) and deletes the oldest segments past `retention_seconds` or `max_bytes`.
//!
//! Segments are plain PCAP so an operator can read them with any tool. At start-up `open`
//! repairs them: a torn last record is cut, damage in the middle is skipped (the records after it
//! are kept, see `format::scan_records`), and anything named like a segment that is not a regular
//! file is named in a warning and left alone; no symlink is ever followed. `Flush` makes
//! everything sampled so far readable.
//!
//! Disk space: the store keeps `min_free_bytes` free on the data dir's file system by dropping its
//! oldest segments (never the one being written), and when a write still fails for lack of space
//! it drops the oldest (the current one only when it is the only one), retries once, and
//! otherwise drops the sample, counting it (`SampleStats::dropped_disk_full`, `disk_full_since_ns`).
//! Errors are logged at most once per `LOG_EVERY`, with a count of the ones in between.
use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use crossbeam::queue::ArrayQueue;

use super::{repair, SampleRec, SampleStats, MAX_SNAPLEN};
use crate::datadir::{self, EntryKind};
use crate::dataplane::clock::realtime_ns;
use crate::pcap::format::{self, Precision, FILE_HEADER_LEN, RECORD_HEADER_LEN};

const NS: u64 = 1_000_000_000;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// A repeated error is logged at most this often; the ones in between are counted.
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub segment_secs: u64,
    pub retention_secs: u64,
    pub max_bytes: u64,
    /// Bytes kept free on the file system of `dir`: the oldest segments go first, then samples.
    pub min_free_bytes: u64,
    pub snaplen: u32,
}

pub enum StoreCmd {
    /// Write out everything received so far, then reply.
    Flush(Sender<()>),
    /// Drain the rings, flush and exit.
    Shutdown,
}

/// The start second of a segment named `name` (`<digits>.pcap`).
pub(super) fn segment_start(name: &OsStr) -> Option<u64> {
    let stem = name.to_str()?.strip_suffix(".pcap")?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Segment files in `dir`, oldest first, as (start second, path, size). Only regular files:
/// a symlink, directory or device named like a segment is not one (`open` warns about them).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf, u64)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Some(start) = segment_start(&e.file_name()) else { continue };
        // Neither `file_type` nor `metadata` of a DirEntry follows a symlink.
        let meta = match e.metadata() {
            Ok(m) => m,
            // Removed by retention while a query lists the directory.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if meta.file_type().is_file() {
            v.push((start, e.path(), meta.len()));
        }
    }
    v.sort();
    Ok(v)
}

/// Entries of `dir` named like segments that are not regular files.
/// Deletes the oldest segments in `dir` (never the one starting at `keep`) while less than
/// `min_free` bytes are free (`free` as last measured); calls `dropped` for each and returns
/// the free space after. Used by the running store and at start-up, when a full disk would
/// otherwise keep the database from opening.
pub fn drop_oldest_until(
    dir: &Path,
    min_free: u64,
    keep: Option<u64>,
    mut free: u64,
    mut dropped: impl FnMut(&Path),
) -> u64 {
    for (start, path, size) in segments(dir).unwrap_or_default() {
        if free >= min_free {
            break;
        }
        if Some(start) == keep || fs::remove_file(&path).is_err() {
            continue;
        }
        tracing::warn!(
            "samples: dropped segment {} ({size} bytes) early: {free} bytes free, below samples.min_free_bytes = {min_free}",
            path.display()
        );
        dropped(&path);
        free = datadir::free_bytes(dir).unwrap_or(free.saturating_add(size));
    }
    free
}

pub(super) fn strays(dir: &Path) -> io::Result<Vec<(PathBuf, EntryKind)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if segment_start(&e.file_name()).is_some() {
            let kind = EntryKind::of(&e.path())?;
            if kind != EntryKind::File {
                v.push((e.path(), kind));
            }
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Logs one line per `LOG_EVERY` at most and counts the others.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn error(&mut self, what: &str, e: &dyn Display) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        match std::mem::take(&mut self.suppressed) {
            0 => tracing::error!("{what}: {e}"),
            n => tracing::error!("{what}: {e} ({n} more since the last report)"),
        }
        self.last = Some(now);
    }
}

/// Free space as last measured, and what was written since.
struct Room {
    free: u64,
    written: u64,
    checked: Instant,
    /// Below `min_free_bytes` with nothing left to drop at the last check: samples are dropped
    /// until the next check (one `statvfs` per `FLUSH_EVERY`, not one per sample).
    low: bool,
}

struct Current {
    start_secs: u64,
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
}

pub struct SampleStore {
    cfg: StoreConfig,
    rings: Vec<Arc<ArrayQueue<SampleRec>>>,
    cmds: Receiver<StoreCmd>,
    stats: Arc<SampleStats>,
    current: Option<Current>,
    dirty: bool,
    room: Room,
    write_errors: Throttle,
    space_errors: Throttle,
}

/// Why a sample was not stored.
enum NotStored {
    /// Below the headroom with nothing left to drop.
    NoRoom,
    Io(io::Error),
}

impl SampleStore {
    /// Creates the directory and repairs segments cut short or damaged.
    pub fn open(
        cfg: StoreConfig,
        rings: Vec<Arc<ArrayQueue<SampleRec>>>,
        cmds: Receiver<StoreCmd>,
        stats: Arc<SampleStats>,
    ) -> io::Result<SampleStore> {
        datadir::ensure_dir(&cfg.dir)?;
        for (path, kind) in strays(&cfg.dir)? {
            tracing::warn!("samples: skipping {}: named like a segment but {}", path.display(), kind.as_str());
        }
        repair::remove_leftovers(&cfg.dir)?;
        for (start, path, _) in segments(&cfg.dir)? {
            repair::repair(&path, start, cfg.segment_secs)?;
        }
        let room = Room { free: 0, written: 0, checked: Instant::now(), low: false };
        let mut store = SampleStore {
            cfg,
            rings,
            cmds,
            stats,
            current: None,
            dirty: false,
            room,
            write_errors: Throttle::default(),
            space_errors: Throttle::default(),
        };
        store.make_room();
        store.account()?;
        Ok(store)
    }

    pub fn run(mut self) {
        let mut last_flush = Instant::now();
        let mut last_retention = Instant::now() - RETENTION_EVERY;
        let mut idle = Duration::from_micros(200);
        loop {
            while let Ok(cmd) = self.cmds.try_recv() {
                if !self.handle(cmd) {
                    return;
                }
            }
            let moved = self.drain();
            if self.dirty && last_flush.elapsed() >= FLUSH_EVERY {
                self.flush();
                last_flush = Instant::now();
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                if let Err(e) = self.enforce_retention() {
                    tracing::warn!("sample store retention: {e}");
                }
                last_retention = Instant::now();
            }
            if moved > 0 {
                idle = Duration::from_micros(200);
                continue;
            }
            match self.cmds.recv_timeout(idle) {
                Ok(cmd) => {
                    if !self.handle(cmd) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => idle = (idle * 2).min(Duration::from_millis(20)),
                Err(RecvTimeoutError::Disconnected) => {
                    self.handle(StoreCmd::Shutdown);
                    return;
                }
            }
        }
    }

    fn handle(&mut self, cmd: StoreCmd) -> bool {
        match cmd {
            StoreCmd::Flush(reply) => {
                while self.drain() > 0 {}
                self.flush();
                let _ = reply.send(());
                true
            }
            StoreCmd::Shutdown => {
                while self.drain() > 0 {}
                self.flush();
                false
            }
        }
    }

    /// Makes room first (the headroom), then writes the buffered records out; a write that
    /// finds the disk full drops the oldest segment(s) and is retried once.
    fn flush(&mut self) {
        self.make_room();
        let Some(c) = self.current.as_mut() else {
            self.dirty = false;
            return;
        };
        let mut res = c.out.flush();
        if res.as_ref().is_err_and(datadir::is_disk_full) && self.free_after_disk_full() {
            res = self.current.as_mut().map_or(Ok(()), |c| c.out.flush());
        }
        match res {
            Ok(()) => self.dirty = false,
            Err(e) => {
                let what = self.current.as_ref().map_or_else(String::new, |c| c.path.display().to_string());
                self.write_errors.error(&format!("samples: flushing {what}"), &e);
            }
        }
    }

    fn drain(&mut self) -> usize {
        let mut moved = 0;
        for r in 0..self.rings.len() {
            for _ in 0..1024 {
                let Some(rec) = self.rings[r].pop() else { break };
                moved += 1;
                self.store(&rec);
            }
        }
        moved
    }

    /// Appends one sample, or counts it as dropped.
    fn store(&mut self, rec: &SampleRec) {
        let mut res = self.append(rec);
        if matches!(&res, Err(NotStored::Io(e)) if datadir::is_disk_full(e)) && self.free_after_disk_full() {
            res = self.append(rec);
        }
        match res {
            Ok(()) => {
                if self.stats.disk_full_since_ns.load(Relaxed) != 0 {
                    self.stats.disk_full_since_ns.store(0, Relaxed);
                    tracing::info!("samples: storing samples again");
                }
            }
            Err(NotStored::NoRoom) => self.dropped_for_space(None),
            Err(NotStored::Io(e)) if datadir::is_disk_full(&e) => {
                // Nothing more to free: stop trying until the next check.
                self.room.low = true;
                self.dropped_for_space(Some(e));
            }
            Err(NotStored::Io(e)) => {
                self.stats.dropped_write_error.fetch_add(1, Relaxed);
                self.write_errors.error("samples: dropping a sample", &e);
            }
        }
    }

    fn dropped_for_space(&mut self, e: Option<io::Error>) {
        self.stats.dropped_disk_full.fetch_add(1, Relaxed);
        if self.stats.disk_full_since_ns.load(Relaxed) == 0 {
            self.stats.disk_full_since_ns.store(realtime_ns().max(1), Relaxed);
        }
        let why = match e {
            Some(e) => e.to_string(),
            None => format!(
                "{} bytes free on {}, below samples.min_free_bytes = {} and no older segment left to drop",
                self.room.free,
                self.cfg.dir.display(),
                self.cfg.min_free_bytes
            ),
        };
        self.space_errors.error("samples: dropping samples, the disk is full", &why);
    }

    fn append(&mut self, rec: &SampleRec) -> Result<(), NotStored> {
        let start = rec.ts_ns / NS / self.cfg.segment_secs * self.cfg.segment_secs;
        let caplen = usize::from(rec.caplen).min(MAX_SNAPLEN);
        let n = (RECORD_HEADER_LEN + caplen) as u64;
        // A record from another core may be slightly late: it stays in the current segment
        // (queries read a segment of slack on both sides).
        let need_new = match &self.current {
            None => true,
            Some(c) => start > c.start_secs,
        };
        if need_new {
            self.flush();
            self.current = None;
            self.make_room();
        }
        if !self.has_room(n + if need_new { FILE_HEADER_LEN as u64 } else { 0 }) {
            return Err(NotStored::NoRoom);
        }
        if need_new {
            self.open_segment(start).map_err(NotStored::Io)?;
        }
        let Some(c) = self.current.as_mut() else { return Ok(()) };
        // One write per record: a failed write leaves nothing of it in the buffer, so the file
        // stays whole records once the buffer gets out.
        let mut buf = [0u8; RECORD_HEADER_LEN + MAX_SNAPLEN];
        buf[..RECORD_HEADER_LEN].copy_from_slice(&format::record_header(
            Precision::Nanos,
            rec.ts_ns,
            caplen as u32,
            rec.orig_len,
        ));
        buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + caplen].copy_from_slice(&rec.data[..caplen]);
        c.out.write_all(&buf[..n as usize]).map_err(NotStored::Io)?;
        c.size += n;
        self.room.written += n;
        self.stats.bytes.fetch_add(n, Relaxed);
        self.stats.stored.fetch_add(1, Relaxed);
        self.dirty = true;
        Ok(())
    }

    fn open_segment(&mut self, start: u64) -> io::Result<()> {
        let path = self.cfg.dir.join(format!("{start:012}.pcap"));
        let mut file = datadir::nofollow().create(true).append(true).mode(0o644).open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!("{} is not a regular file", path.display())));
        }
        let mut size = meta.len();
        if size < FILE_HEADER_LEN as u64 {
            // Empty, or a header cut by a full disk.
            file.set_len(0)?;
            file.write_all(&format::file_header(Precision::Nanos, self.cfg.snaplen))?;
            self.stats.bytes.fetch_add(FILE_HEADER_LEN as u64 - size, Relaxed);
            self.room.written += FILE_HEADER_LEN as u64;
            size = FILE_HEADER_LEN as u64;
        }
        if self.stats.oldest_ns.load(Relaxed) == 0 {
            self.stats.oldest_ns.store(start * NS, Relaxed);
        }
        self.current = Some(Current { start_secs: start, path, out: BufWriter::with_capacity(256 << 10, file), size });
        Ok(())
    }

    /// Whether `n` more bytes keep `min_free_bytes` free. Counts writes against the last
    /// measurement and measures again (dropping old segments) only when that looks short.
    fn has_room(&mut self, n: u64) -> bool {
        let want = self.cfg.min_free_bytes.saturating_add(n);
        if self.room.free.saturating_sub(self.room.written) >= want {
            return true;
        }
        if self.room.low && self.room.checked.elapsed() < FLUSH_EVERY {
            return false;
        }
        self.make_room();
        self.room.low = self.room.free < want;
        !self.room.low
    }

    /// Measures free space and drops the oldest segments (never the current one) while it is
    /// below `min_free_bytes`.
    fn make_room(&mut self) {
        let dir = self.cfg.dir.clone();
        let free = match datadir::free_bytes(&dir) {
            Ok(f) => f,
            Err(e) => {
                self.space_errors.error(&format!("samples: statvfs {}", dir.display()), &e);
                u64::MAX
            }
        };
        let free = if free < self.cfg.min_free_bytes {
            let current = self.current.as_ref().map(|c| c.start_secs);
            let stats = Arc::clone(&self.stats);
            let free = drop_oldest_until(&dir, self.cfg.min_free_bytes, current, free, |_| {
                stats.segments_dropped_for_space.fetch_add(1, Relaxed);
            });
            let _ = self.account();
            free
        } else {
            free
        };
        self.room = Room { free, written: 0, checked: Instant::now(), low: free < self.cfg.min_free_bytes };
    }

    /// After ENOSPC: drops the oldest segment (the current one only when it is the only one).
    /// Returns whether anything was freed, so the write is worth one retry.
    fn free_after_disk_full(&mut self) -> bool {
        let current = self.current.as_ref().map(|c| c.start_secs);
        let segs = segments(&self.cfg.dir).unwrap_or_default();
        let victim = segs.iter().find(|s| Some(s.0) != current).or(segs.first());
        let Some((start, path, size)) = victim.cloned() else { return false };
        if Some(start) == current {
            // The only segment: its unwritten buffer goes with it (no flush on drop).
            if let Some(c) = self.current.take() {
                let _ = c.out.into_parts();
            }
        }
        if fs::remove_file(&path).is_err() {
            return false;
        }
        self.stats.segments_dropped_for_space.fetch_add(1, Relaxed);
        tracing::warn!("samples: the disk is full: dropped segment {} ({size} bytes)", path.display());
        let _ = self.account();
        self.room.written = 0;
        self.room.free = datadir::free_bytes(&self.cfg.dir).unwrap_or(size);
        self.room.checked = Instant::now();
        true
    }

    /// Deletes segments older than the retention, then the oldest while over `max_bytes`.
    fn enforce_retention(&mut self) -> io::Result<()> {
        let now_secs = realtime_ns() / NS;
        let current = self.current.as_ref().map(|c| c.start_secs);
        let mut segs = segments(&self.cfg.dir)?;
        let mut total: u64 = segs.iter().map(|s| s.2).sum();
        if let Some(c) = &self.current {
            // Buffered bytes count too.
            let on_disk = segs.iter().find(|s| s.0 == c.start_secs).map_or(0, |s| s.2);
            total += c.size.saturating_sub(on_disk);
        }
        let mut removed = 0;
        segs.retain(|(start, path, size)| {
            let expired = start + self.cfg.segment_secs + self.cfg.retention_secs <= now_secs;
            if expired && Some(*start) != current && fs::remove_file(path).is_ok() {
                total -= size;
                removed += 1;
                return false;
            }
            true
        });
        for (start, path, size) in &segs {
            if total <= self.cfg.max_bytes || Some(*start) == current {
                break;
            }
            if fs::remove_file(path).is_ok() {
                total -= size;
                removed += 1;
            }
        }
        self.stats.segments_expired.fetch_add(removed, Relaxed);
        self.stats.bytes.store(total, Relaxed);
        self.account_oldest()?;
        Ok(())
    }

    fn account(&self) -> io::Result<()> {
        let total: u64 = segments(&self.cfg.dir)?.iter().map(|s| s.2).sum();
        self.stats.bytes.store(total, Relaxed);
        self.account_oldest()
    }

    fn account_oldest(&self) -> io::Result<()> {
        let oldest = segments(&self.cfg.dir)?.first().map_or(0, |s| s.0 * NS);
        self.stats.oldest_ns.store(oldest, Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn rec(ts_ns: u64, len: u16) -> SampleRec {
        SampleRec { ts_ns, orig_len: 1500, caplen: len, data: [0xab; super::super::MAX_SNAPLEN] }
    }

    fn store(
        dir: &Path,
        retention_secs: u64,
        max_bytes: u64,
    ) -> (SampleStore, Arc<ArrayQueue<SampleRec>>, Arc<SampleStats>) {
        let ring = Arc::new(ArrayQueue::new(4096));
        let stats = Arc::new(SampleStats::default());
        let (_tx, rx) = crossbeam::channel::unbounded();
        let cfg = StoreConfig {
            dir: dir.to_path_buf(),
            segment_secs: 10,
            retention_secs,
            max_bytes,
            min_free_bytes: 0,
            snaplen: 160,
        };
        (SampleStore::open(cfg, vec![Arc::clone(&ring)], rx, Arc::clone(&stats)).unwrap(), ring, stats)
    }

    #[test]
    fn segments_by_time_and_retention_by_age() {
        let d = tempfile::tempdir().unwrap();
        let now = realtime_ns() / NS / 10 * 10;
        let (mut s, ring, stats) = store(d.path(), 60, u64::MAX);
        // 100 s ago, 50 s ago, now: three segments.
        for ago in [100u64, 50, 0] {
            for i in 0..5 {
                ring.push(rec((now - ago) * NS + i, 100)).ok().unwrap();
            }
        }
        while s.drain() > 0 {}
        s.flush();
        let segs = segments(d.path()).unwrap();
        assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![now - 100, now - 50, now]);
        assert_eq!(stats.stored.load(Relaxed), 15);
        s.enforce_retention().unwrap();
        let segs = segments(d.path()).unwrap();
        assert_eq!(
            segs.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![now - 50, now],
            "older than 60 s + a segment goes"
        );
        assert_eq!(stats.segments_expired.load(Relaxed), 1);
        assert_eq!(stats.oldest_ns.load(Relaxed), (now - 50) * NS);
        assert_eq!(stats.bytes.load(Relaxed), segs.iter().map(|s| s.2).sum::<u64>());
    }

    #[test]
    fn byte_budget_removes_the_oldest_first_and_never_the_current() {
        let d = tempfile::tempdir().unwrap();
        let now = realtime_ns() / NS / 10 * 10;
        let (mut s, ring, stats) = store(d.path(), 86_400, 2000);
        for ago in [40u64, 30, 20, 0] {
            for i in 0..6 {
                ring.push(rec((now - ago) * NS + i, 100)).ok().unwrap(); // 116 bytes each
            }
        }
        while s.drain() > 0 {}
        s.flush();
        assert_eq!(segments(d.path()).unwrap().len(), 4);
        s.enforce_retention().unwrap();
        let segs = segments(d.path()).unwrap();
        // Each segment is 24 + 6 * 116 = 720 bytes: two fit in 2000.
        assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![now - 20, now]);
        assert!(stats.bytes.load(Relaxed) <= 2000);
    }

    #[test]
    fn a_torn_record_is_cut_at_open() {
        let d = tempfile::tempdir().unwrap();
        let now = realtime_ns() / NS;
        {
            let (mut s, ring, _) = store(d.path(), 86_400, u64::MAX);
            for i in 0..3 {
                ring.push(rec(now * NS + i, 100)).ok().unwrap();
            }
            while s.drain() > 0 {}
            s.flush();
        }
        let (_, path, size) = segments(d.path()).unwrap().remove(0);
        // A fourth record cut by a crash: its header and 14 of its 100 bytes.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&format::record_header(Precision::Nanos, now * NS, 100, 1500)).unwrap();
        f.write_all(&[0xab; 14]).unwrap();
        drop(f);
        let (_s, _, stats) = store(d.path(), 86_400, u64::MAX);
        assert_eq!(fs::metadata(&path).unwrap().len(), size);
        assert_eq!(stats.bytes.load(Relaxed), size);
    }

    /// A small tmpfs mounted on a temporary directory, unmounted on drop.
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        /// `None` (and a printed reason) when this test cannot mount.
        fn mount(size: &str) -> Option<Tmpfs> {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                println!("skipped: mounting a tmpfs needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let st = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "mount -t tmpfs failed: {st}");
            Some(Tmpfs { dir })
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
        }
    }

    #[test]
    fn sample_store_keeps_headroom_and_survives_a_full_disk() {
        let Some(fs_) = Tmpfs::mount("12m") else { return };
        let dir = fs_.dir.path().join("samples");
        let min_free: u64 = 2 << 20;
        let ring = Arc::new(ArrayQueue::new(8192));
        let stats = Arc::new(SampleStats::default());
        let (_tx, rx) = crossbeam::channel::unbounded();
        let cfg = StoreConfig {
            dir: dir.clone(),
            segment_secs: 10,
            retention_secs: 86_400 * 365 * 100,
            max_bytes: u64::MAX,
            min_free_bytes: min_free,
            snaplen: 160,
        };
        let now = realtime_ns() / NS / 10 * 10;
        let ((), log) = super::super::repair::tests::logged(|| {
            let mut s = SampleStore::open(cfg, vec![Arc::clone(&ring)], rx, Arc::clone(&stats)).unwrap();
            // 40 segments of ~1 MB (6000 samples of 176 bytes): over three times the file system.
            let first = now - 400;
            let mut least_free = u64::MAX;
            for seg in 0..40u64 {
                for i in 0..6000u64 {
                    while ring.push(rec((first + seg * 10) * NS + i, 160)).is_err() {
                        s.drain();
                    }
                }
                while s.drain() > 0 {}
                s.flush();
                least_free = least_free.min(datadir::free_bytes(&dir).unwrap());
            }
            // The buffer (256 KiB) and a segment header may go below the line between checks.
            assert!(least_free + (300 << 10) >= min_free, "free space went down to {least_free}");
            assert!(stats.segments_dropped_for_space.load(Relaxed) > 0);
            let segs = segments(&dir).unwrap();
            assert_eq!(segs.last().map(|s| s.0), Some(first + 390), "the newest samples are kept");
            assert_eq!(stats.dropped_disk_full.load(Relaxed), 0, "room was made, nothing dropped");
            assert_eq!(stats.disk_full_since_ns(), None);

            // Now something else fills the disk: the store drops all it can, then samples, and
            // says since when; it recovers once there is room again.
            let filler = fs_.dir.path().join("filler");
            {
                let mut f = File::create(&filler).unwrap();
                let chunk = vec![0u8; 64 << 10];
                while f.write_all(&chunk).is_ok() {}
            }
            for i in 0..50_000u64 {
                while ring.push(rec(now * NS + i, 160)).is_err() {
                    s.drain();
                }
            }
            while s.drain() > 0 {}
            s.flush();
            assert!(stats.dropped_disk_full.load(Relaxed) > 0);
            assert!(stats.disk_full_since_ns().is_some());
            assert!(segments(&dir).unwrap().len() <= 1, "older segments were dropped to make room");
            fs::remove_file(&filler).unwrap();
            std::thread::sleep(FLUSH_EVERY);
            let stored = stats.stored.load(Relaxed);
            ring.push(rec((now + 10) * NS, 160)).ok().unwrap();
            while s.drain() > 0 {}
            s.flush();
            assert_eq!(stats.stored.load(Relaxed), stored + 1, "writes again once there is room");
            assert_eq!(stats.disk_full_since_ns(), None);
        });
        let lines = log.lines().count();
        assert!(lines < 60, "{lines} log lines, not a few:\n{log}");
        assert!(log.contains("more since the last report") || log.matches("dropping samples").count() <= 2, "{log}");
    }
}
