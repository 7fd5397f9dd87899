//! `pcapd capture` with tcpdump's habits (-w -, -r, -s 0, -C/-G/-W, -D, -q/-v, SIGUSR1,
//! --version, man pages and completions, exit codes), each checked against an independent
//! oracle: tcpdump itself, capinfos, the input file, git, pkg-config, man, bash.
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn all_frames() -> Vec<Pkt> {
    read_pcap(&fixture("frames.pcap"))
}

/// A child process killed (by its pid) and reaped when the test ends, however it ends.
struct Kid(std::process::Child);

impl Drop for Kid {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `kid` at most `limit`; panics (the guard kills it) if it is still running.
fn wait_for(kid: &mut Kid, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = kid.0.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "{what} still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects a child's stderr in the background, line by line.
fn collect(stream: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    let t = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (lines, t)
}

fn capinfos_count(f: &Path) -> u64 {
    let out = Command::new("capinfos").args(["-c", "-M"]).arg(f).output().unwrap();
    assert!(out.status.success(), "capinfos rejects {}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Number of packets")).unwrap_or_else(|| panic!("{text}"));
    line.split(':').nth(1).unwrap().trim().parse().unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The number after `word` in `line` ("123 written" → 123 for "written").
fn count_before(line: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = line.split([' ', ',', '(', ':']).filter(|w| !w.is_empty()).collect();
    words.windows(2).find(|w| w[1] == word).and_then(|w| w[0].parse().ok())
}

/// Regression: `pcapd capture -w - | head -c 100` ended with "Broken pipe" and exit 1; the
/// reader closing standard output ends the capture quietly, as for tcpdump.
#[test]
fn a_reader_closing_standard_output_ends_the_capture_quietly() {
    let _g = dpdk_lock();
    let dir = tempfile::tempdir().unwrap();
    // Frames that fit one mbuf (infinite_rx takes no multi-segment ones).
    let input = dir.path().join("small.pcap");
    let st = Command::new("tcpdump")
        .arg("-r")
        .arg(fixture("frames.pcap"))
        .arg("-w")
        .arg(&input)
        .arg("len <= 1500")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // A replay that lasts: the reader closes long before its end. PIPESTATUS[0]: pcapd's status.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} capture --vdev net_pcap0,rx_pcap={},infinite_rx=1 -w - 2>{} | head -c 100 >/dev/null; exit ${{PIPESTATUS[0]}}",
            env!("CARGO_BIN_EXE_pcapd"),
            input.display(),
            dir.path().join("err2").display()
        ))
        .status()
        .unwrap();
    let err = std::fs::read_to_string(dir.path().join("err2")).unwrap();
    assert_eq!(out.code(), Some(0), "pcapd's own exit status; stderr: {err}");
    assert!(!err.contains("Broken pipe") && !err.contains("failed"), "{err}");
}

