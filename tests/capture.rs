//! `pcapd capture` end to end on net_pcap vdevs, checked against tcpdump/tshark and the input.
mod common;

use common::*;
use std::path::Path;

fn all_frames() -> Vec<Pkt> {
    read_pcap(&fixture("frames.pcap"))
}

#[test]
fn match_all_yields_the_input_byte_for_byte_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.pcap");
    let input = fixture("frames.pcap");
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-w", out.to_str().unwrap()]);
    r.ok();
    let got = read_pcap(&out);
    let want = all_frames();
    assert!(want.len() >= 80);
    assert_eq!(datas(&got), datas(&want));
    assert!(got.iter().zip(&want).all(|(g, w)| g.orig_len == w.orig_len));
    assert_eq!(r.summary("written"), want.len() as u64);
    assert!(r.stderr.contains("stopped: end of input"), "{}", r.stderr);
    // tshark reads it too, as a nanosecond Ethernet pcap.
    let info = std::process::Command::new("capinfos").arg("-M").arg(&out).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("nanoseconds") && info.contains("Ethernet"), "{info}");
    assert!(info.contains(&format!("Number of packets:   {}", want.len())), "{info}");
}

/// filter_v1 → the same selection as an independent oracle.
enum Oracle {
    /// A BPF expression; VLAN and QinQ variants are added around it.
    Tcpdump(&'static str),
    /// A Wireshark display filter (follows IPv6 extension headers for ports).
    Tshark(&'static str),
}

/// tcpdump does not check the IPv4 version and header length; pcapd does (a malformed header
/// proves nothing), so the oracle adds the check.
const V4_OK: &str = "(ip[0] & 0xf0 = 0x40 and ip[0] & 0x0f >= 5)";

fn vlan_wrapped(e: &str) -> String {
    let e = e.replace("ip ", &format!("{V4_OK} and ip "));
    format!("({e}) or (vlan and (({e}) or (vlan and ({e}))))")
}

#[test]
fn filter_v1_selects_what_tcpdump_and_tshark_select() {
    use Oracle::*;
    let ports = |p: &str, dir: &str| format!("tcp.{dir}port == {p} || udp.{dir}port == {p} || sctp.{dir}port == {p}");
    let dst80: &'static str = Box::leak(ports("80", "dst").into_boxed_str());
    let src1234: &'static str = Box::leak(ports("1234", "src").into_boxed_str());
    let dst53: &'static str = Box::leak(ports("53", "dst").into_boxed_str());
    let vlan443: &'static str =
        Box::leak(format!("ip.src == 1.2.3.4 && ({}) && count(vlan) <= 2", ports("443", "dst")).into_boxed_str());
    let cases: Vec<(&str, Oracle)> = vec![
        (r#"{"source_address":"1.2.3.4"}"#, Tcpdump("ip src host 1.2.3.4")),
        (r#"{"destination_address":"5.6.7.8"}"#, Tcpdump("ip dst host 5.6.7.8")),
        (r#"{"source_address":"2001:db8::1"}"#, Tcpdump("ip6 src host 2001:db8::1")),
        (
            r#"{"destination_address":"2001:db8::2","protocol":58}"#,
            Tcpdump("ip6 dst host 2001:db8::2 and ip6 protochain 58"),
        ),
        (r#"{"protocol":17}"#, Tcpdump("ip proto 17 or ip6 protochain 17")),
        (r#"{"protocol":132}"#, Tcpdump("ip proto 132 or ip6 protochain 132")),
        (r#"{"protocol":1}"#, Tcpdump("ip proto 1")),
        (
            r#"{"source_address":"1.2.3.4","destination_address":"9.9.9.9","protocol":17}"#,
            Tcpdump("ip src host 1.2.3.4 and ip dst host 9.9.9.9 and ip proto 17"),
        ),
        (r#"{"source_address":"9.9.9.9"}"#, Tcpdump("ip src host 9.9.9.9")),
        (r#"{"destination_port":80}"#, Tshark(dst80)),
        (r#"{"source_port":1234}"#, Tshark(src1234)),
        (r#"{"destination_port":53.0}"#, Tshark(dst53)),
        (r#"{"protocol":6,"destination_port":80}"#, Tshark("tcp.dstport == 80")),
        (r#"{"source_address":"1.2.3.4","destination_port":443}"#, Tshark(vlan443)),
    ];
    let input = fixture("frames.pcap");
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut nonempty = 0;
    for (filter, oracle) in &cases {
        let out = dir.path().join("f.pcap");
        let r = capture(&["--vdev", &vdev_pcap(&[&input]), "--filter", filter, "-w", out.to_str().unwrap()]);
        r.ok();
        let got = datas(&read_pcap(&out));
        let want = datas(&match oracle {
            Tcpdump(e) => tcpdump(&input, &vlan_wrapped(e), dir.path()),
            Tshark(f) => tshark(&input, f, dir.path()),
        });
        if !want.is_empty() {
            nonempty += 1;
        }
        if got != want {
            failures.push(format!(
                "{filter}: pcapd {} packets, oracle {}; pcapd said:\n{}",
                got.len(),
                want.len(),
                r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(nonempty >= cases.len() - 1, "the cases must select something");
}

#[test]
fn packet_limit_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.pcap");
    let input = fixture("frames.pcap");
    for n in [1usize, 10, 33] {
        let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-c", &n.to_string(), "-w", out.to_str().unwrap()]);
        r.ok();
        assert_eq!(datas(&read_pcap(&out)), datas(&all_frames()[..n]), "-c {n}");
        assert!(r.stderr.contains("stopped: limit reached"), "{}", r.stderr);
    }
    // With a filter, on a source that repeats forever.
    let r = capture(&[
        "--vdev",
        &format!("{},infinite_rx=1", vdev_pcap(&[&small_frames(dir.path())])),
        "--filter",
        r#"{"protocol":6}"#,
        "-c",
        "500",
        "-w",
        out.to_str().unwrap(),
    ]);
    r.ok();
    let got = read_pcap(&out);
    assert_eq!(got.len(), 500);
    let tcp = tcpdump(&out, &vlan_wrapped("ip proto 6 or ip6 protochain 6"), dir.path());
    assert_eq!(tcp.len(), 500, "every packet is TCP");
}

#[test]
fn byte_limit_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.pcap");
    let input = fixture("frames.pcap");
    let all = all_frames();
    let limit: usize = all[..20].iter().map(|p| p.data.len()).sum::<usize>() + 5;
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "--bytes", &limit.to_string(), "-w", out.to_str().unwrap()]);
    r.ok();
    let got = read_pcap(&out);
    assert_eq!(datas(&got), datas(&all[..20]), "stops before the first packet that does not fit");
    assert!(r.stderr.contains("stopped: limit reached"));
}

#[test]
fn duration_stops_an_endless_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.pcap");
    let input = small_frames(dir.path());
    let started = std::time::Instant::now();
    let r = capture(&[
        "--vdev",
        &format!("{},infinite_rx=1", vdev_pcap(&[&input])),
        "--duration",
        "1.5",
        "-s",
        "128",
        "--when-full",
        "drop",
        "-w",
        out.to_str().unwrap(),
    ]);
    r.ok();
    assert!(started.elapsed().as_secs_f64() >= 1.5);
    assert!(r.stderr.contains("stopped: duration elapsed"), "{}", r.stderr);
    let got = read_pcap(&out);
    assert!(got.len() > 1000, "an endless replay gives many packets, got {}", got.len());
    // Told to drop (as for live traffic), on a 2-core machine the writer may fall behind an
    // endless replay: what it could not take is dropped and counted, never lost silently.
    assert_eq!(got.len() as u64, r.summary("written"));
    assert_eq!(r.summary("matched"), r.summary("written") + r.summary("dropped"));
    // Timestamps are wall-clock ns inside the run and never go backwards on one queue.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    assert!(got.iter().all(|p| p.ts_ns <= now && p.ts_ns + 60_000_000_000 > now));
    assert!(got.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
}

#[test]
fn a_replay_waits_for_the_writer_and_loses_nothing() {
    // An in-memory replay delivers packets far faster than a writer writes them; the rings hold
    // 16 MiB, the file ~30 MB. A replay can wait, so none may be dropped: the file is the input
    // over and over, in order, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.pcap");
    let input = small_frames(dir.path());
    let want = read_pcap(&input);
    let n = 300_000;
    let r = capture(&[
        "--vdev",
        &format!("{},infinite_rx=1", vdev_pcap(&[&input])),
        "-c",
        &n.to_string(),
        "-w",
        out.to_str().unwrap(),
    ]);
    r.ok();
    assert_eq!((r.summary("written"), r.summary("dropped")), (n, 0), "{}", r.stderr);
    let got = read_pcap(&out);
    assert_eq!(got.len() as u64, n);
    for (i, p) in got.iter().enumerate() {
        let w = &want[i % want.len()];
        assert!(p.data == w.data && p.orig_len == w.orig_len, "packet {i} is not input packet {}", i % want.len());
    }
}

#[test]
fn snaplen_truncates_and_keeps_the_original_length() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.pcap");
    let input = fixture("frames.pcap");
    capture(&["--vdev", &vdev_pcap(&[&input]), "-s", "64", "--micro", "-w", out.to_str().unwrap()]).ok();
    let got = read_pcap(&out);
    // Oracle: editcap truncating the input to the same snaplen.
    let oracle = dir.path().join("o.pcap");
    let st = std::process::Command::new("editcap")
        .args(["-F", "pcap", "-s", "64"])
        .arg(&input)
        .arg(&oracle)
        .status()
        .unwrap();
    assert!(st.success());
    let want = read_pcap(&oracle);
    assert_eq!(datas(&got), datas(&want));
    let all = all_frames();
    assert!(got.iter().zip(&all).all(|(g, a)| g.orig_len as usize == a.data.len()));
    assert!(got.iter().any(|g| g.orig_len == 9000 && g.data.len() == 64));
    let info = std::process::Command::new("capinfos").arg("-M").arg(&out).output().unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("microseconds"));
}

fn concat(files: &[std::path::PathBuf]) -> Vec<Pkt> {
    files.iter().flat_map(|f| read_pcap(f)).collect()
}

#[test]
fn rotation_by_packets_and_bytes_splits_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let all = all_frames();
    // By packets: 10 per file.
    let out = dir.path().join("p.pcap");
    capture(&["--vdev", &vdev_pcap(&[&input]), "--rotate-packets", "10", "-w", out.to_str().unwrap()]).ok();
    let files = files_ending(dir.path(), ".pcap");
    assert_eq!(files.len(), all.len().div_ceil(10));
    assert!(files[0].ends_with("p_00000.pcap"));
    assert!(files.iter().all(|f| read_pcap(f).len() <= 10));
    assert_eq!(datas(&concat(&files)), datas(&all));
    // mergecap -a (concatenate) agrees.
    let merged = dir.path().join("merged.cap");
    let st = std::process::Command::new("mergecap")
        .arg("-a")
        .arg("-F")
        .arg("pcap")
        .arg("-w")
        .arg(&merged)
        .args(&files)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(datas(&read_pcap(&merged)), datas(&all));

    // By bytes: no file over 12000 bytes except one holding a single bigger record.
    let bdir = tempfile::tempdir().unwrap();
    let out = bdir.path().join("b.pcap");
    capture(&["--vdev", &vdev_pcap(&[&input]), "--rotate-bytes", "12000", "-w", out.to_str().unwrap()]).ok();
    let files = files_ending(bdir.path(), ".pcap");
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 12000 || read_pcap(f).len() == 1, "{}: {len} bytes", f.display());
    }
    assert_eq!(datas(&concat(&files)), datas(&all));
    assert!(files_ending(bdir.path(), ".partial").is_empty());
}

/// `-w` into a FIFO streams the capture to a reader (tcpdump here) and `-w /dev/null` keeps the
/// device: both are written in place, never replaced by a renamed file.
#[test]
fn fifos_and_devices_are_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("live.pcap");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let copy = dir.path().join("copy.pcap");
    let mut reader = std::process::Command::new("tcpdump")
        .arg("-r")
        .arg(&fifo)
        .arg("-w")
        .arg(&copy)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let input = fixture("frames.pcap");
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-w", fifo.to_str().unwrap()]);
    // Had pcapd not written into the FIFO (say, renamed a file over it), tcpdump would wait for
    // a writer forever: give it 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = reader.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = reader.kill();
            panic!("tcpdump got no capture through the FIFO; pcapd said:\n{}", r.stderr);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    r.ok();
    assert!(status.success());
    assert_eq!(datas(&read_pcap(&copy)), datas(&all_frames()), "tcpdump read every frame from the FIFO");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::metadata(&fifo).unwrap().file_type()));

    // A reader that goes away: the capture stops at once with the error, not at --duration.
    let reader = std::process::Command::new("head")
        .args(["-c", "1000"])
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endless = format!("{},infinite_rx=1", vdev_pcap(&[&small_frames(dir.path())]));
    let t = std::time::Instant::now();
    let r = capture(&["--vdev", &endless, "--duration", "60", "-w", fifo.to_str().unwrap()]);
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "stopped after {:?}", t.elapsed());
    assert_clean_failure(&r, "Broken pipe", dir.path());
    reader.wait_with_output().unwrap();

    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-w", "/dev/null"]);
    r.ok();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&std::fs::metadata("/dev/null").unwrap().file_type()));
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "--rotate-packets", "5", "-w", "/dev/null"]);
    assert_clean_failure(&r, "cannot be rotated", dir.path());
    let r = capture(&["--vdev", &vdev_pcap(&[&input]), "-w", dir.path().to_str().unwrap()]);
    assert_clean_failure(&r, "is a directory", dir.path());
}

/// A config file may carry only settings (here the writer's) when `--vdev` names the device.
#[test]
fn a_config_without_ports_serves_a_capture_from_vdev() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("writer-only.toml");
    std::fs::write(&cfg, "[writer]\nrotate_packets = 10\ntimestamp_precision = \"us\"\n").unwrap();
    let out = dir.path().join("c.pcap");
    let input = fixture("frames.pcap");
    let args = ["--config", cfg.to_str().unwrap(), "--vdev", &vdev_pcap(&[&input]), "-w", out.to_str().unwrap()];
    // The config's DPDK section is absent: the EAL arguments of a config-less capture apply.
    let eal = "--no-huge -m 512 --no-shconf --no-pci --file-prefix pcapd-cfgonly";
    capture(&[&args[..], &["--eal-args", eal]].concat()).ok();
    let files = files_ending(dir.path(), ".pcap");
    assert_eq!(files.len(), all_frames().len().div_ceil(10), "rotate_packets from the file: {files:?}");
    assert_eq!(datas(&concat(&files)), datas(&all_frames()));
    let magic = std::fs::read(&files[0]).unwrap()[..4].to_vec();
    assert_eq!(magic, 0xa1b2c3d4u32.to_le_bytes(), "microsecond files, as the config says");
}

