//! `pcapd doctor` (also `check-config --deep`): what the config asks of this machine, checked
//! without starting DPDK. One line per check: `OK`, `WARN` (pcapd starts, but something an
//! operator should know) or `FAIL` (pcapd would not start, or would fail later), with the
//! reason. Read-only, except for a probe file created and removed in the data dir.
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{device_kind, Config, DeviceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub level: Level,
    pub what: String,
    pub reason: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = match self.level {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{l} {}: {}", self.what, self.reason)
    }
}

fn check(level: Level, what: impl Into<String>, reason: impl Into<String>) -> Check {
    Check { level, what: what.into(), reason: reason.into() }
}

/// Every check, in the order an operator fixes things. `cfg` is a loaded (valid) config.
pub fn run(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    data_dir(cfg, &mut out);
    listen(cfg, &mut out);
    hugepages(cfg, &mut out);
    ports(cfg, &mut out);
    for w in cfg.warnings() {
        out.push(check(Level::Warn, "config", w));
    }
    out
}

fn data_dir(cfg: &Config, out: &mut Vec<Check>) {
    let dir = &cfg.data.dir;
    let what = "data.dir";
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            out.push(check(Level::Fail, what, format!("{} exists and is not a directory", dir.display())));
            return;
        }
        Ok(_) => match probe_writable(dir) {
            Ok(()) => out.push(check(Level::Ok, what, format!("{} exists and is writable", dir.display()))),
            Err(e) => {
                out.push(check(Level::Fail, what, format!("{} is not writable: {e}", dir.display())));
                return;
            }
        },
        Err(_) => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                out.push(check(
                    Level::Fail,
                    what,
                    format!("{} does not exist, nor does its parent {}", dir.display(), parent.display()),
                ));
                return;
            }
            match probe_writable(parent) {
                Ok(()) => out.push(check(
                    Level::Warn,
                    what,
                    format!("{} does not exist yet; pcapd will create it", dir.display()),
                )),
                Err(e) => {
                    out.push(check(
                        Level::Fail,
                        what,
                        format!("{} does not exist and cannot be created in {}: {e}", dir.display(), parent.display()),
                    ));
                    return;
                }
            }
        }
    }
    free_space(cfg, out);
    lock(dir, out);
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".pcapd-doctor-{}", std::process::id()));
    fs::write(&probe, b"probe")?;
    fs::remove_file(&probe)
}

/// The nearest existing directory at or above `p`.
fn existing(p: &Path) -> PathBuf {
    p.ancestors().find(|a| a.is_dir()).unwrap_or(Path::new("/")).to_path_buf()
}