#[test]
fn write_to_stdout_pipes_into_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let copy = dir.path().join("copy.pcap");
    let _g = dpdk_lock();
    let mut writer = Kid(pcapd()
        .args(["capture", "-r"])
        .arg(&input)
        .args(["-w", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let stdout = writer.0.stdout.take().unwrap();
    let (err, err_reader) = collect(writer.0.stderr.take().unwrap());
    let mut tcpdump = Kid(Command::new("tcpdump")
        .args(["-r", "-", "-w"])
        .arg(&copy)
        .stdin(Stdio::from(stdout))
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let st = wait_for(&mut writer, Duration::from_secs(30), "pcapd");
    err_reader.join().unwrap();
    let err = err.lock().unwrap().join("\n");
    assert!(st.success(), "{err}");
    assert!(wait_for(&mut tcpdump, Duration::from_secs(10), "tcpdump").success());
    assert_eq!(datas(&read_pcap(&copy)), datas(&all_frames()), "tcpdump read every frame from the pipe");
    // The summary and the log went to stderr.
    assert!(err.contains("stopped: end of input") && err.contains("standard output"), "{err}");
    assert!(!Path::new(&common::root()).join("-").exists(), "no file named '-'");

    // Standard output holds the capture and nothing else: a strict reader takes it whole.
    let out = dir.path().join("stdout.pcap");
    let file = std::fs::File::create(&out).unwrap();
    let st = pcapd().args(["capture", "-q", "-r"]).arg(&input).args(["-w", "-"]).stdout(file).status().unwrap();
    assert!(st.success());
    assert_eq!(datas(&read_pcap(&out)), datas(&all_frames()));
}

#[test]
fn read_flag_is_the_net_pcap_shorthand_and_refuses_what_is_not_a_pcap() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.pcap");
    let r = capture(&["-r", fixture("frames_odd.pcap").to_str().unwrap(), "-w", out.to_str().unwrap()]);
    r.ok();
    assert_eq!(datas(&read_pcap(&out)), datas(&read_pcap(&fixture("frames_odd.pcap"))));
    std::fs::remove_file(&out).unwrap();

    let not_pcap = dir.path().join("notes.txt");
    std::fs::write(&not_pcap, "hello, not a capture\n").unwrap();
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pcap");
    let stdin = std::path::PathBuf::from("-");
    for (file, why) in [
        (&stdin, "standard input is not supported"),
        (&missing, "No such file"),
        (&not_pcap, "not a pcap file"),
        (&empty, "not a pcap file"),
        (&dir.path().to_path_buf(), "not a regular file"),
    ] {
        let r = capture(&["-r", file.to_str().unwrap(), "-w", out.to_str().unwrap()]);
        assert_eq!(r.code, 2, "-r {}: {}", file.display(), r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
        assert!(r.stderr.starts_with(&format!("pcapd: -r {}: ", file.display())), "{}", r.stderr);
        assert!(r.stderr.contains(why), "{}", r.stderr);
    }
    assert_eq!(names_in(dir.path()), ["empty.pcap", "notes.txt"], "nothing written");
}

#[test]
fn snaplen_zero_means_whole_packets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s0.pcap");
    capture(&["-r", fixture("frames.pcap").to_str().unwrap(), "-s", "0", "-w", out.to_str().unwrap()]).ok();
    let info = Command::new("capinfos").arg("-l").arg(&out).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("262144"), "snapshot length 262144, as tcpdump -s 0: {info}");
    let got = read_pcap(&out);
    assert_eq!(datas(&got), datas(&all_frames()));
    assert!(got.iter().any(|p| p.data.len() == 9000), "the jumbo frame is whole");
}

/// tcpdump drops privileges to user `tcpdump` before opening savefiles: keep ours.
fn tcpdump_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `-C` (and `-C -W`) against tcpdump doing the same on the same input: the same file names,
/// each holding the same packets in the same order.
#[test]
fn size_rotation_and_the_ring_match_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    // About 4 MB: frames.pcap a hundred times (mergecap -a concatenates).
    let big = dir.path().join("big.pcap");
    let st = Command::new("mergecap")
        .args(["-a", "-F", "pcap", "-w"])
        .arg(&big)
        .args(std::iter::repeat_n(fixture("frames.pcap"), 100))
        .status()
        .unwrap();
    assert!(st.success());
    for flags in [&["-C", "1"][..], &["-C", "1", "-W", "3"], &["-C", "1", "-W", "11"]] {
        let (want, got) = (dir.path().join("tcpdump"), dir.path().join("pcapd"));
        for d in [&want, &got] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir(d).unwrap();
        }
        let st = Command::new("tcpdump")
            .args(["-Z", &tcpdump_user(), "-r"])
            .arg(&big)
            .arg("-w")
            .arg(want.join("ring"))
            .args(flags)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let out = got.join("ring");
        let r = capture(&[&["-r", big.to_str().unwrap(), "-w", out.to_str().unwrap()][..], flags].concat());
        r.ok();
        let names = names_in(&want);
        assert!(names.len() >= 3, "{flags:?}: tcpdump wrote {names:?}");
        assert_eq!(names_in(&got), names, "{flags:?}: the same file names as tcpdump");
        for n in &names {
            let (w, g) = (read_pcap(&want.join(n)), read_pcap(&got.join(n)));
            assert_eq!(datas(&g), datas(&w), "{flags:?}: {n} holds what tcpdump's {n} holds");
            assert_eq!(capinfos_count(&got.join(n)), w.len() as u64);
        }
    }
}

