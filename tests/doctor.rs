//! `pcapd doctor` / `check-config --deep` on temporary configs (no DPDK is started).
mod common;

use common::*;
use std::path::Path;

fn config(dir: &Path, data: &Path) -> std::path::PathBuf {
    let text = format!(
        "[dpdk]\neal_args = [\"--no-huge\", \"-m\", \"512\"]\nrx_cores = [1]\n\
         [[port]]\ndevice = \"net_pcap0\"\nargs = \"rx_pcap={}\"\n\
         [data]\ndir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[samples]\nmax_bytes = 1048576\n",
        fixture("frames.pcap").display(),
        data.display()
    );
    let path = dir.join("pcapd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn doctor(args: &[&str], cfg: &Path) -> (i32, String) {
    let out = pcapd().args(args).arg(cfg).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn doctor_passes_a_healthy_config_and_fails_a_bad_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = config(tmp.path(), &data);
    let (code, out) = doctor(&["doctor", "--config"], &cfg);
    assert_eq!(code, 0, "{out}");
    for line in ["OK   data.dir: ", "OK   data.dir free space: ", "OK   data.dir lock: ", "OK   hugepages: not used"] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
    assert!(out.contains(&format!("OK   port[0] net_pcap0: rx_pcap={} is there", fixture("frames.pcap").display())));
    assert!(!out.contains("FAIL"), "{out}");

    // A running appliance holds the lock: doctor says so and fails.
    let lock = std::fs::File::create(data.join("pcapd.lock")).unwrap();
    std::fs::write(data.join("pcapd.lock"), "4242\n").unwrap();
    lock.lock().unwrap();
    let (code, out) = doctor(&["check-config", "--deep"], &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL data.dir lock: ") && out.contains("held by a running pcapd (pid 4242)"), "{out}");
    lock.unlock().unwrap();
    let (code, out) = doctor(&["doctor", "--config"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is not held (pid 4242)"), "{out}");

    // The data dir's parent is missing; or the data dir is a file.
    let cfg = config(tmp.path(), &tmp.path().join("no/such/data"));
    let (code, out) = doctor(&["doctor", "--config"], &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL data.dir: ") && out.contains("does not exist, nor does its parent"), "{out}");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, out) = doctor(&["doctor", "--config"], &config(tmp.path(), &file));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not a directory"), "{out}");

    // An invalid config: exit 2, like check-config.
    std::fs::write(tmp.path().join("bad.toml"), "[data]\ndir = \"\"\n").unwrap();
    let (code, out) = doctor(&["doctor", "--config"], &tmp.path().join("bad.toml"));
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("FAIL config: "), "{out}");
}
