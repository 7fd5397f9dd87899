//! Classic libpcap file format: the 24-byte file header and 16-byte record headers (pure).
//!
//! Little-endian on disk (readers detect the byte order from the magic). Nanosecond magic by
//! default; microsecond on request. Link type Ethernet.

pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const FILE_HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 16;

/// Timestamp resolution of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum Precision {
    #[default]
    #[serde(rename = "ns")]
    Nanos,
    #[serde(rename = "us")]
    Micros,
}

pub fn file_header(precision: Precision, snaplen: u32) -> [u8; FILE_HEADER_LEN] {
    file_header_with(precision, snaplen, LINKTYPE_ETHERNET)
}

/// A file header of any link type (a merge keeps its inputs' type).
pub fn file_header_with(precision: Precision, snaplen: u32, linktype: u32) -> [u8; FILE_HEADER_LEN] {
    let magic = match precision {
        Precision::Nanos => MAGIC_NANOS,
        Precision::Micros => MAGIC_MICROS,
    };
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&magic.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone (8..12) and sigfigs (12..16) stay 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&linktype.to_le_bytes());
    h
}

/// A timestamp split into a record's seconds and fraction once (two divisions), then read in
/// either precision: the RX cores split one per burst.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    secs: u32,
    nanos: u32,
}

impl Stamp {
    #[inline]
    pub fn new(ts_ns: u64) -> Self {
        Stamp { secs: (ts_ns / 1_000_000_000) as u32, nanos: (ts_ns % 1_000_000_000) as u32 }
    }

    /// (seconds, fraction) as a record header in `precision` holds them.
    #[inline]
    pub fn parts(self, precision: Precision) -> (u32, u32) {
        match precision {
            Precision::Nanos => (self.secs, self.nanos),
            Precision::Micros => (self.secs, self.nanos / 1_000),
        }
    }
}

/// The header of one record: `ts_ns` since the epoch, `caplen` bytes stored of `orig_len`.
#[inline]
pub fn record_header(precision: Precision, ts_ns: u64, caplen: u32, orig_len: u32) -> [u8; RECORD_HEADER_LEN] {
    record_header_of(Stamp::new(ts_ns).parts(precision), caplen, orig_len)
}

/// The header of one record whose timestamp is already (seconds, fraction).
#[inline]
pub fn record_header_of(ts: (u32, u32), caplen: u32, orig_len: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&ts.0.to_le_bytes());
    h[4..8].copy_from_slice(&ts.1.to_le_bytes());
    h[8..12].copy_from_slice(&caplen.to_le_bytes());
    h[12..16].copy_from_slice(&orig_len.to_le_bytes());
    h
}

/// Splits bytes holding whole records back to back (little-endian headers, as pcapd writes
/// them) into those records.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let caplen = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?) as usize;
        let (rec, rest) = data.split_at(RECORD_HEADER_LEN + caplen);
        data = rest;
        Some(rec)
    })
}

/// Appends one whole record (header + the first `caplen` bytes of `segments`) to `out`.
#[inline]
pub fn encode_record<'a>(
    out: &mut Vec<u8>,
    precision: Precision,
    ts_ns: u64,
    orig_len: u32,
    caplen: u32,
    segments: impl Iterator<Item = &'a [u8]>,
) {
    out.extend_from_slice(&record_header(precision, ts_ns, caplen, orig_len));
    let mut left = caplen as usize;
    for seg in segments {
        if left == 0 {
            break;
        }
        let take = seg.len().min(left);
        out.extend_from_slice(&seg[..take]);
        left -= take;
    }
    // A chain shorter than caplen would corrupt the file: pad (never happens for valid mbufs,
    // whose pkt_len is the sum of their segments).
    out.resize(out.len() + left, 0);
}

/// Largest caplen a sane record has (libpcap's maximum snaplen).
const MAX_CAPLEN: usize = 262_144;

