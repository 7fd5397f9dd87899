//! Prometheus text exposition: per-core RX counters, NIC counters per port, sample store,
//! captures, and API requests with latency quantiles (hdrhistogram).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::dataplane::stats::StatsReader;
use crate::dpdk::Port;
use crate::samples::SampleStats;

/// API request counters and latency histograms, keyed by route.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram<u64>>>,
}

impl ApiMetrics {
    pub fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_string(), method.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            if !l.contains_key(route) {
                // 1 µs to 60 s at 3 significant figures: valid bounds, so this never fails.
                let Ok(h) = Histogram::new_with_bounds(1, 60_000_000, 3) else { return };
                l.insert(route.to_string(), h);
            }
            if let Some(h) = l.get_mut(route) {
                let _ = h.record((took.as_micros() as u64).clamp(1, 60_000_000));
            }
        }
    }
}

/// What the data plane exposes to /metrics.
#[derive(Clone)]
pub struct DataPlaneView {
    pub cores: Vec<u32>,
    pub stats: StatsReader,
    pub ports: Vec<Port>,
    pub samples: Arc<SampleStats>,
    /// Per writer: records dropped because no open capture held their lease (always 0 unless a
    /// lease bookkeeping bug hides there).
    pub stray: Vec<Arc<AtomicU64>>,
}