/// `-G 1 -W 3` with a strftime name: three files named by `date` for the second each was
/// opened, each holding a second of the capture, then pcapd stops with status 0 (tcpdump exits
/// when it reaches the file limit).
#[test]
fn time_rotation_names_files_by_strftime_and_stops_after_w_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    let files = dir.path().join("g");
    std::fs::create_dir(&files).unwrap();
    const PATTERN: &str = "cap-%Y%m%d-%H%M%S.pcap";
    let t = Instant::now();
    let r = capture(&[
        "--vdev",
        &format!("{},infinite_rx=1", vdev_pcap(&[&input])),
        // ICMP only (a few per replay of the file) and short: small files.
        "--filter",
        r#"{"protocol":1}"#,
        "-s",
        "64",
        "-G",
        "1",
        "-W",
        "3",
        "-w",
        files.join(PATTERN).to_str().unwrap(),
    ]);
    r.ok();
    assert!(t.elapsed() < Duration::from_secs(30), "stops by itself: {:?}", t.elapsed());
    let names = names_in(&files);
    assert_eq!(names.len(), 3, "{names:?}\n{}", r.stderr);
    let mut total = 0;
    let mut last_ts = 0;
    for (i, n) in names.iter().enumerate() {
        let p = read_pcap(&files.join(n));
        assert!(!p.is_empty(), "{n}");
        assert_eq!(capinfos_count(&files.join(n)), p.len() as u64);
        assert!(p[0].ts_ns >= last_ts, "files follow each other in time");
        last_ts = p.last().unwrap().ts_ns;
        let span = p.last().unwrap().ts_ns - p[0].ts_ns;
        assert!(span < 1_300_000_000, "{n}: spans {span} ns");
        // Named when opened: the first file before the capture starts, the others by the
        // writer as their first packet arrives (the same second, or the next on a busy machine).
        let first_sec = (p[0].ts_ns / 1_000_000_000) as i64;
        let date = |secs: i64| {
            let out = Command::new("date").arg("-d").arg(format!("@{secs}")).arg(format!("+{PATTERN}")).output();
            String::from_utf8_lossy(&out.unwrap().stdout).trim().to_string()
        };
        let ok: Vec<String> = if i == 0 {
            (first_sec - 10..=first_sec).map(date).collect()
        } else {
            (first_sec..=first_sec + 2).map(date).collect()
        };
        assert!(ok.contains(n), "{n}: first packet at {first_sec} s, expected one of {ok:?}");
        total += p.len() as u64;
    }
    assert_eq!(total, r.summary("written"));
}