/// Length of the longest prefix of `data` (a pcap file body after its header) made of whole,
/// plausible records; used to repair files cut short by a crash. A record with orig_len 0, or a
/// caplen above orig_len or 256 KiB, is garbage (e.g. zeros a crash left) and ends the prefix.
pub fn whole_records_len(data: &[u8]) -> usize {
    let mut at = 0;
    while data.len() - at >= RECORD_HEADER_LEN {
        let le = |i: usize| {
            u32::from_le_bytes([data[at + i], data[at + i + 1], data[at + i + 2], data[at + i + 3]]) as usize
        };
        let (caplen, orig_len) = (le(8), le(12));
        if orig_len == 0 || caplen > orig_len || caplen > MAX_CAPLEN {
            break;
        }
        let end = at + RECORD_HEADER_LEN + caplen;
        if end > data.len() {
            break;
        }
        at = end;
    }
    at
}

/// What a record must look like to be believed when repairing a file pcapd wrote (little-endian
/// headers): `caplen <= snaplen`, `0 < orig_len <= 256 KiB`, `caplen <= orig_len`, a fraction
/// below one second and seconds within `[min_secs, max_secs]`.
#[derive(Debug, Clone, Copy)]
pub struct Plausible {
    pub snaplen: u32,
    pub precision: Precision,
    pub min_secs: u32,
    pub max_secs: u32,
}

/// Whole plausible records needed back to back (or up to the end of the file) before bytes
/// after damage are believed again: random bytes pass one header by chance far more often.
pub const RESYNC_RECORDS: usize = 4;

impl Plausible {
    /// The length of the plausible whole record at `data[at..]`, if there is one.
    fn record_at(&self, data: &[u8], at: usize) -> Option<usize> {
        let h = data.get(at..at.checked_add(RECORD_HEADER_LEN)?)?;
        let le = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (secs, frac, caplen, orig_len) = (le(0), le(4), le(8), le(12));
        let frac_max = match self.precision {
            Precision::Nanos => 1_000_000_000,
            Precision::Micros => 1_000_000,
        };
        let ok = frac < frac_max
            && (self.min_secs..=self.max_secs).contains(&secs)
            && orig_len > 0
            && orig_len as usize <= MAX_CAPLEN
            && caplen <= orig_len
            && caplen <= self.snaplen;
        let end = at + RECORD_HEADER_LEN + caplen as usize;
        (ok && end <= data.len()).then_some(end - at)
    }

    /// Whether `at` starts a run of `RESYNC_RECORDS` plausible whole records, or of fewer that
    /// ends exactly at the end of `data`.
    fn resyncs_at(&self, data: &[u8], at: usize) -> bool {
        let mut p = at;
        for _ in 0..RESYNC_RECORDS {
            if p == data.len() {
                return p > at;
            }
            match self.record_at(data, p) {
                Some(n) => p += n,
                None => return false,
            }
        }
        true
    }
}

/// A repair plan for a file body (the bytes after the file header): the stretches of whole
/// plausible records to keep, the damaged stretches between them, and a torn last record.
/// Offsets are relative to the body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub good: Vec<std::ops::Range<usize>>,
    pub damaged: Vec<std::ops::Range<usize>>,
    /// Bytes at the end that start no whole record and after which nothing resynchronises: a
    /// record cut by a crash (or damage at the very end).
    pub torn_tail: Option<std::ops::Range<usize>>,
}

impl Scan {
    /// Bytes of records kept.
    pub fn kept(&self) -> usize {
        self.good.iter().map(|r| r.len()).sum()
    }

    /// Whether the body is whole records and nothing else.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.torn_tail.is_none()
    }
}

