//! Opaque random tokens (session cookies, CSRF, password-reset links) and the hashes the store
//! keeps of them.

use base64::Engine as _;

use crate::text::every_byte;

/// Random bytes in a token; its text form is unpadded base64url.
const BYTES: usize = 32;
const CHARS: usize = 43;

/// A new token: 256 random bits, URL-safe.
pub fn new_token() -> String {
    let bytes: [u8; BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a token. Tokens carry 256 random bits, so a fast hash is enough:
/// there is nothing to guess that a slow one would protect.
pub fn token_hash(token: &str) -> Vec<u8> {
    token_digest(token).as_ref().to_vec()
}

/// [`token_hash`] without its copy to the heap, to look it up with.
pub fn token_digest(token: &str) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
}

/// A session token and its digest, kept with the client connection that presented it: a
/// browser sends the same cookie with each request on a connection, and the digest, which
/// each look-up of its session needs, costs more than comparing the token with the last one
/// (SHA-256 was 4 % of a proxied request's instructions).
pub struct DigestedToken {
    token: [u8; CHARS],
    digest: ring::digest::Digest,
}

impl std::fmt::Debug for DigestedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("DigestedToken").finish_non_exhaustive()
    }
}

impl DigestedToken {
    /// `token`'s digest, from `last` when `last` holds the same token; `last` holds `token`'s
    /// afterwards. `None` when `token` does not have the shape of ours (no session has it).
    pub fn digest<'a>(last: &'a mut Option<Self>, token: &str) -> Option<&'a [u8]> {
        let presented: [u8; CHARS] = token.as_bytes().try_into().ok()?;
        // The token held was checked when it came: the same bytes need no second look.
        if last.as_ref().is_none_or(|held| held.token != presented) {
            *last = None;
            if !well_formed(token) {
                return None;
            }
        }
        let held = last.get_or_insert_with(|| Self {
            token: presented,
            digest: token_digest(token),
        });
        Some(held.digest.as_ref())
    }
}

/// Hashing for maps keyed by token digests ([`token_hash`]). A digest is uniform and no one
/// can choose one (it is SHA-256 of a token, and only sessions the store holds are kept), so its
/// words folded under a key drawn for each map place entries as evenly as `std`'s SipHash, at
/// a fraction of its cost (SipHash was 0.6 % of a proxied request's instructions).
#[derive(Debug, Clone)]
pub struct DigestHashing {
    key: u64,
}

impl Default for DigestHashing {
    fn default() -> Self {
        Self {
            key: rand::random(),
        }
    }
}

impl std::hash::BuildHasher for DigestHashing {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(self.key)
    }
}

/// See [`DigestHashing`].
#[derive(Debug)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        // An odd constant (2^64 / φ) spreads each word over the high bits, and the rotation
        // brings them down to the low ones, which pick the bucket.
        const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;
        let words = bytes.chunks_exact(8);
        let tail = words.remainder();
        let mut last = [0; 8];
        last[..tail.len()].copy_from_slice(tail);
        for word in words.chain([&last[..]]) {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            self.0 = (self.0 ^ word).wrapping_mul(SPREAD).rotate_left(29);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The PKCE `S256` challenge of a verifier (RFC 7636 §4.2): base64url of its SHA-256. A
/// token is a valid verifier: 43 characters of the unreserved set.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token_hash(verifier))
}

/// Whether a presented token has the shape of ours; only those reach the store.
pub fn well_formed(token: &str) -> bool {
    // Every byte tested without a branch: stopping at the first stranger cost 11 instructions
    // a byte, and a browser's token has none.
    token.len() == CHARS
        && every_byte(token.as_bytes(), |b| {
            b.is_ascii_alphanumeric() | (b == b'-') | (b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest kept with a connection is always the presented token's: a connection that
    /// presents another cookie (another user's session in the same browser, say) never gets
    /// the digest of the one before.
    #[test]
    fn a_kept_digest_is_the_presented_tokens() {
        let (first, second) = (new_token(), new_token());
        let mut last = None;
        for token in [&first, &first, &second, &second, &first] {
            let kept = DigestedToken::digest(&mut last, token).map(<[u8]>::to_vec);
            assert_eq!(kept, Some(token_hash(token)));
        }
        assert!(!format!("{last:?}").contains(&first));
        assert_eq!(DigestedToken::digest(&mut last, "not-a-token"), None);
        // A stranger of a token's length is refused whatever was held before it.
        let stranger = format!("{}!", &first[1..]);
        for held in [&first, &second] {
            let _ = DigestedToken::digest(&mut last, held);
            assert_eq!(DigestedToken::digest(&mut last, &stranger), None);
        }
    }

    /// Every byte of a digest moves its hash, and two maps place the same digest apart.
    #[test]
    fn a_digests_hash_depends_on_each_byte_and_on_its_maps_key() {
        use std::hash::BuildHasher as _;
        let hashing = DigestHashing::default();
        let digest = token_hash(&new_token());
        let hash = hashing.hash_one(&digest);
        assert_eq!(hashing.hash_one(digest.as_slice()), hash);
        for at in 0..digest.len() {
            for bit in 0..8 {
                let mut flipped = digest.clone();
                flipped[at] ^= 1 << bit;
                assert_ne!(hashing.hash_one(&flipped), hash, "byte {at} bit {bit}");
            }
        }
        // The length counts: a digest and its prefix padded with zeros are not the same key.
        let mut padded = digest[..31].to_vec();
        padded.push(0);
        assert_ne!(hashing.hash_one(&digest[..31]), hashing.hash_one(&padded));
        let other = DigestHashing { key: !hashing.key };
        assert_ne!(other.hash_one(&digest), hash);
    }

    #[test]
    fn the_pkce_challenge_is_base64url_of_sha256() {
        // Computed independently: Python's hashlib.sha256 and base64.urlsafe_b64encode.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gXr-gXpCM"),
            "QXkEYOT3vdrB2cE7RMY_TYoiYPT8Kzn8v1yhIz8Vduo"
        );
    }

    #[test]
    fn tokens_are_well_formed_distinct_and_hashed_to_32_bytes() {
        let (a, b) = (new_token(), new_token());
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 32);
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &a[1..])));
    }

    /// Every byte value at every position: only base64url's alphabet passes.
    #[test]
    fn only_base64url_bytes_are_well_formed() {
        let token = new_token().into_bytes();
        for at in 0..CHARS {
            for byte in 0..=u8::MAX {
                let mut presented = token.clone();
                presented[at] = byte;
                let expected = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
                let text = String::from_utf8_lossy(&presented);
                assert_eq!(
                    text.len() == CHARS && well_formed(&text),
                    expected,
                    "{byte:#04x} at {at}"
                );
            }
        }
    }
}
