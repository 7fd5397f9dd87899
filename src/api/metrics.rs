//! /metrics in Prometheus' text format (0.0.4), encoded by the `prometheus` crate (escaping,
//! layout): per-core RX counters, NIC counters per port, sample store, captures, uploads, fleet,
//! the API (requests; latency as a histogram by method, route template and status class, and the
//! older per-route quantile summary from hdrhistogram), `pcapd_build_info`, and the process
//! (`process_*`: resident memory, CPU seconds, open fds, start time).
//!
//! The data plane's counters are atomics that RX cores own; they are read at scrape time into
//! families built here ([`Family`]), never copied into crate metrics on the hot path. Families
//! without samples are left out (the text format has no empty family).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus::core::Collector;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::dataplane::stats::StatsReader;
use crate::dpdk::Port;
use crate::samples::SampleStats;

/// Upper bounds of `pcapd_api_request_latency_seconds` (seconds): most answers take well under
/// a millisecond; creates and downloads that wait on SQLite or a conversion take up to seconds.
const LATENCY_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// API request counters and latency, build info and the process collector.
pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Per-route quantiles (`pcapd_api_request_duration_seconds`, a summary): kept for
    /// dashboards and benches that read them; not aggregatable, unlike the histogram.
    quantiles: Mutex<BTreeMap<String, Histogram<u64>>>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new(&build_labels())
    }
}

/// `pcapd_build_info`'s labels: the crate version, the git revision (build.rs; "unknown"
/// outside a checkout), the DPDK library loaded at run time, as `pcapd --version` says them.
pub fn build_labels() -> [(&'static str, String); 3] {
    let dpdk = crate::dpdk::version();
    [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("revision", option_env!("PCAPD_GIT_REV").unwrap_or("unknown").to_string()),
        ("dpdk", dpdk.strip_prefix("DPDK ").unwrap_or(&dpdk).to_string()),
    ]
}

impl ApiMetrics {
    #[allow(
        clippy::expect_used,
        reason = "constant, valid metric definitions: a failure is a bug caught by every test"
    )]
    pub fn new(build: &[(&'static str, String); 3]) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("pcapd_api_requests_total", "Admin API requests by route, method and status."),
            &["route", "method", "status"],
        )
        .expect("valid counter");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pcapd_api_request_latency_seconds",
                "Admin API latency by method, matched route template and status class (2xx, 4xx, ...).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status_class"],
        )
        .expect("valid histogram");
        let info = IntGaugeVec::new(
            Opts::new("pcapd_build_info", "Always 1: the pcapd version, its git revision and the DPDK library."),
            &build.each_ref().map(|(k, _)| *k),
        )
        .expect("valid gauge");
        info.with_label_values(&build.each_ref().map(|(_, v)| v.as_str())).set(1);
        let collectors: [Box<dyn Collector>; 3] =
            [Box::new(requests.clone()), Box::new(latency.clone()), Box::new(info)];
        for c in collectors {
            registry.register(c).expect("distinct metric names");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("distinct metric names");
        ApiMetrics { registry, requests, latency, quantiles: Mutex::default() }
    }

    pub fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        let method = known_method(method);
        self.requests.with_label_values(&[route, method, &status.to_string()]).inc();
        let class = format!("{}xx", status / 100);
        self.latency.with_label_values(&[method, route, &class]).observe(took.as_secs_f64());
        if let Ok(mut l) = self.quantiles.lock() {
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

    /// The registry's families (requests, latency histogram, build info, process) and the
    /// per-route quantile summary.
    fn families(&self) -> Vec<MetricFamily> {
        let mut out = self.registry.gather();
        let mut summary = Family::new(
            "pcapd_api_request_duration_seconds",
            "Admin API latency by route (quantiles over every request since start).",
            MetricType::SUMMARY,
        );
        if let Ok(l) = self.quantiles.lock() {
            for (route, h) in l.iter() {
                let sum: f64 =
                    h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>()
                        / 1e6;
                let quantiles = [0.5, 0.9, 0.99].map(|q| (q, h.value_at_quantile(q) as f64 / 1e6));
                summary.summary(&[("route", route)], &quantiles, sum, h.len());
            }
        }
        out.push(summary.0);
        out
    }
}

