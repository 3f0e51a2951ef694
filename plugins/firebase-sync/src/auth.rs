//! Google service-account credentials: RS256 JWTs signed with the account's key, for the
//! OAuth2 JWT-bearer grant (server writes) and for Firebase custom tokens (browsers).
//! Reference: `integrations.md` §1.9–1.10.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::{Deserialize, Serialize};
use xsigate_plugin_sdk::Error;
use xsigate_plugin_sdk::serde_json::{self, Value, json};

/// Scopes a service account's access token needs to read and write a Realtime Database.
pub const DATABASE_SCOPES: &str = "https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/firebase.database";
/// The audience of every Firebase custom token.
pub const CUSTOM_TOKEN_AUDIENCE: &str =
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit";
/// Longest lifetime Google accepts for an assertion or a custom token.
pub const MAX_LIFETIME_SECONDS: u64 = 3600;
/// Firebase's bound on a custom token's `uid`.
const UID_MAX: usize = 128;

/// The fields of a service account's JSON key this plugin uses.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// A service account, its private key parsed once.
pub struct ServiceAccount {
    pub client_email: String,
    pub token_uri: Option<String>,
    key_id: Option<String>,
    key: RsaKeyPair,
    rng: SystemRandom,
}

/// The key never prints.
impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads a service account's JSON key. Errors say what is wrong, never the key.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            Error::msg(format!(
                "not a service account key (JSON with client_email and private_key): line {}, column {}",
                e.line(),
                e.column()
            ))
        })?;
        if file.client_email.is_empty() {
            return Err(Error::msg("the service account's client_email is empty"));
        }
        let der = pem_body(&file.private_key, "PRIVATE KEY").ok_or_else(|| {
            Error::msg("the service account's private_key is not a PEM \"PRIVATE KEY\" (PKCS#8)")
        })?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| {
            Error::msg(format!(
                "the service account's private_key is not a usable RSA key: {e}"
            ))
        })?;
        Ok(Self {
            client_email: file.client_email,
            token_uri: file.token_uri,
            key_id: file.private_key_id.filter(|k| !k.is_empty()),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The assertion of the JWT-bearer grant for `token_url` (RFC 7523).
    pub fn token_assertion(&self, token_url: &str, now_s: u64) -> Result<String, Error> {
        self.sign(&json!({
            "iss": self.client_email,
            "scope": DATABASE_SCOPES,
            "aud": token_url,
            "iat": now_s,
            "exp": now_s + MAX_LIFETIME_SECONDS,
        }))
    }

    /// A Firebase custom token for `uid`, valid `lifetime_s` (at most an hour).
    pub fn custom_token(&self, uid: &str, now_s: u64, lifetime_s: u64) -> Result<String, Error> {
        if uid.is_empty() || uid.len() > UID_MAX {
            return Err(Error::msg(
                "a custom token's uid must have 1 to 128 characters",
            ));
        }
        self.sign(&json!({
            "iss": self.client_email,
            "sub": self.client_email,
            "aud": CUSTOM_TOKEN_AUDIENCE,
            "iat": now_s,
            "exp": now_s + lifetime_s.min(MAX_LIFETIME_SECONDS),
            "uid": uid,
        }))
    }

    fn sign(&self, claims: &Value) -> Result<String, Error> {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        let header = Header {
            alg: "RS256",
            typ: "JWT",
            kid: self.key_id.as_deref(),
        };
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::msg("signing with the service account's key failed"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}

/// The DER inside a PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let base64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(base64).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    fn account() -> ServiceAccount {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/firebase/service-account.json"
        );
        ServiceAccount::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn parts(token: &str) -> (Value, Value) {
        let mut parts = token.split('.');
        let mut next = || -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap()
        };
        (next(), next())
    }

    #[test]
    fn a_custom_token_has_firebases_claims_and_verifies_with_the_public_key() {
        let account = account();
        let token = account
            .custom_token("k3J-uid", 1_800_000_000, 3600)
            .unwrap();
        let (header, claims) = parts(&token);
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "kid": "xsigate-test-key-1"})
        );
        assert_eq!(
            claims,
            json!({
                "iss": "firebase-sync@demo-xsigate.iam.gserviceaccount.com",
                "sub": "firebase-sync@demo-xsigate.iam.gserviceaccount.com",
                "aud": CUSTOM_TOKEN_AUDIENCE,
                "iat": 1_800_000_000u64,
                "exp": 1_800_003_600u64,
                "uid": "k3J-uid",
            })
        );
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let public = UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            account.key.public().as_ref().to_vec(),
        );
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
        let forged = format!("{}x.{signature}", signed);
        assert!(
            public
                .verify(
                    forged.as_bytes(),
                    &URL_SAFE_NO_PAD.decode(signature).unwrap()
                )
                .is_err()
        );
    }

    #[test]
    fn lifetimes_are_capped_at_an_hour_and_uids_bounded() {
        let account = account();
        let (_, claims) = parts(&account.custom_token("u", 10, 86_400).unwrap());
        assert_eq!(claims["exp"], 3610);
        assert!(account.custom_token("", 10, 60).is_err());
        assert!(account.custom_token(&"u".repeat(129), 10, 60).is_err());
        let (_, assertion) = parts(
            &account
                .token_assertion("http://127.0.0.1:1/token", 10)
                .unwrap(),
        );
        assert_eq!(assertion["scope"], DATABASE_SCOPES);
        assert_eq!(assertion["aud"], "http://127.0.0.1:1/token");
        assert_eq!(assertion["exp"], 3610);
    }

    #[test]
    fn bad_keys_are_named_without_their_content() {
        let error = ServiceAccount::from_json(
            "{\"client_email\": \"a@b\", \"private_key\": \"secret-material\"}",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("PEM"), "{error}");
        assert!(!error.contains("secret-material"), "{error}");
        let error = ServiceAccount::from_json("not json")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
    }
}