/// Bytes available to this (unprivileged-or-not) process on the file system holding `p`.
/// Bytes of the regular files under `dir` (0 when it does not exist).
fn du(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn free_space(cfg: &Config, out: &mut Vec<Check>) {
    let what = "data.dir free space";
    let at = existing(&cfg.data.dir);
    let avail = match crate::datadir::free_bytes(&at) {
        Ok(a) => a,
        Err(e) => {
            out.push(check(Level::Warn, what, format!("cannot stat the file system of {}: {e}", at.display())));
            return;
        }
    };
    // What the sample store already holds is on disk; only its growth needs room.
    let growth = cfg.samples.max_bytes.saturating_sub(du(&cfg.data.dir.join("samples")));
    let headroom = cfg.samples.min_free_bytes;
    let need = growth.saturating_add(headroom);
    let msg = format!(
        "{} available; the sample store may grow by {} (samples.max_bytes) and keeps {} free (samples.min_free_bytes)",
        gib(avail),
        gib(growth),
        gib(headroom)
    );
    let level = if avail < growth {
        Level::Fail
    } else if avail < need {
        Level::Warn
    } else {
        Level::Ok
    };
    out.push(check(level, what, msg));
}

/// `<data dir>/pcapd.lock`: held (flock) by a running appliance, which owns the data dir.
fn lock(dir: &Path, out: &mut Vec<Check>) {
    let what = "data.dir lock";
    let path = dir.join("pcapd.lock");
    let Ok(f) = fs::OpenOptions::new().read(true).write(true).open(&path) else {
        out.push(check(Level::Ok, what, "no pcapd.lock: no appliance uses this data dir"));
        return;
    };
    let pid = fs::read_to_string(&path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let by = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            out.push(check(
                Level::Ok,
                what,
                format!("{} is not held{by}: left by a stopped appliance", path.display()),
            ));
        }
        Err(std::fs::TryLockError::WouldBlock) => out.push(check(
            Level::Fail,
            what,
            format!("{} is held by a running pcapd{by}; it owns this data dir", path.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            out.push(check(Level::Warn, what, format!("cannot lock {}: {e}", path.display())))
        }
    }
}

fn listen(cfg: &Config, out: &mut Vec<Check>) {
    let what = "api.listen";
    match std::net::TcpListener::bind(&cfg.api.listen) {
        Ok(_) => out.push(check(Level::Ok, what, format!("{} is free", cfg.api.listen))),
        Err(e) => out.push(check(Level::Fail, what, format!("cannot bind {}: {e}", cfg.api.listen))),
    }
}

/// Free hugepage memory in bytes, over every page size.
fn free_hugepage_bytes() -> u64 {
    let Ok(rd) = fs::read_dir("/sys/kernel/mm/hugepages") else { return 0 };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            let free: u64 = fs::read_to_string(e.path().join("free_hugepages")).ok()?.trim().parse().ok()?;
            Some(kb * 1024 * free)
        })
        .sum()
}

/// Megabytes the EAL arguments ask for (`-m N`, `--socket-mem a,b`), if any.
fn eal_memory_mb(args: &[String]) -> Option<u64> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = |opt: &str| a.strip_prefix(&format!("{opt}=")).map(str::to_string);
        let v = if a == "-m" || a == "--socket-mem" {
            it.next().cloned()
        } else {
            value("-m").or_else(|| value("--socket-mem"))
        };
        if let Some(v) = v {
            return Some(v.split(',').filter_map(|x| x.trim().parse::<u64>().ok()).sum());
        }
    }
    None
}

fn hugepages(cfg: &Config, out: &mut Vec<Check>) {
    let what = "hugepages";
    let args = &cfg.dpdk.eal_args;
    if args.iter().any(|a| a == "--no-huge") {
        out.push(check(Level::Ok, what, "not used (--no-huge in dpdk.eal_args)"));
        return;
    }
    let free = free_hugepage_bytes();
    match eal_memory_mb(args) {
        Some(mb) if free < mb << 20 => out.push(check(
            Level::Fail,
            what,
            format!("dpdk.eal_args ask for {mb} MiB, {} MiB of hugepages are free", free >> 20),
        )),
        Some(mb) => {
            out.push(check(Level::Ok, what, format!("{} MiB free, dpdk.eal_args ask for {mb} MiB", free >> 20)))
        }
        None if free == 0 => out.push(check(
            Level::Fail,
            what,
            "no free hugepages (reserve some, e.g. scripts/hugepages, or add --no-huge -m 512 to dpdk.eal_args)",
        )),
        None => out.push(check(Level::Ok, what, format!("{} MiB free", free >> 20))),
    }
}

/// `3b:00.0` → `0000:3b:00.0` (sysfs names).
fn pci_name(device: &str) -> String {
    if device.matches(':').count() == 1 {
        format!("0000:{}", device.to_ascii_lowercase())
    } else {
        device.to_ascii_lowercase()
    }
}

/// The NUMA node of CPU `cpu` (from its `nodeN` link in sysfs).
fn cpu_node(cpu: u32) -> Option<i64> {
    fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}"))
        .ok()?
        .flatten()
        .find_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
}

