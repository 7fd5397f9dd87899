//! `PcapSink`: writes one capture's records into rotated PCAP files.
//!
//! Each file is written as a hidden `.NAME.partial` beside its final name with large buffered
//! writes (or, for records already in PCAP form, straight from where they are), then flushed,
//! fsynced and renamed, so a reader never sees a half-written file under
//! its final name. A path naming an existing FIFO or device (`-w /dev/null`, a pipe into tshark)
//! is written in place instead: renaming over it would replace the node with a regular file.
//! Pure std: no DPDK types, so it is tested with plain byte slices.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{self, Precision, FILE_HEADER_LEN, RECORD_HEADER_LEN};
use super::naming::TcpdumpNames;
use super::rotation::{rotate_reason, should_rotate, FileState, Reason, RotatePolicy};

/// Bytes buffered before a `write` call.
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: io::Error },
    #[error("output path {0:?} has no file name")]
    NoFileName(PathBuf),
    #[error("output path {0:?} is a directory; give a file name in it")]
    IsDirectory(PathBuf),
    #[error(
        "output path {0:?} is standard output, a FIFO or a device: it cannot be rotated (drop -C/-G/-W and --rotate-*)"
    )]
    StreamRotation(PathBuf),
    #[error("{path}: the file system has {free} bytes free and {keep} are kept free for the appliance")]
    KeepFree { path: PathBuf, free: u64, keep: u64 },
}

impl SinkError {
    /// Whether the output path given is at fault (exit code 2): no file name, a directory, a
    /// stream with rotation, a directory that is missing or closed to us.
    pub fn is_bad_input(&self) -> bool {
        match self {
            SinkError::NoFileName(_) | SinkError::IsDirectory(_) | SinkError::StreamRotation(_) => true,
            SinkError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::InvalidFilename
            ),
            SinkError::KeepFree { .. } => false,
        }
    }
}

/// Where a capture's files go: `DIR/STEM.EXT`, or `DIR/STEM_00000.EXT`, … when rotating, or
/// tcpdump's names (`-C`/`-G`/`-W`, see `naming`); or, for an existing FIFO or device, that
/// path itself, and for `-` standard output (`stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPath {
    dir: PathBuf,
    stem: String,
    ext: String,
    naming: Naming,
    stream: Option<Stream>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Naming {
    Single,
    Numbered,
    /// tcpdump's names, made from the whole `-w` path.
    Tcpdump(TcpdumpNames),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stream {
    /// An existing FIFO or device, opened and written in place.
    Node(PathBuf),
    /// `-w -`: our standard output (a duplicate of descriptor 1).
    Stdout,
}

/// The final and the in-progress name of one file (the same for a stream).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilePaths {
    file: PathBuf,
    partial: PathBuf,
}

impl OutputPath {
    pub fn new(path: &Path, numbered: bool) -> Result<Self, SinkError> {
        Self::with_naming(path, if numbered { Naming::Numbered } else { Naming::Single })
    }

    /// tcpdump's names for `-w path` with `-C`/`-G`/`-W` (`names` made from the same path).
    pub fn tcpdump(path: &Path, names: TcpdumpNames) -> Result<Self, SinkError> {
        Self::with_naming(path, Naming::Tcpdump(names))
    }

