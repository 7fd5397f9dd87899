//! A streaming reader of classic libpcap files over any `impl Read` (a file, a download being
//! streamed through, later a merged multi-object stream): microsecond and nanosecond magic, both
//! byte orders. One record buffer, reused: memory is bounded by the largest record (256 KiB).
//!
//! Invariants: never panics on any input; a file cut inside a record or holding an implausible
//! record ends with a typed error after every whole record before it was returned.
use std::io::{self, Read};

use super::format::{FileHeader, Precision, FILE_HEADER_LEN, RECORD_HEADER_LEN};

/// Largest caplen believed (libpcap's maximum snaplen); a larger one is garbage.
pub const MAX_CAPLEN: u32 = 262_144;
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a pcap file: pcapng is not supported, save it as classic pcap")]
    Pcapng,
    #[error("not a pcap file (magic {0:#010x})")]
    NotPcap(u32),
    #[error("the file ends inside its {FILE_HEADER_LEN}-byte header ({0} bytes)")]
    ShortHeader(usize),
    #[error("record {index} is cut short: {have} of its {need} bytes")]
    Truncated { index: u64, need: usize, have: usize },
    #[error("record {index}: caplen {caplen} is over {MAX_CAPLEN}: not a record")]
    Implausible { index: u64, caplen: u32 },
    #[error("reading the capture: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The stream ended badly after good records (the reader may have returned some).
    pub fn is_damage(&self) -> bool {
        matches!(self, ReadError::Truncated { .. } | ReadError::Implausible { .. })
    }
}

/// One record as read: `data` borrows the reader's buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: &'a [u8],
}