#[test]
fn rotation_by_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    let out = dir.path().join("t.pcap");
    let r = capture(&[
        "--vdev",
        &format!("{},infinite_rx=1", vdev_pcap(&[&input])),
        "--duration",
        "2.5",
        "-s",
        "96",
        "--rotate-seconds",
        "1",
        "-w",
        out.to_str().unwrap(),
    ]);
    r.ok();
    let files = files_ending(dir.path(), ".pcap");
    assert!((2..=4).contains(&files.len()), "{files:?}");
    let mut total = 0;
    for f in &files {
        let p = read_pcap(f);
        assert!(!p.is_empty());
        let span = p.last().unwrap().ts_ns - p[0].ts_ns;
        assert!(span < 1_200_000_000, "{}: spans {span} ns", f.display());
        total += p.len() as u64;
    }
    assert_eq!(total, r.summary("written"));
}

#[test]
fn two_rx_queues_on_one_core_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.pcap");
    let (even, odd) = (fixture("frames_even.pcap"), fixture("frames_odd.pcap"));
    let r = capture(&["--vdev", &vdev_pcap(&[&even, &odd]), "-w", out.to_str().unwrap()]);
    r.ok();
    let mut got = datas(&read_pcap(&out));
    let mut want = datas(&all_frames());
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