    fn with_naming(path: &Path, naming: Naming) -> Result<Self, SinkError> {
        let rotated = naming != Naming::Single;
        if path == Path::new("-") {
            if rotated {
                return Err(SinkError::StreamRotation(path.to_path_buf()));
            }
            return Ok(OutputPath {
                dir: PathBuf::from("."),
                stem: "-".into(),
                ext: String::new(),
                naming,
                stream: Some(Stream::Stdout),
            });
        }
        let stem =
            path.file_stem().ok_or_else(|| SinkError::NoFileName(path.to_path_buf()))?.to_string_lossy().into_owned();
        let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stream = match fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(SinkError::IsDirectory(path.to_path_buf())),
            Ok(m) if !m.is_file() && rotated => return Err(SinkError::StreamRotation(path.to_path_buf())),
            Ok(m) if !m.is_file() => Some(Stream::Node(path.to_path_buf())),
            _ => None,
        };
        Ok(OutputPath { dir, stem, ext, naming, stream })
    }

    /// Whether the output is an existing FIFO or device, or standard output, written in place.
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// File `seq` (0, 1, … in order of opening) of pcapd's own naming.
    pub fn file(&self, seq: u32) -> PathBuf {
        match &self.stream {
            Some(Stream::Node(p)) => return p.clone(),
            Some(Stream::Stdout) => return PathBuf::from("-"),
            None => {}
        }
        match self.naming {
            Naming::Numbered => self.dir.join(format!("{}_{seq:05}{}", self.stem, self.ext)),
            _ => self.dir.join(format!("{}{}", self.stem, self.ext)),
        }
    }

    /// Where file `seq` is written until it is complete (a stream: the path itself).
    pub fn partial(&self, seq: u32) -> PathBuf {
        self.partial_of(&self.file(seq))
    }

    fn partial_of(&self, file: &Path) -> PathBuf {
        if self.stream.is_some() {
            return file.to_path_buf();
        }
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        file.parent().unwrap_or(&self.dir).join(format!(".{name}.partial"))
    }

    /// The names of file `seq`, whose tcpdump count is `count`, opened now.
    fn paths(&self, seq: u32, count: u32) -> FilePaths {
        let file = match (&self.naming, &self.stream) {
            (Naming::Tcpdump(names), None) => PathBuf::from(names.name(count, &chrono::Local::now())),
            _ => self.file(seq),
        };
        FilePaths { partial: self.partial_of(&file), file }
    }
}

struct OpenFile {
    file: File,
    paths: FilePaths,
    state: FileState,
}

/// Writes records into rotated files. Call `finish` to close the last file properly; dropping
/// an unfinished sink removes its `.partial` file.
pub struct PcapSink {
    out: OutputPath,
    policy: RotatePolicy,
    precision: Precision,
    snaplen: u32,
    buf: Vec<u8>,
    current: Option<OpenFile>,
    next_seq: u32,
    /// tcpdump's count of the next file (`-C`: 0, 1, 2, …, wrapping in a `-W` ring).
    next_count: u32,
    /// No rotation once this many files were opened (`-G` with `-W` and no `-C`).
    max_files: Option<u32>,
    finished: Vec<PathBuf>,
    packets: u64,
    bytes: u64,
    /// Bytes to leave free on the file system: a write that would go below fails (0 = none).
    keep_free: u64,
}

impl PcapSink {
    /// Creates the sink and its first file at once, so an unwritable path fails before capture.
    /// Files are numbered (`NAME_00000.EXT`, ...) when rotation is on.
    pub fn create(path: &Path, policy: RotatePolicy, precision: Precision, snaplen: u32) -> Result<Self, SinkError> {
        Self::create_with(path, policy, precision, snaplen, policy.is_enabled())
    }

    /// As `create`, choosing whether files are numbered.
    pub fn create_with(
        path: &Path,
        policy: RotatePolicy,
        precision: Precision,
        snaplen: u32,
        numbered: bool,
    ) -> Result<Self, SinkError> {
        Self::create_in(OutputPath::new(path, numbered)?, policy, precision, snaplen, None)
    }

    /// A sink with tcpdump's file names (`-w path` with `-C`/`-G`/`-W`): `names` says how they
    /// are made, `policy` when files rotate (`over_bytes` for `-C`, `max_seconds` for `-G`).
    /// A file whose name comes round again in a ring replaces the earlier one (removed when its
    /// successor is opened, so the ring never holds more than its files).
    pub fn create_tcpdump(
        path: &Path,
        names: TcpdumpNames,
        policy: RotatePolicy,
        precision: Precision,
        snaplen: u32,
    ) -> Result<Self, SinkError> {
        let max_files = names.max_files();
        Self::create_in(OutputPath::tcpdump(path, names)?, policy, precision, snaplen, max_files)
    }

    fn create_in(
        out: OutputPath,
        policy: RotatePolicy,
        precision: Precision,
        snaplen: u32,
        max_files: Option<u32>,
    ) -> Result<Self, SinkError> {
        let mut sink = PcapSink {
            out,
            policy,
            precision,
            snaplen,
            buf: Vec::with_capacity(WRITE_BUFFER),
            current: None,
            next_seq: 0,
            next_count: 0,
            max_files,
            finished: Vec::new(),
            packets: 0,
            bytes: 0,
            keep_free: 0,
        };
        sink.open()?;
        Ok(sink)
    }

    /// Writes fail (as on a full disk) rather than leave less than `bytes` free on the file
    /// system: the appliance's database and other captures keep room to work.
    pub fn keep_free(mut self, bytes: u64) -> Self {
        self.keep_free = bytes;
        self
    }

