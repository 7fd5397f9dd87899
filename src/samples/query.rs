//! Window queries over the sample store: read only the segments that overlap the window, keep
//! the earliest `limit` samples that fall inside it and match the filter.
use std::collections::BinaryHeap;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::store::segments;
use crate::bpf::Expression;
use crate::filter::Matcher;
use crate::pcap::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use crate::wire;

const NS: u64 = 1_000_000_000;

/// One sample read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Ordered by (timestamp, read order) so the heap keeps the earliest.
struct Entry(u64, u64, Sample);
impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// What a query did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueryStats {
    pub segments_read: usize,
    pub records_scanned: u64,
    pub matched: u64,
}

/// Samples with `start_ns <= ts <= end_ns` matching `matcher`: the earliest `limit`, in time order.
pub fn query(
    dir: &Path,
    segment_secs: u64,
    start_ns: u64,
    end_ns: u64,
    matcher: &Matcher,
    expression: Option<&Expression>,
    limit: usize,
) -> io::Result<(Vec<Sample>, QueryStats)> {
    let mut stats = QueryStats::default();
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut seq = 0u64;
    if limit == 0 || start_ns > end_ns {
        return Ok((Vec::new(), stats));
    }
    let seg_ns = segment_secs * NS;
    for (start, path, _) in segments(dir)? {
        let seg_start = start * NS;
        // One segment of slack on each side: records from other cores may land late.
        if seg_start > end_ns.saturating_add(seg_ns) || seg_start + 2 * seg_ns < start_ns {
            continue;
        }
        stats.segments_read += 1;
        // Never through a symlink; a segment retention removed since the listing is skipped.
        let file = match crate::datadir::open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut hdr = [0u8; FILE_HEADER_LEN];
        if r.read_exact(&mut hdr).is_err() {
            continue;
        }
        let mut rec = [0u8; RECORD_HEADER_LEN];
        let mut buf = vec![0u8; 1 << 16];
        loop {
            if r.read_exact(&mut rec).is_err() {
                break; // end, or a record still being written
            }
            let le = |at: usize| u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
            let ts = u64::from(le(0)) * NS + u64::from(le(4));
            let caplen = le(8) as usize;
            let orig_len = le(12);
            if caplen > buf.len() || r.read_exact(&mut buf[..caplen]).is_err() {
                break;
            }
            stats.records_scanned += 1;
            if ts < start_ns || ts > end_ns {
                continue;
            }
            let data = &buf[..caplen];
            if !matcher.matches_all() && !matcher.matches(&wire::parse(data)) {
                continue;
            }
            // libpcap on the stored bytes with the wire length: `len`, `greater`, `less` mean
            // the packet's, not the sample's.
            if expression.is_some_and(|e| !e.matches_bytes(data, orig_len)) {
                continue;
            }
            stats.matched += 1;
            if heap.len() == limit {
                match heap.peek() {
                    Some(top) if (ts, seq) < (top.0, top.1) => {
                        heap.pop();
                    }
                    _ => {
                        seq += 1;
                        continue;
                    }
                }
            }
            heap.push(Entry(ts, seq, Sample { ts_ns: ts, orig_len, data: data.to_vec() }));
            seq += 1;
        }
    }
    let mut out: Vec<Entry> = heap.into_vec();
    out.sort();
    Ok((out.into_iter().map(|e| e.2).collect(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterV1;
    use crate::pcap::format::{encode_record, file_header, Precision};

    fn write_segment(dir: &Path, start_secs: u64, recs: &[(u64, u8)]) {
        let mut b = file_header(Precision::Nanos, 160).to_vec();
        for &(ts, port_lo) in recs {
            let f = crate::wire::testpkt::eth(
                0x0800,
                &[],
                &crate::wire::testpkt::ipv4(
                    [1, 2, 3, 4],
                    [5, 6, 7, 8],
                    17,
                    0,
                    &crate::wire::testpkt::ports(1000, u16::from(port_lo)),
                ),
            );
            encode_record(&mut b, Precision::Nanos, ts, f.len() as u32, f.len() as u32, std::iter::once(&f[..]));
        }
        std::fs::write(dir.join(format!("{start_secs:012}.pcap")), b).unwrap();
    }

    #[test]
    fn window_filter_limit_and_segment_selection() {
        let d = tempfile::tempdir().unwrap();
        // Segments of 10 s at 1000 s, 1010 s, 1020 s and a far one at 5000 s.
        write_segment(d.path(), 1000, &[(1000 * NS, 53), (1005 * NS, 80), (1009 * NS, 53)]);
        write_segment(d.path(), 1010, &[(1010 * NS, 53), (1012 * NS, 53), (1019 * NS, 80)]);
        write_segment(d.path(), 1020, &[(1020 * NS, 53), (1021 * NS, 80)]);
        write_segment(d.path(), 5000, &[(5000 * NS, 53)]);
        let dns = FilterV1::from_json_str(r#"{"destination_port":53}"#).unwrap().compile();
        let (got, st) = query(d.path(), 10, 1005 * NS, 1020 * NS, &dns, None, 100).unwrap();
        let ts: Vec<u64> = got.iter().map(|s| s.ts_ns / NS).collect();
        assert_eq!(ts, vec![1009, 1010, 1012, 1020]);
        assert_eq!(st.segments_read, 3, "the far segment is not read");
        // The earliest two only.
        let (got, _) = query(d.path(), 10, 0, u64::MAX / 2, &dns, None, 2).unwrap();
        assert_eq!(got.iter().map(|s| s.ts_ns / NS).collect::<Vec<_>>(), vec![1000, 1009]);
        let (none, _) = query(d.path(), 10, 2000 * NS, 3000 * NS, &Matcher::default(), None, 10).unwrap();
        assert!(none.is_empty());
    }
}
