//! IPv4 header view (options and fragments).
use std::net::Ipv4Addr;

use super::{be16, WireError};

mod off {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAG: usize = 6;
    pub const PROTO: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const MIN_LEN: usize = 20;
}

/// Borrowed IPv4 header. Only `parse` builds one, so accessors index without re-checking.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4View<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv4View<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let have = buf.len();
        if have < off::MIN_LEN {
            return Err(WireError::Truncated { need: off::MIN_LEN, have });
        }
        let (ver, ihl) = (buf[off::VER_IHL] >> 4, buf[off::VER_IHL] & 0x0f);
        if ver != 4 {
            return Err(WireError::BadVersion(ver));
        }
        let hlen = usize::from(ihl) * 4;
        if hlen < off::MIN_LEN {
            return Err(WireError::BadHeaderLen(hlen));
        }
        if have < hlen {
            return Err(WireError::Truncated { need: hlen, have });
        }
        Ok(Ipv4View { buf })
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf[off::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf, off::TOTAL_LEN)
    }

    /// Fragment offset in 8-byte units; non-zero for every fragment but the first.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf, off::FLAGS_FRAG) & 0x1fff
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf[off::PROTO]
    }

    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        addr(self.buf, off::SRC)
    }

    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        addr(self.buf, off::DST)
    }

    /// The payload: bounded by `total_len` (Ethernet padding excluded) when it is consistent,
    /// else everything captured after the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let hlen = self.header_len();
        let total = usize::from(self.total_len());
        let end = if total >= hlen { total.min(self.buf.len()) } else { self.buf.len() };
        &self.buf[hlen..end]
    }
}

#[inline]
fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20-byte header + 4 bytes of options (IHL 6) + 8-byte UDP.
    fn fixture() -> Vec<u8> {
        let mut h = vec![0x46, 0, 0, 32, 0, 1, 0x20, 0x00, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        h.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        h.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 8, 0, 0]);
        h
    }

    #[test]
    fn fields_and_options() {
        let b = fixture();
        let v = Ipv4View::parse(&b).unwrap();
        assert_eq!(v.header_len(), 24);
        assert_eq!(v.protocol(), 17);
        assert_eq!(v.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(v.dst(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(v.frag_offset(), 0);
        assert_eq!(v.payload(), &b[24..]);
    }

    #[test]
    fn padding_is_not_payload() {
        let mut b = fixture();
        b.extend_from_slice(&[0; 6]);
        assert_eq!(Ipv4View::parse(&b).unwrap().payload().len(), 8);
    }

    #[test]
    fn every_truncation_and_bad_ihl() {
        let b = fixture();
        for n in 0..24 {
            assert!(matches!(Ipv4View::parse(&b[..n]), Err(WireError::Truncated { .. })), "len {n}");
        }
        let mut bad = b.clone();
        bad[0] = 0x4f; // IHL 15 = 60 bytes
        assert_eq!(Ipv4View::parse(&bad).unwrap_err(), WireError::Truncated { need: 60, have: 32 });
        bad[0] = 0x44;
        assert_eq!(Ipv4View::parse(&bad).unwrap_err(), WireError::BadHeaderLen(16));
        bad[0] = 0x65;
        assert_eq!(Ipv4View::parse(&bad).unwrap_err(), WireError::BadVersion(6));
    }

    #[test]
    fn later_fragments_have_an_offset() {
        let mut b = fixture();
        b[6] = 0x00;
        b[7] = 0xb9; // offset 185 * 8 = 1480
        assert_eq!(Ipv4View::parse(&b).unwrap().frag_offset(), 185);
    }
}
