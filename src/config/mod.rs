//! The TOML configuration: strict (`deny_unknown_fields`), validated once by `validate`, whose
//! errors name the field path; then turned into runtime objects (EAL arguments, port setups).
//! Hot code never sees this module.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pcap::{Precision, RotatePolicy};

mod appliance;
mod fleet;
pub use appliance::*;
pub use fleet::*;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dpdk: DpdkConfig,
    /// Ports to receive from (`[[port]]`). At least one.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub writer: WriterConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub samples: SamplesConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Accounts served by the admin API (`[[account]]`), each with its credentials.
    #[serde(default, rename = "account")]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub upload: UploadConfig,
    /// Many appliances behind one API, coordinated by etcd; none: a single appliance.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkConfig {
    /// Extra EAL arguments (`--no-huge`, `-m 256`, `--file-prefix X`, …). pcapd adds the lcore
    /// list from `rx_cores`, the `--vdev` / `-a` arguments of the ports, and a unique
    /// `--file-prefix` when none is given.
    #[serde(default)]
    pub eal_args: Vec<String>,
    /// CPUs that run RX poll loops, one lcore each. The main lcore takes the first CPU not listed.
    #[serde(default = "default_rx_cores")]
    pub rx_cores: Vec<u32>,
    /// Back off (spin, yield, then 20 µs sleeps) when no packets arrive. Disable on dedicated
    /// cores for the lowest latency.
    #[serde(default = "yes")]
    pub idle_backoff: bool,
    /// Packet buffers in the mempool; 0 sizes it from the queues and rings.
    #[serde(default)]
    pub mbufs: u32,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig { eal_args: Vec::new(), rx_cores: default_rx_cores(), idle_backoff: true, mbufs: 0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// A PCI address (`0000:3b:00.0`) or a vdev name (`net_pcap0`, `net_ring0`, `net_null0`,
    /// `net_virtio_user0`, `net_af_packet0`, …).
    pub device: String,
    /// vdev arguments, e.g. `rx_pcap=traffic.pcap,infinite_rx=1` (vdevs only).
    #[serde(default)]
    pub args: Option<String>,
    /// RX queues, spread over `rx_cores`.
    #[serde(default = "one")]
    pub rx_queues: u16,
    /// Descriptors per RX queue: a power of two, 64 to 32768.
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "yes")]
    pub promiscuous: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Writer threads (captures are spread over them; one capture is written by one thread).
    #[serde(default = "one_usize")]
    pub threads: usize,
    /// Bytes of PCAP records (16-byte header + packet) each RX core may queue per writer before
    /// a full ring drops or waits: a power of two from 1 MiB to 1 GiB. Memory: rx_cores x threads
    /// x (ring_bytes + 512 KiB of run bookkeeping).
    #[serde(default = "default_ring")]
    pub ring_bytes: usize,
    /// Start a new file when the next record would pass this size (bytes).
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Start a new file when the current one is this old (seconds since its first record).
    #[serde(default)]
    pub rotate_seconds: Option<u64>,
    /// Start a new file after this many packets.
    #[serde(default)]
    pub rotate_packets: Option<u64>,
    /// `"ns"` (nanosecond PCAP magic, the default) or `"us"`.
    #[serde(default)]
    pub timestamp_precision: Precision,
    /// What an RX core does with a packet whose writer's ring is full.
    #[serde(default)]
    pub when_full: WhenFull,
}

/// `[writer] when_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// `wait` when every port replays pcap files, else `drop`.
    #[default]
    Auto,
    /// Drop the packet and count it (live traffic cannot wait: the NIC would drop instead).
    Drop,
    /// Stop receiving until the writer has room: nothing is lost, the source slows down.
    Wait,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            threads: 1,
            ring_bytes: default_ring(),
            rotate_bytes: None,
            rotate_seconds: None,
            rotate_packets: None,
            timestamp_precision: Precision::Nanos,
            when_full: WhenFull::Auto,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Where the appliance keeps its store, samples, captures and spool.
    #[serde(default = "default_data_dir")]
    pub dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { dir: default_data_dir() }
    }
}

