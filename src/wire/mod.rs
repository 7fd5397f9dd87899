//! Zero-copy packet parsing: header views over `&[u8]` and the compact key filters match on.
//!
//! Invariants: no `unsafe`, no panics on any input (every length is checked once, in each view's
//! `parse`), and a key only holds what the packet proves: a truncated or malformed header leaves
//! the fields it would have provided as `None`.
#![deny(unsafe_code)]
use std::net::IpAddr;

pub mod ethernet;
pub mod ipv4;
pub mod ipv6;

use ethernet::{EthernetView, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use ipv4::Ipv4View;
use ipv6::Ipv6View;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad IP version {0}")]
    BadVersion(u8),
    #[error("bad header length {0}")]
    BadHeaderLen(usize),
    #[error("more than two VLAN tags")]
    TooManyVlanTags,
    #[error("IPv6 extension-header chain too long")]
    TooManyExtensionHeaders,
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// IP addresses of a packet, kept as 128-bit integers (IPv4 in the low 32 bits) so that matching
/// is two integer compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3 {
    #[default]
    None,
    V4 {
        src: u32,
        dst: u32,
    },
    V6 {
        src: u128,
        dst: u128,
    },
}

/// Everything filter_v1 can ask about a packet, parsed once per packet on the RX core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketKey {
    pub l3: L3,
    /// IPv4 protocol or IPv6 upper-layer next header (after extension headers).
    pub protocol: Option<u8>,
    /// TCP/UDP/SCTP ports; only in unfragmented packets and first fragments.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub vlan_tags: u8,
}

impl PacketKey {
    pub fn src_addr(&self) -> Option<IpAddr> {
        match self.l3 {
            L3::None => None,
            L3::V4 { src, .. } => Some(IpAddr::from(src.to_be_bytes())),
            L3::V6 { src, .. } => Some(IpAddr::from(src.to_be_bytes())),
        }
    }

    pub fn dst_addr(&self) -> Option<IpAddr> {
        match self.l3 {
            L3::None => None,
            L3::V4 { dst, .. } => Some(IpAddr::from(dst.to_be_bytes())),
            L3::V6 { dst, .. } => Some(IpAddr::from(dst.to_be_bytes())),
        }
    }
}

/// Parses an Ethernet frame into a `PacketKey`. Never fails: what cannot be proven is `None`.
#[inline]
pub fn parse(frame: &[u8]) -> PacketKey {
    match PlainV4::of(frame) {
        Some(h) => h.key(),
        None => parse_general(frame),
    }
}

/// Bytes 8..40 of an untagged IPv4 frame without IP options (most traffic), viewed in place.
/// Everything filter_v1 asks of such a frame sits at a fixed offset in them, so a compiled filter
/// is a mask and an expected value over these 32 bytes (`filter::Matcher::matches_plain_v4`): the
/// RX core's hottest code, two 16-byte compares and no branch per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainV4<'a>(pub &'a [u8; 32]);

impl<'a> PlainV4<'a> {
    /// First byte of the frame the view starts at.
    pub const FROM: usize = 8;
    /// Shortest frame the fast path takes (shorter ones take `parse_general`).
    pub const MIN_FRAME: usize = 40;
    /// Frame offsets of the fields filter_v1 reads.
    pub const ETHERTYPE: usize = 12;
    pub const VERSION_IHL: usize = 14;
    pub const TOTAL_LEN: usize = 16;
    pub const FRAGMENT: usize = 20;
    pub const PROTOCOL: usize = 23;
    pub const SRC: usize = 26;
    pub const DST: usize = 30;
    pub const SRC_PORT: usize = 34;
    pub const DST_PORT: usize = 36;

    #[inline(always)]
    pub fn of(frame: &'a [u8]) -> Option<PlainV4<'a>> {
        let b: &[u8; 32] = frame.get(Self::FROM..Self::MIN_FRAME)?.try_into().ok()?;
        // Ethertype 0x0800, then version 4 with a 20-byte header.
        const AT: usize = PlainV4::ETHERTYPE - PlainV4::FROM;
        const _: () = assert!(PlainV4::VERSION_IHL == PlainV4::ETHERTYPE + 2);
        (b[AT..AT + 3] == [0x08, 0x00, 0x45]).then_some(PlainV4(b))
    }

    /// The frame's byte at `at` (`FROM <= at < MIN_FRAME`).
    #[inline(always)]
    pub fn byte(&self, at: usize) -> u8 {
        self.0[at - Self::FROM]
    }

    #[inline(always)]
    fn be16(&self, at: usize) -> u16 {
        be16(self.0, at - Self::FROM)
    }

    fn be32(&self, at: usize) -> u32 {
        u32::from(self.be16(at)) << 16 | u32::from(self.be16(at + 2))
    }

    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        self.byte(Self::PROTOCOL)
    }

