//! A k-way merge of classic pcap files by timestamp, read as byte streams (object-store GETs)
//! and written as one pcap stream: the merged download of a full capture's objects.
//!
//! Memory is bounded by the number of inputs, never by their size: each input keeps one
//! buffer that holds at most its current record plus one chunk of its stream, and the heap
//! holds one entry (timestamp, input) per input. A record's bytes stay in its input's buffer
//! until they are copied out.
//!
//! - Output: one file header; nanosecond precision when any input has it (microsecond inputs
//!   are converted exactly), else microsecond; the largest snaplen of the inputs; their link
//!   type, which must be the same for all (else [`MergeError::LinkTypes`] before any output).
//! - Order: (timestamp, input index); the caller orders the inputs (node, then file number),
//!   so ties keep each node's order, as pcapd's simple-capture merge does.
//! - An input that fails or ends inside a record fails the merge: the caller must make the
//!   output look incomplete (abort the body), never end it cleanly.
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::format::{self, FileHeader, Precision, RecordHeader, FILE_HEADER_LEN, RECORD_HEADER_LEN};

/// One input: its bytes as a stream of chunks (an error is the source's message).
pub type ByteStream = BoxStream<'static, Result<Bytes, String>>;

/// A record longer than this is refused whatever the file's snaplen says (bounds a buffer):
/// libpcap's largest snaplen, as `pcap::reader` and tshark.
pub const MAX_RECORD_DATA: u32 = super::reader::MAX_CAPLEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("{input}: reading it failed: {message}")]
    Read { input: String, message: String },
    #[error("{input}: not a classic pcap file")]
    NotPcap { input: String },
    #[error("{input}: it ends inside a record (truncated object)")]
    Truncated { input: String },
    #[error("{input}: a record of {caplen} bytes is longer than any packet ({MAX_RECORD_DATA} at most)")]
    Oversized { input: String, caplen: u32 },
    #[error("the objects have different link types ({first_input}: {first}, {input}: {linktype}); they cannot be merged into one pcap: download them one by one")]
    LinkTypes { first_input: String, first: u32, input: String, linktype: u32 },
}

/// One input being read: its header, its buffer, and its current record (at `pos`).
struct Reader {
    name: String,
    stream: ByteStream,
    header: FileHeader,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    pos: usize,
    /// The record at `pos` (its header parsed), once `advance` found one.
    current: Option<RecordHeader>,
}

impl Reader {
    /// Reads the file header of `stream`.
    async fn open(name: String, mut stream: ByteStream) -> Result<Reader, MergeError> {
        let mut buf = Vec::new();
        if fill(&name, &mut stream, &mut buf, 0, FILE_HEADER_LEN).await?.is_none() {
            return Err(MergeError::NotPcap { input: name });
        }
        let mut hdr = [0u8; FILE_HEADER_LEN];
        hdr.copy_from_slice(&buf[..FILE_HEADER_LEN]);
        let header = FileHeader::parse(&hdr).ok_or_else(|| MergeError::NotPcap { input: name.clone() })?;
        Ok(Reader { name, stream, header, buf, pos: FILE_HEADER_LEN, current: None })
    }

    /// Moves to the next record (the current one is done with); `false` at a clean end.
    async fn advance(&mut self) -> Result<bool, MergeError> {
        if let Some(r) = self.current.take() {
            self.pos += RECORD_HEADER_LEN + r.caplen as usize;
        }
        let Some(at) = fill(&self.name, &mut self.stream, &mut self.buf, self.pos, RECORD_HEADER_LEN).await? else {
            return if self.buf.is_empty() { Ok(false) } else { self.truncated() };
        };
        self.pos = at;
        let mut rec = [0u8; RECORD_HEADER_LEN];
        rec.copy_from_slice(&self.buf[at..at + RECORD_HEADER_LEN]);
        let r = self.header.record(&rec);
        if r.caplen > MAX_RECORD_DATA {
            return Err(MergeError::Oversized { input: self.name.clone(), caplen: r.caplen });
        }
        let whole = RECORD_HEADER_LEN + r.caplen as usize;
        let Some(at) = fill(&self.name, &mut self.stream, &mut self.buf, self.pos, whole).await? else {
            return self.truncated();
        };
        self.pos = at;
        self.current = Some(r);
        Ok(true)
    }

