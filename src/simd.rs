//! The one SIMD operation of the RX hot path, behind a safe function. On x86_64 it uses SSE2,
//! which the architecture's baseline guarantees (`target_feature = "sse2"` is on for every
//! x86_64 build unless explicitly turned off); elsewhere the scalar form.

/// Whether `words & mask == want`, word by word: 16 bytes at a time where SSE2 is there, half
/// the instructions of the scalar form, with loop-invariant masks kept in registers.
#[inline(always)]
pub fn masked_eq(words: &[u64; 4], mask: &[u64; 4], want: &[u64; 4]) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: the only requirement of `masked_eq_sse2` is SSE2, which this build targets (cfg).
    return unsafe { masked_eq_sse2(words, mask, want) };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return masked_eq_scalar(words, mask, want);
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn masked_eq_sse2(words: &[u64; 4], mask: &[u64; 4], want: &[u64; 4]) -> bool {
    use std::arch::x86_64::{_mm_and_si128, _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x};
    let half = |w: &[u64; 4], i: usize| _mm_set_epi64x(w[i + 1] as i64, w[i] as i64);
    let eq = |i| _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(half(words, i), half(mask, i)), half(want, i)));
    eq(0) & eq(2) == 0xffff
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn masked_eq_scalar(words: &[u64; 4], mask: &[u64; 4], want: &[u64; 4]) -> bool {
    (0..4).fold(0, |d, i| d | ((words[i] & mask[i]) ^ want[i])) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_scalar_form_on_every_byte() {
        let mask = [0x00ff_ff00_0000_ffff, u64::MAX, 0, 0xff00_0000_0000_00ff];
        let words = [0x1234_5678_9abc_def0u64, 0x0fed_cba9_8765_4321, 0x1111_2222_3333_4444, 0x5555_6666_7777_8888];
        let want: [u64; 4] = std::array::from_fn(|i| words[i] & mask[i]);
        assert!(masked_eq(&words, &mask, &want));
        assert!(masked_eq(&words, &[0; 4], &[0; 4]), "no mask: anything matches");
        assert!(!masked_eq(&words, &[0; 4], &[0, 0, 1, 0]), "a bit wanted under no mask: nothing does");
        // Flip each bit of the words and of want in turn: both forms give the same answer, and
        // a flip under the mask (or any flip of want) is a mismatch.
        for word in 0..4 {
            for bit in 0..64 {
                let flip = 1u64 << bit;
                let mut w = words;
                w[word] ^= flip;
                assert_eq!(masked_eq(&w, &mask, &want), masked_eq_scalar(&w, &mask, &want));
                assert_eq!(masked_eq(&w, &mask, &want), mask[word] & flip == 0, "word {word} bit {bit}");
                let mut v = want;
                v[word] ^= flip;
                assert!(!masked_eq(&words, &mask, &v) && !masked_eq_scalar(&words, &mask, &v));
            }
        }
    }
}
