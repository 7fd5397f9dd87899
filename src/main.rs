//! The `pcapd` command line: `run` (the appliance), `capture` (one-shot, like tcpdump -w),
//! `check-config` and `doctor` (the machine, for a config); the hidden `gen-docs` writes the
//! man pages and shell completions made from these definitions.
//! Errors are flattened here into one line on stderr; exit code 2 for bad input, 1 for failures.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use pcapd::capture::{self, CaptureRequest, Progress, TcpdumpFiles};
use pcapd::config::{self, Config, PortConfig, WhenFull};
use pcapd::filter::FilterV1;
use pcapd::pcap::{RotatePolicy, TcpdumpNames};

/// The largest snaplen, and what `-s 0` means (as tcpdump).
const MAX_SNAPLEN: u32 = 262_144;

#[derive(Parser)]
#[command(name = "pcapd", about = "DPDK packet-capture appliance")]
struct Cli {
    /// More log output on stderr: -v shows DPDK's routine messages and pcapd's progress (for a
    /// capture, a status line every second), -vv everything at debug level. PCAPD_LOG (a
    /// tracing filter such as "debug") overrides it.
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
    /// Write the man pages and shell completions (bash, zsh, fish) into OUTDIR (see
    /// scripts/gen-docs).
    #[command(hide = true)]
    GenDocs {
        /// Where to write: OUTDIR/man/*.1 and OUTDIR/completions/.
        outdir: PathBuf,
    },
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Config file (ports, cores, EAL args, writer settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read packets from a pcap file (shorthand for --vdev 'net_pcap0,rx_pcap=FILE').
    #[arg(short = 'r', value_name = "FILE", conflicts_with_all = ["vdevs", "pcis"])]
    read: Option<PathBuf>,
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
    /// Cloudflare filter_v1 JSON, e.g. '{"protocol":6,"destination_port":443}' (with an
    /// EXPRESSION too, a packet must match both).
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// A tcpdump filter expression, as tcpdump takes it: one quoted word or several, e.g.
    /// `tcp port 443 and host 192.0.2.1`.
    #[arg(value_name = "EXPRESSION", trailing_var_arg = true)]
    expression: Vec<String>,
    /// Stop after this many packets.
    #[arg(short = 'c', value_name = "PACKETS")]
    count: Option<u64>,
    /// Stop after this many captured bytes (packet data, after snaplen).
    #[arg(long, value_name = "N")]
    bytes: Option<u64>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Bytes kept of each packet (1 to 262144; 0 means whole packets, 262144, as tcpdump).
    #[arg(short = 's', value_name = "SNAPLEN", default_value_t = MAX_SNAPLEN)]
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
    /// As tcpdump -C: before writing a packet, start a new file if this one is larger than
    /// MILLION_BYTES x 1,000,000 bytes. Files are named OUT, OUT1, OUT2, ...
    #[arg(short = 'C', value_name = "MILLION_BYTES", conflicts_with_all = ["rotate_bytes", "rotate_seconds", "rotate_packets"])]
    file_size: Option<u64>,
    /// As tcpdump -G: start a new file every SECONDS; OUT may hold strftime(3) patterns
    /// (out-%Y%m%d-%H%M%S.pcap), formatted when each file is opened.
    #[arg(short = 'G', value_name = "SECONDS", conflicts_with_all = ["rotate_bytes", "rotate_seconds", "rotate_packets"])]
    rotate_every: Option<u64>,
    /// As tcpdump -W: with -C, a ring of N files (OUT0, OUT1, ..., zero-padded; the oldest is
    /// overwritten); with -G alone, stop after N files.
    #[arg(short = 'W', value_name = "N")]
    file_count: Option<u32>,
    /// Microsecond timestamps instead of nanoseconds.
    #[arg(long)]
    micro: bool,
    /// When a writer falls behind: drop (and count) packets, or wait (the source slows down);
    /// auto waits when every port replays pcap files.
    #[arg(long, value_name = "POLICY")]
    when_full: Option<WhenFull>,
    /// Output file (numbered _00000, _00001, … with --rotate-*); - for standard output.
    #[arg(short = 'w', value_name = "OUT.pcap", required_unless_present = "list_ports")]
    write: Option<PathBuf>,
    /// List the ports DPDK can open with these EAL arguments and devices, and the kernel
    /// interfaces a vdev can capture from, then exit (as tcpdump -D).
    #[arg(short = 'D', long = "list-interfaces")]
    list_ports: bool,
    /// Quiet: no status line and no summary; only errors.
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    quiet: bool,
}

/// A failure with its exit code: 2 for bad input, 1 for runtime failures.
struct Fail(u8, String);

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

/// `pcapd --version`: the crate version, the git revision it was built from (build.rs) and the
/// DPDK library loaded at run time.
fn version() -> String {
    let git = option_env!("PCAPD_GIT_REV").unwrap_or("unknown");
    format!("{} (git {git}), {}", env!("CARGO_PKG_VERSION"), pcapd::dpdk::version())
}

/// The command line's definition, with the version (made at run time) filled in.
fn command() -> clap::Command {
    Cli::command().version(version_str())
}

/// `version()`, made once: clap keeps a `&'static str`.
fn version_str() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(version).as_str()
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let quiet = matches!(&cli.cmd, Cmd::Capture(a) if a.quiet);
    if quiet && cli.verbose > 0 {
        // clap refuses `capture -q -v`; `pcapd -v capture -q` reaches here (a global flag).
        eprintln!("pcapd: -q (quiet) and -v (verbose) cannot be used together");
        return ExitCode::from(2);
    }
    // DPDK's log arrives under the target `dpdk`: its errors and warnings by default, its routine
    // lines (TELEMETRY, hugepage reports) only when asked for.
    let default = match cli.verbose {
        _ if quiet => "error",
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
        Cmd::Capture(args) => capture(*args, cli.verbose),
        Cmd::GenDocs { outdir } => gen_docs(&outdir),
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

/// The config of a capture: the file's, with the command line's devices, cores and EAL
/// arguments over it (validated).
fn capture_config(a: &CaptureArgs) -> Result<Config, Fail> {
    let mut cfg = match &a.config {
        // Validated below, once the command line has had its say.
        Some(path) => Config::read(path).map_err(|e| usage(e.to_string()))?,
        None => Config::default(),
    };
    if let Some(file) = &a.read {
        cfg.ports = vec![port_from_vdev(&format!("net_pcap0,rx_pcap={}", pcap_to_read(file)?))];
    } else if !a.vdevs.is_empty() || !a.pcis.is_empty() {
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
    if cfg.ports.is_empty() && !a.list_ports {
        return Err(usage(
            "no device to capture from: give -r FILE, --vdev SPEC, --pci ADDR or a --config with [[port]]",
        ));
    }
    // `-D` without a device lists what the EAL finds by itself.
    if !(a.list_ports && cfg.ports.is_empty()) {
        cfg.validate().map_err(|e| usage(e.to_string()))?;
    }
    // A FIFO or device as a port's file would hang the PMD's open (a missing or bad file is
    // left to the driver, whose reason is quoted).
    for (i, p) in cfg.ports.iter().enumerate() {
        for f in p.pcap_files() {
            if std::fs::metadata(&f).is_ok_and(|m| !m.is_file()) {
                return Err(usage(format!("port[{i}].args: rx_pcap={}: not a regular file", f.display())));
            }
        }
    }
    Ok(cfg)
}

/// `-r FILE`: the file as net_pcap's `rx_pcap=` argument, once it is known to be a readable
/// pcap (or pcapng) file; otherwise one line naming the file and why.
fn pcap_to_read(file: &Path) -> Result<String, Fail> {
    use std::io::Read;
    let bad = |why: String| usage(format!("-r {}: {why}", file.display()));
    if file.as_os_str() == "-" {
        // net_pcap replays files; a pipe would need the end of the stream to be known.
        return Err(bad("reading a capture from standard input is not supported: save it to a file first".into()));
    }
    let meta = std::fs::metadata(file).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut magic)).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad("not a pcap file (too short)".into()),
        _ => bad(e.to_string()),
    })?;
    // Classic pcap (µs, ns; either byte order) and pcapng, which libpcap reads for net_pcap.
    const MAGICS: [u32; 5] = [0xa1b2_c3d4, 0xd4c3_b2a1, 0xa1b2_3c4d, 0x4d3c_b2a1, 0x0a0d_0d0a];
    if !MAGICS.contains(&u32::from_le_bytes(magic)) {
        let hex: Vec<String> = magic.iter().map(|b| format!("{b:02x}")).collect();
        return Err(bad(format!("not a pcap file (it starts with {})", hex.join(" "))));
    }
    let path = file.to_str().ok_or_else(|| bad("the path is not UTF-8".into()))?;
    if path.contains(',') {
        return Err(bad("a path with ',' cannot be given to net_pcap; rename the file or link it".into()));
    }
    Ok(path.to_string())
}

