//! What a capture holds, at a glance: its first packets decoded, packets and bytes over time, a
//! protocol breakdown and the top talkers. An incremental consumer of records
//! (`push(ts, orig_len, bytes)`, then `finish()`) whose memory is bounded whatever the capture's
//! size: the first `decoded` packets, a histogram of a fixed number of buckets (their width
//! doubles when the span grows; exact, as buckets merge in pairs), at most `protocols` labels
//! and a space-saving counter of `talkers_tracked` addresses per ranking.
//!
//! `summarize` feeds it from any pcap byte stream (`reader::PcapReader`), a file or a download
//! streamed through alike; a stream cut short or damaged ends the summary with a note.
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::IpAddr;

use serde::Serialize;

use super::decode::{decode, Decoded};
use super::reader::{PcapReader, ReadError};

const LINKTYPE_ETHERNET: u32 = 1;

/// The bounds of a summary.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Packets decoded from the start of the capture.
    pub decoded: usize,
    /// Buckets of the time histogram.
    pub buckets: usize,
    /// Distinct protocol labels; the rest are counted as "other".
    pub protocols: usize,
    /// Addresses each talker ranking tracks (space-saving).
    pub talkers_tracked: usize,
    /// Addresses each ranking reports.
    pub talkers_shown: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { decoded: 100, buckets: 60, protocols: 32, talkers_tracked: 256, talkers_shown: 10 }
    }
}

/// Seconds since the epoch with nine decimals, as tshark's `frame.time_epoch`.
pub fn epoch(ts_ns: u64) -> String {
    format!("{}.{:09}", ts_ns / 1_000_000_000, ts_ns % 1_000_000_000)
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// 1-based, as Wireshark numbers frames.
    pub number: u64,
    /// Seconds since the epoch (`1700000000.000000000`).
    pub time: String,
    /// Seconds since the capture's first packet.
    pub relative: String,
    /// Bytes on the wire.
    pub length: u32,
    /// Bytes captured.
    pub captured: usize,
    #[serde(flatten)]
    pub decoded: Decoded,
}

/// Packets and bytes in `buckets` consecutive spans of `bucket_ns` from `start_ns`.
#[derive(Debug, Clone, Default)]
struct Histogram {
    n: usize,
    start_ns: u64,
    width_ns: u64,
    packets: Vec<u64>,
    bytes: Vec<u64>,
    used: bool,
}

impl Histogram {
    fn new(n: usize) -> Self {
        let n = n.max(1);
        Histogram { n, start_ns: 0, width_ns: 1, packets: vec![0; n], bytes: vec![0; n], used: false }
    }

    fn add(&mut self, ts: u64, len: u64) {
        if !self.used {
            self.used = true;
            self.start_ns = ts;
        }
        // Each doubling keeps the start aligned to the width, so every old bucket falls whole
        // into one new bucket: counts stay exact. 64 doublings cover any u64.
        for _ in 0..64 {
            if ts >= self.start_ns && (ts - self.start_ns) / self.width_ns < self.n as u64 {
                break;
            }
            self.grow();
        }
        let i = ((ts.saturating_sub(self.start_ns)) / self.width_ns).min(self.n as u64 - 1) as usize;
        self.packets[i] += 1;
        self.bytes[i] += len;
    }

