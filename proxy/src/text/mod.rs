//! Bytes spelled as text and scanned: lowercase hex (request ids, digests in store keys and the
//! configuration's checksum, device ids, the generated server secret), and tests of every byte
//! of a slice written so that the compiler can vectorise them (paths and tokens checked on
//! every request).
//!
//! Layer: the bottom of the crate, beside [`crate::config`] and [`crate::wire`]; it uses
//! nothing else in the crate, so that every layer can use it.

/// `bytes` in lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    // Spelled out into bytes: the formatter's padding and width handling, or collecting chars
    // one by one (each encoded and its room checked), cost more than the digits (a request id
    // took 860 instructions that way, 250 this way with its allocation and UTF-8 check).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut spelled = vec![0; bytes.len() * 2];
    for (pair, byte) in spelled.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    String::from_utf8(spelled).unwrap_or_default()
}

/// Whether a byte passes `test`. All bytes are tested, without stopping at the first that
/// passes, and `test` should not branch: the loop is then vectorised, many bytes at a time.
pub fn any_byte(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(false, |found, &b| found | test(b))
}

/// Whether every byte passes `test`, tested the way [`any_byte`] tests.
pub fn every_byte(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |passed, &b| passed & test(b))
}

/// Whether two bytes in a row pass `test`, the way [`any_byte`] tests one.
pub fn any_pair(bytes: &[u8], test: impl Fn(u8, u8) -> bool) -> bool {
    let next = bytes.get(1..).unwrap_or_default();
    bytes
        .iter()
        .zip(next)
        .fold(false, |found, (&a, &b)| found | test(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_spells_each_byte_in_two_lowercase_digits() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
    }

    #[test]
    fn the_scans_see_every_byte() {
        let bytes = b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz!";
        for at in 0..bytes.len() {
            let mut marked = bytes.to_vec();
            marked[at] = b'#';
            assert!(any_byte(&marked, |b| b == b'#'), "{at}");
            assert!(!every_byte(&marked, |b| b != b'#'), "{at}");
            if at + 1 < bytes.len() {
                marked[at + 1] = b'#';
                assert!(any_pair(&marked, |a, b| a == b'#' && b == b'#'), "{at}");
            }
        }
        assert!(!any_byte(bytes, |b| b == b'#'));
        assert!(every_byte(bytes, |b| b != b'#'));
        assert!(!any_pair(b"#a#a#", |a, b| a == b'#' && b == b'#'));
        assert!(every_byte(b"", |_| false) && !any_byte(b"", |_| true));
    }
}
