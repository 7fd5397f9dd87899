//! Cloudflare's `filter_v1`: parsing (strict, errors name the field) and the compiled matcher.
//!
//! Semantics: every given field must match; `{}` matches everything. Addresses match the IPv4 or
//! IPv6 source/destination; `protocol` is the IPv4 protocol or the IPv6 upper-layer next header;
//! ports are TCP/UDP/SCTP ports of unfragmented packets and first fragments. A packet that cannot
//! prove a field (no IP header, truncated L4, later fragment) does not match a filter on it.
#![deny(unsafe_code)]
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::simd::Masked32;
use crate::wire::{carries_ports, PacketKey, PlainV4, L3};

/// A validated filter, as given (echoed back by the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterV1 {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
}

/// A filter_v1 that failed validation; `field` is the JSON path (e.g. `filter_v1.source_port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FilterError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> FilterError {
    FilterError { field: format!("filter_v1.{field}"), reason: reason.into() }
}

impl FilterV1 {
    /// Parses a JSON text (as given on the command line).
    pub fn from_json_str(s: &str) -> Result<FilterV1, FilterError> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| FilterError { field: "filter_v1".into(), reason: format!("invalid JSON: {e}") })?;
        FilterV1::from_json(&v)
    }

    /// Validates a JSON value: an object with only the five known fields, each of the right type
    /// and range. `null` means "no filter".
    pub fn from_json(v: &Value) -> Result<FilterV1, FilterError> {
        let obj: &Map<String, Value> = match v {
            Value::Null => return Ok(FilterV1::default()),
            Value::Object(o) => o,
            other => {
                return Err(FilterError {
                    field: "filter_v1".into(),
                    reason: format!("must be an object, got {}", type_name(other)),
                })
            }
        };
        let mut f = FilterV1::default();
        for (k, val) in obj {
            match k.as_str() {
                "source_address" => f.source_address = address(k, val)?,
                "destination_address" => f.destination_address = address(k, val)?,
                "source_port" => f.source_port = integer(k, val, 65535)?.map(|n| n as u16),
                "destination_port" => f.destination_port = integer(k, val, 65535)?.map(|n| n as u16),
                "protocol" => f.protocol = integer(k, val, 255)?.map(|n| n as u8),
                _ => return Err(err(k, "unknown field (allowed: source_address, destination_address, source_port, destination_port, protocol)")),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == FilterV1::default()
    }

    pub fn compile(&self) -> Matcher {
        Matcher {
            src: self.source_address.map(addr_key),
            dst: self.destination_address.map(addr_key),
            src_port: self.source_port,
            dst_port: self.destination_port,
            protocol: self.protocol,
            v4: self.plain_v4_rule(),
        }
    }

    /// The same conditions over `PlainV4` bytes: each address and port is a byte range to
    /// equal; the protocol is a table lookup that also says which protocols a port filter may
    /// match (with ports, or only the one named: none if it has none); a port also asks for an
    /// unfragmented packet or first fragment (offset bits zero) whose payload has room for it.
    fn plain_v4_rule(&self) -> V4Rule {
        let (mut mask, mut want) = ([0u8; 32], [0u8; 32]);
        let mut set = |at: usize, m: &[u8], v: &[u8]| {
            let at = at - PlainV4::FROM;
            mask[at..at + m.len()].copy_from_slice(m);
            want[at..at + v.len()].copy_from_slice(v);
        };
        let ports = self.source_port.is_some() || self.destination_port.is_some();
        let mut protocols: [bool; 256] = std::array::from_fn(|p| {
            self.protocol.is_none_or(|want| want as usize == p) && (!ports || carries_ports(p as u8))
        });
        for (addr, at) in [(self.source_address, PlainV4::SRC), (self.destination_address, PlainV4::DST)] {
            match addr {
                Some(IpAddr::V4(a)) => set(at, &[0xff; 4], &a.octets()),
                Some(IpAddr::V6(_)) => protocols = [false; 256],
                None => {}
            }
        }
        for (port, at) in [(self.source_port, PlainV4::SRC_PORT), (self.destination_port, PlainV4::DST_PORT)] {
            if let Some(p) = port {
                set(at, &[0xff; 2], &p.to_be_bytes());
            }
        }
        if ports {
            set(PlainV4::FRAGMENT, &[0x1f, 0xff], &[0, 0]);
        }
        V4Rule { bytes: Masked32::new(mask, want), min_payload: if ports { PlainV4::PORTS_LEN } else { 0 }, protocols }
    }
}

/// "a number", "a string", ...: for error messages about JSON values.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn address(field: &str, v: &Value) -> Result<Option<IpAddr>, FilterError> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        other => return Err(err(field, format!("must be an IPv4 or IPv6 address string, got {}", type_name(other)))),
    };
    let ip: IpAddr = s.parse().map_err(|_| err(field, format!("{s:?} is not an IPv4 or IPv6 address")))?;
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            return Err(err(field, format!("{s:?} is an IPv4-mapped IPv6 address; give the IPv4 address instead")));
        }
    }
    Ok(Some(ip))
}