    fn truncated(&self) -> Result<bool, MergeError> {
        Err(MergeError::Truncated { input: self.name.clone() })
    }

    /// The current record's packet bytes.
    fn data(&self) -> &[u8] {
        let caplen = self.current.map_or(0, |r| r.caplen as usize);
        &self.buf[self.pos + RECORD_HEADER_LEN..self.pos + RECORD_HEADER_LEN + caplen]
    }
}

/// Makes the unread bytes (`buf[pos..]`) at least `need` long and returns where they start
/// now; `None` when the stream ended first. Bytes already read are dropped only when more
/// must be read, so the buffer never holds more than `need` plus one chunk.
async fn fill(
    name: &str,
    stream: &mut ByteStream,
    buf: &mut Vec<u8>,
    pos: usize,
    need: usize,
) -> Result<Option<usize>, MergeError> {
    if buf.len() - pos >= need {
        return Ok(Some(pos));
    }
    buf.drain(..pos);
    while buf.len() < need {
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(message)) => return Err(MergeError::Read { input: name.to_string(), message }),
            None => return Ok(None),
        }
    }
    Ok(Some(0))
}

/// The merge of a set of inputs; [`Merge::next_chunk`] yields the output in pieces.
pub struct Merge {
    readers: Vec<Reader>,
    /// One entry per input that has a current record: (its timestamp, its index).
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    precision: Precision,
    snaplen: u32,
    linktype: u32,
    header_sent: bool,
    /// Records written so far.
    pub records: u64,
}

impl Merge {
    /// Reads every input's header and first record. `inputs` are (name, stream), in tie order.
    pub async fn open(inputs: Vec<(String, ByteStream)>) -> Result<Merge, MergeError> {
        let mut readers = Vec::with_capacity(inputs.len());
        for (name, stream) in inputs {
            readers.push(Reader::open(name, stream).await?);
        }
        Self::from_readers(readers).await
    }

    /// As [`Merge::open`], reading up to `at_once` inputs' headers concurrently (each may be a
    /// request to a remote store).
    pub async fn open_buffered(inputs: Vec<(String, ByteStream)>, at_once: usize) -> Result<Merge, MergeError> {
        let mut inputs = inputs.into_iter();
        let mut opening = futures_util::stream::FuturesOrdered::new();
        let mut readers = Vec::with_capacity(inputs.len());
        loop {
            while opening.len() < at_once.max(1) {
                let Some((name, stream)) = inputs.next() else { break };
                opening.push_back(Reader::open(name, stream));
            }
            match opening.next().await {
                Some(r) => readers.push(r?),
                None => break,
            }
        }
        Self::from_readers(readers).await
    }

