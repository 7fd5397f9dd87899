//! One captured Ethernet frame decoded for people: addresses, protocol, and a short info text
//! (TCP flags and ports, UDP ports, ICMP type, the DNS question's name on port 53), as the
//! packet list of a capture's summary shows it. Pure, no `unsafe`, no panics on any bytes: what
//! a truncated or malformed header cannot prove is absent and `malformed` says why.
//!
//! It reuses the filter's header views (`wire`) for IPv4 and IPv6 (extension headers), but walks
//! any number of VLAN tags itself (up to 8, as Wireshark shows them), where filter_v1 stops at two.
use std::net::IpAddr;

use serde::Serialize;

use crate::wire::ipv4::Ipv4View;
use crate::wire::ipv6::Ipv6View;
use crate::wire::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const MAX_TAGS: usize = 8;
const DNS_PORT: u16 = 53;

/// What a frame says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decoded {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    /// TCP, UDP, ICMP, ICMPv6, SCTP, GRE, "IP proto 99", IPv4/IPv6 (unreadable above L3), ARP,
    /// "EtherType 0x88cc", Ethernet (runt).
    pub protocol: String,
    /// IPv4 protocol or IPv6 upper-layer header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// The 12 flag bits of TCP (as Wireshark's `tcp.flags`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// The first question's name of a DNS message on port 53.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    pub info: String,
    /// Why a header could not be read, when one could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<String>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub fn proto_name(p: u8) -> String {
    match p {
        PROTO_ICMP => "ICMP".into(),
        2 => "IGMP".into(),
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        51 => "AH".into(),
        PROTO_ICMPV6 => "ICMPv6".into(),
        89 => "OSPF".into(),
        PROTO_SCTP => "SCTP".into(),
        _ => format!("IP proto {p}"),
    }
}

/// Decodes one frame of link type Ethernet.
pub fn decode(frame: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let Some(mut ethertype) = be16(frame, 12) else {
        d.protocol = "Ethernet".into();
        d.malformed = Some(format!("a runt frame of {} bytes", frame.len()));
        d.info = "malformed: ".to_string() + d.malformed.as_deref().unwrap_or_default();
        return d;
    };
    let mut at = 14;
    let mut tags = 0;
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) && tags < MAX_TAGS {
        let Some(next) = be16(frame, at + 2) else {
            d.protocol = "Ethernet".into();
            return malformed(d, "VLAN tag cut short".into());
        };
        ethertype = next;
        at += 4;
        tags += 1;
    }
    let l3 = frame.get(at..).unwrap_or_default();
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(d, l3),
        ETHERTYPE_IPV6 => ipv6(d, l3),
        ETHERTYPE_ARP => arp(d, l3),
        t => {
            d.protocol = format!("EtherType 0x{t:04x}");
            d.info = format!("{} bytes", frame.len());
            d
        }
    }
}

fn malformed(mut d: Decoded, why: String) -> Decoded {
    d.info = if d.info.is_empty() { format!("malformed: {why}") } else { format!("{} · malformed: {why}", d.info) };
    d.malformed = Some(why);
    d
}

fn ipv4(mut d: Decoded, l3: &[u8]) -> Decoded {
    d.protocol = "IPv4".into();
    let ip = match Ipv4View::parse(l3) {
        Ok(ip) => ip,
        Err(e) => return malformed(d, format!("IPv4 header {e}")),
    };
    d.src = Some(ip.src().into());
    d.dst = Some(ip.dst().into());
    if ip.frag_offset() != 0 {
        d.ip_proto = Some(ip.protocol());
        d.protocol = proto_name(ip.protocol());
        d.info = format!("fragment at offset {}", usize::from(ip.frag_offset()) * 8);
        return d;
    }
    upper(d, ip.protocol(), ip.payload())
}

