//! IPv6 header view and its extension-header chain.
use std::net::Ipv6Addr;

use super::{be16, WireError};

mod off {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const HEADER_LEN: usize = 40;
}

pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_AUTH: u8 = 51;
pub const NH_DEST_OPTS: u8 = 60;

/// Most extension headers walked before giving up (a loop guard against crafted chains).
const MAX_EXT_HEADERS: usize = 8;

/// Borrowed fixed IPv6 header plus whatever follows it.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6View<'a> {
    buf: &'a [u8],
}

/// The end of the extension-header chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer<'a> {
    /// Upper-layer protocol (the last next-header value).
    pub protocol: u8,
    /// Upper-layer bytes, or `None` in a non-first fragment (its bytes are not the L4 header).
    pub payload: Option<&'a [u8]>,
}

impl<'a> Ipv6View<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < off::HEADER_LEN {
            return Err(WireError::Truncated { need: off::HEADER_LEN, have: buf.len() });
        }
        let ver = buf[0] >> 4;
        if ver != 6 {
            return Err(WireError::BadVersion(ver));
        }
        Ok(Ipv6View { buf })
    }

    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        addr(self.buf, off::SRC)
    }

    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        addr(self.buf, off::DST)
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[off::NEXT_HEADER]
    }

    /// Bytes after the fixed header, bounded by `payload_len` when that is consistent.
    fn after_header(&self) -> &'a [u8] {
        let rest = &self.buf[off::HEADER_LEN..];
        let plen = usize::from(be16(self.buf, off::PAYLOAD_LEN));
        // payload_len 0 means a jumbogram (or garbage): keep what was captured.
        if plen > 0 && plen <= rest.len() {
            &rest[..plen]
        } else {
            rest
        }
    }

    /// Walks hop-by-hop, routing, fragment, destination-options and AH headers.
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer<'a>, WireError> {
        let mut nh = self.next_header();
        let mut rest = self.after_header();
        let mut first_fragment = true;
        for _ in 0..MAX_EXT_HEADERS {
            let len = match nh {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    if rest.len() < 2 {
                        return Err(WireError::Truncated { need: 2, have: rest.len() });
                    }
                    (usize::from(rest[1]) + 1) * 8
                }
                NH_FRAGMENT => {
                    if rest.len() < 8 {
                        return Err(WireError::Truncated { need: 8, have: rest.len() });
                    }
                    if be16(rest, 2) >> 3 != 0 {
                        first_fragment = false;
                    }
                    8
                }
                NH_AUTH => {
                    if rest.len() < 2 {
                        return Err(WireError::Truncated { need: 2, have: rest.len() });
                    }
                    (usize::from(rest[1]) + 2) * 4
                }
                _ => {
                    let payload = first_fragment.then_some(rest);
                    return Ok(UpperLayer { protocol: nh, payload });
                }
            };
            if rest.len() < len {
                return Err(WireError::Truncated { need: len, have: rest.len() });
            }
            nh = rest[0];
            rest = &rest[len..];
        }
        Err(WireError::TooManyExtensionHeaders)
    }
}

#[inline]
fn addr(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[nh, 64]);
        h.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
        h.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets());
        h.extend_from_slice(payload);
        h
    }

    const UDP: [u8; 8] = [0x04, 0xd2, 0x00, 0x35, 0, 8, 0, 0];

    #[test]
    fn plain_udp() {
        let b = header(17, &UDP);
        let v = Ipv6View::parse(&b).unwrap();
        assert_eq!(v.src(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v.dst(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v.upper_layer().unwrap(), UpperLayer { protocol: 17, payload: Some(&UDP[..]) });
    }

    #[test]
    fn every_extension_header_is_walked() {
        // hop-by-hop (8) -> routing (16) -> dest opts (8) -> AH (12) -> fragment (8, first) -> UDP
        let mut p = vec![NH_ROUTING, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[NH_DEST_OPTS, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[NH_AUTH, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[NH_FRAGMENT, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 7]);
        p.extend_from_slice(&UDP);
        let b = header(NH_HOP_BY_HOP, &p);
        let up = Ipv6View::parse(&b).unwrap().upper_layer().unwrap();
        assert_eq!(up, UpperLayer { protocol: 17, payload: Some(&UDP[..]) });
    }

    #[test]
    fn later_fragment_has_no_ports() {
        let mut p = vec![6, 0, 0x05, 0xa8, 0, 0, 0, 7]; // offset 181
        p.extend_from_slice(&UDP);
        let b = header(NH_FRAGMENT, &p);
        let up = Ipv6View::parse(&b).unwrap().upper_layer().unwrap();
        assert_eq!(up, UpperLayer { protocol: 6, payload: None });
    }

    #[test]
    fn truncated_chain_is_an_error_at_every_length() {
        let mut p = vec![NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let full = header(NH_HOP_BY_HOP, &p);
        for n in 0..full.len() {
            let Ok(v) = Ipv6View::parse(&full[..n]) else {
                assert!(n < 40);
                continue;
            };
            assert!(v.upper_layer().is_err(), "len {n}");
        }
        assert_eq!(Ipv6View::parse(&full).unwrap().upper_layer().unwrap().protocol, 17);
    }

    #[test]
    fn endless_chain_stops() {
        let p = [NH_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0].repeat(20);
        let b = header(NH_DEST_OPTS, &p);
        assert_eq!(Ipv6View::parse(&b).unwrap().upper_layer().unwrap_err(), WireError::TooManyExtensionHeaders);
    }
}