/// SIGUSR1 prints the statistics and the capture goes on; SIGTERM then ends it with a valid file.
#[test]
fn sigusr1_prints_statistics_and_the_capture_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    let out = dir.path().join("usr1.pcap");
    let _g = dpdk_lock();
    let mut kid = Kid(pcapd()
        .args(["capture", "--vdev", &format!("{},infinite_rx=1", vdev_pcap(&[&input]))])
        .args(["--filter", r#"{"protocol":17}"#, "-s", "64", "-w"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let (err, reader) = collect(kid.0.stderr.take().unwrap());
    let pid = kid.0.id();
    std::thread::sleep(Duration::from_millis(1500));
    let stats_line = || err.lock().unwrap().iter().find(|l| l.contains("statistics:")).cloned();
    for _ in 0..2 {
        common::appliance::send_signal(pid, "USR1");
        std::thread::sleep(Duration::from_millis(700));
    }
    let line = stats_line().unwrap_or_else(|| panic!("no statistics line:\n{}", err.lock().unwrap().join("\n")));
    assert!(kid.0.try_wait().unwrap().is_none(), "pcapd still runs after SIGUSR1");
    let stats_count = err.lock().unwrap().iter().filter(|l| l.contains("statistics:")).count();
    assert_eq!(stats_count, 2, "one line per signal");
    let written_then = count_before(&line, "written").unwrap_or_else(|| panic!("{line}"));
    assert!(written_then > 0, "{line}");
    assert!(count_before(&line, "packets").is_some() && line.contains(" packets received, "), "{line}");
    assert!(line.contains("packets/s"), "{line}");
    common::appliance::send_signal(pid, "TERM");
    let st = wait_for(&mut kid, Duration::from_secs(30), "pcapd after SIGTERM");
    reader.join().unwrap();
    let err = err.lock().unwrap().join("\n");
    assert!(st.success(), "{err}");
    assert!(err.contains("stopped: interrupted"), "{err}");
    let in_file = capinfos_count(&out);
    assert!(in_file >= written_then, "the file holds at least what the statistics said: {in_file} < {written_then}");
    assert_eq!(in_file, read_pcap(&out).len() as u64);
    assert_eq!(names_in(dir.path()), ["small-frames.cap", "usr1.pcap"], "no .partial left");
}

/// With -v (stderr not a terminal) a status line each second; with -q nothing but the file.
#[test]
fn verbose_prints_a_status_line_each_second_and_quiet_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    let out = dir.path().join("v.pcap");
    let endless = format!("{},infinite_rx=1", vdev_pcap(&[&input]));
    let args = ["--vdev", &endless, "--filter", r#"{"protocol":17}"#, "-s", "64", "--duration", "2.6"];
    let r = capture(&[&args[..], &["-v", "-w", out.to_str().unwrap()]].concat());
    r.ok();
    let status: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("pcapd: ") && l.ends_with("packets/s")).collect();
    assert!((2..=3).contains(&status.len()), "one a second:\n{}", r.stderr);
    let last_written = count_before(status.last().unwrap(), "written").unwrap();
    assert!(last_written > 0 && capinfos_count(&out) >= last_written, "{status:?}");

    let q = dir.path().join("q.pcap");
    let r = capture(&["-q", "-r", fixture("frames.pcap").to_str().unwrap(), "-w", q.to_str().unwrap()]);
    r.ok();
    assert_eq!(r.stderr, "", "quiet");
    assert_eq!(datas(&read_pcap(&q)), datas(&all_frames()));
}

/// On a terminal (a pty from script(1)), one status line rewritten in place each second, and
/// the summary after it on a clean line.
#[test]
fn on_a_terminal_the_status_line_is_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_frames(dir.path());
    let out = dir.path().join("tty.pcap");
    let cmd = format!(
        "{} capture --vdev {},infinite_rx=1 --filter '{{\"protocol\":17}}' -s 64 --duration 2.6 -w {} >/dev/null",
        env!("CARGO_BIN_EXE_pcapd"),
        vdev_pcap(&[&input]),
        out.display()
    );
    let _g = dpdk_lock();
    let mut kid = Kid(Command::new("script")
        .args(["-q", "-f", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let mut stdout = kid.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let st = wait_for(&mut kid, Duration::from_secs(60), "pcapd on a pty");
    let screen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(st.success(), "{screen}");
    let updates: Vec<&str> = screen.split("\r\x1b[K").skip(1).collect();
    let status: Vec<&&str> = updates.iter().filter(|u| u.ends_with("packets/s")).collect();
    assert!((2..=3).contains(&status.len()), "one line a second, rewritten in place: {updates:?}");
    assert!(status.iter().all(|u| !u.contains('\n')), "no newline after a status line: {updates:?}");
    let last = updates.last().unwrap();
    assert!(last.contains("packets received") && last.contains("stopped: duration elapsed"), "{last:?}");
    assert!(capinfos_count(&out) >= count_before(status.last().unwrap(), "written").unwrap());
}

#[test]
fn list_interfaces_shows_the_ports_dpdk_opens_and_kernel_interfaces() {
    let input = fixture("frames.pcap");
    let r = capture(&["-D", "--vdev", "net_null0", "--vdev", &vdev_pcap(&[&input])]);
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].starts_with("1.net_null0 ") && lines[0].contains("net_null"), "{}", r.stdout);
    assert!(lines[1].starts_with("2.net_pcap0 ") && lines[1].contains("net_pcap"), "{}", r.stdout);
    // The hint names every kernel interface, as `ip link` lists them.
    let ip = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let ip = String::from_utf8_lossy(&ip.stdout);
    let hint = r.stderr.lines().find(|l| l.contains("net_af_packet0,iface=")).unwrap_or_else(|| panic!("{}", r.stderr));
    for iface in ip.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap()) {
        assert!(hint.contains(iface), "{iface} missing from {hint}");
    }
}

