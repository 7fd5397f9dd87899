//! Generates bindings for the system DPDK and compiles C wrappers for its static-inline functions.
//!
//! The raw `pkg-config --cflags libdpdk` output is used on purpose: the `pkg-config` crate drops
//! `-include rte_config.h` and `-march=...`, and without an SSSE3-capable `-march` gcc fails inside
//! `rte_memcpy.h`. Never `-march=native`: the binary must run on other machines.
use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_VERSION: &str = "22.11";
const HELP: &str =
    "install DPDK and its headers: `apt-get install dpdk dpdk-dev libdpdk-dev pkg-config libclang-dev libpcap-dev` \
     (or run scripts/setup); set PKG_CONFIG_PATH to the directory holding libdpdk.pc for a DPDK built from source";

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let out =
        Command::new("pkg-config").args(args).output().map_err(|e| format!("cannot run pkg-config ({e}); {HELP}"))?;
    if !out.status.success() {
        return Err(format!(
            "pkg-config {} failed: {}; {HELP}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn fail(msg: String) -> ! {
    // A panic in build.rs prints the message verbatim at the top of the cargo error.
    panic!("\n\ndpdk-sys: {msg}\n\n");
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let version = pkg_config(&["--modversion", "libdpdk"]).unwrap_or_else(|e| fail(e));
    if pkg_config(&["--atleast-version", MIN_VERSION, "libdpdk"]).is_err() {
        fail(format!("libdpdk {version} is too old: pcapd needs DPDK >= {MIN_VERSION}; {HELP}"));
    }
    let cflags: Vec<String> = shell_words(&pkg_config(&["--cflags", "libdpdk"]).unwrap_or_else(|e| fail(e)));
    let mut libs: Vec<String> = shell_words(&pkg_config(&["--libs", "libdpdk"]).unwrap_or_else(|e| fail(e)));
    // libpcap compiles tcpdump expressions (pcapd's src/bpf/). Its .pc file also names dbus
    // include paths, of no use here: only its -L/-l words are kept.
    libs.extend(
        shell_words(&pkg_config(&["--libs", "libpcap"]).unwrap_or_else(|e| fail(e)))
            .into_iter()
            .filter(|w| w.starts_with("-l") || w.starts_with("-L")),
    );
    // rte_bpf_convert is `__rte_experimental`: DPDK asks its users to opt in, for bindgen and cc.
    let experimental = "-DALLOW_EXPERIMENTAL_API".to_string();

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let header = manifest.join("wrapper.h");
    let wrap_path = out.join("static_fns");

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_args(cflags.iter().filter(|f| !f.starts_with("-march")))
        .clang_arg(&experimental)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrap_path)
        .allowlist_function(
            "rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore|has_hugepages)|rte_strerror\
             |rte_lcore_(id|count|is_enabled|to_socket_id)|rte_get_main_lcore|rte_socket_id\
             |rte_get_tsc_hz|rte_rdtsc|rte_get_tsc_cycles\
             |rte_pktmbuf_pool_create|rte_mempool_(free|avail_count|in_use_count)\
             |rte_eth_dev_(get_port_by_name|get_name_by_port|configure|start|stop|close|info_get|socket_id|count_avail|adjust_nb_rx_tx_desc|is_valid_port)\
             |rte_eth_(rx_queue_setup|tx_queue_setup|promiscuous_enable|stats_get|stats_reset|rx_burst|find_next_owned_by|find_next)\
             |rte_log_(set_global_level|get_global_level)|rte_version\
             |pcapd_rte_errno|pcapd_pktmbuf_free_bulk|pcapd_log_route\
             |rte_pktmbuf_(alloc|append|chain|free)|rte_free\
             |rte_bpf_(convert|load|destroy|exec|exec_burst|get_jit)\
             |pcap_(open_dead|compile|geterr|freecode|close|offline_filter|lib_version)",
        )
        .allowlist_type(
            "rte_mbuf|rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_eth_rxconf|rte_mempool\
             |rte_bpf_prm|rte_bpf_jit|ebpf_insn|bpf_program|bpf_insn|pcap_pkthdr",
        )
        .allowlist_var("RTE_LOG_(EMERG|ALERT|CRIT|ERR|WARNING|NOTICE|INFO|DEBUG)|DLT_EN10MB|PCAP_NETMASK_UNKNOWN|PCAP_ERRBUF_SIZE|RTE_MAX_ETHPORTS|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|RTE_MAX_LCORE|RTE_ETH_DEV_NO_OWNER")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| fail(format!("bindgen failed on DPDK {version} headers: {e}; {HELP}")));
    bindings.write_to_file(out.join("bindings.rs")).unwrap_or_else(|e| fail(format!("cannot write bindings: {e}")));

    // The wrappers must come before the DPDK libraries on the link line: build them first.
    let mut cc = cc::Build::new();
    cc.file(wrap_path.with_extension("c")).file(manifest.join("shim.c")).include(&manifest).warnings(false);
    cc.flag(&experimental);
    for f in &cflags {
        cc.flag(f);
    }
    cc.compile("pcapd_dpdk_shim");

    // Link the shared libdpdk: EAL then loads every PMD from its driver directory by itself
    // (a static link would need +whole-archive for every PMD and bus).
    for l in &libs {
        if let Some(dir) = l.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = l.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        } else if l.starts_with("-Wl,") {
            // `-Wl,--as-needed` would drop libraries only PMDs use; skip linker flags.
        }
    }
}

/// Splits pkg-config output on whitespace, keeping `-include rte_config.h` as two words.
fn shell_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}
