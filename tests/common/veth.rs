//! A veth pair as a live traffic source: pcapd receives on one end (net_pcap `rx_iface_in=`),
//! tcpreplay sends recorded frames into the other at a chosen rate. IPv6 is off on both ends so
//! the kernel adds no traffic of its own.
#![allow(dead_code)]
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Veth {
    /// The end pcapd receives on.
    pub rx: String,
    /// The end tcpreplay sends into.
    pub tx: String,
}

fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).status().unwrap();
    assert!(st.success(), "{args:?} failed (root and iproute2 are needed)");
}

impl Veth {
    pub fn new(tag: &str) -> Veth {
        let (rx, tx) =
            (format!("pc{tag}{}r", std::process::id() % 10000), format!("pc{tag}{}t", std::process::id() % 10000));
        let _ = Command::new("ip").args(["link", "del", &rx]).stderr(Stdio::null()).status();
        run(&["ip", "link", "add", &rx, "type", "veth", "peer", "name", &tx]);
        for dev in [&rx, &tx] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
            run(&["ip", "link", "set", dev, "mtu", "9000", "arp", "off", "up"]);
        }
        Veth { rx, tx }
    }

    /// Sends `file` `loops` times at `pps` packets/s (blocking).
    pub fn replay(&self, file: &Path, pps: u32, loops: u32) {
        let out = self.replay_cmd(file, pps, loops).output().unwrap();
        assert!(out.status.success(), "tcpreplay: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// As `replay`, in the background.
    pub fn replay_bg(&self, file: &Path, pps: u32, loops: u32) -> Child {
        self.replay_cmd(file, pps, loops).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    fn replay_cmd(&self, file: &Path, pps: u32, loops: u32) -> Command {
        let mut c = Command::new("tcpreplay");
        c.args(["-q", "-i", &self.tx, &format!("--pps={pps}"), &format!("--loop={loops}")]).arg(file);
        c
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.rx]).stderr(Stdio::null()).status();
    }
}