/// The request's method as a label: the ones routes answer, else "other" (a client inventing
/// methods must not invent series).
fn known_method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// One family read at scrape time from counters someone else owns.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    fn metric(labels: &[(&str, &str)]) -> proto::Metric {
        let mut m = proto::Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = proto::LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        m
    }

    /// A sample of this counter or gauge.
    fn sample(&mut self, labels: &[(&str, &str)], v: impl Into<f64>) -> &mut Self {
        let mut m = Self::metric(labels);
        if self.0.get_field_type() == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(v.into());
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(v.into());
            m.set_gauge(g);
        }
        self.0.mut_metric().push(m);
        self
    }

    fn summary(&mut self, labels: &[(&str, &str)], quantiles: &[(f64, f64)], sum: f64, count: u64) {
        let mut m = Self::metric(labels);
        let mut s = proto::Summary::default();
        s.set_quantile(
            quantiles
                .iter()
                .map(|&(q, v)| {
                    let mut o = proto::Quantile::default();
                    o.set_quantile(q);
                    o.set_value(v);
                    o
                })
                .collect(),
        );
        s.set_sample_sum(sum);
        s.set_sample_count(count);
        m.set_summary(s);
        self.0.mut_metric().push(m);
    }
}

/// Appends `families` in the text format, skipping empty ones.
fn encode(o: &mut String, families: impl IntoIterator<Item = MetricFamily>) {
    let families: Vec<_> = families.into_iter().filter(|f| !f.get_metric().is_empty()).collect();
    // Fails only on an empty family or name, both excluded above.
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, o) {
        tracing::error!("/metrics: {e}");
    }
}

