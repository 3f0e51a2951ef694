//! ID-token verification (OpenID Connect Core §3.1.3.7): the signature by a key of the
//! identity provider's JWK Set with an allowed algorithm, then `iss`, `aud` (and `azp`),
//! `exp`, `nbf`, `iat` and `nonce`. Nothing of a refused token is returned or logged.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why an ID token was not believed. Says which check failed, never what the token held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JWS compact token, or claims that are not a JSON object.
    Malformed,
    /// Signed with an algorithm outside the allow-list (`none` and HMAC included).
    Algorithm,
    /// Signed with a key the identity provider does not publish.
    UnknownKey,
    Signature,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    /// `iat` lies in the future.
    IssuedLater,
    Nonce,
    /// A claim the checks need is missing or has the wrong type.
    MissingClaim,
}

impl Refusal {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedLater => "issued_later",
            Self::Nonce => "nonce",
            Self::MissingClaim => "missing_claim",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ID token refused ({})", self.as_str())
    }
}

/// What an ID token must say to be believed.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The identity provider's issuer, compared exactly.
    pub issuer: &'a str,
    /// The relying party's client id: in `aud`, and `azp` when `aud` names others too.
    pub client_id: &'a str,
    /// The flow's nonce.
    pub nonce: &'a str,
    pub algorithms: &'a [Algorithm],
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// The identity provider's signing keys, from its JWK Set: those for signatures only (no
/// `use` or `use: sig`), of a public-key type. Symmetric keys are dropped: a relying party
/// never verifies with a secret it shares with others.
#[derive(Debug, Clone, Default)]
pub struct SigningKeys {
    keys: Vec<Jwk>,
}

impl SigningKeys {
    pub fn from_jwks(jwks: &[u8]) -> Result<Self, serde_json::Error> {
        let set: JwkSet = serde_json::from_slice(jwks)?;
        let keys = set
            .keys
            .into_iter()
            .filter(|key| {
                matches!(
                    key.common.public_key_use,
                    None | Some(PublicKeyUse::Signature)
                ) && !matches!(
                    key.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                )
            })
            .collect();
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token's header names: by `kid`, or the only key when the set has one and the
    /// header names none. A key that declares its algorithm is used for that one only.
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<&Jwk> {
        let fits = |key: &&Jwk| {
            key.common
                .key_algorithm
                .is_none_or(|declared| key_algorithm_is(declared, algorithm))
        };
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(fits)
                .find(|key| key.common.key_id.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.iter().find(fits),
            None => None,
        }
    }
}

fn key_algorithm_is(declared: KeyAlgorithm, algorithm: Algorithm) -> bool {
    declared.to_string() == format!("{algorithm:?}")
}

/// Verifies an ID token and returns its claims.
pub fn verify(
    token: &str,
    keys: &SigningKeys,
    expect: &Expectations<'_>,
) -> Result<Map<String, Value>, Refusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| refusal_of(&e))?;
    if !expect.algorithms.contains(&header.alg) {
        return Err(Refusal::Algorithm);
    }
    let key = keys
        .find(header.kid.as_deref(), header.alg)
        .ok_or(Refusal::UnknownKey)?;
    let key = DecodingKey::from_jwk(key).map_err(|_| Refusal::UnknownKey)?;

    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = expect.leeway.as_secs();
    validation.validate_nbf = true;
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    validation.required_spec_claims = ["exp", "iat", "iss", "aud", "sub"]
        .into_iter()
        .map(str::to_owned)
        .collect::<HashSet<_>>();
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| refusal_of(&e))?;
    let claims = data.claims;

    // jsonwebtoken checks `exp` and `nbf` against the clock; `iat` and `azp` are ours.
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(Refusal::MissingClaim)?;
    let now = jsonwebtoken::get_current_timestamp();
    if iat > now.saturating_add(expect.leeway.as_secs()) {
        return Err(Refusal::IssuedLater);
    }
    if let Some(Value::Array(audiences)) = claims.get("aud") {
        if audiences.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(expect.client_id)
        {
            return Err(Refusal::Audience);
        }
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(nonce) if constant_time_eq(nonce.as_bytes(), expect.nonce.as_bytes()) => Ok(claims),
        _ => Err(Refusal::Nonce),
    }
}

fn refusal_of(error: &jsonwebtoken::errors::Error) -> Refusal {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
        _ => Refusal::Malformed,
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