/// A JSON number that is a whole number in `0..=max`: `80` and `80.0` pass, `80.5` and `"80"` fail.
fn integer(field: &str, v: &Value, max: u64) -> Result<Option<u64>, FilterError> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n,
        other => return Err(err(field, format!("must be an integer between 0 and {max}, got {}", type_name(other)))),
    };
    let out_of_range = || err(field, format!("{n} is out of range (0 to {max})"));
    if let Some(u) = n.as_u64() {
        return if u <= max { Ok(Some(u)) } else { Err(out_of_range()) };
    }
    if n.as_i64().is_some() {
        return Err(out_of_range());
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() != 0.0 || !f.is_finite() {
        return Err(err(field, format!("{n} is not a whole number")));
    }
    if f < 0.0 || f > max as f64 {
        return Err(out_of_range());
    }
    Ok(Some(f as u64))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrKey {
    V4(u32),
    V6(u128),
}

fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(a) => AddrKey::V4(u32::from(a)),
        IpAddr::V6(a) => AddrKey::V6(u128::from(a)),
    }
}

/// A compiled filter_v1: a handful of optional integer compares over a `PacketKey`, and the same
/// filter as masks over `PlainV4` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matcher {
    src: Option<AddrKey>,
    dst: Option<AddrKey>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    v4: V4Rule,
}

/// A filter over `PlainV4` bytes: their addresses, ports and fragment offset as `bytes` asks,
/// of a protocol `protocols` allows, with at least `min_payload` bytes of payload
/// (`PlainV4::payload_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct V4Rule {
    bytes: Masked32,
    min_payload: u16,
    protocols: [bool; 256],
}

impl Default for V4Rule {
    /// The rule of `{}`: everything matches.
    fn default() -> Self {
        V4Rule { bytes: Masked32::new([0; 32], [0; 32]), min_payload: 0, protocols: [true; 256] }
    }
}

