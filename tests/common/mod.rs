//! Helpers for integration tests that start real DPDK processes and check their output with
//! independent oracles (tcpdump, tshark, capinfos, the pcap-file reader).
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// DPDK processes must not run in parallel on a 2-core machine: tests hold this while one runs.
static DPDK: Mutex<()> = Mutex::new(());

/// Held while a test runs DPDK processes: the in-process mutex for the test threads of one
/// binary, and an exclusive `flock` on a file shared by every test binary and checkout on the
/// machine (two `cargo test` runs must not poll at once either). The file lock is released when
/// the guard drops (the descriptor closes) or the process dies.
pub struct DpdkLock {
    _file: pcapd::dpdk::testing::Lock,
    _in_process: MutexGuard<'static, ()>,
}

pub fn dpdk_lock() -> DpdkLock {
    let in_process = DPDK.lock().unwrap_or_else(|e| e.into_inner());
    DpdkLock { _file: pcapd::dpdk::testing::lock(), _in_process: in_process }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Playwright script `tests/web/<script>` with `args` and the artifacts directory
/// (screenshots) last; returns the JSON summary it prints last.
pub fn page_script(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/web").join(script))
        .args(args)
        .arg(root().join("target/web-artifacts"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn pcapd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pcapd"));
    c.current_dir(root());
    c
}

/// One packet as a pcap reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pkt {
    pub data: Vec<u8>,
    pub orig_len: u32,
    pub ts_ns: u128,
}

/// Reads a classic pcap file (either byte order, µs or ns). Written here, independently of
/// pcapd's writer, and strict: a short record or trailing garbage fails the test.
pub fn read_pcap(path: &Path) -> Vec<Pkt> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 24, "{}: no pcap header", path.display());
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2c3d4 => (true, false),
        0xa1b23c4d => (true, true),
        0xd4c3b2a1 => (false, false),
        0x4d3cb2a1 => (false, true),
        m => panic!("{}: bad magic {m:#x}", path.display()),
    };
    let u32at = |at: usize| {
        let a: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32at(20), 1, "{}: link type is not Ethernet", path.display());
    let mut at = 24;
    let mut out = Vec::new();
    while at < b.len() {
        assert!(b.len() - at >= 16, "{}: short record header at {at}", path.display());
        let (sec, frac, caplen, orig_len) = (u32at(at), u32at(at + 4), u32at(at + 8) as usize, u32at(at + 12));
        assert!(b.len() - at - 16 >= caplen, "{}: short record at {at}", path.display());
        assert!(caplen as u32 <= orig_len, "{}: caplen > orig_len at {at}", path.display());
        let ts_ns = u128::from(sec) * 1_000_000_000 + u128::from(frac) * if nanos { 1 } else { 1000 };
        out.push(Pkt { data: b[at + 16..at + 16 + caplen].to_vec(), orig_len, ts_ns });
        at += 16 + caplen;
    }
    out
}

/// The fixture without frames above 2000 bytes: net_pcap's `infinite_rx` cannot replay
/// multi-segment (jumbo) frames.
pub fn small_frames(dir: &Path) -> PathBuf {
    let out = dir.join("small-frames.cap");
    run_ok(Command::new("tcpdump").arg("-r").arg(fixture("frames.pcap")).arg("-w").arg(&out).arg("less 2000"));
    out
}

pub fn datas(p: &[Pkt]) -> Vec<Vec<u8>> {
    p.iter().map(|p| p.data.clone()).collect()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `tcpdump -r input -w out EXPR`: the packets a BPF expression selects.
pub fn tcpdump(input: &Path, expr: &str, dir: &Path) -> Vec<Pkt> {
    let out = dir.join("tcpdump-oracle.pcap");
    run_ok(Command::new("tcpdump").arg("-r").arg(input).arg("-w").arg(&out).arg(expr));
    read_pcap(&out)
}

/// `tshark -r input -Y FILTER -w out` with IP reassembly off: a display-filter oracle.
pub fn tshark(input: &Path, display_filter: &str, dir: &Path) -> Vec<Pkt> {
    let out = dir.join("tshark-oracle.pcap");
    run_ok(
        Command::new("tshark")
            .args(["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE", "-F", "pcap"])
            .arg("-r")
            .arg(input)
            .arg("-Y")
            .arg(display_filter)
            .arg("-w")
            .arg(&out),
    );
    read_pcap(&out)
}

/// Result of one `pcapd capture` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "pcapd failed:\n{}", self.stderr);
        self
    }

    /// A count from the summary, e.g. `field("written")`.
    pub fn summary(&self, what: &str) -> u64 {
        for line in self.stderr.lines() {
            let words: Vec<&str> = line.split([' ', ',', '(']).filter(|w| !w.is_empty()).collect();
            for w in words.windows(2) {
                if w[1] == what {
                    if let Ok(n) = w[0].parse() {
                        return n;
                    }
                }
            }
        }
        panic!("no {what:?} in summary:\n{}", self.stderr)
    }
}

pub fn capture(args: &[&str]) -> Run {
    let _g = dpdk_lock();
    let out = pcapd().arg("capture").args(args).output().expect("run pcapd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn vdev_pcap(files: &[&Path]) -> String {
    let mut s = String::from("net_pcap0");
    for f in files {
        s.push_str(&format!(",rx_pcap={}", f.display()));
    }
    s
}

/// Files in `dir` whose names end with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}
pub mod appliance;
pub mod fleet;
pub mod moto;
pub mod veth;

/// A small tmpfs mounted on `dir` (created if missing), unmounted on drop. `None` (the test
/// should print why and skip) when not root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(st.unwrap().success(), "mount -t tmpfs on {}", dir.display());
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system with `name` until a write fails (ENOSPC); returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&chunk[..4096]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
