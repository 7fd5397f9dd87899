//! The one SIMD operation of the RX hot path, behind a safe type. On x86_64 it uses SSE2, which
//! the architecture's baseline guarantees (`target_feature = "sse2"` is on for every x86_64
//! build unless explicitly turned off); elsewhere the scalar form.

/// "These 32 bytes, under `mask`, equal `want`", compiled once, as 16-byte aligned halves: the
/// compare is two loads of the bytes, then two ANDs and two compares against the halves in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masked32 {
    mask: [Half; 2],
    want: [Half; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
struct Half([u8; 16]);

fn halves(b: [u8; 32]) -> [Half; 2] {
    [0, 1].map(|i| Half(std::array::from_fn(|j| b[i * 16 + j])))
}

impl Masked32 {
    /// `want` is kept under `mask` only: bits outside the mask cannot be asked for.
    pub fn new(mask: [u8; 32], want: [u8; 32]) -> Masked32 {
        Masked32 { mask: halves(mask), want: halves(std::array::from_fn(|i| want[i] & mask[i])) }
    }

    /// The mask and the wanted bytes (under the mask).
    pub fn parts(&self) -> ([u8; 32], [u8; 32]) {
        let join = |h: &[Half; 2]| -> [u8; 32] { std::array::from_fn(|i| h[i / 16].0[i % 16]) };
        (join(&self.mask), join(&self.want))
    }

    /// Whether `bytes & mask == want`.
    #[inline(always)]
    pub fn matches(&self, bytes: &[u8; 32]) -> bool {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        // SAFETY: `matches_sse2` needs SSE2 only, which this build targets (the cfg).
        return unsafe { self.matches_sse2(bytes) };
        #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
        return self.matches_scalar(bytes);
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[target_feature(enable = "sse2")]
    #[inline]
    fn matches_sse2(&self, bytes: &[u8; 32]) -> bool {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_load_si128, _mm_loadu_si128, _mm_movemask_epi8,
        };
        let half = |i: usize| {
            let b: *const __m128i = bytes[i * 16..].as_ptr().cast();
            // SAFETY: `b` points to 16 readable bytes (`i` is 0 or 1 of a 32-byte array).
            let b = unsafe { _mm_loadu_si128(b) };
            // SAFETY: a `Half` is 16 bytes, 16-byte aligned as `_mm_load_si128` needs (repr).
            let m = unsafe { _mm_load_si128(self.mask[i].0.as_ptr().cast()) };
            // SAFETY: as above.
            let w = unsafe { _mm_load_si128(self.want[i].0.as_ptr().cast()) };
            _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(b, m), w))
        };
        half(0) & half(1) == 0xffff
    }

    #[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
    #[inline(always)]
    fn matches_scalar(&self, bytes: &[u8; 32]) -> bool {
        let (mask, want) = (self.mask.iter().flat_map(|h| &h.0), self.want.iter().flat_map(|h| &h.0));
        bytes.iter().zip(mask).zip(want).fold(0, |d, ((b, m), w)| d | ((b & m) ^ w)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_scalar_form_on_every_bit() {
        let mask: [u8; 32] = std::array::from_fn(|i| [0xff, 0, 0x0f, 0xf0, 0xff, 0x80][i % 6]);
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let want: [u8; 32] = std::array::from_fn(|i| bytes[i] & mask[i]);
        let m = Masked32::new(mask, want);
        assert!(m.matches(&bytes) && m.matches_scalar(&bytes));
        assert!(Masked32::new([0; 32], [0xff; 32]).matches(&bytes), "no mask: anything matches");
        let never = Masked32 { mask: halves([0; 32]), want: halves([1; 32]) };
        assert!(!never.matches(&bytes) && !never.matches_scalar(&bytes), "a bit wanted under no mask");
        // Flip each bit of the bytes, then of want: both forms agree, and a flip under the mask
        // (any flip of want) is a mismatch.
        for i in 0..32 {
            for bit in 0..8 {
                let flip = 1u8 << bit;
                let mut b = bytes;
                b[i] ^= flip;
                assert_eq!(m.matches(&b), m.matches_scalar(&b));
                assert_eq!(m.matches(&b), mask[i] & flip == 0, "byte {i} bit {bit}");
                let mut v = want;
                v[i] ^= flip;
                let other = Masked32 { mask: halves(mask), want: halves(v) };
                assert!(!other.matches(&bytes) && !other.matches_scalar(&bytes), "want byte {i} bit {bit}");
            }
        }
    }
}
