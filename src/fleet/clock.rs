//! Clock offsets to the other nodes (FLEET.md: skew breaks merge order, deadlines and the
//! signatures' replay window). A task of its own (never a request path) calls each live peer's
//! signed `GET /internal/v1/node`, which answers the peer's clock (`clock_unix_ms`), and takes
//! the peer's offset as `peer_clock - (t_send + t_recv) / 2` (NTP's estimate: the peer read its
//! clock halfway through the round trip; the error is at most half the round trip), the better
//! of two calls.
//!
//! A peer is measured as soon as it appears in the member list (at join, all of them), then
//! every [`MEASURE_EVERY`]; one call takes at most [`CALL_TIMEOUT`] (a measurement two), so a hung peer delays
//! nothing but its own figure. Results live in [`FleetStats::clock_offsets`] (sorted by node;
//! a peer that left is dropped, a failed measurement keeps the last one). An offset beyond
//! [`WARN_OFFSET`] is logged once per peer (again only after it came back within). Beyond the
//! signatures' replay window (30 s) the peer refuses the call itself (403 naming the skew): that
//! failure is logged and the metric keeps the last figure.
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{pause, Fleet, FleetStats, NodeInfo, REFRESH_EVERY};

/// The internal route that answers a node's name and clock.
pub const NODE_PATH: &str = "/internal/v1/node";
/// How often each peer's offset is measured again.
pub const MEASURE_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for one peer's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Offsets beyond this are logged as a warning (the nodes need NTP).
pub const WARN_OFFSET: Duration = Duration::from_secs(1);

/// One peer's last measured offset.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerClock {
    pub node: String,
    /// The peer's clock minus this node's (seconds; positive when the peer is ahead).
    pub offset_secs: f64,
    /// The round trip of the measuring call (seconds).
    pub rtt_secs: f64,
}

/// The peer's offset in ms: its clock reading against the midpoint of the call as this node's
/// clock saw it (`t_send_ms`, `t_recv_ms`).
pub fn offset_ms(t_send_ms: f64, t_recv_ms: f64, peer_clock_ms: f64) -> f64 {
    peer_clock_ms - (t_send_ms + t_recv_ms) / 2.0
}

/// The largest absolute offset (0 without peers).
pub fn max_abs_offset_secs(clocks: &[PeerClock]) -> f64 {
    clocks.iter().map(|c| c.offset_secs.abs()).fold(0.0, f64::max)
}

fn wall_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
}

/// Measures `node`'s offset: the better (shorter round trip) of two calls, as the first may
/// pay for the connection's set-up, which skews its midpoint. (offset, round trip) in ms.
async fn measure(fleet: Fleet, node: NodeInfo) -> Result<(f64, f64), String> {
    let first = measure_once(&fleet, &node).await?;
    Ok(match measure_once(&fleet, &node).await {
        Ok(second) if second.1 < first.1 => second,
        _ => first,
    })
}

/// Calls `node`'s clock route once: (offset, round trip) in ms, or why not.
async fn measure_once(fleet: &Fleet, node: &NodeInfo) -> Result<(f64, f64), String> {
    let req =
        fleet.request(node, reqwest::Method::GET, NODE_PATH, None).map_err(|e| e.to_string())?.timeout(CALL_TIMEOUT);
    let call = async {
        let t_send_ms = wall_ms();
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| format!("{}: {e}", node.advertise))?;
        // The monotonic clock for the round trip: a wall-clock step mid-call must not count.
        let rtt_ms = started.elapsed().as_secs_f64() * 1e3;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("{}: reading the answer: {e}", node.advertise))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("{} answered {status}: {text}", node.advertise));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{}: not JSON: {e}", node.advertise))?;
        if v["result"]["name"] != node.name.as_str() {
            return Err(format!("{} answered as {} (another node at that URL?)", node.advertise, v["result"]["name"]));
        }
        let peer_ms = v["result"]["clock_unix_ms"]
            .as_f64()
            .ok_or_else(|| format!("{}: no clock_unix_ms in the answer", node.advertise))?;
        Ok((offset_ms(t_send_ms, t_send_ms + rtt_ms, peer_ms), rtt_ms))
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("{}: no answer within {} s", node.advertise, CALL_TIMEOUT.as_secs())),
    }
}

/// What the task remembers of one peer.
#[derive(Default)]
struct Peer {
    tried: Option<Instant>,
    last: Option<PeerClock>,
    warned_offset: bool,
    failing: bool,
}

impl Peer {
    fn due(&self) -> bool {
        self.tried.is_none_or(|t| t.elapsed() >= MEASURE_EVERY)
    }