    async fn from_readers(mut readers: Vec<Reader>) -> Result<Merge, MergeError> {
        if let Some(first) = readers.first() {
            if let Some(other) = readers.iter().find(|r| r.header.linktype != first.header.linktype) {
                return Err(MergeError::LinkTypes {
                    first_input: first.name.clone(),
                    first: first.header.linktype,
                    input: other.name.clone(),
                    linktype: other.header.linktype,
                });
            }
        }
        let precision = if readers.is_empty() || readers.iter().any(|r| r.header.precision == Precision::Nanos) {
            Precision::Nanos
        } else {
            Precision::Micros
        };
        let snaplen = readers.iter().map(|r| r.header.snaplen).max().unwrap_or(crate::captures::full::FULL_SNAPLEN);
        let linktype = readers.first().map_or(format::LINKTYPE_ETHERNET, |r| r.header.linktype);
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if r.advance().await? {
                heap.push(Reverse((r.current.map_or(0, |c| c.ts_ns), i)));
            }
        }
        Ok(Merge { readers, heap, precision, snaplen, linktype, header_sent: false, records: 0 })
    }

    /// The output's precision (nanoseconds when any input has them).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The next piece of the output, about `max` bytes (at least one record, and the file
    /// header first); `None` once every input is done.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, MergeError> {
        let mut out = Vec::with_capacity(max.min(1 << 20));
        if !self.header_sent {
            self.header_sent = true;
            out.extend_from_slice(&format::file_header_with(self.precision, self.snaplen, self.linktype));
        }
        while out.len() < max {
            let Some(Reverse((ts_ns, i))) = self.heap.pop() else { break };
            let r = &mut self.readers[i];
            let Some(rec) = r.current else { continue };
            let ts = format::Stamp::new(ts_ns).parts(self.precision);
            out.extend_from_slice(&format::record_header_of(ts, rec.caplen, rec.orig_len));
            out.extend_from_slice(r.data());
            self.records += 1;
            if r.advance().await? {
                self.heap.push(Reverse((r.current.map_or(0, |c| c.ts_ns), i)));
            }
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }

    /// The output as a stream of chunks; after an error it ends (the error is its last item).
    pub fn into_stream(self, chunk: usize) -> BoxStream<'static, Result<Bytes, MergeError>> {
        futures_util::stream::unfold(Some(self), move |state| async move {
            let mut m = state?;
            match m.next_chunk(chunk).await {
                Ok(Some(b)) => Some((Ok(b), Some(m))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file: `(ts_ns, data)` records in `precision`, little- or big-endian.
    fn file(precision: Precision, linktype: u32, big: bool, recs: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = format::file_header_with(precision, 65_535, linktype).to_vec();
        for (ts, d) in recs {
            let h = format::record_header(precision, *ts, d.len() as u32, d.len() as u32 + 4);
            v.extend_from_slice(&h);
            v.extend_from_slice(d);
        }
        if big {
            // Swap every 32-bit header word (file header: magic, then the 16-bit version pair).
            let swap = |v: &mut [u8], at: usize| v[at..at + 4].reverse();
            for at in [0, 8, 12, 16, 20] {
                swap(&mut v, at);
            }
            v[4..6].reverse();
            v[6..8].reverse();
            let mut at = FILE_HEADER_LEN;
            while at < v.len() {
                let caplen = u32::from_le_bytes(v[at + 8..at + 12].try_into().unwrap()) as usize;
                for w in 0..4 {
                    swap(&mut v, at + 4 * w);
                }
                at += RECORD_HEADER_LEN + caplen;
            }
        }
        v
    }

    /// `bytes` as a stream of `chunk`-byte pieces.
    fn stream(bytes: Vec<u8>, chunk: usize) -> ByteStream {
        let pieces: Vec<Result<Bytes, String>> = bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(pieces).boxed()
    }

    fn run(inputs: Vec<(String, ByteStream)>) -> Result<Vec<u8>, MergeError> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut m = Merge::open(inputs).await?;
            let mut out = Vec::new();
            while let Some(b) = m.next_chunk(100).await? {
                out.extend_from_slice(&b);
            }
            Ok(out)
        })
    }

    /// (ts_ns as the output's precision holds it, data) of a merged output.
    fn records(out: &[u8]) -> (FileHeader, Vec<(u64, Vec<u8>)>) {
        let h = FileHeader::parse(out[..FILE_HEADER_LEN].try_into().unwrap()).unwrap();
        let mut at = FILE_HEADER_LEN;
        let mut v = Vec::new();
        while at < out.len() {
            let r = h.record(out[at..at + RECORD_HEADER_LEN].try_into().unwrap());
            at += RECORD_HEADER_LEN;
            v.push((r.ts_ns, out[at..at + r.caplen as usize].to_vec()));
            at += r.caplen as usize;
        }
        (h, v)
    }

    #[test]
    fn inputs_merge_by_time_ties_in_input_order_in_any_chunking_and_byte_order() {
        let a = file(Precision::Nanos, 1, false, &[(10, b"a1"), (30, b"a2"), (30, b"a3"), (70, b"a4")]);
        let b = file(Precision::Nanos, 1, true, &[(5, b"b1"), (30, b"b2"), (90, b"b3")]);
        let c = file(Precision::Nanos, 1, false, &[]);
        for chunk in [1, 7, 16, 1000] {
            let out = run(vec![
                ("a".into(), stream(a.clone(), chunk)),
                ("b".into(), stream(b.clone(), chunk)),
                ("c".into(), stream(c.clone(), chunk)),
            ])
            .unwrap();
            let (h, recs) = records(&out);
            assert_eq!((h.precision, h.linktype, h.little_endian), (Precision::Nanos, 1, true));
            let got: Vec<(u64, &[u8])> = recs.iter().map(|(t, d)| (*t, d.as_slice())).collect();
            assert_eq!(
                got,
                [(5, &b"b1"[..]), (10, b"a1"), (30, b"a2"), (30, b"a3"), (30, b"b2"), (70, b"a4"), (90, b"b3")],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn microsecond_inputs_are_converted_when_any_input_has_nanoseconds() {
        let us = file(Precision::Micros, 1, false, &[(2_000_001_000, b"u")]);
        let ns = file(Precision::Nanos, 1, false, &[(2_000_000_999, b"n"), (2_000_001_001, b"m")]);
        let out = run(vec![("us".into(), stream(us.clone(), 64)), ("ns".into(), stream(ns, 64))]).unwrap();
        let (h, recs) = records(&out);
        assert_eq!(h.precision, Precision::Nanos);
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), [2_000_000_999, 2_000_001_000, 2_000_001_001]);
        // Microsecond inputs only: the output stays microsecond.
        let out = run(vec![("us".into(), stream(us, 64))]).unwrap();
        assert_eq!(records(&out).0.precision, Precision::Micros);
    }

    #[test]
    fn bad_inputs_are_named_errors() {
        let eth = file(Precision::Nanos, 1, false, &[(1, b"x")]);
        let raw = file(Precision::Nanos, 101, false, &[(1, b"x")]);
        let err = run(vec![("e".into(), stream(eth.clone(), 64)), ("r".into(), stream(raw, 64))]).unwrap_err();
        assert!(matches!(&err, MergeError::LinkTypes { first: 1, linktype: 101, .. }), "{err}");
        let err = run(vec![("junk".into(), stream(b"not a pcap file at all!!".to_vec(), 64))]).unwrap_err();
        assert_eq!(err, MergeError::NotPcap { input: "junk".into() });
        // Cut inside the record's data, and inside its header.
        for cut in [eth.len() - 1, FILE_HEADER_LEN + 5] {
            let err = run(vec![("cut".into(), stream(eth[..cut].to_vec(), 4))]).unwrap_err();
            assert_eq!(err, MergeError::Truncated { input: "cut".into() }, "cut at {cut}");
        }
        let failing: ByteStream = futures_util::stream::iter(vec![
            Ok(Bytes::copy_from_slice(&eth[..FILE_HEADER_LEN])),
            Err("connection reset".to_string()),
        ])
        .boxed();
        let err = run(vec![("f".into(), failing)]).unwrap_err();
        assert!(matches!(&err, MergeError::Read { message, .. } if message == "connection reset"), "{err}");
        let mut huge = eth[..FILE_HEADER_LEN].to_vec();
        huge.extend_from_slice(&format::record_header(Precision::Nanos, 1, MAX_RECORD_DATA + 1, 10));
        let err = run(vec![("h".into(), stream(huge, 64))]).unwrap_err();
        assert!(matches!(err, MergeError::Oversized { .. }), "{err}");
        // No input at all: an empty pcap.
        let out = run(Vec::new()).unwrap();
        assert_eq!(out.len(), FILE_HEADER_LEN);
    }

    #[test]
    fn a_reader_buffers_one_record_and_one_chunk_at_most() {
        let recs: Vec<(u64, Vec<u8>)> = (0..1000u64).map(|i| (i, vec![i as u8; 1500])).collect();
        let refs: Vec<(u64, &[u8])> = recs.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        let f = file(Precision::Nanos, 1, false, &refs);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut m = Merge::open(vec![("big".into(), stream(f, 4096))]).await.unwrap();
            let mut n = 0;
            while m.next_chunk(8192).await.unwrap().is_some() {
                let cap = m.readers[0].buf.len();
                assert!(cap <= RECORD_HEADER_LEN + 1500 + 4096, "buffer holds {cap} bytes");
                n += 1;
            }
            assert!(n > 100);
            assert_eq!(m.records, 1000);
        });
    }
}
