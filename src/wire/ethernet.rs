//! Ethernet II with up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, and 0x9100 QinQ).
use super::{be16, WireError};

mod off {
    pub const ETHERTYPE: usize = 12;
    pub const HEADER_LEN: usize = 14;
    pub const TAG_LEN: usize = 4;
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Most VLAN tags pcapd looks through; a third tag leaves the packet unparsed above L2.
pub const MAX_VLAN_TAGS: usize = 2;

#[inline]
fn is_vlan_tpid(t: u16) -> bool {
    matches!(t, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD)
}

/// A parsed Ethernet frame: the inner ethertype after VLAN tags, and its payload.
#[derive(Clone, Copy, Debug)]
pub struct EthernetView<'a> {
    ethertype: u16,
    vlan_tags: u8,
    payload: &'a [u8],
}

impl<'a> EthernetView<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < off::HEADER_LEN {
            return Err(WireError::Truncated { need: off::HEADER_LEN, have: buf.len() });
        }
        let mut ethertype = be16(buf, off::ETHERTYPE);
        let mut at = off::HEADER_LEN;
        let mut tags = 0u8;
        while is_vlan_tpid(ethertype) {
            if usize::from(tags) == MAX_VLAN_TAGS {
                return Err(WireError::TooManyVlanTags);
            }
            let need = at + off::TAG_LEN;
            if buf.len() < need {
                return Err(WireError::Truncated { need, have: buf.len() });
            }
            // The tag is TCI (2 bytes) then the next ethertype.
            ethertype = be16(buf, at + 2);
            at = need;
            tags += 1;
        }
        Ok(EthernetView { ethertype, vlan_tags: tags, payload: &buf[at..] })
    }

    /// The ethertype after any VLAN tags.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    #[inline]
    pub fn vlan_tags(&self) -> u8 {
        self.vlan_tags
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[u16], inner: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for t in tags {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x64]);
        }
        f.extend_from_slice(&inner.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 20]);
        f
    }

    #[test]
    fn untagged_single_and_double_tags() {
        for tags in [&[][..], &[ETHERTYPE_VLAN], &[ETHERTYPE_QINQ, ETHERTYPE_VLAN]] {
            let f = frame(tags, ETHERTYPE_IPV4);
            let v = EthernetView::parse(&f).unwrap();
            assert_eq!(v.ethertype(), ETHERTYPE_IPV4);
            assert_eq!(usize::from(v.vlan_tags()), tags.len());
            assert_eq!(v.payload(), &[0x45, 0, 0, 20]);
        }
    }

    #[test]
    fn third_tag_is_refused() {
        let f = frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETHERTYPE_VLAN], ETHERTYPE_IPV4);
        assert_eq!(EthernetView::parse(&f).unwrap_err(), WireError::TooManyVlanTags);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN], ETHERTYPE_IPV6);
        for n in 0..22 {
            assert!(matches!(EthernetView::parse(&f[..n]), Err(WireError::Truncated { .. })), "len {n}");
        }
        assert!(EthernetView::parse(&f[..22]).is_ok());
    }
}