fn ipv6(mut d: Decoded, l3: &[u8]) -> Decoded {
    d.protocol = "IPv6".into();
    let ip = match Ipv6View::parse(l3) {
        Ok(ip) => ip,
        Err(e) => return malformed(d, format!("IPv6 header {e}")),
    };
    d.src = Some(ip.src().into());
    d.dst = Some(ip.dst().into());
    match ip.upper_layer() {
        Err(e) => malformed(d, format!("IPv6 extension header {e}")),
        Ok(up) => match up.payload {
            Some(payload) => upper(d, up.protocol, payload),
            None => {
                d.ip_proto = Some(up.protocol);
                d.protocol = proto_name(up.protocol);
                d.info = "fragment (not the first)".into();
                d
            }
        },
    }
}

fn arp(mut d: Decoded, b: &[u8]) -> Decoded {
    d.protocol = "ARP".into();
    // Ethernet/IPv4 ARP: hardware 1, protocol 0x0800, lengths 6 and 4.
    if b.len() < 28 || b[..6] != [0, 1, 8, 0, 6, 4] {
        d.info = "ARP (not Ethernet/IPv4, or cut short)".into();
        return d;
    }
    let ip = |at: usize| IpAddr::from([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    d.info = match be16(b, 6) {
        Some(1) => format!("who has {}? tell {}", ip(24), ip(14)),
        Some(2) => format!("{} is at {}", ip(14), mac(&b[8..14])),
        op => format!("ARP op {}", op.unwrap_or_default()),
    };
    d
}

fn mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn upper(mut d: Decoded, proto: u8, l4: &[u8]) -> Decoded {
    d.ip_proto = Some(proto);
    d.protocol = proto_name(proto);
    match proto {
        PROTO_TCP => tcp(d, l4),
        PROTO_UDP => udp(d, l4),
        PROTO_SCTP => {
            if let (Some(s), Some(t)) = (be16(l4, 0), be16(l4, 2)) {
                (d.src_port, d.dst_port) = (Some(s), Some(t));
                d.info = format!("{s} → {t}");
                d
            } else {
                malformed(d, format!("SCTP header cut short ({} bytes)", l4.len()))
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 => match l4.first() {
            Some(&t) => {
                d.icmp_type = Some(t);
                let code = l4.get(1).copied().unwrap_or_default();
                d.info = icmp_text(proto == PROTO_ICMPV6, t, code);
                d
            }
            None => malformed(d, "ICMP header cut short (0 bytes)".into()),
        },
        _ => {
            d.info = format!("{} bytes of payload", l4.len());
            d
        }
    }
}

fn ports(d: &mut Decoded, l4: &[u8]) -> bool {
    match (be16(l4, 0), be16(l4, 2)) {
        (Some(s), Some(t)) => {
            (d.src_port, d.dst_port) = (Some(s), Some(t));
            d.info = format!("{s} → {t}");
            true
        }
        _ => false,
    }
}

const TCP_FLAGS: [(u16, &str); 9] = [
    (0x001, "FIN"),
    (0x002, "SYN"),
    (0x004, "RST"),
    (0x008, "PSH"),
    (0x010, "ACK"),
    (0x020, "URG"),
    (0x040, "ECE"),
    (0x080, "CWR"),
    (0x100, "AE"),
];

fn tcp(mut d: Decoded, l4: &[u8]) -> Decoded {
    if !ports(&mut d, l4) {
        return malformed(d, format!("TCP header cut short ({} of 20 bytes)", l4.len()));
    }
    let (Some(&off), Some(&flags)) = (l4.get(12), l4.get(13)) else {
        return malformed(d, format!("TCP header cut short ({} of 20 bytes)", l4.len()));
    };
    let bits = u16::from(off & 0x0f) << 8 | u16::from(flags);
    d.tcp_flags = Some(bits);
    let names: Vec<&str> = TCP_FLAGS.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    d.info = format!("{} [{}]", d.info, names.join(", "));
    let hlen = usize::from(off >> 4) * 4;
    if hlen < 20 || l4.len() < hlen {
        let why = if hlen < 20 {
            format!("TCP data offset {hlen}")
        } else {
            format!("TCP header cut short ({} of {hlen} bytes)", l4.len())
        };
        return malformed(d, why);
    }
    let payload = &l4[hlen..];
    if !payload.is_empty() {
        d.info = format!("{} len={}", d.info, payload.len());
    }
    // DNS over TCP: a two-byte length, then the message.
    if d.src_port == Some(DNS_PORT) || d.dst_port == Some(DNS_PORT) {
        if let Some(msg) = payload.get(2..) {
            dns(&mut d, msg);
        }
    }
    d
}

fn udp(mut d: Decoded, l4: &[u8]) -> Decoded {
    if !ports(&mut d, l4) {
        return malformed(d, format!("UDP header cut short ({} of 8 bytes)", l4.len()));
    }
    if l4.len() < 8 {
        return malformed(d, format!("UDP header cut short ({} of 8 bytes)", l4.len()));
    }
    if d.src_port == Some(DNS_PORT) || d.dst_port == Some(DNS_PORT) {
        dns(&mut d, &l4[8..]);
    }
    d
}

/// Adds the first question of a DNS message (when it has one that reads whole) to the info.
fn dns(d: &mut Decoded, msg: &[u8]) {
    let (Some(flags), Some(qdcount)) = (be16(msg, 2), be16(msg, 4)) else { return };
    if qdcount == 0 || msg.len() < 12 {
        return;
    }
    let Some((name, end)) = dns_name(msg, 12) else { return };
    // The question's type and class must follow (else it is not a question Wireshark reads).
    let Some(qtype) = be16(msg, end) else { return };
    if msg.len() < end + 4 {
        return;
    }
    let kind = if flags & 0x8000 != 0 { "response" } else { "query" };
    d.info = format!("{} · DNS {kind} {name} {}", d.info, qtype_name(qtype));
    d.dns_name = Some(name);
}

fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        t => format!("type {t}"),
    }
}

/// A domain name at `at` (labels, compression pointers followed at most 16 times), and where
/// the name ends in the message (after its first pointer, if any). `<Root>` for the root.
fn dns_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let end = end.unwrap_or(at + 1);
                return Some((if name.is_empty() { "<Root>".into() } else { name }, end));
            }
            0x00 => {
                let label = msg.get(at + 1..at + 1 + usize::from(len))?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                        name.push(char::from(c));
                    } else {
                        name.push_str(&format!("\\{c:03}"));
                    }
                }
                if name.len() > 1000 {
                    return None;
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let ptr = usize::from(be16(msg, at)? & 0x3fff);
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > 16 {
                    return None;
                }
                at = ptr;
            }
            _ => return None,
        }
    }
}