/// tcpdump's `-C`/`-G`/`-W` as pcapd's rotation and tcpdump's names.
fn tcpdump_files(a: &CaptureArgs, out: &Path) -> Result<Option<TcpdumpFiles>, Fail> {
    if a.file_size.is_none() && a.rotate_every.is_none() && a.file_count.is_none() {
        return Ok(None);
    }
    let over_bytes = match a.file_size {
        Some(0) => return Err(usage("-C 0: the file size must be at least 1 (million bytes)")),
        Some(n) => Some(n.checked_mul(1_000_000).ok_or_else(|| usage(format!("-C {n}: too large")))?),
        None => None,
    };
    if a.rotate_every == Some(0) {
        return Err(usage("-G 0: the rotation period must be at least 1 second"));
    }
    let template = out.to_str().ok_or_else(|| usage(format!("-w {}: the path is not UTF-8", out.display())))?;
    let names = TcpdumpNames::new(template, a.rotate_every.is_some(), a.file_size.is_some(), a.file_count)
        .map_err(|e| usage(e.to_string()))?;
    let policy = RotatePolicy { over_bytes, max_seconds: a.rotate_every, ..Default::default() };
    Ok(Some(TcpdumpFiles { names, policy }))
}

fn capture(a: CaptureArgs, verbose: u8) -> Result<(), Fail> {
    let cfg = capture_config(&a)?;
    if a.list_ports {
        return list_ports(&cfg);
    }
    let Some(output) = a.write.clone() else {
        return Err(usage("-w OUT is required (- for standard output)"));
    };
    let snaplen = match a.snaplen {
        0 => MAX_SNAPLEN,
        s if s <= MAX_SNAPLEN => s,
        s => return Err(usage(format!("-s {s}: the snaplen must be between 1 and {MAX_SNAPLEN} (0: whole packets)"))),
    };
    let filter = match &a.filter {
        Some(f) => FilterV1::from_json_str(f).map_err(|e| usage(format!("--filter: {e}")))?,
        None => FilterV1::default(),
    };
    let mut duration = match a.duration {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            return Err(usage(format!("--duration {d}: must be a positive number of seconds")))
        }
        Some(d) => Some(Duration::from_secs_f64(d)),
        None => None,
    };
    if a.count == Some(0) || a.bytes == Some(0) {
        return Err(usage("-c and --bytes must be at least 1"));
    }
    let tcpdump_files = tcpdump_files(&a, &output)?;
    // -G with -W and no -C: N files of SECONDS each, then the capture ends (tcpdump exits).
    if let (Some(n), Some(secs)) = (tcpdump_files.as_ref().and_then(|t| t.names.max_files()), a.rotate_every) {
        let all = Duration::from_secs(secs.saturating_mul(u64::from(n)));
        duration = Some(duration.map_or(all, |d| d.min(all)));
    }
    let progress = if a.quiet {
        Progress::Off
    } else if std::io::stderr().is_terminal() {
        Progress::InPlace
    } else if verbose > 0 {
        Progress::Lines
    } else {
        Progress::Off
    };
    // Compiled by libpcap now: a bad expression is one line and exit 2 before DPDK starts.
    let expression = Some(a.expression.join(" ")).filter(|e| !e.trim().is_empty());
    if let Some(e) = &expression {
        pcapd::bpf::Expression::compile(e).map_err(|err| usage(format!("expression {e:?}: {err}")))?;
    }
    let req = CaptureRequest {
        filter,
        expression,
        packet_limit: a.count,
        byte_limit: a.bytes,
        duration,
        snaplen,
        output,
        devices: a.interfaces,
        tcpdump_files,
        progress,
    };
    let summary = match capture::run(&cfg, &req) {
        Ok(s) => s,
        // `-w - | head`: the reader had what it wanted; tcpdump ends quietly there too.
        Err(capture::CaptureError::ReaderClosed) => return Ok(()),
        Err(e) => return Err(Fail(if e.is_bad_input() { 2 } else { 1 }, e.to_string())),
    };
    if !a.quiet {
        eprint!("{summary}");
    }
    Ok(())
}