/// u64 counters as the format's float (exact up to 2^53).
fn f(v: u64) -> f64 {
    v as f64
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

pub fn render(dp: Option<&DataPlaneView>, api: &ApiMetrics, captures_running: usize) -> String {
    let mut fams = Vec::new();
    if let Some(dp) = dp {
        fams.extend(dataplane(dp));
    }
    let mut converting = Family::gauge("pcapd_captures_converting", "Simple captures being built right now.");
    converting.sample(&[], f(captures_running as u64));
    fams.push(converting.0);
    fams.extend(api.families());
    let mut o = String::new();
    encode(&mut o, fams);
    o
}

fn dataplane(dp: &DataPlaneView) -> Vec<MetricFamily> {
    let mut fams = Vec::new();
    type CoreGet = fn(&crate::dataplane::stats::CoreStats) -> u64;
    for (name, help, get) in [
        ("pcapd_rx_packets_total", "Packets received per RX core.", (|c| c.rx_packets.load(Relaxed)) as CoreGet),
        ("pcapd_rx_bytes_total", "Bytes received per RX core.", |c| c.rx_bytes.load(Relaxed)),
        ("pcapd_rx_matched_total", "Packets taken by at least one capture, per RX core.", |c| c.matched.load(Relaxed)),
    ] {
        let mut fam = Family::counter(name, help);
        for (i, c) in dp.stats.cores().iter().enumerate() {
            fam.sample(&[("core", &dp.cores[i].to_string())], f(get(c)));
        }
        fams.push(fam.0);
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
        let mut fam = Family::counter(metric, text);
        for (name, s) in &nic {
            fam.sample(&[("port", name)], f(get(s)));
        }
        fams.push(fam.0);
    }
    for (metric, text, bytes) in [
        ("pcapd_queue_rx_packets_total", "Packets received per RX queue (NIC counters).", false),
        ("pcapd_queue_rx_bytes_total", "Bytes received per RX queue (NIC counters).", true),
    ] {
        let mut fam = Family::counter(metric, text);
        for p in &dp.ports {
            for (q, (pk, by)) in p.queue_stats().into_iter().enumerate() {
                fam.sample(&[("port", p.name()), ("queue", &q.to_string())], f(if bytes { by } else { pk }));
            }
        }
        fams.push(fam.0);
    }
    let mut stray = Family::counter(
        "pcapd_writer_stray_records_total",
        "Records whose capture lease was no longer open: dropped, never written into another capture's file.",
    );
    for (w, n) in dp.stray.iter().enumerate() {
        stray.sample(&[("writer", &w.to_string())], f(n.load(Relaxed)));
    }
    fams.push(stray.0);
    let mut loaded = Family::counter(
        "pcapd_expressions_loaded_total",
        "tcpdump expressions loaded for the RX cores, by engine: any on \"interpreter\" means DPDK's JIT was not available (slower, still correct).",
    );
    for (engine, n) in ["jit", "interpreter"].iter().zip(&crate::dataplane::EXPRESSIONS_LOADED) {
        loaded.sample(&[("engine", engine)], f(n.load(Relaxed)));
    }
    fams.push(loaded.0);
    let s = &dp.samples;
    for (metric, kind, text, v) in [
        ("pcapd_samples_sampled_total", MetricType::COUNTER, "Packets sampled on RX cores.", s.sampled.load(Relaxed)),
        (
            "pcapd_samples_dropped_total",
            MetricType::COUNTER,
            "Samples dropped: the store's ring was full.",
            s.dropped_ring_full.load(Relaxed),
        ),
        (
            "pcapd_samples_over_rate_total",
            MetricType::COUNTER,
            "Samples skipped by samples.max_per_second.",
            s.over_rate.load(Relaxed),
        ),
        (
            "pcapd_samples_stored_total",
            MetricType::COUNTER,
            "Samples written to segment files.",
            s.stored.load(Relaxed),
        ),
        ("pcapd_samples_bytes", MetricType::GAUGE, "Bytes in the sample store.", s.bytes.load(Relaxed)),
        (
            "pcapd_samples_segments_expired_total",
            MetricType::COUNTER,
            "Segments deleted by retention.",
            s.segments_expired.load(Relaxed),
        ),
        (
            "pcapd_samples_segments_dropped_for_space_total",
            MetricType::COUNTER,
            "Segments deleted early to keep samples.min_free_bytes free or after the disk filled up.",
            s.segments_dropped_for_space.load(Relaxed),
        ),
        (
            "pcapd_samples_dropped_disk_full_total",
            MetricType::COUNTER,
            "Samples not stored: the data disk was full.",
            s.dropped_disk_full.load(Relaxed),
        ),
        (
            "pcapd_samples_dropped_write_error_total",
            MetricType::COUNTER,
            "Samples not stored: another write error.",
            s.dropped_write_error.load(Relaxed),
        ),
        (
            "pcapd_samples_disk_full",
            MetricType::GAUGE,
            "1 while the sample store cannot write for lack of space.",
            u64::from(s.disk_full_since_ns().is_some()),
        ),
        (
            "pcapd_samples_oldest_timestamp_seconds",
            MetricType::GAUGE,
            "Start of the oldest sample segment.",
            s.oldest_ns.load(Relaxed) / 1_000_000_000,
        ),
    ] {
        let mut fam = Family::new(metric, text, kind);
        fam.sample(&[], f(v));
        fams.push(fam.0);
    }
    fams
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
    let mut fams = Vec::new();
    for (metric, kind, text, v) in [
        ("pcapd_upload_bytes_total", MetricType::COUNTER, "Bytes uploaded to buckets.", f(u.bytes.load(Relaxed))),
        ("pcapd_upload_files_total", MetricType::COUNTER, "Files uploaded to buckets.", f(u.files.load(Relaxed))),
        (
            "pcapd_upload_retries_total",
            MetricType::COUNTER,
            "Upload attempts that will be retried.",
            f(u.retries.load(Relaxed)),
        ),
        (
            "pcapd_upload_failures_total",
            MetricType::COUNTER,
            "Uploads that failed for good.",
            f(u.failures.load(Relaxed)),
        ),
        ("pcapd_upload_backlog", MetricType::GAUGE, "Files waiting for upload.", f(u.backlog.load(Relaxed))),
        (
            "pcapd_upload_seconds_total",
            MetricType::COUNTER,
            "Time spent uploading.",
            u.latency_us_sum.load(Relaxed) as f64 / 1e6,
        ),
    ] {
        let mut fam = Family::new(metric, text, kind);
        fam.sample(&[], v);
        fams.push(fam.0);
    }
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
            let mut fam = Family::counter(metric, text);
            for (id, c) in &running {
                fam.sample(&[("pcap_id", id)], f(get(c)));
            }
            fams.push(fam.0);
        } else {
            // A gauge: the sum falls when a capture ends.
            let name = format!("{}_running", metric.trim_end_matches("_total"));
            let mut fam = Family::gauge(&name, &format!("{} Summed over the running full captures.", text));
            fam.sample(&[], f(running.iter().map(|(_, c)| get(c)).sum::<u64>()));
            fams.push(fam.0);
        }
    }
    let mut full = Family::gauge("pcapd_captures_full_running", "Full captures running.");
    full.sample(&[], f(running.len() as u64));
    fams.push(full.0);
    encode(o, fams);
}