fn assert_clean_failure(r: &Run, culprit: &str, dir: &Path) {
    assert!((1..=2).contains(&r.code), "exit code {} for {culprit}:\n{}", r.code, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("pcapd: ") && last.contains(culprit), "error line {last:?} does not name {culprit:?}");
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains(".partial")), "{left:?}");
}

#[test]
fn bad_input_is_one_clear_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.pcap");
    let o = out.to_str().unwrap();
    let input = fixture("frames.pcap");
    let v = vdev_pcap(&[&input]);

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[dpdk]\nrx_cores = [1]\nbogus_key = 1\n[[port]]\ndevice = \"net_null0\"\n").unwrap();
    let r = capture(&["--config", cfg.to_str().unwrap(), "-w", o]);
    assert_clean_failure(&r, "bogus_key", dir.path());
    let chk = pcapd().arg("check-config").arg(&cfg).output().unwrap();
    assert_eq!(chk.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&chk.stderr).contains("unknown field `bogus_key`"));

    let r = capture(&["--vdev", "net_pcap0,rx_pcap=/nonexistent/in.pcap", "-w", o]);
    assert_clean_failure(&r, "net_pcap0", dir.path());
    let r = capture(&["--vdev", &v, "-i", "net_pcap9", "-w", o]);
    assert_clean_failure(&r, "net_pcap9", dir.path());
    let r = capture(&["--vdev", &v, "--rx-cores", "64", "-w", o]);
    assert_clean_failure(&r, "dpdk.rx_cores", dir.path());
    let r = capture(&["--vdev", &v, "--filter", r#"{"source_port": 80.5}"#, "-w", o]);
    assert_clean_failure(&r, "filter_v1.source_port", dir.path());
    let r = capture(&["--vdev", &v, "--filter", "{not json", "-w", o]);
    assert_clean_failure(&r, "invalid JSON", dir.path());
    let r = capture(&["--vdev", &v, "-w", "/nonexistent/dir/x.pcap"]);
    assert_clean_failure(&r, "/nonexistent/dir/x.pcap", dir.path());
    assert!(!out.exists());
}

/// Regression: the writer drained records before it had processed the command opening their
/// file and freed them silently (hundreds of packets lost at the start of a fast capture).
#[test]
fn first_packets_of_a_fast_source_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    let file = read_pcap(&input);
    let out = dir.path().join("fast.pcap");
    for _ in 0..3 {
        let r = capture(&[
            "--vdev",
            &format!("{},infinite_rx=1", vdev_pcap(&[&input])),
            "-c",
            "2000",
            "-w",
            out.to_str().unwrap(),
        ]);
        r.ok();
        assert_eq!(r.summary("matched"), 2000);
        assert_eq!(r.summary("written"), 2000);
        let got = datas(&read_pcap(&out));
        let want: Vec<Vec<u8>> = file.iter().cycle().take(2000).map(|p| p.data.clone()).collect();
        assert_eq!(got.len(), 2000);
        assert!(got == want, "the replay, in order, from its first packet");
    }
}

#[test]
fn sigint_and_sigterm_stop_with_valid_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    for sig in ["INT", "TERM"] {
        let out = dir.path().join(format!("sig-{sig}.pcap"));
        let _g = dpdk_lock();
        let child = pcapd()
            .args([
                "capture",
                "--vdev",
                &format!("{},infinite_rx=1", vdev_pcap(&[&input])),
                "--rotate-packets",
                "100000",
                "-w",
            ])
            .arg(&out)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        common::appliance::send_signal(child.id(), sig);
        let res = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(res.status.success(), "SIG{sig}: {stderr}");
        assert!(stderr.contains("stopped: interrupted"), "{stderr}");
        // Every file is whole (the reader is strict) and together they hold what was written.
        let files: Vec<_> = files_ending(dir.path(), ".pcap")
            .into_iter()
            .filter(|f| f.to_string_lossy().contains(&format!("sig-{sig}_")))
            .collect();
        assert!(!files.is_empty());
        let total: usize = files.iter().map(|f| read_pcap(f).len()).sum();
        let summary = Run { code: 0, stdout: String::new(), stderr: stderr.into_owned() };
        assert_eq!(total as u64, summary.summary("written"));
        assert!(files_ending(dir.path(), ".partial").is_empty());
    }
}
