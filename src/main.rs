//! The `pcapd` command line: `run` (the appliance), `capture` (one-shot, like tcpdump -w),
//! `check-config` and `doctor` (the machine, for a config).
//! Errors are flattened here into one line on stderr; exit code 2 for bad input, 1 for failures.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use pcapd::capture::{self, CaptureRequest};
use pcapd::config::{self, Config, PortConfig, WhenFull};
use pcapd::filter::FilterV1;

#[derive(Parser)]
#[command(name = "pcapd", version, about = "DPDK packet-capture appliance")]
struct Cli {
    /// More log output on stderr: -v shows DPDK's routine messages and pcapd's progress, -vv
    /// everything at debug level. PCAPD_LOG (a tracing filter such as "debug") overrides it.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance: data plane, sample store and the admin API.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Capture packets from DPDK ports into PCAP files, then print a summary.
    Capture(Box<CaptureArgs>),
    /// Validate a config file; prints the first error with its field path. With --deep, also
    /// check the machine (as `doctor`).
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
        /// Also check the data dir, hugepages, NUMA and ports (see `doctor`).
        #[arg(long)]
        deep: bool,
    },
    /// Check what a config asks of this machine without starting DPDK: data dir (writable, free
    /// space, lock), API address, hugepages, ports (driver, NUMA node, vdev files). One line per
    /// check (OK / WARN / FAIL); exits 1 when a check fails, 2 when the config is invalid.
    Doctor {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Config file (ports, cores, EAL args, writer settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A vdev to capture from, e.g. 'net_pcap0,rx_pcap=in.pcap' (repeatable; replaces the config's ports).
    #[arg(long = "vdev", value_name = "SPEC")]
    vdevs: Vec<String>,
    /// A PCI device to capture from, e.g. 0000:3b:00.0 (repeatable; replaces the config's ports).
    #[arg(long = "pci", value_name = "ADDR")]
    pcis: Vec<String>,
    /// Extra EAL arguments, space separated (replace the config's dpdk.eal_args).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    eal_args: Option<String>,
    /// RX cores, e.g. "1" or "1,2".
    #[arg(long, value_name = "LIST")]
    rx_cores: Option<String>,
    /// Only capture from this device (repeatable).
    #[arg(short = 'i', value_name = "DEVICE")]
    interfaces: Vec<String>,
    /// Cloudflare filter_v1 JSON, e.g. '{"protocol":6,"destination_port":443}'.
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// Stop after this many packets.
    #[arg(short = 'c', value_name = "PACKETS")]
    count: Option<u64>,
    /// Stop after this many captured bytes (packet data, after snaplen).
    #[arg(long, value_name = "N")]
    bytes: Option<u64>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Bytes kept of each packet (1 to 262144).
    #[arg(short = 's', value_name = "SNAPLEN", default_value_t = 262_144)]
    snaplen: u32,
    /// Start a new file when the next record would pass N bytes.
    #[arg(long, value_name = "N")]
    rotate_bytes: Option<u64>,
    /// Start a new file every N seconds.
    #[arg(long, value_name = "N")]
    rotate_seconds: Option<u64>,
    /// Start a new file every N packets.
    #[arg(long, value_name = "N")]
    rotate_packets: Option<u64>,
    /// Microsecond timestamps instead of nanoseconds.
    #[arg(long)]
    micro: bool,
    /// When a writer falls behind: drop (and count) packets, or wait (the source slows down);
    /// auto waits when every port replays pcap files.
    #[arg(long, value_name = "POLICY")]
    when_full: Option<WhenFull>,
    /// Output file (numbered _00000, _00001, … when rotating).
    #[arg(short = 'w', value_name = "OUT.pcap")]
    write: PathBuf,
}

/// A failure with its exit code: 2 for bad input, 1 for runtime failures.
struct Fail(u8, String);

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // DPDK's log arrives under the target `dpdk`: its errors and warnings by default, its routine
    // lines (TELEMETRY, hugepage reports) only when asked for.
    let default = match cli.verbose {
        0 => "warn",
        1 => "warn,pcapd=info,dpdk=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PCAPD_LOG").unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.cmd {
        Cmd::CheckConfig { file, deep: false } => match Config::load(&file) {
            Ok(cfg) => {
                for w in cfg.warnings() {
                    eprintln!("pcapd: warning: {w}");
                }
                println!("{}: OK", file.display());
                Ok(())
            }
            Err(e) => Err(usage(e.to_string())),
        },
        Cmd::CheckConfig { file, deep: true } | Cmd::Doctor { config: file } => doctor(&file),
        Cmd::Capture(args) => capture(*args),
        Cmd::Run { config } => match Config::load(&config) {
            Ok(cfg) => pcapd::app::run(cfg).map_err(|e| Fail(if e.is_bad_input() { 2 } else { 1 }, e.to_string())),
            Err(e) => Err(usage(e.to_string())),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("pcapd: {msg}");
            ExitCode::from(code)
        }
    }
}

fn doctor(file: &std::path::Path) -> Result<(), Fail> {
    let cfg = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL config: {e}");
            return Err(usage(e.to_string()));
        }
    };
    println!("OK   config: {} is valid", file.display());
    let checks = pcapd::doctor::run(&cfg);
    for c in &checks {
        println!("{c}");
    }
    match pcapd::doctor::worst(&checks) {
        pcapd::doctor::Level::Fail => Err(Fail(
            1,
            format!("{} check(s) failed", checks.iter().filter(|c| c.level == pcapd::doctor::Level::Fail).count()),
        )),
        _ => Ok(()),
    }
}