impl Matcher {
    #[inline]
    pub fn matches(&self, k: &PacketKey) -> bool {
        if let Some(want) = self.src {
            let ok = match (want, k.l3) {
                (AddrKey::V4(a), L3::V4 { src, .. }) => a == src,
                (AddrKey::V6(a), L3::V6 { src, .. }) => a == src,
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        if let Some(want) = self.dst {
            let ok = match (want, k.l3) {
                (AddrKey::V4(a), L3::V4 { dst, .. }) => a == dst,
                (AddrKey::V6(a), L3::V6 { dst, .. }) => a == dst,
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        (self.protocol.is_none() || self.protocol == k.protocol)
            && (self.src_port.is_none() || self.src_port == k.src_port)
            && (self.dst_port.is_none() || self.dst_port == k.dst_port)
    }

    /// `matches` for a plain IPv4 frame (the same answer as for `h.key()`), without a branch.
    #[inline(always)]
    pub fn matches_plain_v4(&self, h: &PlainV4) -> bool {
        let r = &self.v4;
        r.bytes.matches(h.0) & (h.payload_len() >= r.min_payload) & r.protocols[usize::from(h.protocol())]
    }

    pub fn matches_all(&self) -> bool {
        *self == Matcher::default()
    }
}

/// Up to 64 compiled filters matched in one pass (the RX cores' many captures): bit `i` of an
/// answer is filter `i`'s. Plain IPv4 frames go through groups of filters that read the same
/// bytes (the same mask, payload need and protocol set) and differ only in the values wanted:
/// one masked copy of the frame's bytes and one hash lookup a group, however many filters it
/// holds (64 captures of "this destination address and port" cost one lookup). Other frames ask
/// each filter.
#[derive(Debug, Clone, Default)]
pub struct MatcherSet {
    groups: Vec<Group>,
    each: Vec<Matcher>,
}

/// Filters whose V4 rules differ only in the bytes they want.
#[derive(Debug, Clone)]
struct Group {
    mask: [u64; 4],
    min_payload: u16,
    /// The protocols it takes, one bit each.
    protocols: [u64; 4],
    table: ValueTable,
}

/// Wanted bytes → the filters wanting them: open addressing, at most half full; a slot whose
/// `bits` is 0 is empty (every filter has a bit).
#[derive(Debug, Clone)]
struct ValueTable {
    keys: Vec<[u64; 4]>,
    bits: Vec<u64>,
    shift: u32,
}

impl ValueTable {
    fn with_room(n: usize) -> ValueTable {
        let size = (2 * n).next_power_of_two().max(4);
        ValueTable { keys: vec![[0; 4]; size], bits: vec![0; size], shift: 64 - size.trailing_zeros() }
    }

    #[inline(always)]
    fn slot(&self, k: &[u64; 4]) -> usize {
        let h = (k[0] ^ k[1].rotate_left(17) ^ k[2].rotate_left(31) ^ k[3].rotate_left(47))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> self.shift) as usize
    }

    fn insert(&mut self, k: [u64; 4], bit: u64) {
        let mut i = self.slot(&k);
        while self.bits[i] != 0 && self.keys[i] != k {
            i = (i + 1) & (self.bits.len() - 1);
        }
        self.keys[i] = k;
        self.bits[i] |= bit;
    }

    #[inline(always)]
    fn get(&self, k: &[u64; 4]) -> u64 {
        let mask = self.bits.len() - 1;
        let mut i = self.slot(k);
        loop {
            let bits = self.bits[i];
            if bits == 0 || self.keys[i] == *k {
                return bits;
            }
            i = (i + 1) & mask;
        }
    }
}

fn words(b: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default()))
}

impl MatcherSet {
    pub const MAX: usize = 64;

    /// The set of `matchers` (at most [`MatcherSet::MAX`]; more are left out).
    pub fn new(matchers: &[Matcher]) -> MatcherSet {
        let each: Vec<Matcher> = matchers.iter().take(Self::MAX).copied().collect();
        let mut groups: Vec<Group> = Vec::new();
        for (i, m) in each.iter().enumerate() {
            let (mask, want) = m.v4.bytes.parts();
            let (mask, want) = (words(&mask), words(&want));
            let protocols: [u64; 4] =
                std::array::from_fn(|w| (0..64).fold(0, |bits, b| bits | (u64::from(m.v4.protocols[w * 64 + b]) << b)));
            let same = |g: &&mut Group| g.mask == mask && g.min_payload == m.v4.min_payload && g.protocols == protocols;
            let bit = 1u64 << i;
            match groups.iter_mut().find(same) {
                Some(g) => g.table.insert(want, bit),
                None => {
                    let mut table = ValueTable::with_room(each.len());
                    table.insert(want, bit);
                    groups.push(Group { mask, min_payload: m.v4.min_payload, protocols, table });
                }
            }
        }
        MatcherSet { groups, each }
    }

    pub fn len(&self) -> usize {
        self.each.len()
    }

    pub fn is_empty(&self) -> bool {
        self.each.is_empty()
    }

    /// The filters a plain IPv4 frame matches (`Matcher::matches_plain_v4` of each).
    #[inline]
    pub fn matches_plain_v4(&self, h: &PlainV4) -> u64 {
        let (bytes, proto, payload) = (words(h.0), usize::from(h.protocol()), h.payload_len());
        let mut hits = 0;
        for g in &self.groups {
            if (g.protocols[proto >> 6] >> (proto & 63)) & 1 != 0 && payload >= g.min_payload {
                let k = std::array::from_fn(|i| bytes[i] & g.mask[i]);
                hits |= g.table.get(&k);
            }
        }
        hits
    }

