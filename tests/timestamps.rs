//! Packet timestamps of `pcapd capture` read back with an independent reader (the pcap record
//! headers, and tshark's own view of them).
mod common;

use common::*;

/// Writes `frames` as a nanosecond pcap with every record at time 0 (the replay's stamps are
/// pcapd's receive times, not these).
fn write_frames(path: &std::path::Path, frames: &[Vec<u8>]) {
    // Nanosecond magic, version 2.4, zone 0, sigfigs 0, snaplen, Ethernet.
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 262_144, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for f in frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

/// Regression: the packets of one burst shared one stamp (1,000 replayed packets showed 32
/// distinct times). Each packet now gets its own, increasing, within the capture's run.
#[test]
fn packets_of_a_burst_get_distinct_increasing_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let fixture_frames = datas(&read_pcap(&fixture("frames.pcap")));
    let frames: Vec<Vec<u8>> = fixture_frames.iter().cycle().take(1000).cloned().collect();
    let input = dir.path().join("in.pcap");
    write_frames(&input, &frames);
    let out = dir.path().join("out.pcap");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-w", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let got = read_pcap(&out);
    assert_eq!(datas(&got), frames, "every packet, in order");
    let ts: Vec<u128> = got.iter().map(|p| p.ts_ns).collect();
    assert!(ts.windows(2).all(|w| w[1] > w[0]), "strictly increasing");
    assert!(ts[0] >= before && ts[999] <= after + 1_000_000, "within the run: {} .. {}", ts[0], ts[999]);
    // tshark reads the same 1,000 distinct times.
    let t = std::process::Command::new("tshark")
        .args(["-r", out.to_str().unwrap(), "-T", "fields", "-e", "frame.time_epoch"])
        .output()
        .unwrap();
    let times: std::collections::BTreeSet<String> =
        String::from_utf8_lossy(&t.stdout).lines().map(str::to_string).collect();
    assert_eq!(times.len(), 1000, "tshark sees 1,000 distinct timestamps");
}