#[test]
fn version_names_the_git_revision_and_dpdk() {
    let out = pcapd().arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    let git = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(common::root()).output().unwrap();
    let git = String::from_utf8_lossy(&git.stdout).trim().to_string();
    let dpdk = Command::new("pkg-config").args(["--modversion", "libdpdk"]).output().unwrap();
    let dpdk = String::from_utf8_lossy(&dpdk.stdout).trim().to_string();
    assert!(v.starts_with(&format!("pcapd {} ", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(!git.is_empty() && v.contains(&format!("git {git}")), "{v} (HEAD is {git})");
    assert!(!dpdk.is_empty() && v.contains(&format!("DPDK {dpdk}")), "{v} (pkg-config says {dpdk})");
}

#[test]
fn gen_docs_writes_man_pages_and_completions_with_the_capture_flags() {
    let dir = tempfile::tempdir().unwrap();
    let st = pcapd().arg("gen-docs").arg(dir.path()).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
    // man renders the page; the capture flags are in it.
    let page: PathBuf = dir.path().join("man/pcapd-capture.1");
    let man = Command::new("man").arg("-l").arg(&page).env("MANPAGER", "cat").env("MANWIDTH", "120").output();
    let man = man.unwrap();
    assert!(man.status.success(), "{}", String::from_utf8_lossy(&man.stderr));
    let text = String::from_utf8_lossy(&man.stdout).replace("\u{2010}", "-").replace('\u{8}', "");
    for flag in ["-w", "-r", "-C", "-G", "-W", "-D, --list-interfaces", "-q, --quiet", "--vdev", "strftime"] {
        assert!(text.contains(flag), "{flag} missing from the man page:\n{text}");
    }
    assert!(dir.path().join("man/pcapd.1").exists());
    // bash completes `pcapd capture -` with the capture flags, and offers no hidden command.
    let script = format!(
        "source {}; COMP_WORDS=(pcapd capture -); COMP_CWORD=2; COMP_LINE='pcapd capture -'; COMP_POINT=15; \
         _pcapd pcapd - capture; printf '%s\\n' \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(pcapd ''); COMP_CWORD=1; COMPREPLY=(); _pcapd pcapd '' pcapd; printf 'top %s\\n' \"${{COMPREPLY[@]}}\"",
        dir.path().join("completions/pcapd.bash").display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offered: Vec<&str> = words.lines().collect();
    for flag in ["-w", "-r", "-C", "-G", "-W", "-D", "-q", "--list-interfaces", "--vdev"] {
        assert!(offered.contains(&flag), "bash does not complete {flag}: {offered:?}");
    }
    assert!(offered.contains(&"top capture") && !offered.contains(&"top gen-docs"), "{offered:?}");
    for f in ["_pcapd", "pcapd.fish"] {
        assert!(std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap().contains("list-interfaces"));
    }
}

/// Every kind of bad input is exit code 2: clap's usage errors, bad files, bad flag
/// combinations, bad values; pcapd's own errors in one line.
#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("frames.pcap");
    let (i, o) = (input.to_str().unwrap(), dir.path().join("x.pcap"));
    let o = o.to_str().unwrap();
    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[writer]\nbogus = 1\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // clap
        (vec!["-r", i, "--no-such-flag", "-w", o], "--no-such-flag"),
        (vec!["-r", i], "-w"),
        (vec!["-r", i, "-q", "-v", "-w", o], "--quiet"),
        (vec!["-r", i, "-C", "1", "--rotate-bytes", "10", "-w", o], "-C"),
        (vec!["-r", i, "--vdev", "net_null0", "-w", o], "-r"),
        (vec!["-r", i, "-c", "many", "-w", o], "-c"),
        // pcapd
        (vec!["-r", i, "-s", "262145", "-w", o], "-s 262145"),
        (vec!["-r", i, "-C", "0", "-w", o], "-C 0"),
        (vec!["-r", i, "-G", "0", "-w", o], "-G 0"),
        (vec!["-r", i, "-W", "3", "-w", o], "-W"),
        (vec!["-r", i, "-C", "1", "-W", "0", "-w", o], "-W 0"),
        (vec!["-r", i, "-G", "1", "-w", "/tmp/x-%Q.pcap"], "strftime"),
        (vec!["-r", i, "-C", "1", "-w", "-"], "cannot be rotated"),
        (vec!["-r", i, "-w", dir.path().to_str().unwrap()], "is a directory"),
        (vec!["-r", i, "-w", "/nonexistent/dir/x.pcap"], "/nonexistent/dir/x.pcap"),
        (vec!["-r", i, "--filter", "{not json", "-w", o], "--filter"),
        (vec!["-r", i, "--duration", "0", "-w", o], "--duration"),
        (vec!["--config", bad_cfg.to_str().unwrap(), "-r", i, "-w", o], "bogus"),
        (vec!["-r", i, "-i", "net_pcap7", "-w", o], "net_pcap7"),
        (vec!["--vdev", "net_pcap0,rx_pcap=/nonexistent.pcap", "-w", o], "net_pcap0"),
    ];
    let mut wrong = Vec::new();
    let global_v = pcapd().args(["-v", "capture", "-q", "-r", i, "-w", o]).output().unwrap();
    if global_v.status.code() != Some(2) {
        wrong.push(format!("pcapd -v capture -q: exit {:?}", global_v.status.code()));
    }
    for (args, culprit) in &cases {
        let r = capture(args);
        let own = r.stderr.lines().last().unwrap_or("").starts_with("pcapd: ");
        if r.code != 2 || !r.stderr.contains(culprit) || r.stderr.contains("panicked") {
            wrong.push(format!("{args:?}: exit {} (own message: {own})\n{}", r.code, r.stderr));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(names_in(dir.path()), ["bad.toml"], "nothing written");
}
