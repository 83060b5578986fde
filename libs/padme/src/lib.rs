//! Padmé padding (Nikitin et al., "Reducing Metadata Leakage from Encrypted
//! Files and Communication with PURBs", PETS 2019): the lengths objects are
//! padded to, so that a stored object's size says little about its content.
//!
//! A length `L` is rounded up by zeroing its low bits: of the
//! `floor(log2 L) + 1` bits of `L`, only the top
//! `floor(log2 floor(log2 L)) + 1` may be non-zero. The overhead is at most about 12 % (less for large objects),
//! and a padded length leaks `O(log log L)` bits instead of `O(log L)`.
//! The device pads packs and manifests with this function; the blob gateway
//! refuses any pack whose size it does not produce.

/// The Padmé length of an object of `len` bytes: the smallest padded
/// length that is at least `len`.
pub fn padded_len(len: u64) -> u64 {
    if len <= 2 {
        return len;
    }
    let exponent = u64::from(len.ilog2());
    let mantissa_bits = u64::from(exponent.ilog2()) + 1;
    let zero_bits = exponent - mantissa_bits;
    let mask = (1u64 << zero_bits) - 1;
    // `len + mask` cannot overflow for any length an object can have.
    (len + mask) & !mask
}

/// Whether `len` is a Padmé length (what [`padded_len`] returns).
pub fn is_padded(len: u64) -> bool {
    padded_len(len) == len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lengths_are_their_own_padding() {
        for len in 0..=8 {
            assert_eq!(padded_len(len), len, "{len}");
        }
    }

    #[test]
    fn values_from_the_paper_and_by_hand() {
        // 9 = 0b1001: exponent 3, 2 mantissa bits, 1 low bit zeroed -> 10.
        assert_eq!(padded_len(9), 10);
        // 1,000,000: exponent 19, 5 mantissa bits, 14 low bits zeroed.
        assert_eq!(padded_len(1_000_000), 1_015_808);
        // Powers of two are already padded.
        for exponent in 0..40 {
            assert!(is_padded(1u64 << exponent));
        }
    }

    #[test]
    fn padding_is_monotone_idempotent_and_bounded() {
        let mut previous = 0;
        for len in (0..200_000u64).chain((1u64 << 20)..(1u64 << 20) + 50_000) {
            let padded = padded_len(len);
            assert!(padded >= len, "{len}");
            assert!(padded >= previous, "{len}");
            assert_eq!(padded_len(padded), padded, "{len}");
            // At most ~12 % overhead (exactly: below 1/2^(mantissa bits - 1)).
            assert!(padded - len <= len / 8 + 1, "{len} -> {padded}");
            previous = padded;
        }
    }

    #[test]
    fn unpadded_lengths_are_recognised() {
        assert!(!is_padded(9));
        assert!(is_padded(10));
        assert!(!is_padded(1_000_000));
        assert!(is_padded(1_015_808));
    }
}