    fn grow(&mut self) {
        let Some(w) = self.width_ns.checked_mul(2) else { return };
        let start = self.start_ns / w * w;
        let mut packets = vec![0; self.n];
        let mut bytes = vec![0; self.n];
        for k in 0..self.n {
            // u128: a width near 2^63 times a bucket index overflows u64 (garbage timestamps).
            let at = u128::from(self.start_ns) + k as u128 * u128::from(self.width_ns);
            let j = ((at - u128::from(start)) / u128::from(w)).min(self.n as u128) as usize;
            if j < self.n {
                packets[j] += self.packets[k];
                bytes[j] += self.bytes[k];
            } else if self.packets[k] > 0 {
                // Cannot happen: the span only doubles while the start moves back at most one
                // old bucket. Kept in the last bucket rather than lost.
                packets[self.n - 1] += self.packets[k];
                bytes[self.n - 1] += self.bytes[k];
            }
        }
        (self.start_ns, self.width_ns, self.packets, self.bytes) = (start, w, packets, bytes);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramOut {
    /// Start of the first bucket (epoch seconds, nine decimals) and in milliseconds (for charts).
    pub start: String,
    pub start_ms: f64,
    pub bucket_ns: u64,
    /// Per bucket, up to the last bucket holding a packet.
    pub packets: Vec<u64>,
    pub bytes: Vec<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    packets: u64,
    bytes: u64,
    /// Space-saving's overestimate of the ranked count (0 while exact).
    error: u64,
}

/// Weighted space-saving over addresses: at most `cap` entries; a new address when full takes
/// the place of the smallest, inheriting its count as error. Exact while no eviction happened.
#[derive(Debug)]
struct TopK {
    cap: usize,
    by_bytes: bool,
    map: HashMap<IpAddr, Tally>,
    evictions: u64,
}

impl TopK {
    fn new(cap: usize, by_bytes: bool) -> Self {
        TopK { cap: cap.max(1), by_bytes, map: HashMap::new(), evictions: 0 }
    }

    fn rank(&self, t: &Tally) -> u64 {
        if self.by_bytes {
            t.bytes
        } else {
            t.packets
        }
    }

    fn add(&mut self, addr: IpAddr, bytes: u64) {
        if let Some(t) = self.map.get_mut(&addr) {
            t.packets += 1;
            t.bytes += bytes;
            return;
        }
        if self.map.len() < self.cap {
            self.map.insert(addr, Tally { packets: 1, bytes, error: 0 });
            return;
        }
        let Some((&victim, &min)) = self.map.iter().min_by_key(|(_, t)| self.rank(t)) else { return };
        self.map.remove(&victim);
        self.evictions += 1;
        let floor = self.rank(&min);
        let t = if self.by_bytes {
            Tally { packets: 1, bytes: floor + bytes, error: floor }
        } else {
            Tally { packets: floor + 1, bytes, error: floor }
        };
        self.map.insert(addr, t);
    }

    fn top(&self, n: usize) -> Vec<Talker> {
        let mut v: Vec<_> = self.map.iter().collect();
        v.sort_by(|a, b| self.rank(b.1).cmp(&self.rank(a.1)).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(a, t)| Talker { address: *a, packets: t.packets, bytes: t.bytes, error: t.error })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Talker {
    pub address: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    /// How much the ranked count may overstate (0: exact).
    pub error: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Talkers {
    /// Source addresses by bytes sent.
    pub by_bytes: Vec<Talker>,
    /// Source addresses by packets sent.
    pub by_packets: Vec<Talker>,
    /// No address was ever evicted: every count is exact.
    pub exact: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolCount {
    pub protocol: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The summary of a whole capture.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub packets: u64,
    /// Bytes on the wire, and bytes the file holds of them.
    pub bytes: u64,
    pub captured_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    pub linktype: u32,
    /// Packets with a header that could not be read whole.
    pub malformed: u64,
    pub decoded: Vec<Row>,
    pub decoded_limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HistogramOut>,
    /// By packets, most first.
    pub protocols: Vec<ProtocolCount>,
    pub talkers: Talkers,
    /// Why the stream ended early, when it did.
    pub notes: Vec<String>,
}

/// The incremental summary.
pub struct Builder {
    limits: Limits,
    linktype: u32,
    packets: u64,
    bytes: u64,
    captured_bytes: u64,
    first_ns: Option<u64>,
    min_ns: u64,
    max_ns: u64,
    malformed: u64,
    rows: Vec<Row>,
    hist: Histogram,
    protocols: BTreeMap<String, (u64, u64)>,
    by_bytes: TopK,
    by_packets: TopK,
    notes: Vec<String>,
}

impl Builder {
    pub fn new(limits: Limits, linktype: u32) -> Self {
        Builder {
            limits,
            linktype,
            packets: 0,
            bytes: 0,
            captured_bytes: 0,
            first_ns: None,
            min_ns: u64::MAX,
            max_ns: 0,
            malformed: 0,
            rows: Vec::new(),
            hist: Histogram::new(limits.buckets),
            protocols: BTreeMap::new(),
            by_bytes: TopK::new(limits.talkers_tracked, true),
            by_packets: TopK::new(limits.talkers_tracked, false),
            notes: Vec::new(),
        }
    }

    /// One record: `ts_ns` since the epoch, `orig_len` bytes on the wire, `data` as captured.
    pub fn push(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) {
        self.packets += 1;
        self.bytes += u64::from(orig_len);
        self.captured_bytes += data.len() as u64;
        let first = *self.first_ns.get_or_insert(ts_ns);
        self.min_ns = self.min_ns.min(ts_ns);
        self.max_ns = self.max_ns.max(ts_ns);
        self.hist.add(ts_ns, u64::from(orig_len));
        let d = if self.linktype == LINKTYPE_ETHERNET {
            decode(data)
        } else {
            Decoded { protocol: format!("link type {}", self.linktype), ..Decoded::default() }
        };
        if d.malformed.is_some() {
            self.malformed += 1;
        }
        let label = if self.protocols.len() >= self.limits.protocols && !self.protocols.contains_key(&d.protocol) {
            "other".to_string()
        } else {
            d.protocol.clone()
        };
        let e = self.protocols.entry(label).or_default();
        e.0 += 1;
        e.1 += u64::from(orig_len);
        if let Some(src) = d.src {
            self.by_bytes.add(src, u64::from(orig_len));
            self.by_packets.add(src, u64::from(orig_len));
        }
        if self.rows.len() < self.limits.decoded {
            let rel = ts_ns.abs_diff(first);
            let sign = if ts_ns < first { "-" } else { "" };
            self.rows.push(Row {
                number: self.packets,
                time: epoch(ts_ns),
                relative: format!("{sign}{}.{:09}", rel / 1_000_000_000, rel % 1_000_000_000),
                length: orig_len,
                captured: data.len(),
                decoded: d,
            });
        }
    }

    /// Records why the stream ended before its end.
    pub fn note(&mut self, why: String) {
        self.notes.push(why);
    }

    pub fn finish(self) -> Summary {
        let histogram = self.hist.used.then(|| {
            let h = &self.hist;
            let last = h.packets.iter().rposition(|&p| p > 0).map_or(0, |i| i + 1);
            HistogramOut {
                start: epoch(h.start_ns),
                start_ms: h.start_ns as f64 / 1e6,
                bucket_ns: h.width_ns,
                packets: h.packets[..last].to_vec(),
                bytes: h.bytes[..last].to_vec(),
            }
        });
        let mut protocols: Vec<_> = self
            .protocols
            .into_iter()
            .map(|(protocol, (packets, bytes))| ProtocolCount { protocol, packets, bytes })
            .collect();
        protocols.sort_by(|a, b| b.packets.cmp(&a.packets).then(b.bytes.cmp(&a.bytes)));
        let n = self.limits.talkers_shown;
        Summary {
            packets: self.packets,
            bytes: self.bytes,
            captured_bytes: self.captured_bytes,
            first: self.first_ns.map(|_| epoch(self.min_ns)),
            last: self.first_ns.map(|_| epoch(self.max_ns)),
            linktype: self.linktype,
            malformed: self.malformed,
            decoded: self.rows,
            decoded_limit: self.limits.decoded,
            histogram,
            protocols,
            talkers: Talkers {
                by_bytes: self.by_bytes.top(n),
                by_packets: self.by_packets.top(n),
                exact: self.by_bytes.evictions == 0 && self.by_packets.evictions == 0,
            },
            notes: self.notes,
        }
    }
}

/// Summarizes a pcap byte stream. A stream that is not a pcap file is an error; one damaged or
/// cut short after its header gives the summary of its whole records and a note.
pub fn summarize(stream: impl Read, limits: Limits) -> Result<Summary, ReadError> {
    let mut reader = PcapReader::new(stream)?;
    let mut b = Builder::new(limits, reader.linktype());
    loop {
        match reader.next() {
            Ok(Some(r)) => b.push(r.ts_ns, r.orig_len, r.data),
            Ok(None) => break,
            Err(e) if e.is_damage() => {
                b.note(format!("the capture ends early: {e}"));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