fn line(out: &mut String, name: &str, labels: &str, v: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {v}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// A label value in the exposition format: `\\`, `"` and newlines escaped (for values from
/// configs and etcd, such as node names).
fn label_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

pub fn render(dp: Option<&DataPlaneView>, api: &ApiMetrics, captures_running: usize) -> String {
    let mut o = String::new();
    if let Some(dp) = dp {
        help(&mut o, "pcapd_rx_packets_total", "counter", "Packets received per RX core.");
        for (i, c) in dp.stats.cores().iter().enumerate() {
            line(&mut o, "pcapd_rx_packets_total", &format!("core=\"{}\"", dp.cores[i]), c.rx_packets.load(Relaxed));
        }
        help(&mut o, "pcapd_rx_bytes_total", "counter", "Bytes received per RX core.");
        for (i, c) in dp.stats.cores().iter().enumerate() {
            line(&mut o, "pcapd_rx_bytes_total", &format!("core=\"{}\"", dp.cores[i]), c.rx_bytes.load(Relaxed));
        }
        help(&mut o, "pcapd_rx_matched_total", "counter", "Packets taken by at least one capture, per RX core.");
        for (i, c) in dp.stats.cores().iter().enumerate() {
            line(&mut o, "pcapd_rx_matched_total", &format!("core=\"{}\"", dp.cores[i]), c.matched.load(Relaxed));
        }
        let nic: Vec<_> = dp.ports.iter().map(|p| (p.name().to_string(), p.stats())).collect();
        for (metric, text, get) in [
            (
                "pcapd_nic_ipackets_total",
                "Packets the NIC received.",
                (|s: &crate::dpdk::EthStats| s.ipackets) as fn(&crate::dpdk::EthStats) -> u64,
            ),
            ("pcapd_nic_ibytes_total", "Bytes the NIC received.", |s| s.ibytes),
            ("pcapd_nic_imissed_total", "Packets the NIC dropped because RX queues were full.", |s| s.imissed),
            ("pcapd_nic_ierrors_total", "Erroneous packets the NIC received.", |s| s.ierrors),
            ("pcapd_nic_rx_nombuf_total", "RX mbuf allocation failures.", |s| s.rx_nombuf),
        ] {
            help(&mut o, metric, "counter", text);
            for (name, s) in &nic {
                line(&mut o, metric, &format!("port=\"{name}\""), get(s));
            }
        }
        for (metric, text, bytes) in [
            ("pcapd_queue_rx_packets_total", "Packets received per RX queue (NIC counters).", false),
            ("pcapd_queue_rx_bytes_total", "Bytes received per RX queue (NIC counters).", true),
        ] {
            help(&mut o, metric, "counter", text);
            for p in &dp.ports {
                for (q, (pk, by)) in p.queue_stats().into_iter().enumerate() {
                    line(&mut o, metric, &format!("port=\"{}\",queue=\"{q}\"", p.name()), if bytes { by } else { pk });
                }
            }
        }
        help(
            &mut o,
            "pcapd_writer_stray_records_total",
            "counter",
            "Records whose capture lease was no longer open: dropped, never written into another capture's file.",
        );
        for (w, n) in dp.stray.iter().enumerate() {
            line(&mut o, "pcapd_writer_stray_records_total", &format!("writer=\"{w}\""), n.load(Relaxed));
        }
        help(
            &mut o,
            "pcapd_expressions_loaded_total",
            "counter",
            "tcpdump expressions loaded for the RX cores, by engine: any on \"interpreter\" means DPDK's JIT was not available (slower, still correct).",
        );
        for (engine, n) in ["jit", "interpreter"].iter().zip(&crate::dataplane::EXPRESSIONS_LOADED) {
            line(&mut o, "pcapd_expressions_loaded_total", &format!("engine=\"{engine}\""), n.load(Relaxed));
        }
        let s = &dp.samples;
        for (metric, kind, text, v) in [
            ("pcapd_samples_sampled_total", "counter", "Packets sampled on RX cores.", s.sampled.load(Relaxed)),
            (
                "pcapd_samples_dropped_total",
                "counter",
                "Samples dropped: the store's ring was full.",
                s.dropped_ring_full.load(Relaxed),
            ),
            (
                "pcapd_samples_over_rate_total",
                "counter",
                "Samples skipped by samples.max_per_second.",
                s.over_rate.load(Relaxed),
            ),
            ("pcapd_samples_stored_total", "counter", "Samples written to segment files.", s.stored.load(Relaxed)),
            ("pcapd_samples_bytes", "gauge", "Bytes in the sample store.", s.bytes.load(Relaxed)),
            (
                "pcapd_samples_segments_expired_total",
                "counter",
                "Segments deleted by retention.",
                s.segments_expired.load(Relaxed),
            ),
            (
                "pcapd_samples_segments_dropped_for_space_total",
                "counter",
                "Segments deleted early to keep samples.min_free_bytes free or after the disk filled up.",
                s.segments_dropped_for_space.load(Relaxed),
            ),
            (
                "pcapd_samples_dropped_disk_full_total",
                "counter",
                "Samples not stored: the data disk was full.",
                s.dropped_disk_full.load(Relaxed),
            ),
            (
                "pcapd_samples_dropped_write_error_total",
                "counter",
                "Samples not stored: another write error.",
                s.dropped_write_error.load(Relaxed),
            ),
            (
                "pcapd_samples_disk_full",
                "gauge",
                "1 while the sample store cannot write for lack of space.",
                u64::from(s.disk_full_since_ns().is_some()),
            ),
        ] {
            help(&mut o, metric, kind, text);
            line(&mut o, metric, "", v);
        }
        help(&mut o, "pcapd_samples_oldest_timestamp_seconds", "gauge", "Start of the oldest sample segment.");
        line(&mut o, "pcapd_samples_oldest_timestamp_seconds", "", s.oldest_ns.load(Relaxed) / 1_000_000_000);
    }
    help(&mut o, "pcapd_captures_converting", "gauge", "Simple captures being built right now.");
    line(&mut o, "pcapd_captures_converting", "", captures_running);
    help(&mut o, "pcapd_api_requests_total", "counter", "Admin API requests by route, method and status.");
    if let Ok(r) = api.requests.lock() {
        for ((route, method, status), n) in r.iter() {
            line(
                &mut o,
                "pcapd_api_requests_total",
                &format!("route=\"{route}\",method=\"{method}\",status=\"{status}\""),
                n,
            );
        }
    }
    help(&mut o, "pcapd_api_request_duration_seconds", "summary", "Admin API latency by route.");
    if let Ok(l) = api.latency.lock() {
        for (route, h) in l.iter() {
            for q in [0.5, 0.9, 0.99] {
                let v = h.value_at_quantile(q) as f64 / 1e6;
                line(&mut o, "pcapd_api_request_duration_seconds", &format!("route=\"{route}\",quantile=\"{q}\""), v);
            }
            let sum: f64 =
                h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / 1e6;
            line(&mut o, "pcapd_api_request_duration_seconds_sum", &format!("route=\"{route}\""), sum);
            line(&mut o, "pcapd_api_request_duration_seconds_count", &format!("route=\"{route}\""), h.len());
        }
    }
    o
}

/// Upload counters and the live counters of running full captures: summed over them, or one
/// series per capture id when `per_capture` (`[api] metrics_per_capture`) allows it. Capture ids
/// and per-capture counts are the accounts' business, not every scraper's.
pub fn render_uploads(
    o: &mut String,
    u: &crate::upload::uploader::UploadStats,
    running: Vec<(String, Arc<crate::dataplane::active::CaptureCounters>)>,
    per_capture: bool,
) {
    for (metric, kind, text, v) in [
        ("pcapd_upload_bytes_total", "counter", "Bytes uploaded to buckets.", u.bytes.load(Relaxed)),
        ("pcapd_upload_files_total", "counter", "Files uploaded to buckets.", u.files.load(Relaxed)),
        ("pcapd_upload_retries_total", "counter", "Upload attempts that will be retried.", u.retries.load(Relaxed)),
        ("pcapd_upload_failures_total", "counter", "Uploads that failed for good.", u.failures.load(Relaxed)),
        ("pcapd_upload_backlog", "gauge", "Files waiting for upload.", u.backlog.load(Relaxed)),
    ] {
        help(o, metric, kind, text);
        line(o, metric, "", v);
    }
    help(o, "pcapd_upload_seconds_total", "counter", "Time spent uploading.");
    line(o, "pcapd_upload_seconds_total", "", u.latency_us_sum.load(Relaxed) as f64 / 1e6);
    for (metric, text, get) in [
        (
            "pcapd_capture_matched_total",
            "Packets a running full capture took.",
            (|c: &crate::dataplane::active::CaptureCounters| c.matched.load(Relaxed))
                as fn(&crate::dataplane::active::CaptureCounters) -> u64,
        ),
        ("pcapd_capture_written_total", "Packets a running full capture wrote.", |c| c.written.load(Relaxed)),
        ("pcapd_capture_dropped_ring_full_total", "Packets a running full capture lost to a full ring.", |c| {
            c.dropped_ring_full.load(Relaxed)
        }),
        ("pcapd_capture_dropped_writer_error_total", "Packets a running full capture lost to write errors.", |c| {
            c.dropped_writer_error.load(Relaxed)
        }),
    ] {
        if per_capture {
            help(o, metric, "counter", text);
            for (id, c) in &running {
                line(o, metric, &format!("pcap_id=\"{id}\""), get(c));
            }
        } else {
            // A gauge: the sum falls when a capture ends.
            let name = format!("{}_running", metric.trim_end_matches("_total"));
            help(o, &name, "gauge", &format!("{} Summed over the running full captures.", text));
            line(o, &name, "", running.iter().map(|(_, c)| get(c)).sum::<u64>());
        }
    }
    help(o, "pcapd_captures_full_running", "gauge", "Full captures running.");
    line(o, "pcapd_captures_full_running", "", running.len());
}

/// Fleet figures (`[fleet]` only): live members, the last etcd round trip, and the clock
/// offset to each peer.
pub fn render_fleet(o: &mut String, f: &crate::fleet::FleetStats) {
    help(
        o,
        "pcapd_fleet_live_nodes",
        "gauge",
        "Live fleet members (this node included) in the last refresh from etcd.",
    );
    line(o, "pcapd_fleet_live_nodes", "", f.live_nodes.load(Relaxed));
    help(
        o,
        "pcapd_fleet_etcd_latency_seconds",
        "gauge",
        "The last etcd round trip (lease keepalive or member refresh).",
    );
    line(o, "pcapd_fleet_etcd_latency_seconds", "", f.etcd_latency_us.load(Relaxed) as f64 / 1e6);
    help(
        o,
        "pcapd_fleet_reregistrations_total",
        "counter",
        "Times this node's lease expired (etcd unreachable longer than its TTL) and it registered again.",
    );
    line(o, "pcapd_fleet_reregistrations_total", "", f.reregistrations.load(Relaxed));
    help(
        o,
        "pcapd_fleet_etcd_requests_total",
        "counter",
        "etcd requests this process made (membership, lease keepalives, rule decisions, records).",
    );
    line(o, "pcapd_fleet_etcd_requests_total", "", crate::fleet::ETCD_REQUESTS.load(Relaxed));
    let clocks = f.clock_offsets.lock().map(|c| c.clone()).unwrap_or_default();
    help(
        o,
        "pcapd_fleet_clock_offset_seconds",
        "gauge",
        "The peer's clock minus this node's, measured every 10 s over a signed call (error at most half its round trip).",
    );
    for c in &clocks {
        line(o, "pcapd_fleet_clock_offset_seconds", &format!("node=\"{}\"", label_value(&c.node)), c.offset_secs);
    }
    help(o, "pcapd_fleet_clock_rtt_seconds", "gauge", "The round trip of the call that measured the peer's offset.");
    for c in &clocks {
        line(o, "pcapd_fleet_clock_rtt_seconds", &format!("node=\"{}\"", label_value(&c.node)), c.rtt_secs);
    }
    help(
        o,
        "pcapd_fleet_clock_offset_max_seconds",
        "gauge",
        "The largest absolute clock offset to a live peer (0 without peers); nodes need NTP.",
    );
    line(o, "pcapd_fleet_clock_offset_max_seconds", "", crate::fleet::clock::max_abs_offset_secs(&clocks));
    help(
        o,
        "pcapd_fleet_parts",
        "gauge",
        "Nodes' parts of the fleet's unfinished full captures, by state (the last check, every 2 s).",
    );
    for (state, n) in f.parts.lock().map(|p| p.clone()).unwrap_or_default() {
        line(o, "pcapd_fleet_parts", &format!("state=\"{state}\""), n);
    }
    help(
        o,
        "pcapd_fleet_parts_given_up_total",
        "counter",
        "Parts this node gave up: their node left the fleet while running them (lost), or never started them.",
    );
    line(o, "pcapd_fleet_parts_given_up_total", "", f.parts_given_up.load(Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::active::CaptureCounters;

    /// Regression: running full captures' ids and counters were in every scrape.
    #[test]
    fn capture_ids_only_with_metrics_per_capture() {
        let c = Arc::new(CaptureCounters::default());
        c.matched.store(7, Relaxed);
        let running = || vec![("0123456789abcdef0123456789abcdef".to_string(), Arc::clone(&c))];
        let u = crate::upload::uploader::UploadStats::default();
        let mut hidden = String::new();
        render_uploads(&mut hidden, &u, running(), false);
        assert!(!hidden.contains("0123456789abcdef"), "{hidden}");
        assert!(hidden.contains("pcapd_capture_matched_running 7\n"), "{hidden}");
        assert!(hidden.contains("pcapd_captures_full_running 1\n"), "{hidden}");
        let mut shown = String::new();
        render_uploads(&mut shown, &u, running(), true);
        assert!(
            shown.contains("pcapd_capture_matched_total{pcap_id=\"0123456789abcdef0123456789abcdef\"} 7\n"),
            "{shown}"
        );
    }

    #[test]
    fn fleet_clock_offsets_per_peer_and_the_largest() {
        use crate::fleet::clock::PeerClock;
        let f = crate::fleet::FleetStats::default();
        let mut o = String::new();
        render_fleet(&mut o, &f);
        assert!(o.contains("pcapd_fleet_clock_offset_max_seconds 0\n"), "{o}");
        assert!(o.contains("# TYPE pcapd_fleet_etcd_requests_total counter\npcapd_fleet_etcd_requests_total "), "{o}");
        assert!(!o.contains("pcapd_fleet_clock_offset_seconds{"), "{o}");
        *f.clock_offsets.lock().unwrap() = vec![
            PeerClock { node: "n2".into(), offset_secs: 0.25, rtt_secs: 0.002 },
            PeerClock { node: "n\"3\\\n".into(), offset_secs: -1.5, rtt_secs: 0.004 },
        ];
        let mut o = String::new();
        render_fleet(&mut o, &f);
        assert!(o.contains("pcapd_fleet_clock_offset_seconds{node=\"n2\"} 0.25\n"), "{o}");
        assert!(o.contains("pcapd_fleet_clock_offset_seconds{node=\"n\\\"3\\\\\\n\"} -1.5\n"), "{o}");
        assert!(o.contains("pcapd_fleet_clock_rtt_seconds{node=\"n2\"} 0.002\n"), "{o}");
        assert!(o.contains("pcapd_fleet_clock_offset_max_seconds 1.5\n"), "{o}");
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
