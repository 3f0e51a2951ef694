//! Signed identity assertions: how gateway services and applets learn who the user is without
//! ever seeing BroadWorks credentials.
//!
//! An assertion is a compact JWS (a JWT) signed with Ed25519 (`alg: EdDSA`). The key pair is
//! derived from the server secret, so every instance sharing the secret signs with the same
//! key and a restart keeps it; the public key is published as a JWK Set at
//! `GET /api/access/services/keys`, and `kid` names it. Upstreams verify the signature with
//! that key and check `iss`, `aud` (their service or applet name) and `exp`. The format is
//! documented in `docs/assertions.md`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::state::seal::{SealError, Sealer};

/// The `iss` of every assertion.
pub const ISSUER: &str = "xsigate";

/// Signs assertions with the server's Ed25519 key.
pub struct Signer {
    key: Ed25519KeyPair,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

/// Who an assertion speaks for, and to whom.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The service or applet name the assertion is for.
    pub audience: &'a str,
    /// The user's opaque uniqueId.
    pub subject: &'a str,
    pub provider: &'a str,
    pub level: &'a str,
    /// The BroadWorks userId, for the provider's own gateway services; third-party applets
    /// get none.
    pub user_id: Option<&'a str>,
    pub lifetime_seconds: u64,
}

impl Signer {
    pub fn new(sealer: &Sealer) -> Result<Self, SealError> {
        let seed = sealer.derive("identity assertions (Ed25519 seed)")?;
        let key = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| SealError::Derive)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref().get(..12).unwrap_or_default());
        Ok(Self { key, kid })
    }

    /// A signed assertion, valid from now for `claims.lifetime_seconds`.
    pub fn sign(&self, claims: &Claims<'_>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut payload = json!({
            "iss": ISSUER,
            "aud": claims.audience,
            "sub": claims.subject,
            "provider": claims.provider,
            "level": claims.level,
            "iat": now,
            "exp": now + claims.lifetime_seconds,
            "jti": format!("{:032x}", rand::random::<u128>()),
        });
        if let (Some(user_id), Some(object)) = (claims.user_id, payload.as_object_mut()) {
            object.insert("user_id".to_owned(), Value::from(user_id));
        }
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// The public key as a JWK Set (RFC 7517, RFC 8037).
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref()),
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn assertions_verify_with_the_published_key_and_not_when_altered() {
        let signer = Signer::new(&Sealer::from_material(&[7u8; 32])).unwrap();
        let token = signer.sign(&Claims {
            audience: "history",
            subject: "u-123",
            provider: "acme",
            level: "user",
            user_id: Some("alice@acme.example"),
            lifetime_seconds: 60,
        });
        let jwks = signer.jwks();
        let x = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let key = UnparsedPublicKey::new(&ED25519, x);
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert!(key.verify(input.as_bytes(), &signature).is_ok());
        let (header, payload) = input.split_once('.').unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["aud"], "history");
        assert_eq!(claims["user_id"], "alice@acme.example");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        let mut forged = claims;
        forged["sub"] = Value::from("u-999");
        let altered = format!("{header}.{}", URL_SAFE_NO_PAD.encode(forged.to_string()));
        assert!(key.verify(altered.as_bytes(), &signature).is_err());
        // The same secret gives the same key: instances and restarts agree.
        let again = Signer::new(&Sealer::from_material(&[7u8; 32])).unwrap();
        assert_eq!(again.jwks(), jwks);
    }
}