/// Walks a file body record by record; where a record is implausible, looks for the next byte
/// offset that starts a run of plausible records (`RESYNC_RECORDS`) and resumes there, so damage
/// in the middle costs only the damaged bytes, not everything after them.
pub fn scan_records(data: &[u8], p: &Plausible) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < data.len() {
        let start = at;
        while let Some(n) = p.record_at(data, at) {
            at += n;
        }
        if at > start {
            scan.good.push(start..at);
        }
        if at == data.len() {
            break;
        }
        match (at + 1..data.len()).find(|&b| p.resyncs_at(data, b)) {
            Some(b) => {
                scan.damaged.push(at..b);
                at = b;
            }
            None => {
                scan.torn_tail = Some(at..data.len());
                break;
            }
        }
    }
    scan
}

/// Counts the records of a classic pcap file (either byte order), reading only the headers.
/// `Ok(None)` when the file is not a classic pcap (pcapng, say).
pub fn count_records(path: &std::path::Path) -> std::io::Result<Option<u64>> {
    Ok(summarize(path)?.map(|s| s.packets))
}

/// What a classic pcap file holds, from its record headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub packets: u64,
    /// Timestamps (ns since the epoch) of the first and the last record, if any.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

/// Reads a classic pcap file's record headers (either byte order, either precision).
/// `Ok(None)` when the file is not a classic pcap (pcapng, say).
pub fn summarize(path: &std::path::Path) -> std::io::Result<Option<Summary>> {
    use std::io::Read;
    // A FIFO or device would block the open (or never end): only regular files are counted.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut f = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
    let mut hdr = [0u8; FILE_HEADER_LEN];
    if f.read_exact(&mut hdr).is_err() {
        return Ok(None);
    }
    let Some(h) = FileHeader::parse(&hdr) else { return Ok(None) };
    let mut s = Summary::default();
    let mut rec = [0u8; RECORD_HEADER_LEN];
    loop {
        match f.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Some(s)),
            Err(e) => return Err(e),
        }
        let r = h.record(&rec);
        s.first_ns.get_or_insert(r.ts_ns);
        s.last_ns = Some(r.ts_ns);
        // Within the buffer when it can: `seek` would throw the buffer away and read 64 KiB
        // again for every record.
        f.seek_relative(i64::from(r.caplen))?;
        s.packets += 1;
    }
}

/// A classic pcap file header as read (any writer's: either byte order, either precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub little_endian: bool,
    pub precision: Precision,
    pub snaplen: u32,
    pub linktype: u32,
}

/// One record header as read, its timestamp in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub ts_ns: u64,
    pub caplen: u32,
    pub orig_len: u32,
}

