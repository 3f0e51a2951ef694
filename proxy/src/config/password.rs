//! Operators' passwords (`[[server.admins]]`) are verify-only secrets: kept as argon2id hashes in PHC form
//! (`$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`), made by `xsigate hash-password`, with the
//! OWASP Password Storage Cheat Sheet's minimum (19 MiB, 2 passes, 1 lane) pinned here rather
//! than left to a library's defaults, and a hash weaker than that refused.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

/// OWASP's minimum for argon2id: memory in KiB, passes, lanes.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;
/// Longer passwords are refused rather than hashed: a multi-megabyte "password" is a denial
/// of service, not a secret.
pub const PASSWORD_MAX: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {PASSWORD_MAX} bytes")]
    TooLong,
    #[error("not an argon2id hash in PHC form (make one with `xsigate hash-password`)")]
    NotArgon2id,
    #[error(
        "the hash is weaker than argon2id m=19456,t=2,p=1 (make a new one with `xsigate hash-password`)"
    )]
    TooWeak,
    #[error("hashing failed: {0}")]
    Hashing(String),
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn check_length(password: &str) -> Result<(), PasswordError> {
    match password.len() {
        0 => Err(PasswordError::Empty),
        n if n > PASSWORD_MAX => Err(PasswordError::TooLong),
        _ => Ok(()),
    }
}

/// A fresh hash of `password`, with a random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check_length(password)?;
    hasher()?
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// A configured hash, checked once at start: argon2id, and at least OWASP's minimum.
pub fn parse(phc: &str) -> Result<PasswordHash, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|_| PasswordError::NotArgon2id)?;
    if hash.algorithm.as_str() != "argon2id" || hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::NotArgon2id);
    }
    let params = Params::try_from(&hash).map_err(|_| PasswordError::NotArgon2id)?;
    let stronger = |have: u32, least: u32| have >= least;
    if !(stronger(params.m_cost(), MEMORY_KIB) && stronger(params.t_cost(), PASSES)) {
        return Err(PasswordError::TooWeak);
    }
    Ok(hash)
}

/// Whether `password` is the one `hash` was made from (in constant time, by argon2 itself).
pub fn verify(password: &str, hash: &PasswordHash) -> bool {
    check_length(password).is_ok()
        && Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
}

/// An operator's `password_hash` as `providers.toml` gives it, checked by [`parse`] when the
/// file is read, so a weak or foreign hash is an error naming its line and key.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AdminPasswordHash(PasswordHash);

impl TryFrom<String> for AdminPasswordHash {
    type Error = PasswordError;

    fn try_from(phc: String) -> Result<Self, PasswordError> {
        parse(&phc).map(Self)
    }
}

impl AdminPasswordHash {
    /// Whether `password` is the operator's; argon2id at OWASP's cost, so slow on purpose: call
    /// it off the request threads.
    pub fn verify(&self, password: &str) -> bool {
        verify(password, &self.0)
    }
}

/// A hash is not a password, but it is what a password-guessing attack starts from.
impl std::fmt::Debug for AdminPasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminPasswordHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_at_owasps_minimum_and_verifies_its_password_only() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = parse(&phc).unwrap();
        assert!(verify("correct horse", &parsed));
        assert!(!verify("correct horse ", &parsed));
        assert!(!verify("", &parsed));
        // A fresh salt each time.
        assert_ne!(hash("correct horse").unwrap(), phc);
    }

    #[test]
    fn empty_and_oversized_passwords_are_refused() {
        assert_eq!(hash(""), Err(PasswordError::Empty));
        assert_eq!(
            hash(&"x".repeat(PASSWORD_MAX + 1)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn other_algorithms_and_weaker_hashes_are_refused() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert_eq!(parse(&weak).unwrap_err(), PasswordError::TooWeak);
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert_eq!(parse(&argon2i).unwrap_err(), PasswordError::NotArgon2id);
        for other in [
            "",
            "pw",
            "$2b$12$abcdefghijklmnopqrstuv",
            "$argon2id$v=19$m=19456",
        ] {
            assert!(parse(other).is_err(), "{other}");
        }
    }
}
