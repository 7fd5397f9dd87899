//! Simple captures across the fleet (issue 13): the node a simple capture reaches asks every
//! other live node for its part (`POST /internal/v1/samples`, a JSON [`SampleRequest`]); each
//! answers with its earliest `limit` matching samples as a nanosecond PCAP in its own order (no
//! new format), read back here. The manager merges the parts by (timestamp, node, order).
//!
//! A node that does not answer within [`ANSWER_TIMEOUT`] (down, hung) or answers with an error
//! is reported by name, never waited for longer.
use std::time::Duration;

use tokio::runtime::Handle;

use super::Fleet;
use crate::captures::manager::{PeerSamples, SampleRequest};
use crate::pcap::format::{encode_record, file_header, Precision, FILE_HEADER_LEN, MAGIC_NANOS, RECORD_HEADER_LEN};
use crate::samples::query::Sample;

/// The internal route a node serves its part on.
pub const SAMPLES_PATH: &str = "/internal/v1/samples";
/// Longest wait for one node's whole answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Samples as a nanosecond PCAP file, in the given order.
pub fn encode_pcap(snaplen: u32, samples: &[Sample]) -> Vec<u8> {
    let mut b = file_header(Precision::Nanos, snaplen).to_vec();
    for s in samples {
        encode_record(&mut b, Precision::Nanos, s.ts_ns, s.orig_len, s.data.len() as u32, std::iter::once(&s.data[..]));
    }
    b
}

/// Reads back what [`encode_pcap`] wrote (little-endian, nanoseconds); anything else, a short
/// record included, is an error.
pub fn decode_pcap(b: &[u8]) -> Result<Vec<Sample>, String> {
    let u32at = |at: usize| b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
    if b.len() < FILE_HEADER_LEN || u32at(0) != Some(MAGIC_NANOS) {
        return Err("the answer is not a nanosecond PCAP".into());
    }
    let mut out = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at < b.len() {
        let (Some(sec), Some(ns), Some(caplen), Some(orig_len)) =
            (u32at(at), u32at(at + 4), u32at(at + 8), u32at(at + 12))
        else {
            return Err(format!("short record header at byte {at}"));
        };
        let start = at + RECORD_HEADER_LEN;
        let Some(data) = b.get(start..start + caplen as usize) else {
            return Err(format!("short record at byte {at}"));
        };
        out.push(Sample { ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(ns), orig_len, data: data.to_vec() });
        at = start + caplen as usize;
    }
    Ok(out)
}

/// [`PeerSamples`] over the fleet: calls run on the control-plane runtime (`rt`), from the
/// conversion's own thread.
pub struct FleetPeers {
    fleet: Fleet,
    rt: Handle,
}

impl FleetPeers {
    pub fn new(fleet: Fleet, rt: Handle) -> FleetPeers {
        FleetPeers { fleet, rt }
    }
}

/// One node's part, or why there is none.
async fn ask(fleet: Fleet, node: super::NodeInfo, body: Vec<u8>) -> Result<Vec<Sample>, String> {
    let req = fleet
        .request(&node, reqwest::Method::POST, SAMPLES_PATH, Some(body))
        .map_err(|e| e.to_string())?
        .timeout(ANSWER_TIMEOUT);
    let answer = async {
        let resp = req.send().await.map_err(|e| format!("{}: {e}", node.advertise))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("{}: reading the answer: {e}", node.advertise))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(format!("{} answered {status}: {text}", node.advertise));
        }
        decode_pcap(&bytes)
    };
    // The client's timeout covers the body too; this one also bounds anything else.
    match tokio::time::timeout(ANSWER_TIMEOUT + Duration::from_secs(1), answer).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())),
    }
}

impl PeerSamples for FleetPeers {
    fn local_name(&self) -> String {
        self.fleet.name().to_string()
    }

    fn gather(&self, req: &SampleRequest) -> Vec<(String, Result<Vec<Sample>, String>)> {
        let body = match serde_json::to_vec(req) {
            Ok(b) => b,
            Err(e) => return vec![("(request)".into(), Err(format!("cannot encode the request: {e}")))],
        };
        let others: Vec<super::NodeInfo> =
            self.fleet.live_nodes().iter().filter(|n| n.name != self.fleet.name()).cloned().collect();
        let fleet = self.fleet.clone();
        self.rt.block_on(async move {
            let calls: Vec<_> = others
                .into_iter()
                .map(|n| {
                    let name = n.name.clone();
                    (name, tokio::spawn(ask(fleet.clone(), n, body.clone())))
                })
                .collect();
            let mut out = Vec::with_capacity(calls.len());
            for (name, call) in calls {
                let answer = call.await.unwrap_or_else(|e| Err(format!("the call failed: {e}")));
                out.push((name, answer));
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_round_trip_and_damaged_answers() {
        let samples = vec![
            Sample { ts_ns: 1_700_000_000_123_456_789, orig_len: 1500, data: vec![1, 2, 3] },
            Sample { ts_ns: 1_700_000_000_123_456_789, orig_len: 4, data: vec![9, 8, 7, 6] },
            Sample { ts_ns: 5, orig_len: 1, data: vec![] },
        ];
        let b = encode_pcap(160, &samples);
        // Independently: 24 + 3 records of 16 bytes + 7 data bytes; nanosecond magic.
        assert_eq!(b.len(), 24 + 3 * 16 + 7);
        assert_eq!(&b[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(&b[24..28], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&b[28..32], &123_456_789u32.to_le_bytes());
        assert_eq!(decode_pcap(&b).unwrap(), samples);
        assert_eq!(decode_pcap(&b[..24]).unwrap(), vec![]);
        assert!(decode_pcap(&b[..b.len() - 1]).unwrap_err().contains("short record"));
        assert!(decode_pcap(&b[..30]).unwrap_err().contains("short record header"));
        assert!(decode_pcap(&b[..10]).is_err());
        let mut micro = b.clone();
        micro[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        assert!(decode_pcap(&micro).unwrap_err().contains("nanosecond"));
    }
}
