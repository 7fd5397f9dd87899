//! Start-up repair of sample segments. A crash leaves at worst a torn last record, which is cut
//! off in place. Damage anywhere else (a disk error, another writer, random bytes) is skipped:
//! the segment is rewritten (through a temporary file and a rename) with every plausible record
//! before and after it, found again by `format::scan_records`, and each damaged stretch is logged
//! as corruption with its byte offsets. Symlinks are never followed: files are opened with
//! `O_NOFOLLOW` and checked to be regular files.
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::datadir;
use crate::pcap::format::{self, Plausible, Precision, FILE_HEADER_LEN};

/// How far a record's timestamp may lie outside its segment's span and still be believed
/// (late records from other cores, clock steps).
const TS_SLACK_SECS: u64 = 86_400;

/// Name of the temporary file a repair writes before renaming it over the segment.
fn repair_tmp(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.repair"))
}

/// Removes temporary files of a repair a crash interrupted (regular files only).
pub(super) fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".pcap.repair") && e.file_type()?.is_file() {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Repairs one segment: a torn last record is cut; damaged stretches are skipped and the
/// segment is rewritten with every plausible record before and after them (logged as corruption
/// with byte offsets); a file too short for a header is removed. Never follows a symlink.
pub(super) fn repair(path: &Path, start_secs: u64, segment_secs: u64) -> io::Result<()> {
    let mut f = datadir::open_read(path)?;
    if !f.metadata()?.is_file() {
        tracing::warn!("samples: skipping {}: not a regular file", path.display());
        return Ok(());
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    drop(f);
    let size = data.len();
    if size < FILE_HEADER_LEN {
        tracing::warn!("samples: removing {}: {size} bytes, shorter than a pcap header", path.display());
        return fs::remove_file(path);
    }
    let le = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let snaplen = match le(16) {
        0 => 262_144,
        s => s.min(262_144),
    };
    let to_u32 = |s: u64| u32::try_from(s).unwrap_or(u32::MAX);
    let plausible = Plausible {
        snaplen,
        precision: if le(0) == format::MAGIC_MICROS { Precision::Micros } else { Precision::Nanos },
        min_secs: to_u32(start_secs.saturating_sub(TS_SLACK_SECS)),
        max_secs: to_u32(start_secs.saturating_add(segment_secs).saturating_add(TS_SLACK_SECS)),
    };
    let body = &data[FILE_HEADER_LEN..];
    let scan = format::scan_records(body, &plausible);
    if scan.is_clean() {
        return Ok(());
    }
    let at = |r: &std::ops::Range<usize>| (FILE_HEADER_LEN + r.start, FILE_HEADER_LEN + r.end);
    for r in &scan.damaged {
        let (a, b) = at(r);
        tracing::warn!("samples: segment {} corrupt at byte {a}..{b} ({} bytes skipped)", path.display(), b - a);
    }
    if scan.damaged.is_empty() {
        // Only a record cut by a crash at the end: cut it off in place.
        let whole = FILE_HEADER_LEN + scan.kept();
        tracing::warn!("{}: cutting a torn record ({} bytes)", path.display(), size - whole);
        return datadir::nofollow().write(true).open(path)?.set_len(whole as u64);
    }
    if let Some(r) = &scan.torn_tail {
        let (a, b) = at(r);
        tracing::warn!(
            "samples: segment {}: cutting {} bytes at byte {a}..{b} (a torn or damaged end)",
            path.display(),
            b - a
        );
    }
    let tmp = repair_tmp(path);
    let mut out = datadir::nofollow().write(true).create_new(true).mode(0o644).open(&tmp)?;
    let written = (|| {
        out.write_all(&data[..FILE_HEADER_LEN])?;
        for r in &scan.good {
            out.write_all(&body[r.clone()])?;
        }
        out.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // rename replaces the directory entry (never a symlink's target).
    fs::rename(&tmp, path)?;
    tracing::info!(
        "samples: segment {} repaired: kept {} of {size} bytes",
        path.display(),
        FILE_HEADER_LEN + scan.kept()
    );
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::store::{segments, SampleStore, StoreConfig};
    use super::super::SampleStats;
    use super::*;
    use crate::pcap::format::{encode_record, file_header, RECORD_HEADER_LEN};

    const NS: u64 = 1_000_000_000;
    /// Start second of the segments these tests build (a 10 s segment).
    const START: u64 = 1_700_000_000;

    /// Runs `f` with this thread's log going to a string.
    pub(crate) fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::default());
        let w = buf.clone();
        let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(move || w.clone()).finish();
        let r = tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        (r, text)
    }

    /// Opens a sample store on `dir` (which runs the repair), with its log.
    fn open_store(dir: &Path) -> (io::Result<SampleStore>, String) {
        let cfg = StoreConfig {
            dir: dir.to_path_buf(),
            segment_secs: 10,
            retention_secs: 86_400 * 365 * 100,
            max_bytes: u64::MAX,
            min_free_bytes: 0,
            snaplen: 160,
        };
        let (_tx, rx) = crossbeam::channel::unbounded();
        logged(|| SampleStore::open(cfg, Vec::new(), rx, Arc::new(SampleStats::default())))
    }

    /// Record `i`: 100 bytes holding `i` 25 times, one µs apart.
    fn segment_of(n: u32) -> Vec<u8> {
        let mut b = file_header(Precision::Nanos, 160).to_vec();
        for i in 0..n {
            let data: Vec<u8> = (0..25).flat_map(|_| i.to_le_bytes()).collect();
            encode_record(
                &mut b,
                Precision::Nanos,
                START * NS + u64::from(i) * 1000,
                1500,
                100,
                std::iter::once(&data[..]),
            );
        }
        b
    }

    /// An independent reader: the file must be a pcap header and an exact chain of records.
    /// Returns the index of each record whose 100 bytes are intact, `None` for the others.
    fn read_back(path: &Path) -> Vec<Option<u32>> {
        let b = fs::read(path).unwrap();
        assert_eq!(b[..4], 0xa1b2_3c4du32.to_le_bytes(), "not a nanosecond pcap");
        let mut at = 24;
        let mut out = Vec::new();
        while at < b.len() {
            assert!(b.len() - at >= 16, "a torn record header at {at}");
            let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            assert!(at + 16 + caplen <= b.len(), "a torn record at {at}");
            let data = &b[at + 16..at + 16 + caplen];
            let first = data.get(..4).map(|w| u32::from_le_bytes(w.try_into().unwrap()));
            let intact =
                caplen == 100 && data.chunks(4).all(|w| Some(u32::from_le_bytes(w.try_into().unwrap())) == first);
            out.push(first.filter(|_| intact));
            at += 16 + caplen;
        }
        out
    }

    /// Deterministic noise (no two equal 4-byte runs that look like a record by chance).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (x >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn repair_resynchronises_past_damage_in_the_middle() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(format!("{START:012}.pcap"));
        let n = 3000u32; // 116 bytes each: 348 KB
        let mut b = segment_of(n);
        let (a, z) = (24 + 116 * 1500 + 37, 24 + 116 * 1500 + 37 + 200);
        b[a..z].copy_from_slice(&noise(200, 7));
        fs::write(&path, &b).unwrap();

        let (s, log) = open_store(d.path());
        s.unwrap();
        let got = read_back(&path);
        let intact: Vec<u32> = got.iter().flatten().copied().collect();
        // Every record wholly before or after the 200 bytes is kept, in order.
        let before = (a - 24) / 116; // records ending at or before `a`
        let after = (z - 24).div_ceil(116); // first record starting at or after `z`
        let want: Vec<u32> = (0..before as u32).chain(after as u32..n).collect();
        let kept_want = intact.iter().filter(|i| want.contains(i)).count();
        assert_eq!(kept_want, want.len(), "lost good records; log:\n{log}");
        assert!(intact.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert!(got.len() <= want.len() + 1, "at most the record whose header survived keeps damaged bytes");
        assert!(log.contains(&format!("segment {} corrupt at byte ", path.display())), "{log}");
        assert!(log.contains("bytes skipped)"), "{log}");
        assert!(!log.contains("torn record"), "damage is not a torn record: {log}");
        // Idempotent: a second start finds nothing to repair.
        let (_, log2) = open_store(d.path());
        assert!(!log2.contains("corrupt"), "{log2}");
    }

    #[test]
    fn a_bad_first_record_does_not_lose_the_segment() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(format!("{START:012}.pcap"));
        let mut b = segment_of(10);
        b[24..24 + RECORD_HEADER_LEN].fill(0xff);
        fs::write(&path, &b).unwrap();

        let (s, log) = open_store(d.path());
        s.unwrap();
        assert_eq!(read_back(&path), (1..10).map(Some).collect::<Vec<_>>(), "log:\n{log}");
        assert!(
            log.contains(&format!("segment {} corrupt at byte 24..140 (116 bytes skipped)", path.display())),
            "{log}"
        );
    }

    #[test]
    fn a_torn_last_record_is_still_cut_in_place() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(format!("{START:012}.pcap"));
        let mut b = segment_of(5);
        let whole = b.len();
        b.extend_from_slice(&segment_of(6)[whole..whole + 30]);
        fs::write(&path, &b).unwrap();
        let (s, log) = open_store(d.path());
        s.unwrap();
        assert_eq!(read_back(&path), (0..5).map(Some).collect::<Vec<_>>());
        assert!(log.contains("cutting a torn record (30 bytes)"), "{log}");
    }

    #[test]
    fn symlink_named_like_a_segment_is_skipped_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let samples = d.path().join("samples");
        fs::create_dir(&samples).unwrap();
        // A file outside the samples dir that a repair would cut (not whole records).
        let target = d.path().join("precious");
        let content = noise(3300, 1);
        fs::write(&target, &content).unwrap();
        let link = samples.join(format!("{START:012}.pcap"));
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let (s, log) = open_store(&samples);
        s.unwrap();
        assert_eq!(fs::read(&target).unwrap(), content, "the symlink's target was written to");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link itself stays");
        assert!(
            log.contains(&format!("samples: skipping {}: named like a segment but a symlink", link.display())),
            "{log}"
        );
        assert!(segments(&samples).unwrap().is_empty(), "a symlink is not a segment");
    }

    #[test]
    fn a_directory_named_like_a_segment_is_named_or_skipped() {
        let d = tempfile::tempdir().unwrap();
        let odd = d.path().join(format!("{START:012}.pcap"));
        fs::create_dir(&odd).unwrap();
        fs::write(d.path().join(format!("{:012}.pcap", START + 10)), segment_of(3)).unwrap();

        let (s, log) = open_store(d.path());
        assert!(s.is_ok(), "start-up stopped: {:?}", s.err());
        assert!(
            log.contains(&format!("samples: skipping {}: named like a segment but a directory", odd.display())),
            "{log}"
        );
        assert_eq!(segments(d.path()).unwrap().iter().map(|s| s.0).collect::<Vec<_>>(), vec![START + 10]);
        assert!(odd.is_dir());
    }
}
