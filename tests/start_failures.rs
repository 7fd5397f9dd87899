//! Regressions of "any port that fails to start crashes pcapd": every start failure is one
//! clear last line (port, file or argument, the driver's reason), exit code 2 for bad input,
//! nothing left on disk, no DPDK log noise; configs resolve relative paths against their own
//! directory; check-config catches what would fail at start.
mod common;

use std::path::Path;
use std::process::Output;

use common::appliance::{free_port, Appliance};
use common::*;

/// The last line of stderr, asserting nothing before it is DPDK's routine log.
fn last_line(r: &Run) -> &str {
    assert!(!r.stderr.contains("TELEMETRY"), "DPDK noise on stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r.stderr.lines().last().unwrap_or("")
}

fn assert_nothing_left(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// A pcap file of `n` minimal Ethernet frames.
fn pcap_of(path: &Path, n: u32) {
    let mut b = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..n {
        for v in [i, 0, 60, 60] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 60]);
    }
    std::fs::write(path, b).unwrap();
}

fn run(cmd: &mut std::process::Command) -> Run {
    let out: Output = cmd.output().expect("run pcapd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn missing_rx_pcap_is_a_clear_error_not_a_segfault() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("o.pcap");
    let r = capture(&["--vdev", "net_pcap0,rx_pcap=/no/such.pcap", "-c", "10", "-w", o.to_str().unwrap()]);
    let last = last_line(&r);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        last,
        "pcapd: port net_pcap0 (rx_pcap=/no/such.pcap): the driver could not open the device: \
         Couldn't open /no/such.pcap: /no/such.pcap: No such file or directory"
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_nothing_left(out.path());
}

#[test]
fn text_file_as_rx_pcap_is_a_clear_error_not_a_segfault() {
    let input = tempfile::tempdir().unwrap();
    let text = input.path().join("notes.txt");
    std::fs::write(&text, "this is not a capture\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("o.pcap");
    let vdev = format!("net_pcap0,rx_pcap={}", text.display());
    let r = capture(&["--vdev", &vdev, "-c", "10", "-w", o.to_str().unwrap()]);
    let last = last_line(&r);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(last.starts_with("pcapd: port net_pcap0 (rx_pcap="), "{last}");
    assert!(last.ends_with(&format!("Couldn't open {}: unknown file format", text.display())), "{last}");
    assert_nothing_left(out.path());
}

#[test]
fn infinite_rx_file_larger_than_the_mempool_is_a_clear_error_not_a_segfault() {
    let input = tempfile::tempdir().unwrap();
    let big = input.path().join("big.pcap");
    pcap_of(&big, 3000);
    let cfg = input.path().join("small-pool.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dpdk]\neal_args = [\"--no-huge\", \"-m\", \"256\", \"--no-shconf\"]\nrx_cores = [1]\nmbufs = 1023\n\
             [[port]]\ndevice = \"net_pcap0\"\nargs = \"rx_pcap={},infinite_rx=1\"\nrx_descriptors = 64\n",
            big.display()
        ),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("o.pcap");
    let r = capture(&["--config", cfg.to_str().unwrap(), "-c", "10", "-w", o.to_str().unwrap()]);
    let last = last_line(&r);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(last.starts_with(&format!("pcapd: port net_pcap0 (rx_pcap={},infinite_rx=1): ", big.display())), "{last}");
    assert!(last.contains("rte_eth_rx_queue_setup failed"), "{last}");
    assert!(last.contains("At least 3000 mbufs per queue is required"), "{last}");
    assert_nothing_left(out.path());
    // check-config says so before anything starts.
    let r = run(pcapd().arg("check-config").arg(&cfg));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(last_line(&r).starts_with("pcapd: dpdk.mbufs: 1023 mbufs cannot hold the 3000 packets"), "{}", r.stderr);
}

#[test]
fn check_config_rejects_missing_and_non_pcap_rx_pcap_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a capture\n").unwrap();
    for (args, why) in [
        (
            "rx_pcap=/no/such.pcap".to_string(),
            "rx_pcap=/no/such.pcap: No such file or directory (os error 2)".to_string(),
        ),
        (format!("rx_pcap={}", text.display()), format!("rx_pcap={}: not a pcap or pcapng file", text.display())),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("[dpdk]\nrx_cores = [1]\n[[port]]\ndevice = \"net_pcap0\"\nargs = \"{args}\"\n"))
            .unwrap();
        let r = run(pcapd().arg("check-config").arg(&cfg));
        assert_eq!(r.code, 2, "{args}: {}", r.stderr);
        assert_eq!(last_line(&r), format!("pcapd: port[0].args: {why}"));
        // `run` loads the config the same way: the same line, before DPDK starts.
        let _g = dpdk_lock();
        let r = run(pcapd().arg("run").arg("--config").arg(&cfg));
        assert_eq!(r.code, 2, "{args}: {}", r.stderr);
        assert_eq!(last_line(&r), format!("pcapd: port[0].args: {why}"));
    }
}

#[test]
fn check_config_rejects_vdev_in_eal_args() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dpdk]\neal_args = [\"--vdev\", \"net_pcap0,rx_pcap={},infinite_rx=1\"]\nrx_cores = [1]\n\
             [[port]]\ndevice = \"net_pcap0\"\n",
            fixture("frames.pcap").display()
        ),
    )
    .unwrap();
    let r = run(pcapd().arg("check-config").arg(&cfg));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let last = last_line(&r);
    assert!(last.starts_with("pcapd: dpdk.eal_args: \"--vdev\""), "{last}");
    assert!(last.contains("[[port]]"), "{last}");
}

/// The demo config, copied with its traffic file into another directory and started with an
/// absolute path from a third one: its relative paths are relative to the config file.
#[test]
fn run_with_an_absolute_config_path_works_from_any_directory() {
    let root_dir = tempfile::tempdir().unwrap();
    let etc = root_dir.path().join("etc");
    let elsewhere = root_dir.path().join("elsewhere");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(root().join("config/demo-traffic.pcap"), etc.join("demo-traffic.pcap")).unwrap();
    let port = free_port();
    let demo = std::fs::read_to_string(root().join("config/pcapd.toml")).unwrap();
    assert!(demo.contains("listen = \"127.0.0.1:8080\""));
    let cfg = etc.join("pcapd.toml");
    std::fs::write(&cfg, demo.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))).unwrap();

    let data = root_dir.path().join(".data");
    let mut app = Appliance::start_config_in(cfg, &data, port, &elsewhere);
    assert!(data.join("pcapd.db").exists(), "data.dir is relative to the config file");
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "nothing written to the working directory");
    let (status, stderr) = app.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("TELEMETRY"), "DPDK noise on stderr:\n{stderr}");
}