    /// Bytes of source and destination port at the start of a TCP, UDP or SCTP header.
    pub const PORTS_LEN: u16 = 4;

    /// The payload length as far as the ports need it, as `Ipv4View::payload` bounds it (by
    /// total_len when that is at least a header, else by the frame): a frame of `MIN_FRAME` bytes
    /// has 6 after the header, so only a total_len of 20 to 23 says less than `PORTS_LEN`. (A
    /// total_len under 20 wraps to a large value: the frame bounds the payload then.)
    #[inline(always)]
    pub fn payload_len(&self) -> u16 {
        self.be16(Self::TOTAL_LEN).wrapping_sub(20)
    }

    #[inline(always)]
    pub fn has_room_for_ports(&self) -> bool {
        self.payload_len() >= Self::PORTS_LEN
    }

    /// The `PacketKey` `parse_general` gives for the same frame.
    pub fn key(&self) -> PacketKey {
        let protocol = self.protocol();
        let ports = self.be16(Self::FRAGMENT) & 0x1fff == 0 && carries_ports(protocol) && self.has_room_for_ports();
        PacketKey {
            l3: L3::V4 { src: self.be32(Self::SRC), dst: self.be32(Self::DST) },
            protocol: Some(protocol),
            src_port: ports.then(|| self.be16(Self::SRC_PORT)),
            dst_port: ports.then(|| self.be16(Self::DST_PORT)),
            vlan_tags: 0,
        }
    }
}

/// Every frame `parse` handles, the slow way: VLAN tags, IPv4 options, IPv6 extension headers.
#[inline(never)]
pub fn parse_general(frame: &[u8]) -> PacketKey {
    let mut key = PacketKey::default();
    let Ok(eth) = EthernetView::parse(frame) else {
        return key;
    };
    key.vlan_tags = eth.vlan_tags();
    match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let Ok(ip) = Ipv4View::parse(eth.payload()) else {
                return key;
            };
            key.l3 = L3::V4 { src: u32::from(ip.src()), dst: u32::from(ip.dst()) };
            key.protocol = Some(ip.protocol());
            if ip.frag_offset() == 0 {
                set_ports(&mut key, ip.protocol(), ip.payload());
            }
        }
        ETHERTYPE_IPV6 => {
            let Ok(ip) = Ipv6View::parse(eth.payload()) else {
                return key;
            };
            key.l3 = L3::V6 { src: u128::from(ip.src()), dst: u128::from(ip.dst()) };
            if let Ok(up) = ip.upper_layer() {
                key.protocol = Some(up.protocol);
                if let Some(payload) = up.payload {
                    set_ports(&mut key, up.protocol, payload);
                }
            }
        }
        _ => {}
    }
    key
}

/// Whether packets of this IP protocol have the ports filter_v1 matches (TCP, UDP, SCTP).
#[inline(always)]
pub fn carries_ports(protocol: u8) -> bool {
    matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
}

/// TCP, UDP and SCTP all start with source and destination port: 4 bytes prove both.
#[inline]
fn set_ports(key: &mut PacketKey, protocol: u8, l4: &[u8]) {
    if carries_ports(protocol) && l4.len() >= 4 {
        key.src_port = Some(be16(l4, 0));
        key.dst_port = Some(be16(l4, 2));
    }
}