    /// Records one measurement and logs what changed (over or back within the warning bound,
    /// failing or answering again).
    fn record(&mut self, name: &str, answer: Result<(f64, f64), String>) {
        self.tried = Some(Instant::now());
        match answer {
            Ok((offset_ms, rtt_ms)) => {
                if self.failing {
                    tracing::info!("fleet: clock of {name}: measured again");
                    self.failing = false;
                }
                let over = offset_ms.abs() > WARN_OFFSET.as_secs_f64() * 1e3;
                if over && !self.warned_offset {
                    tracing::warn!(
                        "fleet: the clock of node {name} is {:.3} s from this node's (round trip {rtt_ms:.1} ms); \
                         fleet nodes need synchronised clocks (NTP)",
                        offset_ms / 1e3
                    );
                } else if !over && self.warned_offset {
                    tracing::info!("fleet: the clock of node {name} is within {:?} again", WARN_OFFSET);
                }
                self.warned_offset = over;
                self.last =
                    Some(PeerClock { node: name.to_string(), offset_secs: offset_ms / 1e3, rtt_secs: rtt_ms / 1e3 });
            }
            Err(why) => {
                if !self.failing {
                    tracing::warn!("fleet: cannot measure the clock of node {name}: {why}");
                    self.failing = true;
                }
            }
        }
    }
}

fn publish(stats: &FleetStats, peers: &HashMap<String, Peer>) {
    let mut clocks: Vec<PeerClock> = peers.values().filter_map(|p| p.last.clone()).collect();
    clocks.sort_by(|a, b| a.node.cmp(&b.node));
    if let Ok(mut c) = stats.clock_offsets.lock() {
        *c = clocks;
    }
}

/// Measures the peers that are due, then looks again every [`REFRESH_EVERY`] (the member
/// list's pace, so that a new peer is measured at once).
pub(super) async fn clock_task(fleet: Fleet) {
    let mut stop = fleet.inner.stop.subscribe();
    let mut peers: HashMap<String, Peer> = HashMap::new();
    loop {
        let live = fleet.live_nodes();
        peers.retain(|name, _| live.iter().any(|n| &n.name == name));
        let due: Vec<NodeInfo> = live
            .iter()
            .filter(|n| n.name != fleet.name() && peers.get(&n.name).is_none_or(Peer::due))
            .cloned()
            .collect();
        let calls: Vec<_> =
            due.into_iter().map(|n| (n.name.clone(), tokio::spawn(measure(fleet.clone(), n)))).collect();
        for (name, call) in calls {
            let answer = tokio::select! {
                _ = stop.changed() => return,
                a = call => a.unwrap_or_else(|e| Err(format!("the call failed: {e}"))),
            };
            peers.entry(name.clone()).or_default().record(&name, answer);
        }
        publish(&fleet.inner.stats, &peers);
        if !pause(&mut stop, REFRESH_EVERY).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_peer_clock_against_the_calls_midpoint() {
        // Symmetric 10 ms round trip, peer read its clock at our 1005: in step.
        assert_eq!(offset_ms(1000.0, 1010.0, 1005.0), 0.0);
        // Peer 2 s ahead / 1.5 s behind.
        assert_eq!(offset_ms(1000.0, 1010.0, 3005.0), 2000.0);
        assert_eq!(offset_ms(1_700_000_000_000.0, 1_700_000_000_004.0, 1_699_999_998_502.0), -1500.0);
        // The answer's clock has ms resolution: the error is at most half the round trip.
        let o = offset_ms(1000.0, 1001.0, 1000.0);
        assert!(o.abs() <= 0.5, "{o}");
        let clocks = |v: &[f64]| -> Vec<PeerClock> {
            v.iter()
                .enumerate()
                .map(|(i, &o)| PeerClock { node: format!("n{i}"), offset_secs: o, rtt_secs: 0.001 })
                .collect()
        };
        assert_eq!(max_abs_offset_secs(&clocks(&[0.25, -1.5, 1.0])), 1.5);
        assert_eq!(max_abs_offset_secs(&clocks(&[])), 0.0);
    }

    #[test]
    fn a_large_offset_is_flagged_once_until_it_is_back_within() {
        let mut p = Peer::default();
        assert!(p.due());
        p.record("n2", Ok((1500.0, 1.0)));
        assert!(p.warned_offset && !p.due());
        assert_eq!(p.last, Some(PeerClock { node: "n2".into(), offset_secs: 1.5, rtt_secs: 0.001 }));
        p.record("n2", Ok((-2500.0, 1.0)));
        assert!(p.warned_offset);
        p.record("n2", Ok((3.0, 1.0)));
        assert!(!p.warned_offset);
        // A failure keeps the last figure.
        p.record("n2", Err("down".into()));
        assert!(p.failing);
        assert_eq!(p.last.as_ref().map(|c| c.offset_secs), Some(0.003));
        p.record("n2", Ok((4.0, 1.0)));
        assert!(!p.failing);
    }
}