/// Fleet figures (`[fleet]` only): live members, the last etcd round trip, and the clock
/// offset to each peer.
pub fn render_fleet(o: &mut String, fl: &crate::fleet::FleetStats) {
    let clocks = fl.clock_offsets.lock().map(|c| c.clone()).unwrap_or_default();
    let mut fams = Vec::new();
    for (metric, kind, text, v) in [
        (
            "pcapd_fleet_live_nodes",
            MetricType::GAUGE,
            "Live fleet members (this node included) in the last refresh from etcd.",
            f(fl.live_nodes.load(Relaxed)),
        ),
        (
            "pcapd_fleet_etcd_latency_seconds",
            MetricType::GAUGE,
            "The last etcd round trip (lease keepalive or member refresh).",
            fl.etcd_latency_us.load(Relaxed) as f64 / 1e6,
        ),
        (
            "pcapd_fleet_reregistrations_total",
            MetricType::COUNTER,
            "Times this node's lease expired (etcd unreachable longer than its TTL) and it registered again.",
            f(fl.reregistrations.load(Relaxed)),
        ),
        (
            "pcapd_fleet_etcd_requests_total",
            MetricType::COUNTER,
            "etcd requests this process made (membership, lease keepalives, rule decisions, records).",
            f(crate::fleet::ETCD_REQUESTS.load(Relaxed)),
        ),
        (
            "pcapd_fleet_clock_offset_max_seconds",
            MetricType::GAUGE,
            "The largest absolute clock offset to a live peer (0 without peers); nodes need NTP.",
            crate::fleet::clock::max_abs_offset_secs(&clocks),
        ),
        (
            "pcapd_fleet_parts_given_up_total",
            MetricType::COUNTER,
            "Parts this node gave up: their node left the fleet while running them (lost), or never started them.",
            f(fl.parts_given_up.load(Relaxed)),
        ),
    ] {
        let mut fam = Family::new(metric, text, kind);
        fam.sample(&[], v);
        fams.push(fam.0);
    }
    let mut offset = Family::gauge(
        "pcapd_fleet_clock_offset_seconds",
        "The peer's clock minus this node's, measured every 10 s over a signed call (error at most half its round trip).",
    );
    let mut rtt =
        Family::gauge("pcapd_fleet_clock_rtt_seconds", "The round trip of the call that measured the peer's offset.");
    for c in &clocks {
        offset.sample(&[("node", &c.node)], c.offset_secs);
        rtt.sample(&[("node", &c.node)], c.rtt_secs);
    }
    let mut parts = Family::gauge(
        "pcapd_fleet_parts",
        "Nodes' parts of the fleet's unfinished full captures, by state (the last check, every 2 s).",
    );
    for (state, n) in fl.parts.lock().map(|p| p.clone()).unwrap_or_default() {
        parts.sample(&[("state", state)], f(n));
    }
    fams.extend([offset.0, rtt.0, parts.0]);
    encode(o, fams);
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
    }

    /// Label values from configs and etcd (node names) may hold `"`, `\` and newlines: the text
    /// format escapes them as `\"`, `\\` and `\n`, or the scrape would not parse.
    #[test]
    fn label_values_with_quote_backslash_and_newline_are_escaped() {
        let mut fam = Family::gauge("pcapd_test_escaping", "Help with a \\ and a\nnewline.");
        fam.sample(&[("node", "a\"b\\c\nd")], 1.0);
        let mut o = String::new();
        encode(&mut o, [fam.0]);
        assert_eq!(
            o,
            "# HELP pcapd_test_escaping Help with a \\\\ and a\\nnewline.\n\
             # TYPE pcapd_test_escaping gauge\n\
             pcapd_test_escaping{node=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn api_latency_is_a_cumulative_histogram_by_method_route_template_and_status_class() {
        let m = ApiMetrics::new(&[("version", "1".into()), ("revision", "abc".into()), ("dpdk", "22.11".into())]);
        let route = "/client/v4/accounts/{account_id}/pcaps/{pcap_id}";
        m.record(route, "GET", 200, Duration::from_micros(300));
        m.record(route, "GET", 204, Duration::from_millis(30));
        m.record(route, "GET", 404, Duration::from_millis(2));
        m.record(route, "BREW", 405, Duration::from_millis(2));
        let o = render(None, &m, 0);
        let series = |le: &str| {
            let want = format!(
                "pcapd_api_request_latency_seconds_bucket{{method=\"GET\",route=\"{route}\",status_class=\"2xx\",le=\"{le}\"}} "
            );
            o.lines().find_map(|l| l.strip_prefix(&want)).unwrap_or_else(|| panic!("no {want} in\n{o}")).to_string()
        };
        assert_eq!(series("0.0005"), "1");
        assert_eq!(series("0.025"), "1");
        assert_eq!(series("0.05"), "2");
        assert_eq!(series("+Inf"), "2");
        assert!(o.contains("status_class=\"4xx\""), "{o}");
        assert!(o.contains("pcapd_api_request_latency_seconds_count{method=\"other\""), "{o}");
        assert!(!o.contains("BREW"), "{o}");
        assert!(o.contains("pcapd_build_info{dpdk=\"22.11\",revision=\"abc\",version=\"1\"} 1\n"), "{o}");
        // The older summary keeps its name and labels (benches/fleet.py reads its p99).
        assert!(
            o.contains(&format!("pcapd_api_request_duration_seconds{{route=\"{route}\",quantile=\"0.99\"}} ")),
            "{o}"
        );
        assert!(o.contains("# TYPE process_resident_memory_bytes gauge\n"), "{o}");
        assert!(o.contains("# TYPE process_cpu_seconds_total counter\n"), "{o}");
        assert!(o.contains("process_open_fds "), "{o}");
        assert!(o.contains("process_start_time_seconds "), "{o}");
    }
}