/// `-D`: one line per port, numbered from 1 as tcpdump does, then (on stderr) how to reach
/// kernel interfaces.
fn list_ports(cfg: &Config) -> Result<(), Fail> {
    let ports = capture::list_ports(cfg).map_err(|e| Fail(if e.is_bad_input() { 2 } else { 1 }, e.to_string()))?;
    for (i, p) in ports.iter().enumerate() {
        println!("{}.{} (driver {}, DPDK {})", i + 1, p.name, p.driver, p.id);
    }
    if ports.is_empty() {
        eprintln!("pcapd: DPDK sees no port: bind a NIC to vfio-pci, or give --vdev SPEC / -r FILE");
    }
    let ifaces = capture::kernel_interfaces();
    if !ifaces.is_empty() {
        eprintln!(
            "pcapd: kernel interfaces, through a vdev: --vdev net_af_packet0,iface=IF or \
             --vdev net_pcap0,iface=IF (IF: {})",
            ifaces.join(", ")
        );
    }
    Ok(())
}

/// Man pages (one per command) and bash, zsh and fish completions, from the definitions above.
fn gen_docs(outdir: &Path) -> Result<(), Fail> {
    let fail = |what: &str, e: std::io::Error| Fail(1, format!("{}: {what}: {e}", outdir.display()));
    let (man, comp) = (outdir.join("man"), outdir.join("completions"));
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).map_err(|e| fail("create", e))?;
    }
    // Without the hidden commands (clap_complete would offer them): clap cannot remove a
    // subcommand, so the command is rebuilt from the visible ones.
    let full = command();
    let public = clap::Command::new("pcapd")
        .version(version_str())
        .about(full.get_about().map(ToString::to_string).unwrap_or_default())
        .subcommand_required(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    clap_mangen::generate_to(public.clone(), &man).map_err(|e| fail("man pages", e))?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut public.clone(), "pcapd", &comp).map_err(|e| fail("completions", e))?;
    }
    println!("wrote {} and {}", man.display(), comp.display());
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
