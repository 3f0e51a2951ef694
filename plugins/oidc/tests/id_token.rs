//! Every refusal of an ID token, each with a token an identity provider (or an attacker) could
//! send, signed with real RSA keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use xsigate_oidc::{Expectations, Refusal, SigningKeys, id_token};

const ISSUER: &str = "https://login.example/tenant/v2.0";
const CLIENT: &str = "client-1";
const NONCE: &str = "n-0S6_WzA2Mj";

fn key(name: &str) -> EncodingKey {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    EncodingKey::from_rsa_pem(&pem).unwrap()
}

/// The identity provider's JWK Set: its signing key under `kid` "k1".
fn published() -> SigningKeys {
    let mut jwk = Jwk::from_encoding_key(&key("signing-key.pem"), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".to_owned());
    SigningKeys::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "subject-1",
        "iat": now(),
        "exp": now() + 600,
        "nonce": NONCE,
        "email": "alice@acme.example",
    })
}

fn signed(claims: &Value, kid: Option<&str>, key_file: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key(key_file)).unwrap()
}

fn good(claims: &Value) -> String {
    signed(claims, Some("k1"), "signing-key.pem")
}

fn verify(token: &str) -> Result<serde_json::Map<String, Value>, Refusal> {
    let expect = Expectations {
        issuer: ISSUER,
        client_id: CLIENT,
        nonce: NONCE,
        algorithms: &[Algorithm::RS256],
        leeway: Duration::from_secs(60),
    };
    id_token::verify(token, &published(), &expect)
}

fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = claims();
    change(claims.as_object_mut().unwrap());
    claims
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[test]
fn a_token_the_identity_provider_signed_for_this_flow_is_believed() {
    let verified = verify(&good(&claims())).unwrap();
    assert_eq!(verified["email"], "alice@acme.example");
}

#[test]
fn a_tampered_signature_or_payload_is_refused() {
    let token = good(&claims());
    let (rest, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    bytes[0] ^= 1;
    let tampered = format!(
        "{rest}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    assert_eq!(verify(&tampered), Err(Refusal::Signature));

    let (header, _) = rest.split_once('.').unwrap();
    let other = with(|c| {
        c.insert("email".into(), "mallory@acme.example".into());
    });
    let swapped = format!("{header}.{}.{signature}", b64(&other));
    assert_eq!(verify(&swapped), Err(Refusal::Signature));
}

#[test]
fn a_token_for_another_client_is_refused() {
    let token = good(&with(|c| {
        c.insert("aud".into(), "client-2".into());
    }));
    assert_eq!(verify(&token), Err(Refusal::Audience));
    // Several audiences need `azp` naming this client.
    let token = good(&with(|c| {
        c.insert("aud".into(), json!([CLIENT, "client-2"]));
    }));
    assert_eq!(verify(&token), Err(Refusal::Audience));
    let token = good(&with(|c| {
        c.insert("aud".into(), json!([CLIENT, "client-2"]));
        c.insert("azp".into(), CLIENT.into());
    }));
    assert!(verify(&token).is_ok());
}

#[test]
fn a_token_of_another_issuer_is_refused() {
    let token = good(&with(|c| {
        c.insert("iss".into(), "https://login.example/other/v2.0".into());
    }));
    assert_eq!(verify(&token), Err(Refusal::Issuer));
}

#[test]
fn an_expired_token_or_one_from_the_future_is_refused() {
    let expired = good(&with(|c| {
        c.insert("iat".into(), (now() - 7200).into());
        c.insert("exp".into(), (now() - 3600).into());
    }));
    assert_eq!(verify(&expired), Err(Refusal::Expired));
    let early = good(&with(|c| {
        c.insert("nbf".into(), (now() + 3600).into());
    }));
    assert_eq!(verify(&early), Err(Refusal::NotYetValid));
    let later = good(&with(|c| {
        c.insert("iat".into(), (now() + 3600).into());
    }));
    assert_eq!(verify(&later), Err(Refusal::IssuedLater));
    // Within the skew is fine.
    let skewed = good(&with(|c| {
        c.insert("iat".into(), (now() + 30).into());
    }));
    assert!(verify(&skewed).is_ok());
}

#[test]
fn a_token_of_another_flow_is_refused() {
    let token = good(&with(|c| {
        c.insert("nonce".into(), "another-flow".into());
    }));
    assert_eq!(verify(&token), Err(Refusal::Nonce));
    let token = good(&with(|c| {
        c.remove("nonce");
    }));
    assert_eq!(verify(&token), Err(Refusal::Nonce));
}

#[test]
fn a_key_the_identity_provider_does_not_publish_is_refused() {
    // Signed by another key under a kid the set lacks, and under the published kid.
    let unknown = signed(&claims(), Some("k2"), "other-key.pem");
    assert_eq!(verify(&unknown), Err(Refusal::UnknownKey));
    let forged = signed(&claims(), Some("k1"), "other-key.pem");
    assert_eq!(verify(&forged), Err(Refusal::Signature));
}

#[test]
fn alg_none_is_refused() {
    let header = json!({ "alg": "none", "typ": "JWT", "kid": "k1" });
    let token = format!("{}.{}.", b64(&header), b64(&claims()));
    assert!(matches!(
        verify(&token),
        Err(Refusal::Algorithm | Refusal::Malformed)
    ));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // The classic confusion: the public key's bytes used as an HMAC secret.
    let public = std::fs::read(format!(
        "{}/tests/fixtures/signing-key.pub.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(verify(&token), Err(Refusal::Algorithm));
}

#[test]
fn a_symmetric_key_in_the_key_set_is_never_used() {
    let secret = b"shared-secret-shared-secret-32by";
    let jwks = json!({ "keys": [{
        "kty": "oct", "kid": "k1", "alg": "HS256",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    }]});
    let keys = SigningKeys::from_jwks(jwks.to_string().as_bytes()).unwrap();
    assert!(keys.is_empty());
}

#[test]
fn missing_claims_are_refused() {
    for claim in ["iat", "sub", "aud"] {
        let token = good(&with(|c| {
            c.remove(claim);
        }));
        assert!(verify(&token).is_err(), "{claim}");
    }
}
