//! The sample-store thread: appends sampled packets to one PCAP segment file per
//! `segment_seconds` (`samples/<start secs>.pcap`, nanosecond PCAP, snaplen = the sample
//! snaplen) and deletes the oldest segments past `retention_seconds` or `max_bytes`.
//!
//! Segments are plain PCAP so an operator can read them with any tool. A crash leaves at worst a
//! torn last record, which `open` cuts off. `Flush` makes everything sampled so far readable.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use crossbeam::queue::ArrayQueue;

use super::{SampleRec, SampleStats};
use crate::dataplane::clock::realtime_ns;
use crate::pcap::format::{self, Precision, FILE_HEADER_LEN, RECORD_HEADER_LEN};

const NS: u64 = 1_000_000_000;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const RETENTION_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub segment_secs: u64,
    pub retention_secs: u64,
    pub max_bytes: u64,
    pub snaplen: u32,
}

pub enum StoreCmd {
    /// Write out everything received so far, then reply.
    Flush(Sender<()>),
    /// Drain the rings, flush and exit.
    Shutdown,
}

/// Segment files in `dir`, oldest first, as (start second, path, size).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf, u64)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "pcap") {
            if let Some(start) = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
                v.push((start, p, e.metadata()?.len()));
            }
        }
    }
    v.sort();
    Ok(v)
}

struct Current {
    start_secs: u64,
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
}

impl SampleStore {
    /// Creates the directory and repairs segments cut short by a crash.
    pub fn open(
        cfg: StoreConfig,
        rings: Vec<Arc<ArrayQueue<SampleRec>>>,
        cmds: Receiver<StoreCmd>,
        stats: Arc<SampleStats>,
    ) -> io::Result<SampleStore> {
        fs::create_dir_all(&cfg.dir)?;
        for (_, path, size) in segments(&cfg.dir)? {
            repair(&path, size)?;
        }
        let store = SampleStore { cfg, rings, cmds, stats, current: None, dirty: false };
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

    fn flush(&mut self) {
        if let Some(c) = self.current.as_mut() {
            if let Err(e) = c.out.flush() {
                tracing::error!("sample segment {}: {e}", c.start_secs);
            }
        }
        self.dirty = false;
    }

    fn drain(&mut self) -> usize {
        let mut moved = 0;
        for r in 0..self.rings.len() {
            for _ in 0..1024 {
                let Some(rec) = self.rings[r].pop() else { break };
                moved += 1;
                if let Err(e) = self.append(&rec) {
                    tracing::error!("sample store: {e}");
                }
            }
        }
        moved
    }

    fn append(&mut self, rec: &SampleRec) -> io::Result<()> {
        let start = rec.ts_ns / NS / self.cfg.segment_secs * self.cfg.segment_secs;
        // A record from another core may be slightly late: it stays in the current segment
        // (queries read a segment of slack on both sides).
        let need_new = match &self.current {
            None => true,
            Some(c) => start > c.start_secs,
        };
        if need_new {
            self.flush();
            self.current = None;
            let path = self.cfg.dir.join(format!("{start:012}.pcap"));
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            let mut size = file.metadata()?.len();
            if size == 0 {
                file.write_all(&format::file_header(Precision::Nanos, self.cfg.snaplen))?;
                size = FILE_HEADER_LEN as u64;
                self.stats.bytes.fetch_add(size, Relaxed);
            }
            if self.stats.oldest_ns.load(Relaxed) == 0 {
                self.stats.oldest_ns.store(start * NS, Relaxed);
            }
            self.current = Some(Current { start_secs: start, out: BufWriter::with_capacity(256 << 10, file), size });
        }
        let Some(c) = self.current.as_mut() else { return Ok(()) };
        let caplen = u32::from(rec.caplen);
        c.out.write_all(&format::record_header(Precision::Nanos, rec.ts_ns, caplen, rec.orig_len))?;
        c.out.write_all(&rec.data[..caplen as usize])?;
        let n = (RECORD_HEADER_LEN as u64) + u64::from(caplen);
        c.size += n;
        self.stats.bytes.fetch_add(n, Relaxed);
        self.stats.stored.fetch_add(1, Relaxed);
        self.dirty = true;
        Ok(())
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

/// Cuts a segment back to its last whole record (or removes it if its header is torn).
fn repair(path: &Path, size: u64) -> io::Result<()> {
    if size < FILE_HEADER_LEN as u64 {
        return fs::remove_file(path);
    }
    let data = fs::read(path)?;
    let whole = FILE_HEADER_LEN + format::whole_records_len(&data[FILE_HEADER_LEN..]);
    if whole as u64 != size {
        tracing::warn!("{}: cutting a torn record ({} bytes)", path.display(), size - whole as u64);
        OpenOptions::new().write(true).open(path)?.set_len(whole as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let cfg = StoreConfig { dir: dir.to_path_buf(), segment_secs: 10, retention_secs, max_bytes, snaplen: 160 };
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
}