fn capture(a: CaptureArgs) -> Result<(), Fail> {
    let mut cfg = match &a.config {
        // Validated below, once the command line has had its say.
        Some(path) => Config::read(path).map_err(|e| usage(e.to_string()))?,
        None => Config::default(),
    };
    if !a.vdevs.is_empty() || !a.pcis.is_empty() {
        cfg.ports = a.vdevs.iter().map(|v| port_from_vdev(v)).chain(a.pcis.iter().map(|p| port(p, None, 1))).collect();
    }
    if a.config.is_none() {
        cfg.dpdk.eal_args = default_eal_args();
        cfg.dpdk.rx_cores = vec![*config::allowed_cpus().last().unwrap_or(&0)];
    }
    if let Some(e) = &a.eal_args {
        cfg.dpdk.eal_args = e.split_whitespace().map(str::to_string).collect();
    }
    if let Some(list) = &a.rx_cores {
        cfg.dpdk.rx_cores = list
            .split(',')
            .map(|c| c.trim().parse::<u32>().map_err(|_| usage(format!("--rx-cores: {c:?} is not a CPU number"))))
            .collect::<Result<_, _>>()?;
    }
    cfg.writer.rotate_bytes = a.rotate_bytes.or(cfg.writer.rotate_bytes);
    cfg.writer.rotate_seconds = a.rotate_seconds.or(cfg.writer.rotate_seconds);
    cfg.writer.rotate_packets = a.rotate_packets.or(cfg.writer.rotate_packets);
    cfg.writer.when_full = a.when_full.unwrap_or(cfg.writer.when_full);
    if a.micro {
        cfg.writer.timestamp_precision = pcapd::pcap::Precision::Micros;
    }
    if cfg.ports.is_empty() {
        return Err(usage("no device to capture from: give --vdev SPEC, --pci ADDR or a --config with [[port]]"));
    }
    cfg.validate().map_err(|e| usage(e.to_string()))?;
    // A FIFO or device as a port's file would hang the PMD's open (a missing or bad file is
    // left to the driver, whose reason is quoted).
    for (i, p) in cfg.ports.iter().enumerate() {
        for f in p.pcap_files() {
            if std::fs::metadata(&f).is_ok_and(|m| !m.is_file()) {
                return Err(usage(format!("port[{i}].args: rx_pcap={}: not a regular file", f.display())));
            }
        }
    }
    if !(1..=262_144).contains(&a.snaplen) {
        return Err(usage(format!("-s {}: the snaplen must be between 1 and 262144", a.snaplen)));
    }
    let filter = match &a.filter {
        Some(f) => FilterV1::from_json_str(f).map_err(|e| usage(format!("--filter: {e}")))?,
        None => FilterV1::default(),
    };
    let duration = match a.duration {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            return Err(usage(format!("--duration {d}: must be a positive number of seconds")))
        }
        Some(d) => Some(Duration::from_secs_f64(d)),
        None => None,
    };
    if a.count == Some(0) || a.bytes == Some(0) {
        return Err(usage("-c and --bytes must be at least 1"));
    }
    let req = CaptureRequest {
        filter,
        packet_limit: a.count,
        byte_limit: a.bytes,
        duration,
        snaplen: a.snaplen,
        output: a.write,
        devices: a.interfaces,
    };
    let summary = capture::run(&cfg, &req).map_err(|e| Fail(if e.is_bad_input() { 2 } else { 1 }, e.to_string()))?;
    eprint!("{summary}");
    Ok(())
}

fn port(device: &str, args: Option<String>, rx_queues: u16) -> PortConfig {
    PortConfig { device: device.to_string(), args, rx_queues, rx_descriptors: 1024, promiscuous: true }
}

/// `net_pcap0,rx_pcap=a,rx_pcap=b` → device `net_pcap0` with two RX queues (one per file).
fn port_from_vdev(spec: &str) -> PortConfig {
    let (device, args) = match spec.split_once(',') {
        Some((d, a)) => (d, Some(a.to_string())),
        None => (spec, None),
    };
    let files = args
        .as_deref()
        .map_or(0, |a| a.split(',').filter(|x| x.starts_with("rx_pcap=") || x.starts_with("rx_iface=")).count());
    port(device, args, files.max(1) as u16)
}

/// Without a config: hugepages when the system has free ones, else `--no-huge`.
fn default_eal_args() -> Vec<String> {
    let args: &[&str] =
        if config::free_hugepages() > 0 { &["--in-memory"] } else { &["--no-huge", "-m", "512", "--no-shconf"] };
    args.iter().map(|s| s.to_string()).collect()
}