#[cfg(test)]
pub(crate) mod testpkt {
    //! Small frame builders shared by wire and filter tests.
    pub fn eth(ethertype: u16, vlans: &[u16], l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for v in vlans {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag_off: u16, l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frag_off.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(l4);
        h
    }

    pub fn ports(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = sport.to_be_bytes().to_vec();
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::testpkt::*;
    use super::*;

    #[test]
    fn tcp_over_vlan() {
        let f = eth(0x0800, &[100], &ipv4([1, 2, 3, 4], [5, 6, 7, 8], 6, 0, &ports(1234, 80)));
        let k = parse(&f);
        assert_eq!(k.src_addr(), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(k.dst_addr(), Some("5.6.7.8".parse().unwrap()));
        assert_eq!((k.protocol, k.src_port, k.dst_port, k.vlan_tags), (Some(6), Some(1234), Some(80), 1));
    }

    #[test]
    fn later_fragment_keeps_protocol_not_ports() {
        let f = eth(0x0800, &[], &ipv4([1, 2, 3, 4], [5, 6, 7, 8], 17, 185, &ports(1234, 53)));
        let k = parse(&f);
        assert_eq!((k.protocol, k.src_port, k.dst_port), (Some(17), None, None));
    }

    #[test]
    fn icmp_has_no_ports() {
        let f = eth(0x0800, &[], &ipv4([1, 2, 3, 4], [5, 6, 7, 8], 1, 0, &[8, 0, 0, 0, 0, 1, 0, 1]));
        let k = parse(&f);
        assert_eq!((k.protocol, k.src_port), (Some(1), None));
    }

    #[test]
    fn arp_has_nothing() {
        let f = eth(0x0806, &[], &[0; 28]);
        assert_eq!(parse(&f), PacketKey::default());
    }

    #[test]
    fn truncation_never_panics_and_never_invents_ports() {
        let f = eth(0x0800, &[100, 200], &ipv4([1, 2, 3, 4], [5, 6, 7, 8], 6, 0, &ports(1234, 80)));
        for n in 0..f.len() {
            let k = parse(&f[..n]);
            let ip_end = 14 + 8 + 20;
            if n < ip_end {
                assert_eq!(k.l3, L3::None, "len {n}");
            }
            if n < ip_end + 4 {
                assert_eq!(k.src_port, None, "len {n}");
            } else {
                assert_eq!(k.dst_port, Some(80), "len {n}");
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: xorshift bytes of every length up to 200.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..200 {
            for _ in 0..50 {
                let mut b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                if len > 14 {
                    b[12] = [0x08, 0x86, 0x81][len % 3];
                    b[13] = [0x00, 0xdd, 0x00][len % 3];
                }
                let _ = parse(&b);
            }
        }
    }

    #[test]
    fn plain_v4_takes_only_untagged_ipv4_without_options() {
        let l3 = ipv4([10, 0, 0, 1], [192, 168, 1, 2], PROTO_UDP, 0, &ports(4321, 443));
        let plain = eth(0x0800, &[], &l3);
        assert!(PlainV4::of(&plain).is_some());
        assert!(PlainV4::of(&plain[..PlainV4::MIN_FRAME]).is_some());
        assert!(PlainV4::of(&plain[..PlainV4::MIN_FRAME - 1]).is_none(), "short frames take the general parser");
        assert!(PlainV4::of(&eth(0x0800, &[7], &l3)).is_none(), "VLAN");
        assert!(PlainV4::of(&eth(0x86dd, &[], &l3)).is_none(), "not IPv4");
        let mut options = plain.clone();
        options[14] = 0x46;
        assert!(PlainV4::of(&options).is_none(), "IPv4 options");
        options[14] = 0x65;
        assert!(PlainV4::of(&options).is_none(), "not version 4");
    }

    #[test]
    fn plain_ipv4_fast_path_agrees_with_the_general_parser() {
        // Every field the fast path reads, at its edges: total_len (inconsistent, short, long),
        // fragment bits, protocols with and without ports, and every frame length it accepts.
        let mut checked = 0;
        for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP, 47] {
            for frag in [0u16, 0x4000, 0x2000, 0x0001, 0x1fff, 0x8000] {
                let base = eth(0x0800, &[], &ipv4([10, 0, 0, 1], [192, 168, 1, 2], proto, frag, &ports(4321, 443)));
                for total in [0u16, 19, 20, 21, 23, 24, 25, 40, 60, 1500] {
                    for len in PlainV4::MIN_FRAME..=base.len() + 4 {
                        let mut f = base.clone();
                        f.resize(len, 0);
                        f[16..18].copy_from_slice(&total.to_be_bytes());
                        let fast = PlainV4::of(&f).expect("a plain IPv4 frame");
                        assert_eq!(
                            fast.key(),
                            parse_general(&f),
                            "proto {proto} frag {frag:#x} total {total} len {len}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
    }
}