fn default_rx_cores() -> Vec<u32> {
    vec![1]
}
fn yes() -> bool {
    true
}
fn one() -> u16 {
    1
}
fn one_usize() -> usize {
    1
}
fn default_descriptors() -> u16 {
    1024
}
fn default_ring() -> usize {
    16 << 20
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/pcapd")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

/// EAL options pcapd sets itself from the config.
const RESERVED_EAL: &[&str] = &["-l", "-c", "--lcores", "--main-lcore", "--master-lcore"];

/// What kind of device a port names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    Pci,
    Vdev,
}

pub fn device_kind(device: &str) -> Option<DeviceKind> {
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = device.split(':').collect();
    let pci = match parts.as_slice() {
        [dom, bus, devfn] => hex(dom, 4) && hex(bus, 2) && is_devfn(devfn, &hex),
        [bus, devfn] => hex(bus, 2) && is_devfn(devfn, &hex),
        _ => false,
    };
    if pci {
        return Some(DeviceKind::Pci);
    }
    let vdev =
        device.starts_with("net_") && device.len() > 4 && device.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    vdev.then_some(DeviceKind::Vdev)
}

fn is_devfn(s: &str, hex: &dyn Fn(&str, usize) -> bool) -> bool {
    matches!(s.split_once('.'), Some((dev, func)) if hex(dev, 2) && func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7'))
}

impl PortConfig {
    /// A `net_pcap` vdev reading a file once (no `infinite_rx`, no live interface): it ends.
    pub fn is_finite(&self) -> bool {
        self.replays_files() && !self.replays_from_memory()
    }

    /// A `net_pcap` port reading pcap files (`rx_pcap=`, no `rx_iface`): a source that can wait.
    pub fn replays_files(&self) -> bool {
        !self.pcap_files().is_empty()
            && !self.args.as_deref().unwrap_or("").split(',').any(|a| a.starts_with("rx_iface"))
    }

    /// The files a `net_pcap` port reads (its `rx_pcap=` arguments).
    pub fn pcap_files(&self) -> Vec<PathBuf> {
        if !self.device.starts_with("net_pcap") {
            return Vec::new();
        }
        let args = self.args.as_deref().unwrap_or("");
        args.split(',').filter_map(|a| a.strip_prefix("rx_pcap=")).map(PathBuf::from).collect()
    }

    /// `infinite_rx=1`: net_pcap keeps a copy of every packet of its files in mbufs of the pool.
    pub fn replays_from_memory(&self) -> bool {
        self.device.starts_with("net_pcap")
            && self.args.as_deref().unwrap_or("").split(',').any(|a| a == "infinite_rx=1")
    }
}

impl Config {
    /// Reads and validates a config file, and checks the files it names (`check_files`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let cfg = Config::read(path)?;
        cfg.validate()?;
        cfg.check_files()?;
        Ok(cfg)
    }

    /// Reads a config file (syntax, types and known keys only): for callers that change it before
    /// `validate`, as `pcapd capture` does when `--vdev`/`--pci` replace the ports. Relative
    /// paths in it (`data.dir`, files in port `args`, key files) are taken relative to the
    /// file's directory, so the appliance can be started from anywhere.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(cfg)
    }

    /// Makes every relative path of the config relative to `base` (the config file's directory).
    fn resolve_paths(&mut self, base: &Path) {
        for p in &mut self.ports {
            if let Some(args) = &p.args {
                p.args = Some(resolve_vdev_args(&p.device, args, base));
            }
        }
        // An empty data.dir stays empty for `validate` to reject (joined, it would be `base`).
        if !self.data.dir.as_os_str().is_empty() {
            self.data.dir = base.join(&self.data.dir);
        }
        if let Some(key) = self.upload.gcs.as_mut().and_then(|g| g.service_account_key_path.as_mut()) {
            *key = base.join(&*key);
        }
    }

    /// Opens every file a port reads (`rx_pcap=`): each must exist and be a pcap or pcapng file.
    /// With `dpdk.mbufs` set, the pool must hold the packets `infinite_rx` ports keep in it.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut replayed = 0u64;
        for (i, p) in self.ports.iter().enumerate() {
            for f in p.pcap_files() {
                let bad = |why: String| invalid(format!("port[{i}].args"), format!("rx_pcap={}: {why}", f.display()));
                match crate::pcap::format::count_records(&f) {
                    Err(e) => return Err(bad(e.to_string())),
                    Ok(Some(n)) if p.replays_from_memory() => replayed += n,
                    Ok(Some(_)) => {}
                    Ok(None) if is_pcapng(&f) => {}
                    Ok(None) => return Err(bad("not a pcap or pcapng file".to_string())),
                }
            }
        }
        if let Some(key) = self.upload.gcs.as_ref().and_then(|g| g.service_account_key_path.as_ref()) {
            // Read, not just stat: an unreadable key fails the first upload hours later otherwise.
            std::fs::File::open(key)
                .and_then(|f| f.metadata())
                .and_then(|m| if m.is_file() { Ok(()) } else { Err(std::io::Error::other("not a regular file")) })
                .map_err(|e| invalid("upload.gcs.service_account_key_path", format!("{}: {e}", key.display())))?;
        }
        let mbufs = u64::from(self.dpdk.mbufs);
        if mbufs > 0 && replayed >= mbufs {
            return Err(invalid(
                "dpdk.mbufs",
                format!(
                    "{mbufs} mbufs cannot hold the {replayed} packets the ports replay from memory \
                     (infinite_rx=1); raise it, or set 0 to size the pool automatically"
                ),
            ));
        }
        Ok(())
    }

    /// Every cross-field rule lives here, so the rest of the program may assume them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ports.is_empty() {
            return Err(invalid("port", "at least one [[port]] is required"));
        }
        let mut names = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let f = |k: &str| format!("port[{i}].{k}");
            match device_kind(&p.device) {
                None => {
                    return Err(invalid(
                        f("device"),
                        format!(
                            "{:?} is neither a PCI address (0000:3b:00.0) nor a vdev name (net_pcap0, net_ring0, …)",
                            p.device
                        ),
                    ))
                }
                Some(DeviceKind::Pci) if p.args.is_some() => {
                    return Err(invalid(f("args"), "vdev arguments given for a PCI device"))
                }
                _ => {}
            }
            if !names.insert(p.device.as_str()) {
                return Err(invalid(f("device"), format!("{:?} is listed twice", p.device)));
            }
            if p.rx_queues == 0 || p.rx_queues > 64 {
                return Err(invalid(f("rx_queues"), format!("{} is out of range (1 to 64)", p.rx_queues)));
            }
            if !p.rx_descriptors.is_power_of_two() || p.rx_descriptors < 64 {
                return Err(invalid(
                    f("rx_descriptors"),
                    format!("{} must be a power of two, at least 64", p.rx_descriptors),
                ));
            }
        }
        let d = &self.dpdk;
        if d.rx_cores.is_empty() {
            return Err(invalid("dpdk.rx_cores", "at least one RX core is required"));
        }
        let allowed = allowed_cpus();
        let mut seen = HashSet::new();
        for &c in &d.rx_cores {
            if !seen.insert(c) {
                return Err(invalid("dpdk.rx_cores", format!("CPU {c} is listed twice")));
            }
            if !allowed.contains(&c) {
                return Err(invalid(
                    "dpdk.rx_cores",
                    format!("CPU {c} does not exist or is not available to this process (available: {allowed:?})"),
                ));
            }
        }
        if main_cpu(&d.rx_cores).is_none() {
            return Err(invalid(
                "dpdk.rx_cores",
                "every CPU is an RX core; leave one for the main lcore, writers and the API",
            ));
        }
        if let Some(a) = d.eal_args.iter().find(|a| RESERVED_EAL.contains(&a.as_str()) || a.starts_with("--lcores=")) {
            return Err(invalid("dpdk.eal_args", format!("{a:?} is set by pcapd from dpdk.rx_cores; remove it")));
        }
        // A device given here would escape validation, file checks and mempool sizing.
        // EAL's getopt takes any unambiguous prefix (`--vd`, `--vde=`) for `--vdev`.
        let is_vdev = |a: &str| {
            let name = a.split_once('=').map_or(a, |(n, _)| n);
            name.len() >= 4 && "--vdev".starts_with(name)
        };
        if let Some(a) = d.eal_args.iter().find(|a| is_vdev(a)) {
            return Err(invalid(
                "dpdk.eal_args",
                format!(
                    "{a:?}: give each device as a [[port]] (device = \"net_pcap0\", args = \"rx_pcap=...\"), \
                     not in eal_args"
                ),
            ));
        }
        // DPDK refuses a pool smaller than 1.5 times its per-core cache (256 here).
        if d.mbufs > 0 && d.mbufs < 384 {
            return Err(invalid(
                "dpdk.mbufs",
                format!("{} is too few: DPDK needs at least 384 (1.5 times the per-core cache of 256), or 0 to size the pool automatically", d.mbufs),
            ));
        }
        let total_queues: usize = self.ports.iter().map(|p| usize::from(p.rx_queues)).sum();
        if d.rx_cores.len() > total_queues {
            return Err(invalid(
                "dpdk.rx_cores",
                format!("{} RX cores but only {total_queues} RX queues: every core needs a queue", d.rx_cores.len()),
            ));
        }
        let w = &self.writer;
        if w.threads == 0 || w.threads > 64 {
            return Err(invalid("writer.threads", format!("{} is out of range (1 to 64)", w.threads)));
        }
        if !w.ring_bytes.is_power_of_two()
            || w.ring_bytes < crate::dataplane::handoff::MIN_RING_BYTES
            || w.ring_bytes > 1 << 30
        {
            return Err(invalid(
                "writer.ring_bytes",
                format!("{} must be a power of two from 1048576 (1 MiB) to 1073741824 (1 GiB)", w.ring_bytes),
            ));
        }
        for (k, v) in [
            ("rotate_bytes", w.rotate_bytes),
            ("rotate_seconds", w.rotate_seconds),
            ("rotate_packets", w.rotate_packets),
        ] {
            if v == Some(0) {
                return Err(invalid(format!("writer.{k}"), "must be at least 1 (leave it out to disable)"));
            }
        }
        self.validate_appliance()?;
        if let Some(f) = &self.fleet {
            f.validate()?;
        }
        Ok(())
    }

    pub fn rotate_policy(&self) -> RotatePolicy {
        RotatePolicy {
            max_bytes: self.writer.rotate_bytes,
            max_seconds: self.writer.rotate_seconds,
            max_packets: self.writer.rotate_packets,
            over_bytes: None,
        }
    }

    /// The main lcore: the first allowed CPU that is not an RX core (validated to exist).
    pub fn main_lcore(&self) -> u32 {
        main_cpu(&self.dpdk.rx_cores).unwrap_or(0)
    }

    /// The full EAL argument list.
    pub fn eal_args(&self, default_prefix: &str) -> Vec<String> {
        let mut args = self.dpdk.eal_args.clone();
        let main = self.main_lcore();
        let mut lcores = vec![main.to_string()];
        lcores.extend(self.dpdk.rx_cores.iter().map(u32::to_string));
        args.extend(["-l".to_string(), lcores.join(","), "--main-lcore".to_string(), main.to_string()]);
        let has = |opt: &str| self.dpdk.eal_args.iter().any(|a| a == opt || a.starts_with(&format!("{opt}=")));
        let mut any_pci = false;
        for p in &self.ports {
            match device_kind(&p.device) {
                Some(DeviceKind::Pci) => {
                    any_pci = true;
                    args.extend(["-a".to_string(), p.device.clone()]);
                }
                _ => {
                    let spec = match &p.args {
                        Some(a) if !a.is_empty() => format!("{},{a}", p.device),
                        _ => p.device.clone(),
                    };
                    args.extend(["--vdev".to_string(), spec]);
                }
            }
        }
        if !any_pci && !has("--no-pci") && !has("-a") && !has("--allow") && !has("-b") && !has("--block") {
            args.push("--no-pci".to_string());
        }
        if !has("--file-prefix") {
            args.extend(["--file-prefix".to_string(), default_prefix.to_string()]);
        }
        if !has("--log-level") {
            args.push("--log-level=notice".to_string());
        }
        args
    }

    /// Whether RX cores wait for room in a full writer ring (rather than drop) for these ports.
    pub fn waits_when_full(&self, ports: &[&PortConfig]) -> bool {
        match self.writer.when_full {
            WhenFull::Wait => true,
            WhenFull::Drop => false,
            WhenFull::Auto => !ports.is_empty() && ports.iter().all(|p| p.replays_files()),
        }
    }

    /// Mbufs needed so that RX never starves while descriptors and mempool caches hold buffers;
    /// `held_by_pmds` more for what drivers keep (net_pcap `infinite_rx` copies of its files).
    pub fn mempool_size(&self, held_by_pmds: u64) -> u32 {
        if self.dpdk.mbufs > 0 {
            return self.dpdk.mbufs;
        }
        let desc: usize = self.ports.iter().map(|p| usize::from(p.rx_queues) * usize::from(p.rx_descriptors)).sum();
        let caches = (self.dpdk.rx_cores.len() + 1) * 512;
        let need = desc + caches + 4096 + held_by_pmds as usize;
        // Mempools are most efficient at 2^n - 1 elements.
        (need.next_power_of_two() - 1).min(u32::MAX as usize) as u32
    }
}

/// CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<u32> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id as u32).collect(),
        _ => (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32).collect(),
    }
}

/// Free 2 MiB / 1 GiB hugepages in the system (0 when none are reserved).
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("HugePages_Free:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

/// The vdev arguments of `device` that name files or sockets.
fn path_keys(device: &str) -> &'static [&'static str] {
    if device.starts_with("net_pcap") {
        &["rx_pcap", "tx_pcap"]
    } else if device.starts_with("net_virtio_user") {
        &["path"]
    } else if device.starts_with("net_vhost") {
        &["iface"]
    } else {
        &[]
    }
}

/// `rx_pcap=a.pcap,infinite_rx=1` with `base` `/etc/pcapd` → `rx_pcap=/etc/pcapd/a.pcap,infinite_rx=1`.
fn resolve_vdev_args(device: &str, args: &str, base: &Path) -> String {
    let keys = path_keys(device);
    args.split(',')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if keys.contains(&k) && !v.is_empty() => format!("{k}={}", base.join(v).display()),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A pcapng file (libpcap, and so net_pcap, reads those too): its section header block type.
fn is_pcapng(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x0a, 0x0d, 0x0d, 0x0a]
}

fn main_cpu(rx_cores: &[u32]) -> Option<u32> {
    allowed_cpus().into_iter().find(|c| !rx_cores.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        let c: Config =
            toml::from_str(s).map_err(|e| ConfigError::Parse { path: "t".into(), message: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    const MIN: &str = "[dpdk]\nrx_cores=[1]\n[[port]]\ndevice=\"net_null0\"\n";

    #[test]
    fn minimal_config_and_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.ports[0].rx_descriptors, 1024);
        assert_eq!(c.writer.timestamp_precision, Precision::Nanos);
        assert!(!c.waits_when_full(&c.ports.iter().collect::<Vec<_>>()), "a live port drops");
        let a = c.eal_args("pfx");
        assert!(a.windows(2).any(|w| w == ["--vdev", "net_null0"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["-l", "0,1"]), "{a:?}");
        assert!(a.contains(&"--no-pci".to_string()));
        assert!(a.windows(2).any(|w| w == ["--file-prefix", "pfx"]));
    }

    #[test]
    fn errors_name_the_field() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert!(err(&format!("{MIN}bogus=1\n")).contains("unknown field `bogus`"));
        assert!(err("[dpdk]\nrx_cores=[1]\n").starts_with("port:"));
        assert!(err(&MIN.replace("net_null0", "eth0")).starts_with("port[0].device:"));
        assert!(err(&MIN.replace("[1]", "[999]")).starts_with("dpdk.rx_cores: CPU 999 does not exist"));
        assert!(err(&MIN.replace("[1]", "[1,1]")).contains("listed twice"));
        assert!(err(&format!("{MIN}rx_descriptors=100\n")).starts_with("port[0].rx_descriptors"));
        assert!(err(&format!("{MIN}[writer]\nrotate_bytes=0\n")).starts_with("writer.rotate_bytes"));
        assert!(err(&format!("{MIN}[writer]\ntimestamp_precision=\"ms\"\n")).contains("unknown variant"));
        assert!(err(&format!("{MIN}[writer]\nwhen_full=\"sometimes\"\n")).contains("unknown variant"));
        assert!(err(&format!("{MIN}[writer]\nring_bytes=4096\n")).starts_with("writer.ring_bytes"));
        assert!(err(&format!("{MIN}[writer]\nring_bytes=3000000\n")).starts_with("writer.ring_bytes"));
        assert!(err(&MIN.replace("rx_cores=[1]", "rx_cores=[1]\neal_args=[\"-l\",\"0\"]")).starts_with("dpdk.eal_args"));
    }

    #[test]
    fn device_kinds() {
        assert_eq!(device_kind("0000:3b:00.0"), Some(DeviceKind::Pci));
        assert_eq!(device_kind("3b:00.1"), Some(DeviceKind::Pci));
        assert_eq!(device_kind("net_pcap0"), Some(DeviceKind::Vdev));
        assert_eq!(device_kind("0000:3b:00.8"), None);
        assert_eq!(device_kind("eth0"), None);
        assert_eq!(device_kind("net_pcap0,rx_pcap=x"), None);
    }

    #[test]
    fn finite_sources() {
        let p = |args: &str| PortConfig {
            device: "net_pcap0".into(),
            args: Some(args.into()),
            rx_queues: 1,
            rx_descriptors: 64,
            promiscuous: true,
        };
        assert!(p("rx_pcap=a.pcap").is_finite());
        assert!(p("rx_pcap=a.pcap,rx_pcap=b.pcap").is_finite());
        assert!(!p("rx_pcap=a.pcap,infinite_rx=1").is_finite());
        assert!(!p("rx_iface=eth0").is_finite());
        // Replays (finite or from memory) can wait for a writer; live interfaces cannot.
        assert!(p("rx_pcap=a.pcap,infinite_rx=1").replays_files());
        assert!(!p("rx_iface=eth0").replays_files());
        assert!(!p("rx_pcap=a.pcap,rx_iface_in=eth0").replays_files());
        let mut c = parse(MIN).unwrap();
        let (replay, live) = (p("rx_pcap=a.pcap"), p("rx_iface=eth0"));
        assert!(c.waits_when_full(&[&replay]) && !c.waits_when_full(&[&replay, &live]));
        c.writer.when_full = WhenFull::Drop;
        assert!(!c.waits_when_full(&[&replay]));
        c.writer.when_full = WhenFull::Wait;
        assert!(c.waits_when_full(&[&live]));
    }

    /// Regression: a `--vdev` in eal_args escaped validation and mempool sizing (an
    /// `infinite_rx` file larger than the pool crashed the start).
    #[test]
    fn vdev_in_eal_args_is_rejected_with_a_pointer_to_port_args() {
        // Abbreviations too: EAL's getopt takes `--vde=...` for `--vdev` (found by a probe).
        for v in [
            "[\"--vdev\",\"net_null0,size=64\"]",
            "[\"--vdev=net_null0\"]",
            "[\"--vde=net_null0\"]",
            "[\"--vd\",\"x\"]",
        ] {
            let e =
                parse(&MIN.replace("rx_cores=[1]", &format!("rx_cores=[1]\neal_args={v}"))).unwrap_err().to_string();
            assert!(e.starts_with("dpdk.eal_args: \"--vd"), "{e}");
            assert!(e.contains("[[port]]"), "{e}");
        }
    }

    /// Regression: relative paths in a config file were taken relative to the working directory,
    /// so the demo config failed (and crashed) when pcapd was started from anywhere else.
    #[test]
    fn relative_paths_in_a_config_file_are_relative_to_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pcapd.toml");
        let text = "[dpdk]\nrx_cores=[1]\n[[port]]\ndevice=\"net_pcap0\"\n\
                    args=\"rx_pcap=in.pcap,infinite_rx=1,rx_pcap=/abs/b.pcap\"\n\
                    [[port]]\ndevice=\"net_virtio_user0\"\nargs=\"path=rig/v.sock,queues=1\"\n\
                    [data]\ndir=\"data\"\n";
        std::fs::write(&cfg, text).unwrap();
        let c = Config::read(&cfg).unwrap();
        let d = dir.path().display();
        assert_eq!(
            c.ports[0].args.as_deref(),
            Some(format!("rx_pcap={d}/in.pcap,infinite_rx=1,rx_pcap=/abs/b.pcap").as_str())
        );
        assert_eq!(c.ports[1].args.as_deref(), Some(format!("path={d}/rig/v.sock,queues=1").as_str()));
        assert_eq!(c.data.dir, dir.path().join("data"));
        // A config in the working directory keeps its relative paths as they are.
        assert_eq!(
            resolve_vdev_args("net_pcap0", "rx_pcap=a.pcap,iface=eth0", Path::new("")),
            "rx_pcap=a.pcap,iface=eth0"
        );
    }

    /// Regression: check-config said OK for a port reading a missing or non-pcap file (pcapd
    /// then crashed at start).
    #[test]
    fn missing_or_non_pcap_rx_pcap_fails_check_config() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a capture\n").unwrap();
        let check = |file: &Path| {
            let c = parse(&MIN.replace("net_null0\"", &format!("net_pcap0\"\nargs=\"rx_pcap={}\"", file.display())))
                .unwrap();
            c.check_files().map_err(|e| e.to_string())
        };
        let e = check(Path::new("/no/such.pcap")).unwrap_err();
        assert_eq!(e, "port[0].args: rx_pcap=/no/such.pcap: No such file or directory (os error 2)");
        let e = check(&text).unwrap_err();
        assert_eq!(e, format!("port[0].args: rx_pcap={}: not a pcap or pcapng file", text.display()));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames.pcap");
        check(&fixture).unwrap();
    }

    /// Regression (probe): `mbufs = 40` passed check-config, then the start failed with an
    /// EINVAL from the mempool that did not name the field.
    #[test]
    fn too_few_mbufs_for_dpdk_name_the_field() {
        let e = parse(&MIN.replace("rx_cores=[1]", "rx_cores=[1]\nmbufs=40")).unwrap_err().to_string();
        assert!(e.starts_with("dpdk.mbufs: 40 is too few"), "{e}");
        parse(&MIN.replace("rx_cores=[1]", "rx_cores=[1]\nmbufs=384")).unwrap();
    }

    /// Regression (probe): a FIFO as `rx_pcap` hung check-config (and run, and capture) in open.
    #[test]
    fn a_fifo_as_rx_pcap_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f.pcap");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let c =
            parse(&MIN.replace("net_null0\"", &format!("net_pcap0\"\nargs=\"rx_pcap={}\"", fifo.display()))).unwrap();
        let e = c.check_files().unwrap_err().to_string();
        assert_eq!(e, format!("port[0].args: rx_pcap={}: not a regular file", fifo.display()));
    }

    /// Regression: an `infinite_rx` file with more packets than `dpdk.mbufs` passed check-config.
    #[test]
    fn too_few_mbufs_for_an_infinite_rx_file_fails_check_config() {
        // 1000 small records: more than the 400 mbufs asked for.
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pcap");
        let mut bytes = crate::pcap::format::file_header(crate::pcap::Precision::Nanos, 65_535).to_vec();
        for i in 0..1000u64 {
            crate::pcap::format::encode_record(
                &mut bytes,
                crate::pcap::Precision::Nanos,
                i,
                60,
                60,
                std::iter::once(&[0u8; 60][..]),
            );
        }
        std::fs::write(&big, bytes).unwrap();
        let port = format!("net_pcap0\"\nargs=\"rx_pcap={},infinite_rx=1\"", big.display());
        let c = parse(&MIN.replace("rx_cores=[1]", "rx_cores=[1]\nmbufs=400").replace("net_null0\"", &port)).unwrap();
        let e = c.check_files().unwrap_err().to_string();
        assert!(e.starts_with("dpdk.mbufs: 400 mbufs cannot hold the 1000 packets"), "{e}");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames.pcap");
        let port = format!("net_pcap0\"\nargs=\"rx_pcap={},infinite_rx=1\"", fixture.display());
        let c = parse(&MIN.replace("net_null0\"", &port)).unwrap();
        c.check_files().unwrap();
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    #[test]
    fn every_config_in_the_repo_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 3);
    }
}