fn icmp_text(v6: bool, t: u8, code: u8) -> String {
    let name = match (v6, t) {
        (false, 0) => "echo reply",
        (false, 3) => "destination unreachable",
        (false, 5) => "redirect",
        (false, 8) => "echo request",
        (false, 11) => "time exceeded",
        (false, 13) => "timestamp request",
        (false, 14) => "timestamp reply",
        (true, 1) => "destination unreachable",
        (true, 2) => "packet too big",
        (true, 3) => "time exceeded",
        (true, 4) => "parameter problem",
        (true, 128) => "echo request",
        (true, 129) => "echo reply",
        (true, 133) => "router solicitation",
        (true, 134) => "router advertisement",
        (true, 135) => "neighbor solicitation",
        (true, 136) => "neighbor advertisement",
        (true, 137) => "redirect",
        _ => "type",
    };
    format!("{name} (type {t}, code {code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_a_dns_query_decodes_without_panicking() {
        // Ethernet / IPv4 / UDP 5353 -> 53 / a query for a.bc (A), built by hand.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let dns = [0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1];
        let udp_len = 8 + dns.len() as u16;
        let ip_len = 20 + udp_len;
        f.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ]);
        f.extend_from_slice(&[0x14, 0xe9, 0, 53, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        f.extend_from_slice(&dns);
        let d = decode(&f);
        assert_eq!(d.dns_name.as_deref(), Some("a.bc"));
        assert_eq!(d.info, "5353 → 53 · DNS query a.bc A");
        for n in 0..f.len() {
            let d = decode(&f[..n]);
            assert!(d.dns_name.is_none(), "{n}");
        }
    }

    #[test]
    fn compression_loops_end() {
        let msg = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(dns_name(&msg, 12), None);
        let msg = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0xc0, 17, 0, 0, 1, 0, 1];
        assert_eq!(dns_name(&msg, 12), Some(("x".into(), 16)));
    }
}