    /// Records written so far (all files).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes written so far, headers included (all files).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn open(&mut self) -> Result<(), SinkError> {
        let paths = self.out.paths(self.next_seq, self.next_count);
        let stream = self.out.is_stream();
        let io_err = |op, source| SinkError::Io { path: paths.file.clone(), op, source };
        let file = if self.out.stream == Some(Stream::Stdout) {
            // A duplicate, so that closing the capture's file leaves descriptor 1 alone.
            let fd = io::stdout().as_fd().try_clone_to_owned().map_err(|e| io_err("dup standard output", e))?;
            File::from(fd)
        } else {
            let mut opts = OpenOptions::new();
            opts.write(true).create(!stream).truncate(!stream);
            if !stream {
                // The hidden `.partial` name is ours: a symlink planted there is never followed
                // (it would truncate its target). A stream (FIFO, /dev/stdout) may be a link.
                opts.custom_flags(libc::O_NOFOLLOW);
            }
            opts.open(&paths.partial).map_err(|e| io_err(if stream { "open" } else { "create" }, e))?
        };
        // A name that comes round again (a -W ring, -G without a time pattern): the earlier
        // file goes now, as tcpdump truncates it, so a ring of N never holds N + 1 files.
        if let Some(at) = self.finished.iter().position(|f| f == &paths.file) {
            self.finished.remove(at);
            if !stream {
                fs::remove_file(&paths.file).map_err(|e| io_err("remove the ring's oldest file", e))?;
            }
        }
        self.next_seq += 1;
        self.buf.extend_from_slice(&format::file_header(self.precision, self.snaplen));
        self.bytes += FILE_HEADER_LEN as u64;
        self.current =
            Some(OpenFile { file, paths, state: FileState { bytes: FILE_HEADER_LEN as u64, ..Default::default() } });
        Ok(())
    }

    /// Why the current file should be closed before a record of `next` bytes (`None`: an idle
    /// tick), if it should; never once `max_files` files were opened.
    fn rotation_due(&self, next: Option<u64>, now_ns: u64) -> Option<Reason> {
        let cur = self.current.as_ref()?;
        if self.max_files.is_some_and(|max| self.next_seq >= max) {
            return None;
        }
        rotate_reason(&self.policy, &cur.state, next, now_ns)
    }

    /// Closes the current file for `reason`; the next file's tcpdump count follows from it.
    fn rotate(&mut self, reason: Reason) -> Result<(), SinkError> {
        self.close_current()?;
        self.next_count = match (reason, &self.out.naming) {
            (Reason::Size, Naming::Tcpdump(names)) => names.after_full(self.next_count),
            _ => 0,
        };
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), SinkError> {
        if self.keep_free > 0 && !self.buf.is_empty() && !self.out.is_stream() {
            if let Some(cur) = &self.current {
                // One statvfs per (up to 1 MiB) write.
                if let Ok(free) = crate::datadir::free_bytes(&cur.paths.partial) {
                    if free < self.keep_free + self.buf.len() as u64 {
                        return Err(SinkError::KeepFree { path: cur.paths.file.clone(), free, keep: self.keep_free });
                    }
                }
            }
        }
        if let Some(cur) = self.current.as_mut() {
            if !self.buf.is_empty() {
                cur.file.write_all(&self.buf).map_err(|source| SinkError::Io {
                    path: cur.paths.file.clone(),
                    op: "write",
                    source,
                })?;
            }
        }
        self.buf.clear();
        Ok(())
    }

    /// Flushes, fsyncs and renames the current file to its final name (a stream: flushes only).
    fn close_current(&mut self) -> Result<(), SinkError> {
        self.flush_buf()?;
        let Some(cur) = self.current.take() else {
            return Ok(());
        };
        let FilePaths { file, partial } = cur.paths;
        if self.out.is_stream() {
            self.finished.push(file);
            return Ok(());
        }
        let io_err = |op, source| SinkError::Io { path: file.clone(), op, source };
        cur.file.sync_all().map_err(|e| io_err("fsync", e))?;
        drop(cur.file);
        fs::rename(&partial, &file).map_err(|e| io_err("rename", e))?;
        self.finished.push(file);
        Ok(())
    }

    /// Appends one record; `segments` yield the packet bytes, of which `caplen` are kept.
    pub fn write<'a>(
        &mut self,
        ts_ns: u64,
        orig_len: u32,
        segments: impl Iterator<Item = &'a [u8]>,
        now_ns: u64,
    ) -> Result<(), SinkError> {
        self.write_record(ts_ns, orig_len, orig_len.min(self.snaplen), segments, now_ns)
    }

    /// Appends a packet that was already truncated to `data` (its original length `orig_len`).
    pub fn write_truncated(&mut self, ts_ns: u64, orig_len: u32, data: &[u8], now_ns: u64) -> Result<(), SinkError> {
        let caplen = (data.len() as u32).min(self.snaplen).min(orig_len);
        self.write_record(ts_ns, orig_len, caplen, std::iter::once(data), now_ns)
    }

    fn write_record<'a>(
        &mut self,
        ts_ns: u64,
        orig_len: u32,
        caplen: u32,
        segments: impl Iterator<Item = &'a [u8]>,
        now_ns: u64,
    ) -> Result<(), SinkError> {
        let rec_len = (RECORD_HEADER_LEN + caplen as usize) as u64;
        if let Some(reason) = self.rotation_due(Some(rec_len), now_ns) {
            self.rotate(reason)?;
        }
        if self.current.is_none() {
            self.open()?;
        }
        if self.buf.len() + rec_len as usize > WRITE_BUFFER {
            self.flush_buf()?;
        }
        format::encode_record(&mut self.buf, self.precision, ts_ns, orig_len, caplen, segments);
        self.count(rec_len, now_ns);
        Ok(())
    }

    /// Appends whole PCAP records, back to back in `records` (16-byte headers in this sink's
    /// precision, at most snaplen bytes each): one copy into the write buffer per stretch
    /// between rotations. Returns how many records there were.
    ///
    /// (Writing straight from the caller's memory was measured too: faster for 64-byte packets,
    /// 20 % slower for a realistic mix, where the kernel copied from the RX core's lines more
    /// slowly than a user-space copy into a buffer that stays in cache.)
    pub fn write_records(&mut self, records: &[u8], count: u64, now_ns: u64) -> Result<u64, SinkError> {
        // When no record of the run can start a new file (the rotation rules only grow more
        // likely with more packets and bytes), take it whole without looking at each record.
        if let Some(cur) = &self.current {
            let all = FileState { packets: cur.state.packets + count.saturating_sub(1), ..cur.state };
            let len = records.len() as u64;
            let stays_small = self.policy.over_bytes.is_none_or(|max| cur.state.bytes + len <= max);
            if count > 0 && stays_small && !should_rotate(&self.policy, &all, Some(len), now_ns) {
                self.append(records)?;
                self.count_many(records.len() as u64, count, now_ns);
                return Ok(count);
            }
        }
        let (mut start, mut at, mut n) = (0, 0, 0);
        for rec in format::records(records) {
            debug_assert!(rec.len() - RECORD_HEADER_LEN <= self.snaplen as usize);
            let rec_len = rec.len() as u64;
            if let Some(reason) = self.rotation_due(Some(rec_len), now_ns) {
                self.append(&records[start..at])?;
                start = at;
                self.rotate(reason)?;
            }
            if self.current.is_none() {
                self.open()?;
            }
            self.count(rec_len, now_ns);
            at += rec.len();
            n += 1;
        }
        debug_assert_eq!(at, records.len(), "a run holds whole records");
        self.append(&records[start..at])?;
        Ok(n)
    }

    /// Appends bytes of the current file through the write buffer.
    fn append(&mut self, mut bytes: &[u8]) -> Result<(), SinkError> {
        while !bytes.is_empty() {
            if self.buf.len() == WRITE_BUFFER {
                self.flush_buf()?;
            }
            let n = (WRITE_BUFFER - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Accounts one record of `rec_len` bytes (header included) in the current file.
    fn count(&mut self, rec_len: u64, now_ns: u64) {
        self.count_many(rec_len, 1, now_ns);
    }

    /// Accounts `n` records of `bytes` in all (headers included) in the current file.
    fn count_many(&mut self, bytes: u64, n: u64, now_ns: u64) {
        if let Some(cur) = self.current.as_mut() {
            if cur.state.packets == 0 {
                cur.state.first_record_ns = now_ns;
            }
            cur.state.packets += n;
            cur.state.bytes += bytes;
        }
        self.packets += n;
        self.bytes += bytes;
    }

    /// Idle tick: closes the current file if it is old enough to rotate.
    pub fn tick(&mut self, now_ns: u64) -> Result<(), SinkError> {
        if let Some(reason) = self.rotation_due(None, now_ns) {
            self.rotate(reason)?;
        }
        Ok(())
    }

    /// Closes the last file and returns every finished file in order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, SinkError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.finished))
    }

    /// After a write error (a full disk): keeps what reached the disk. The file being written
    /// is cut to its last whole record, fsynced and renamed (removed when it holds no record);
    /// what was still buffered is lost. Returns the files and how many records they hold.
    pub fn salvage(mut self) -> (Vec<PathBuf>, u64) {
        self.buf.clear();
        if let Some(cur) = self.current.take() {
            if !self.out.is_stream() {
                let FilePaths { file, partial } = &cur.paths;
                match cut_to_whole_records(&cur.file, partial) {
                    Ok(true) => match fs::rename(partial, file) {
                        Ok(()) => self.finished.push(file.clone()),
                        Err(e) => tracing::error!("{}: rename: {e}", partial.display()),
                    },
                    Ok(false) => {
                        let _ = fs::remove_file(partial);
                    }
                    Err(e) => {
                        tracing::error!("{}: cannot keep what was written: {e}", partial.display());
                        let _ = fs::remove_file(partial);
                    }
                }
            }
        }
        let files = std::mem::take(&mut self.finished);
        let packets = files.iter().map(|f| format::count_records(f).ok().flatten().unwrap_or(0)).sum();
        (files, packets)
    }
}

/// Cuts `file` (at `path`) after its last whole record and fsyncs it; false when it holds no
/// record (or not even a file header).
fn cut_to_whole_records(file: &File, path: &Path) -> io::Result<bool> {
    let data = fs::read(path)?;
    if data.len() < FILE_HEADER_LEN {
        return Ok(false);
    }
    let whole = format::whole_records_len(&data[FILE_HEADER_LEN..]);
    file.set_len((FILE_HEADER_LEN + whole) as u64)?;
    file.sync_all()?;
    Ok(whole > 0)
}

impl Drop for PcapSink {
    fn drop(&mut self) {
        // Reached without `finish` only on an error path: leave no `.partial` behind (and never
        // remove a FIFO or device).
        if let (Some(cur), false) = (self.current.take(), self.out.is_stream()) {
            let _ = fs::remove_file(&cur.paths.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(n: u8, len: usize) -> Vec<u8> {
        vec![n; len]
    }

    #[test]
    fn names() {
        let o = OutputPath::new(Path::new("/tmp/x/out.pcap"), true).unwrap();
        assert_eq!(o.file(3), PathBuf::from("/tmp/x/out_00003.pcap"));
        assert_eq!(o.partial(3), PathBuf::from("/tmp/x/.out_00003.pcap.partial"));
        let o = OutputPath::new(Path::new("out"), false).unwrap();
        assert_eq!(o.file(0), PathBuf::from("./out"));
    }

    #[test]
    fn rotates_by_packets_and_files_hold_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = RotatePolicy { max_packets: Some(3), ..Default::default() };
        let mut s = PcapSink::create(&dir.path().join("c.pcap"), p, Precision::Nanos, 100).unwrap();
        for i in 0..7u8 {
            let data = pkt(i, 150);
            s.write(u64::from(i) * 1000, 150, std::iter::once(&data[..]), 0).unwrap();
        }
        let files = s.finish().unwrap();
        assert_eq!(files.len(), 3);
        let sizes: Vec<u64> = files.iter().map(|f| fs::metadata(f).unwrap().len()).collect();
        assert_eq!(sizes, vec![24 + 3 * 116, 24 + 3 * 116, 24 + 116]);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_tcpdump_ring_reuses_its_names_and_never_holds_more_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ring");
        let names = TcpdumpNames::new(out.to_str().unwrap(), false, true, Some(3)).unwrap();
        // 24-byte header + 2 records of 116 bytes = 256 > 250: two records per file.
        let p = RotatePolicy { over_bytes: Some(250), ..Default::default() };
        let mut s = PcapSink::create_tcpdump(&out, names, p, Precision::Nanos, 100).unwrap();
        for i in 0..9u8 {
            s.write(u64::from(i), 100, std::iter::once(&pkt(i, 100)[..]), 0).unwrap();
            let files = fs::read_dir(dir.path()).unwrap().count();
            assert!(files <= 3, "after packet {i}: {files} files (the open .partial included)");
        }
        // Files: ring0 [0,1] ring1 [2,3] ring2 [4,5] ring0 [6,7] ring1 [8].
        let files = s.finish().unwrap();
        let name = |n: &str| dir.path().join(n);
        assert_eq!(files, vec![name("ring2"), name("ring0"), name("ring1")], "oldest first, each name once");
        // The first packet of each file (its data bytes all say which packet it was).
        let first = |f: &str| fs::read(name(f)).unwrap()[24 + 16];
        assert_eq!((first("ring2"), first("ring0"), first("ring1")), (4, 6, 8));
        assert_eq!(fs::metadata(name("ring1")).unwrap().len(), 24 + 116);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3, "no .partial left");
    }

    #[test]
    fn a_fifo_is_written_in_place_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("live.pcap");
        let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        let mut s = PcapSink::create(&fifo, RotatePolicy::default(), Precision::Nanos, 100).unwrap();
        s.write(1000, 60, std::iter::once(&pkt(7, 60)[..]), 0).unwrap();
        assert_eq!(s.finish().unwrap(), vec![fifo.clone()]);
        // Before joining: had the sink renamed a file over the FIFO, the reader would wait forever.
        let kind = fs::metadata(&fifo).unwrap().file_type();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind), "still a FIFO");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no .partial beside it");
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 24 + 16 + 60, "file header and one record through the FIFO");
        assert_eq!(&got[40..], &pkt(7, 60)[..]);
    }

    #[test]
    fn devices_are_streams_and_directories_and_rotated_streams_are_refused() {
        // Only the naming: the FIFO test proves streams are written in place, and a regression
        // here must not replace the machine's /dev/null.
        let o = OutputPath::new(Path::new("/dev/null"), false).unwrap();
        assert!(o.is_stream());
        assert_eq!((o.file(0), o.partial(0)), (PathBuf::from("/dev/null"), PathBuf::from("/dev/null")));

        let dir = tempfile::tempdir().unwrap();
        let e = PcapSink::create(dir.path(), RotatePolicy::default(), Precision::Nanos, 10).err().unwrap();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let rotate = RotatePolicy { max_packets: Some(3), ..Default::default() };
        let e = PcapSink::create(Path::new("/dev/null"), rotate, Precision::Nanos, 10).err().unwrap();
        assert!(e.to_string().contains("cannot be rotated"), "{e}");
    }

    #[test]
    fn unwritable_path_fails_at_create() {
        let e = PcapSink::create(Path::new("/nonexistent/dir/c.pcap"), RotatePolicy::default(), Precision::Nanos, 10);
        let msg = e.err().unwrap().to_string();
        assert!(msg.contains("/nonexistent/dir/c.pcap") && msg.contains("create"), "{msg}");
    }

    #[test]
    fn salvage_keeps_the_whole_records_that_reached_the_disk() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("s.pcap");
        let mut s = PcapSink::create(&out, RotatePolicy::default(), Precision::Nanos, 65_535).unwrap();
        for i in 0..10u8 {
            s.write(u64::from(i), 100, std::iter::once(&pkt(i, 100)[..]), 0).unwrap();
        }
        s.flush_buf().unwrap();
        // A torn record after the ten whole ones, as a full disk leaves it.
        let partial = d.path().join(".s.pcap.partial");
        let mut f = OpenOptions::new().append(true).open(&partial).unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        s.write(99, 100, std::iter::once(&pkt(99, 100)[..]), 0).unwrap(); // buffered, never written
        let (files, packets) = s.salvage();
        assert_eq!((files, packets), (vec![out.clone()], 10));
        assert_eq!(fs::metadata(&out).unwrap().len(), (FILE_HEADER_LEN + 10 * (RECORD_HEADER_LEN + 100)) as u64);
        assert!(!partial.exists());
        // Nothing written: no file kept.
        let empty = d.path().join("e.pcap");
        let s = PcapSink::create(&empty, RotatePolicy::default(), Precision::Nanos, 65_535).unwrap();
        assert_eq!(s.salvage(), (vec![], 0));
        assert!(!empty.exists() && !d.path().join(".e.pcap.partial").exists());
    }

    #[test]
    fn dropped_sink_leaves_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let s = PcapSink::create(&dir.path().join("c.pcap"), RotatePolicy::default(), Precision::Nanos, 10).unwrap();
        drop(s);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