fn ports(cfg: &Config, out: &mut Vec<Check>) {
    for (i, p) in cfg.ports.iter().enumerate() {
        let what = format!("port[{i}] {}", p.device);
        match device_kind(&p.device) {
            Some(DeviceKind::Pci) => pci_port(cfg, &what, &p.device, out),
            _ => vdev_port(&what, p, out),
        }
    }
}

fn pci_port(cfg: &Config, what: &str, device: &str, out: &mut Vec<Check>) {
    let sys = PathBuf::from("/sys/bus/pci/devices").join(pci_name(device));
    if !sys.exists() {
        out.push(check(Level::Fail, what, format!("no such PCI device ({} does not exist)", sys.display())));
        return;
    }
    let driver =
        fs::read_link(sys.join("driver")).ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let dpdk_ready = matches!(driver.as_deref(), Some("vfio-pci" | "uio_pci_generic" | "igb_uio" | "mlx5_core"));
    let drv = driver.clone().unwrap_or_else(|| "none".to_string());
    out.push(check(
        if dpdk_ready { Level::Ok } else { Level::Fail },
        format!("{what} driver"),
        if dpdk_ready {
            format!("bound to {drv}")
        } else {
            format!("bound to {drv}; bind it to vfio-pci (scripts/bind-nic) for DPDK")
        },
    ));
    let node: Option<i64> = fs::read_to_string(sys.join("numa_node")).ok().and_then(|s| s.trim().parse().ok());
    match node {
        None | Some(-1) => out.push(check(Level::Ok, format!("{what} NUMA"), "no NUMA node (single-node machine)")),
        Some(n) => {
            let remote: Vec<u32> =
                cfg.dpdk.rx_cores.iter().copied().filter(|&c| cpu_node(c).is_some_and(|cn| cn != n)).collect();
            if remote.is_empty() {
                out.push(check(Level::Ok, format!("{what} NUMA"), format!("node {n}, as its RX cores")));
            } else {
                out.push(check(
                    Level::Warn,
                    format!("{what} NUMA"),
                    format!(
                        "node {n}, but RX cores {remote:?} are on another node (every packet crosses the interconnect)"
                    ),
                ));
            }
        }
    }
}

fn vdev_port(what: &str, p: &crate::config::PortConfig, out: &mut Vec<Check>) {
    let args = p.args.as_deref().unwrap_or("");
    let mut any = false;
    for kv in args.split(',') {
        let Some((k, v)) = kv.split_once('=') else { continue };
        let problem = match k {
            "rx_pcap" => fs::File::open(v).err().map(|e| format!("rx_pcap={v}: {e}")),
            "rx_iface" | "rx_iface_in" | "iface" if !p.device.starts_with("net_vhost") => {
                (!Path::new("/sys/class/net").join(v).exists()).then(|| format!("{k}={v}: no such network interface"))
            }
            "path" if p.device.starts_with("net_virtio_user") => {
                (!Path::new(v).exists()).then(|| format!("path={v}: does not exist (is the vhost-user peer up?)"))
            }
            _ => continue,
        };
        any = true;
        match problem {
            Some(why) => out.push(check(Level::Fail, what, why)),
            None => out.push(check(Level::Ok, what, format!("{k}={v} is there"))),
        }
    }
    if !any {
        out.push(check(Level::Ok, what, "a vdev with no files or interfaces to check"));
    }
}

/// The worst level of `checks` (OK when there are none).
pub fn worst(checks: &[Check]) -> Level {
    checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_memory() {
        let a = |s: &[&str]| eal_memory_mb(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["-m", "512"]), Some(512));
        assert_eq!(a(&["--socket-mem", "1024,1024"]), Some(2048));
        assert_eq!(a(&["--socket-mem=256"]), Some(256));
        assert_eq!(a(&["--in-memory"]), None);
        assert_eq!(pci_name("3B:00.0"), "0000:3b:00.0");
    }
}
