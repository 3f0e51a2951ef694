//! Authenticated encryption of secrets that must be replayed later (credentials kept for
//! XSI-Events), under keys derived from the server secret.
//!
//! Each purpose (a plugin's name, or a subsystem's) gets its own key through HKDF-SHA256, so
//! one plugin cannot open what another sealed. The caller's context string is the AEAD's
//! associated data: a sealed value only opens under the context it was sealed for.
//! Format: version byte, 96-bit random nonce, ChaCha20-Poly1305 ciphertext and tag.

use std::path::{Path, PathBuf};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom as _, SystemRandom};

const FORMAT_V1: u8 = 1;
const SALT: &[u8] = b"xsigate seal v1";
/// The server secret must carry at least this much key material.
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read secret_file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret_file {path} holds fewer than {MIN_SECRET_BYTES} bytes of key material")]
    Short { path: PathBuf },
    #[error("the sealed value is damaged, or was sealed for another purpose or context")]
    Open,
    #[error("the system random source failed")]
    Random,
    #[error("key derivation failed")]
    Derive,
}

/// The server secret, ready to derive per-purpose keys from.
pub struct Sealer {
    prk: ring::hkdf::Prk,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key material>)")
    }
}

/// A key for one purpose.
pub struct SealKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<key>)")
    }
}

impl Sealer {
    pub fn from_secret_file(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read(path).map_err(|source| SealError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let material = text.trim_ascii();
        if material.len() < MIN_SECRET_BYTES {
            return Err(SealError::Short {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::from_material(material))
    }

    pub fn from_material(material: &[u8]) -> Self {
        Self {
            prk: Salt::new(HKDF_SHA256, SALT).extract(material),
            random: SystemRandom::new(),
        }
    }

    /// 32 bytes of key material for `purpose`, for keys other than sealing keys.
    pub fn derive(&self, purpose: &str) -> Result<[u8; 32], SealError> {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let info = [purpose.as_bytes()];
        let mut bytes = [0u8; 32];
        self.prk
            .expand(&info, Len32)
            .and_then(|okm| okm.fill(&mut bytes))
            .map_err(|_| SealError::Derive)?;
        Ok(bytes)
    }

    /// The key for `purpose`.
    pub fn key(&self, purpose: &str) -> Result<SealKey, SealError> {
        let info = [purpose.as_bytes()];
        let mut bytes = [0u8; 32];
        self.prk
            .expand(&info, &CHACHA20_POLY1305)
            .and_then(|okm| okm.fill(&mut bytes))
            .map_err(|_| SealError::Derive)?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| SealError::Derive)?;
        Ok(SealKey {
            key: LessSafeKey::new(key),
            random: self.random.clone(),
        })
    }
}

impl SealKey {
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + aead::MAX_TAG_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut body,
            )
            .map_err(|_| SealError::Random)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if *version != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut body = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| SealError::Open)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_context() {
        let sealer = Sealer::from_material(&[42u8; 32]);
        let key = sealer.key("xsi-events").unwrap();
        let sealed = key.seal(b"alice@acme", b"secret").unwrap();
        assert_eq!(key.open(b"alice@acme", &sealed).unwrap(), b"secret");
        assert!(key.open(b"bob@acme", &sealed).is_err());
        assert!(
            sealer
                .key("other")
                .unwrap()
                .open(b"alice@acme", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"alice@acme", &tampered).is_err());
        assert_ne!(
            key.seal(b"alice@acme", b"secret").unwrap(),
            sealed,
            "nonces differ"
        );
    }
}