    /// The filters any parsed frame matches (`Matcher::matches` of each).
    #[inline]
    pub fn matches(&self, k: &PacketKey) -> u64 {
        self.each.iter().enumerate().fold(0, |hits, (i, m)| hits | (u64::from(m.matches(k)) << i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testpkt::*;
    use crate::wire::{parse, L3};
    use serde_json::json;

    fn m(v: Value) -> Matcher {
        FilterV1::from_json(&v).unwrap().compile()
    }

    fn field_err(v: Value) -> FilterError {
        FilterV1::from_json(&v).unwrap_err()
    }

    /// The set answers what each filter answers, for filters sharing a shape and not, over
    /// every frame of the fixture and random mutations of them.
    #[test]
    fn a_matcher_set_answers_as_each_of_its_filters() {
        // The fixture's 29 kinds of frames (a little-endian pcap), and a few generated ones.
        let pcap = include_bytes!("../tests/fixtures/frames.pcap");
        let mut frames = Vec::new();
        let mut at = 24;
        while at + 16 <= pcap.len() {
            let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
            frames.push(pcap[at + 16..at + 16 + caplen].to_vec());
            at += 16 + caplen;
        }
        for (i, proto) in [6u8, 17, 132, 1].into_iter().enumerate() {
            let l4 = ports(1000 + i as u16, 443);
            frames.push(eth(0x0800, &[], &ipv4([10, 0, 0, i as u8], [192, 0, 2, 7], proto, 0, &l4)));
        }
        let mut filters = vec![json!({}), json!({"protocol": 17}), json!({"protocol": 6, "destination_port": 443})];
        for f in &frames {
            if let Some(h) = PlainV4::of(f) {
                let k = h.key();
                let (src, dst) = (k.src_addr().unwrap().to_string(), k.dst_addr().unwrap().to_string());
                filters.push(json!({"destination_address": dst}));
                filters.push(json!({"source_address": src, "protocol": h.protocol()}));
                if let (Some(sp), Some(dp)) = (k.src_port, k.dst_port) {
                    filters.push(json!({"source_port": sp, "destination_port": dp}));
                    filters.push(json!({"destination_address": dst, "destination_port": dp}));
                }
            }
        }
        filters.push(json!({"destination_address": "2001:db8::1"}));
        filters.truncate(MatcherSet::MAX);
        let each: Vec<Matcher> = filters.iter().map(|f| m(f.clone())).collect();
        let set = MatcherSet::new(&each);
        assert!(set.groups.len() < each.len(), "filters of one shape share a group");
        let mut seed = 0x1234_5678u32;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut checked = 0;
        for f in &frames {
            for round in 0..20 {
                let mut f = f.clone();
                if round > 0 && f.len() > 40 {
                    let at = 8 + (rand() as usize % 32);
                    f[at] ^= 1 << (rand() % 8);
                }
                let k = parse(&f);
                let want: u64 = each.iter().enumerate().map(|(i, m)| u64::from(m.matches(&k)) << i).sum();
                assert_eq!(set.matches(&k), want);
                if let Some(h) = PlainV4::of(&f) {
                    let want_v4: u64 =
                        each.iter().enumerate().map(|(i, m)| u64::from(m.matches_plain_v4(&h)) << i).sum();
                    assert_eq!(set.matches_plain_v4(&h), want_v4, "frame {f:02x?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn empty_matches_everything_even_garbage() {
        assert!(m(json!({})).matches(&parse(&[1, 2, 3])));
        assert!(m(Value::Null).matches_all());
    }

    #[test]
    fn each_field_and_combinations() {
        let tcp = parse(&eth(0x0800, &[], &ipv4([1, 2, 3, 4], [5, 6, 7, 8], 6, 0, &ports(1234, 80))));
        assert!(m(json!({"source_address": "1.2.3.4"})).matches(&tcp));
        assert!(!m(json!({"source_address": "5.6.7.8"})).matches(&tcp));
        assert!(m(json!({"destination_address": "5.6.7.8"})).matches(&tcp));
        assert!(m(json!({"source_port": 1234, "destination_port": 80.0, "protocol": 6})).matches(&tcp));
        assert!(!m(json!({"source_port": 1234, "destination_port": 81})).matches(&tcp));
        assert!(!m(json!({"protocol": 17})).matches(&tcp));
        assert!(!m(json!({"source_address": "::1"})).matches(&tcp));
    }

    #[test]
    fn ipv6_addresses_compare_as_integers() {
        let k = PacketKey {
            l3: L3::V6 { src: 1, dst: u128::from("2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap()) },
            ..Default::default()
        };
        assert!(m(json!({"source_address": "::1", "destination_address": "2001:db8:0::2"})).matches(&k));
        assert!(!m(json!({"source_address": "0.0.0.1"})).matches(&k));
    }

    #[test]
    fn port_filter_never_matches_a_packet_without_ports() {
        let frag = parse(&eth(0x0800, &[], &ipv4([1, 2, 3, 4], [5, 6, 7, 8], 6, 185, &ports(1234, 80))));
        assert!(!m(json!({"destination_port": 80})).matches(&frag));
        assert!(m(json!({"protocol": 6})).matches(&frag));
        assert!(!m(json!({"protocol": 0})).matches(&parse(&[0; 14])));
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(field_err(json!({"source_port": 65536})).field, "filter_v1.source_port");
        assert!(field_err(json!({"source_port": 80.5})).reason.contains("whole number"));
        assert!(field_err(json!({"source_port": "80"})).reason.contains("got a string"));
        assert!(field_err(json!({"destination_port": -1})).reason.contains("out of range"));
        assert_eq!(field_err(json!({"protocol": 256})).field, "filter_v1.protocol");
        assert!(field_err(json!({"source_address": "1.2.3"})).reason.contains("not an IPv4"));
        assert!(field_err(json!({"source_address": "::ffff:1.2.3.4"})).reason.contains("IPv4-mapped"));
        assert!(field_err(json!({"source_address": 16909060})).reason.contains("got a number"));
        assert_eq!(field_err(json!({"src": "1.2.3.4"})).field, "filter_v1.src");
        assert_eq!(field_err(json!([1])).field, "filter_v1");
        assert!(FilterV1::from_json_str("{not json").unwrap_err().reason.contains("invalid JSON"));
    }

    #[test]
    fn echo_omits_absent_fields() {
        let f = FilterV1::from_json(&json!({"protocol": 6.0, "source_address": "::1"})).unwrap();
        assert_eq!(serde_json::to_value(&f).unwrap(), json!({"source_address": "::1", "protocol": 6}));
    }

    #[test]
    fn plain_ipv4_matching_agrees_with_the_general_matcher() {
        let filters = [
            json!({}),
            json!({"source_address": "10.0.0.1"}),
            json!({"source_address": "10.0.0.2"}),
            json!({"destination_address": "192.168.1.2"}),
            json!({"destination_address": "::1"}),
            json!({"source_address": "2001:db8::1"}),
            json!({"protocol": 6}),
            json!({"protocol": 1, "source_port": 4321}),
            json!({"protocol": 17, "destination_port": 443}),
            json!({"source_port": 4321}),
            json!({"source_port": 4321, "destination_port": 443, "protocol": 6, "source_address": "10.0.0.1", "destination_address": "192.168.1.2"}),
            json!({"destination_port": 0}),
            json!({"source_port": 443, "destination_port": 4321}),
        ];
        let mut checked = 0;
        for f in filters {
            let m = m(f.clone());
            for src in [[10, 0, 0, 1], [10, 0, 0, 2]] {
                for protocol in [0u8, 1, 6, 17, 47, 132, 255] {
                    for frag in [0u16, 0x4000, 0x2000, 185] {
                        for total in [0u16, 21, 24, 60] {
                            for (sport, dport) in [(4321, 443), (0, 0), (443, 4321)] {
                                let mut frame = eth(
                                    0x0800,
                                    &[],
                                    &ipv4(src, [192, 168, 1, 2], protocol, frag, &ports(sport, dport)),
                                );
                                frame[16..18].copy_from_slice(&total.to_be_bytes());
                                let h = PlainV4::of(&frame).unwrap();
                                assert_eq!(m.matches_plain_v4(&h), m.matches(&h.key()), "{f} {:?}", h.key());
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 13 * 2 * 7 * 4 * 4 * 3);
    }
}