pub struct PcapReader<R> {
    inner: R,
    /// The file header, which also reads record headers (`pcap::format`).
    header: FileHeader,
    buf: Vec<u8>,
    /// Records returned so far.
    index: u64,
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut inner: R) -> Result<Self, ReadError> {
        let mut h = [0u8; FILE_HEADER_LEN];
        let got = fill(&mut inner, &mut h)?;
        if got >= 4 {
            let le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if le == PCAPNG_MAGIC {
                return Err(ReadError::Pcapng);
            }
        }
        if got < FILE_HEADER_LEN {
            return Err(ReadError::ShortHeader(got));
        }
        let header =
            FileHeader::parse(&h).ok_or_else(|| ReadError::NotPcap(u32::from_le_bytes([h[0], h[1], h[2], h[3]])))?;
        Ok(PcapReader { inner, header, buf: Vec::new(), index: 0 })
    }

    pub fn linktype(&self) -> u32 {
        self.header.linktype
    }

    pub fn snaplen(&self) -> u32 {
        self.header.snaplen
    }

    pub fn is_nanos(&self) -> bool {
        self.header.precision == Precision::Nanos
    }

    pub fn is_big_endian(&self) -> bool {
        !self.header.little_endian
    }

    /// The next record, `None` at a clean end of the stream.
    #[allow(clippy::should_implement_trait)] // it lends its buffer: not an Iterator
    pub fn next(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        let mut h = [0u8; RECORD_HEADER_LEN];
        let got = fill(&mut self.inner, &mut h)?;
        if got == 0 {
            return Ok(None);
        }
        let index = self.index + 1;
        if got < RECORD_HEADER_LEN {
            return Err(ReadError::Truncated { index, need: RECORD_HEADER_LEN, have: got });
        }
        let r = self.header.record(&h);
        let (caplen, orig_len) = (r.caplen, r.orig_len);
        if caplen > MAX_CAPLEN {
            return Err(ReadError::Implausible { index, caplen });
        }
        let n = caplen as usize;
        self.buf.resize(n, 0);
        let got = fill(&mut self.inner, &mut self.buf[..n])?;
        if got < n {
            return Err(ReadError::Truncated { index, need: RECORD_HEADER_LEN + n, have: RECORD_HEADER_LEN + got });
        }
        self.index = index;
        Ok(Some(Record { ts_ns: r.ts_ns, orig_len, data: &self.buf[..n] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::format::{file_header, record_header, Precision};

    /// A file of the given records, in either precision and byte order.
    pub(crate) fn file(nanos: bool, big_endian: bool, recs: &[(u64, u32, &[u8])]) -> Vec<u8> {
        let p = if nanos { Precision::Nanos } else { Precision::Micros };
        let swap = |b: &mut [u8]| {
            if big_endian {
                for w in b.chunks_mut(4) {
                    w.reverse();
                }
            }
        };
        let mut h = file_header(p, 65535);
        swap(&mut h[..4]);
        h[4..6].swap(0, 1);
        h[6..8].swap(0, 1);
        swap(&mut h[8..]);
        let mut out = h.to_vec();
        for (ts, orig, data) in recs {
            let mut r = record_header(p, *ts, data.len() as u32, *orig);
            swap(&mut r);
            out.extend_from_slice(&r);
            out.extend_from_slice(data);
        }
        out
    }

    type Owned = (u64, u32, Vec<u8>);

    fn all(bytes: &[u8]) -> (Vec<Owned>, Option<ReadError>) {
        let mut r = match PcapReader::new(bytes) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut out = Vec::new();
        loop {
            match r.next() {
                Ok(Some(rec)) => out.push((rec.ts_ns, rec.orig_len, rec.data.to_vec())),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn reads_both_precisions_and_byte_orders() {
        let recs: [(u64, u32, &[u8]); 2] =
            [(1_700_000_000_123_456_789, 60, b"abc"), (1_700_000_001_000_001_000, 3, b"xyz")];
        for nanos in [false, true] {
            for be in [false, true] {
                let (got, err) = all(&file(nanos, be, &recs));
                assert!(err.is_none(), "{err:?}");
                let want0 = if nanos { 1_700_000_000_123_456_789 } else { 1_700_000_000_123_456_000 };
                assert_eq!(got[0], (want0, 60, b"abc".to_vec()), "nanos {nanos} be {be}");
                assert_eq!(got[1], (1_700_000_001_000_001_000, 3, b"xyz".to_vec()));
                let bytes = file(nanos, be, &recs);
                let r = PcapReader::new(&bytes[..]).unwrap();
                assert_eq!((r.is_nanos(), r.is_big_endian(), r.linktype(), r.snaplen()), (nanos, be, 1, 65535));
            }
        }
    }

    #[test]
    fn every_cut_of_a_file_ends_with_whole_records_and_a_typed_error() {
        let recs: [(u64, u32, &[u8]); 2] = [(1, 3, b"abc"), (2, 4, b"wxyz")];
        let f = file(true, false, &recs);
        let after_first = FILE_HEADER_LEN + RECORD_HEADER_LEN + 3;
        for cut in 0..f.len() {
            let (got, err) = all(&f[..cut]);
            if cut == after_first || cut == FILE_HEADER_LEN {
                assert!(err.is_none() && got.len() == usize::from(cut == after_first), "{cut}: a clean end");
            } else if cut < FILE_HEADER_LEN {
                assert!(matches!(err, Some(ReadError::ShortHeader(n)) if n == cut), "{cut}: {err:?}");
            } else {
                assert!(err.as_ref().is_some_and(ReadError::is_damage), "{cut}: {err:?}");
                assert_eq!(got.len(), usize::from(cut > after_first), "{cut}");
            }
        }
        assert_eq!(all(&f).0.len(), 2);
    }

    #[test]
    fn garbage_is_refused_by_name() {
        assert!(matches!(all(b"\x0a\x0d\x0d\x0a1234567890123456789012").1, Some(ReadError::Pcapng)));
        assert!(matches!(all(&[7u8; 40]).1, Some(ReadError::NotPcap(0x0707_0707))));
        let mut f = file(false, false, &[(1, 3, b"abc")]);
        f[FILE_HEADER_LEN + 8..FILE_HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(all(&f).1, Some(ReadError::Implausible { index: 1, caplen: u32::MAX })));
    }
}
