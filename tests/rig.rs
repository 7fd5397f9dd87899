//! The testpmd → virtio rig: testpmd txonly on net_vhost feeds pcapd on net_virtio_user.
mod common;

use common::*;
use std::process::Command;

struct Rig;

impl Rig {
    fn start(size: u32) -> Rig {
        let st = Command::new(root().join("scripts/rig-testpmd")).arg("start").arg(size.to_string()).status().unwrap();
        assert!(st.success(), "the rig needs hugepages: run scripts/setup as root");
        Rig
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/rig-testpmd")).arg("stop").status();
    }
}

#[test]
fn captures_the_requested_count_of_testpmd_packets() {
    let _lock = dpdk_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rig.pcap");
    let rig = Rig::start(128);
    let run = pcapd()
        .args(["capture", "--config", "config/testpmd-rig.toml", "--filter", r#"{"protocol":17,"destination_port":9}"#])
        .args(["-c", "2000", "-w"])
        .arg(&out)
        .output()
        .unwrap();
    drop(rig);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("stopped: limit reached"), "{stderr}");
    let got = read_pcap(&out);
    assert_eq!(got.len(), 2000);
    // testpmd txonly sends 198.18.0.1:9 → 198.18.0.2:9 UDP frames of --txpkts bytes.
    let oracle = tcpdump(&out, "udp and src host 198.18.0.1 and dst host 198.18.0.2 and dst port 9", dir.path());
    assert_eq!(oracle.len(), 2000);
    assert!(got.iter().all(|p| p.data.len() == 128 && p.orig_len == 128));
}
