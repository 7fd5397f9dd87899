//! Many captures on one data plane, opened, published and closed the way the appliance's
//! lifecycle does it (lease from a writer, one published set, close after the RX cores left
//! the set behind). Shared by tests/many_captures.rs and benches/rx_captures.rs
//! (`#[path]`-included: it needs nothing else from tests/common).
#![allow(dead_code)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel;
use pcapd::config::{Config, PortConfig};
use pcapd::dataplane::active::{ActiveCapture, ActiveSet, Budget, CaptureCounters};
use pcapd::dataplane::lease::Lease;
use pcapd::dataplane::writer::CloseReport;
use pcapd::dataplane::DataPlane;
use pcapd::filter::FilterV1;
use pcapd::pcap::{PcapSink, Precision, RotatePolicy};

/// One capture: a filter_v1 JSON object, an optional tcpdump expression, its file.
pub struct Spec {
    pub filter: String,
    pub expression: Option<String>,
    pub out: PathBuf,
}

/// A data plane on one vdev with one RX core (CPU 1) and one writer. An `-l` in `eal_args` is
/// left out (pcapd sets the lcores).
pub fn start(vdev: &str, mut eal_args: Vec<String>) -> DataPlane {
    if let Some(i) = eal_args.iter().position(|a| a == "-l") {
        eal_args.drain(i..(i + 2).min(eal_args.len()));
    }
    let mut cfg = Config::default();
    let (device, args) = vdev.split_once(',').map_or((vdev, None), |(d, a)| (d, Some(a.to_string())));
    cfg.ports =
        vec![PortConfig { device: device.to_string(), args, rx_queues: 1, rx_descriptors: 1024, promiscuous: true }];
    cfg.dpdk.eal_args = eal_args;
    cfg.dpdk.rx_cores = vec![1];
    cfg.validate().expect("valid config");
    let ports: Vec<&PortConfig> = cfg.ports.iter().collect();
    DataPlane::start(&cfg, &ports, None).expect("start the data plane")
}

/// Running captures: what closing them needs.
pub struct Running {
    leases: Vec<Lease>,
    pub counters: Vec<Arc<CaptureCounters>>,
}

/// Opens every capture's file and publishes them as one set.
pub fn open(dp: &DataPlane, specs: &[Spec], snaplen: u32) -> Running {
    let control = dp.control();
    let (mut leases, mut counters, mut set) = (Vec::new(), Vec::new(), Vec::new());
    for s in specs {
        let sink = PcapSink::create(&s.out, RotatePolicy::default(), Precision::Nanos, snaplen).expect("create file");
        let c = Arc::new(CaptureCounters::default());
        let lease = control.open(0, sink, Arc::clone(&c), None, Duration::from_secs(10)).expect("open a capture");
        let program = s.expression.as_deref().map(|e| control.load_expression(e).expect("load the expression"));
        let filter = FilterV1::from_json_str(&s.filter).expect("filter_v1").compile();
        let budget = Arc::new(Budget::new(None, None));
        set.push(
            ActiveCapture::new(&lease, filter, snaplen, Precision::Nanos, budget, Arc::clone(&c)).with_program(program),
        );
        leases.push(lease);
        counters.push(c);
    }
    control.publish(ActiveSet::new(set));
    Running { leases, counters }
}

/// Withdraws the captures from the RX cores and closes their files.
pub fn close(dp: &DataPlane, running: Running) -> Vec<CloseReport> {
    let control = dp.control();
    let epoch = control.publish(ActiveSet::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !control.epoch_passed(epoch) {
        assert!(Instant::now() < deadline, "RX cores did not leave the capture set");
        std::thread::sleep(Duration::from_millis(1));
    }
    running
        .leases
        .into_iter()
        .map(|lease| {
            let (tx, rx) = channel::bounded(1);
            assert!(lease.close(tx), "writer gone");
            let report = rx.recv_timeout(Duration::from_secs(30)).expect("close report");
            assert_eq!(report.error, None);
            report
        })
        .collect()
}