impl FileHeader {
    /// `None` when `hdr` does not start with a classic pcap magic.
    pub fn parse(hdr: &[u8; FILE_HEADER_LEN]) -> Option<FileHeader> {
        let magic = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let (little_endian, precision) = match magic {
            MAGIC_MICROS => (true, Precision::Micros),
            MAGIC_NANOS => (true, Precision::Nanos),
            m if m.swap_bytes() == MAGIC_MICROS => (false, Precision::Micros),
            m if m.swap_bytes() == MAGIC_NANOS => (false, Precision::Nanos),
            _ => return None,
        };
        let word = |at: usize| {
            let b = [hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]];
            if little_endian {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        // The link type's upper bits are flags (FCS length); the type is the low 16.
        Some(FileHeader { little_endian, precision, snaplen: word(16), linktype: word(20) & 0xffff })
    }

    /// Reads one record header of this file.
    pub fn record(&self, rec: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        let word = |at: usize| {
            let b = [rec[at], rec[at + 1], rec[at + 2], rec[at + 3]];
            if self.little_endian {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        let frac = u64::from(word(4));
        let frac_ns = match self.precision {
            Precision::Nanos => frac,
            Precision::Micros => frac * 1_000,
        };
        RecordHeader { ts_ns: u64::from(word(0)) * 1_000_000_000 + frac_ns, caplen: word(8), orig_len: word(12) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes this thread has read through read(2) and friends so far.
    fn thread_rchar() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines().find_map(|l| l.strip_prefix("rchar: ")).unwrap().parse().unwrap()
    }

    #[test]
    fn regression_summarize_reads_a_file_about_once_not_a_buffer_per_record() {
        // `BufReader::seek` dropped the buffer: 64 KiB read again for each record, minutes of
        // a stalled lifecycle thread for a large capture's files.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.pcap");
        let mut v = file_header(Precision::Nanos, 65_535).to_vec();
        for i in 0..20_000u64 {
            v.extend_from_slice(&record_header(Precision::Nanos, i, 60, 60));
            v.extend_from_slice(&[0u8; 60]);
        }
        std::fs::write(&path, &v).unwrap();
        let before = thread_rchar();
        let s = summarize(&path).unwrap().unwrap();
        let read = thread_rchar() - before;
        assert_eq!((s.packets, s.first_ns, s.last_ns), (20_000, Some(0), Some(19_999)));
        assert!(read < 2 * v.len() as u64, "read {read} bytes of a {}-byte file", v.len());
    }

    #[test]
    fn header_layout() {
        let h = file_header(Precision::Nanos, 262144);
        assert_eq!(h[..4], [0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(h[16..20].try_into().unwrap()), 262144);
        assert_eq!(file_header(Precision::Micros, 1)[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
    }

    #[test]
    fn records_truncate_across_segments_and_keep_orig_len() {
        let mut out = Vec::new();
        let segs: [&[u8]; 2] = [&[1, 2, 3], &[4, 5, 6]];
        encode_record(&mut out, Precision::Micros, 1_700_000_000_123_456_789, 6, 4, segs.into_iter());
        assert_eq!(out.len(), 20);
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(out[12..16].try_into().unwrap()), 6);
        assert_eq!(out[16..], [1, 2, 3, 4]);
    }

    #[test]
    fn split_records_and_stamps() {
        let mut b = Vec::new();
        encode_record(&mut b, Precision::Micros, 1_700_000_000_123_456_789, 10, 3, std::iter::once(&[1u8, 2, 3][..]));
        encode_record(&mut b, Precision::Micros, 5, 0, 0, std::iter::empty());
        let recs: Vec<&[u8]> = records(&b).collect();
        assert_eq!(recs.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![19, 16]);
        assert_eq!(&recs[0][16..], &[1, 2, 3]);
        let s = Stamp::new(1_700_000_000_123_456_789);
        assert_eq!(
            (s.parts(Precision::Nanos), s.parts(Precision::Micros)),
            ((1_700_000_000, 123_456_789), (1_700_000_000, 123_456))
        );
        assert_eq!(recs[0][..16], record_header_of(s.parts(Precision::Micros), 3, 10));
    }

    #[test]
    fn counts_records_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.pcap");
        let mut b = file_header(Precision::Micros, 100).to_vec();
        for i in 0..5u8 {
            encode_record(&mut b, Precision::Micros, 0, u32::from(i), u32::from(i), std::iter::once(&[1u8; 5][..]));
        }
        std::fs::write(&p, &b).unwrap();
        assert_eq!(count_records(&p).unwrap(), Some(5));
        std::fs::write(&p, b"\x0a\x0d\x0d\x0a pcapng").unwrap();
        assert_eq!(count_records(&p).unwrap(), None);
    }

    #[test]
    fn whole_records_prefix() {
        let mut out = Vec::new();
        for _ in 0..3 {
            encode_record(&mut out, Precision::Nanos, 0, 10, 10, std::iter::once(&[7u8; 10][..]));
        }
        assert_eq!(whole_records_len(&out), 78);
        for cut in 0..78 {
            assert_eq!(whole_records_len(&out[..cut]), cut / 26 * 26);
        }
        let mut zeros = out.clone();
        zeros.extend_from_slice(&[0; 40]);
        assert_eq!(whole_records_len(&zeros), 78, "zeros are not an empty record");
    }
}
