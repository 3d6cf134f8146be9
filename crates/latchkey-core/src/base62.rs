//! Base62 with the alphabet `0-9A-Za-z`, in that order: random strings and fixed-width numbers.

/// The alphabet, in digit order.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The value of a base62 digit (the caller checked it is one; others count as 0).
pub(crate) fn digit(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'A'..=b'Z' => byte - b'A' + 10,
        b'a'..=b'z' => byte - b'a' + 36,
        _ => 0,
    }
}

/// Which bytes are base62 digits: one table look-up per byte on the hot path.
static IS_DIGIT: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether every byte is a base62 digit.
pub(crate) fn is_base62(bytes: &[u8]) -> bool {
    // `fold` with `&` rather than `all`: no early exit, so the loop vectorizes.
    bytes
        .iter()
        .fold(true, |ok, &b| ok & IS_DIGIT[usize::from(b)])
}

/// `value` as exactly `N` base62 digits, most significant first, zero-padded.
///
/// The caller guarantees `value < 62^N`; higher digits are dropped otherwise.
pub(crate) fn encode_fixed<const N: usize>(mut value: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// `len` base62 characters drawn uniformly from the OS CSPRNG.
///
/// Bytes of 248 or more are rejected so that `byte % 62` is uniform (248 = 4 × 62); each
/// character carries log2(62) ≈ 5.95 bits.
///
/// # Panics
///
/// When the operating system's random source fails: continuing would mint predictable keys.
pub(crate) fn random(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the OS random source failed; refusing to mint a key");
        for &byte in &buf {
            if byte < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_is_ordered_and_base62() {
        assert!(is_base62(ALPHABET));
        assert!(
            ALPHABET
                .iter()
                .enumerate()
                .all(|(value, &b)| usize::from(digit(b)) == value)
        );
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
        assert!(!is_base62(b"_"));
        assert!(!is_base62(b"-"));
    }

    #[test]
    fn encode_fixed_pads_and_orders_most_significant_first() {
        assert_eq!(&encode_fixed::<6>(0), b"000000");
        assert_eq!(&encode_fixed::<6>(61), b"00000z");
        assert_eq!(&encode_fixed::<6>(62), b"000010");
        assert_eq!(&encode_fixed::<6>(u64::from(u32::MAX)), b"4gfFC3");
    }

    #[test]
    fn random_has_the_length_and_alphabet_asked_for() {
        let a = random(32);
        assert_eq!(a.len(), 32);
        assert!(is_base62(a.as_bytes()));
        assert_ne!(a, random(32), "two draws of 190 bits collided");
    }
}
