//! The way back: a `SAMLResponse` from the HTTP-POST binding, screened (`screen`), verified
//! by samael over xmlsec against the configured certificate only, and checked where samael
//! leaves a gap. Each refusal is a short reason for the log, naming nothing of the message.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use samael::crypto::AllowedSignatureAlgorithm;
use samael::schema::Assertion;
use samael::service_provider::{Error as SamlError, ServiceProvider};

use crate::config::Provider;
use crate::{compat, quiet, screen};

/// Clock skew allowed on every time in a response.
const SKEW: Duration = Duration::seconds(60);
/// How old a response or an assertion may be when it arrives.
const ISSUE_DELAY: Duration = Duration::seconds(180);

/// Decodes, screens and verifies a response to the request `request_id`, received at
/// `callback_url`; the one assertion it vouches for.
pub fn verify(
    provider: &Provider,
    encoded: &str,
    request_id: &str,
    callback_url: &str,
) -> Result<Assertion, &'static str> {
    let compact: Vec<u8> = encoded
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.len() > screen::MAX_RESPONSE / 3 * 4 + 4 {
        return Err("the response is too large");
    }
    let bytes = STANDARD
        .decode(compact)
        .map_err(|_| "the response is not base64")?;
    let xml = std::str::from_utf8(&bytes).map_err(|_| "the response is not UTF-8")?;
    let xml = compat::declare_key_info_namespace(xml)?;
    screen::response(&xml, provider.allow_sha1)?;
    quiet::silence_this_thread();
    let assertion = service_provider(provider, callback_url)
        .parse_xml_response(&xml, Some(&[request_id]))
        .map_err(|e| refusal(&e))?;
    // samael checks the audience only when the assertion restricts it; an assertion for any
    // audience is one an identity provider made for some other service.
    let audience = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.audience_restrictions.as_ref())
        .is_some_and(|restrictions| {
            !restrictions.is_empty()
                && restrictions
                    .iter()
                    .all(|r| r.audience.contains(&provider.sp_entity_id))
        });
    if !audience {
        return Err("the assertion is not restricted to this service provider");
    }
    Ok(assertion)
}

fn service_provider(provider: &Provider, callback_url: &str) -> ServiceProvider {
    use AllowedSignatureAlgorithm::{EcdsaSha256, EcdsaSha384, EcdsaSha512};
    use AllowedSignatureAlgorithm::{RsaSha256, RsaSha384, RsaSha512};
    ServiceProvider {
        entity_id: Some(provider.sp_entity_id.clone()),
        key: Some(provider.sp_key.clone()),
        certificate: Some(provider.sp_certificate.clone()),
        acs_url: Some(callback_url.to_owned()),
        metadata_url: None,
        slo_url: None,
        idp_metadata: provider.idp.clone(),
        allow_idp_initiated: false,
        max_clock_skew: SKEW,
        max_issue_delay: ISSUE_DELAY,
        // samael knows no SHA-1 algorithm: where the operator allows it, the screen's list is
        // the only one.
        allowed_signature_algorithms: (!provider.allow_sha1).then(|| {
            vec![
                RsaSha256,
                RsaSha384,
                RsaSha512,
                EcdsaSha256,
                EcdsaSha384,
                EcdsaSha512,
            ]
        }),
        ..ServiceProvider::default()
    }
}

/// The log's word for what samael refused.
fn refusal(error: &SamlError) -> &'static str {
    use SamlError::*;
    match error {
        FailedToValidateSignature => "no valid signature by the identity provider's certificate",
        DestinationValidationError { .. } => "the response is for another destination",
        ResponseInResponseToInvalid { .. } | AssertionInResponseToInvalid { .. } => {
            "the response answers no request of this flow"
        }
        ResponseIssuerMismatch { .. } | AssertionIssuerMismatch { .. } => {
            "the response comes from another issuer"
        }
        ResponseExpired { .. }
        | AssertionExpired { .. }
        | AssertionConditionExpired { .. }
        | AssertionSubjectConfirmationExpired { .. } => "the response has expired",
        AssertionConditionExpiredBefore { .. }
        | AssertionSubjectConfirmationExpiredBefore { .. } => "the response is not valid yet",
        AssertionConditionAudienceRestrictionFailed { .. } => {
            "the assertion is for another audience"
        }
        AssertionRecipientMismatch { .. } => "the assertion is for another recipient",
        AssertionBearerSubjectConfirmationMissing | AssertionSubjectConfirmationMissing => {
            "the assertion has no usable bearer confirmation"
        }
        ResponseBadStatusCode { .. } => "the identity provider answered with a failure status",
        FailedToDecryptAssertion
        | EncryptedAssertionInvalid
        | MissingEncryptedKeyInfo
        | MissingEncryptedValueInfo
        | EncryptedAssertionKeyMethodUnsupported { .. }
        | EncryptedAssertionValueMethodUnsupported { .. } => {
            "the encrypted assertion cannot be decrypted"
        }
        _ => "the response is not a SAML response this service provider accepts",
    }
}

/// How long the assertion stays usable: its bearer confirmation's `NotOnOrAfter` plus the
/// skew, which is how long its ID must stay in the replay cache.
pub fn usable_for(assertion: &Assertion) -> std::time::Duration {
    let until = assertion
        .subject
        .as_ref()
        .and_then(|s| s.subject_confirmations.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.subject_confirmation_data.as_ref()?.not_on_or_after)
        .max()
        .unwrap_or_else(Utc::now);
    (until + SKEW - Utc::now())
        .to_std()
        .unwrap_or_default()
        .clamp(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(24 * 3600),
        )
}
