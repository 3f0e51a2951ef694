//! The way out: an AuthnRequest by the HTTP-Redirect binding (SAML Bindings §3.4), and the
//! service provider's metadata that an identity provider's administrator registers.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::DeflateEncoder;
use openssl::sha::sha256;
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    EncryptionMethod, EntityDescriptor, HTTP_POST_BINDING, IndexedEndpoint, KeyDescriptor,
    SpSsoDescriptor,
};
use samael::schema::{AuthnRequest, Issuer, NameIdPolicy};
use samael::traits::ToXml as _;
use xsigate_plugin_sdk::{Error, RedirectFlow};

use crate::config::Provider;

pub const EMAIL_NAME_ID: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// The request's `ID`, which the response's `InResponseTo` must repeat: derived from the
/// host's flow nonce, so the plugin keeps nothing and no other flow's response can match.
/// (An `ID` is an XML NCName, hence the leading underscore.)
pub fn request_id(nonce: &str) -> String {
    let digest = sha256(nonce.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}

/// The identity provider's URL with the deflated, encoded request and the flow's `state` as
/// `RelayState`, signed when the provider says so.
pub fn redirect_url(provider: &Provider, flow: &RedirectFlow) -> Result<String, Error> {
    let request = AuthnRequest {
        id: request_id(&flow.nonce),
        issue_instant: chrono::Utc::now(),
        version: "2.0".to_owned(),
        destination: Some(provider.idp_sso_url.clone()),
        assertion_consumer_service_url: Some(flow.redirect_uri.clone()),
        protocol_binding: Some(HTTP_POST_BINDING.to_owned()),
        issuer: Some(Issuer {
            value: Some(provider.sp_entity_id.clone()),
            ..Issuer::default()
        }),
        name_id_policy: Some(NameIdPolicy {
            format: provider
                .email_attribute
                .is_none()
                .then(|| EMAIL_NAME_ID.to_owned()),
            allow_create: Some(true),
            ..NameIdPolicy::default()
        }),
        ..AuthnRequest::default()
    };
    let xml = request
        .to_string()
        .map_err(|e| Error::msg(format!("cannot write the AuthnRequest: {e}")))?;
    let mut deflater = DeflateEncoder::new(Vec::new(), Compression::default());
    let deflated = deflater
        .write_all(xml.as_bytes())
        .and_then(|()| deflater.finish())
        .map_err(|e| Error::msg(format!("cannot deflate the AuthnRequest: {e}")))?;
    let mut url = url::Url::parse(&provider.idp_sso_url)
        .map_err(|_| Error::msg("the identity provider's sign-on URL is no URL"))?;
    url.query_pairs_mut()
        .append_pair("SAMLRequest", &STANDARD.encode(deflated))
        .append_pair("RelayState", &flow.state);
    if provider.sign_requests {
        url = samael::crypto::sign_url(url, &provider.sp_key)
            .map_err(|e| Error::msg(format!("cannot sign the AuthnRequest: {e}")))?;
    }
    Ok(url.into())
}

/// The service provider's metadata: entity ID, the assertion consumer service (the method's
/// callback, HTTP-POST), and the one certificate for signing and for encryption.
pub fn metadata(provider: &Provider, callback_url: &str) -> Result<String, Error> {
    let key_info = KeyInfo {
        id: None,
        x509_data: Some(X509Data {
            certificates: vec![STANDARD.encode(provider.sp_certificate.der_data())],
        }),
    };
    let key = |key_use: &str, encryption_methods| KeyDescriptor {
        key_use: Some(key_use.to_owned()),
        key_info: key_info.clone(),
        encryption_methods,
    };
    // What samael decrypts.
    let encryption = [
        "http://www.w3.org/2009/xmlenc11#aes128-gcm",
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    ]
    .map(|algorithm| EncryptionMethod {
        algorithm: algorithm.to_owned(),
    });
    let descriptor = EntityDescriptor {
        entity_id: Some(provider.sp_entity_id.clone()),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some(PROTOCOL.to_owned()),
            key_descriptors: Some(vec![
                key("signing", None),
                key("encryption", Some(encryption.to_vec())),
            ]),
            authn_requests_signed: Some(provider.sign_requests),
            want_assertions_signed: Some(true),
            name_id_formats: provider
                .email_attribute
                .is_none()
                .then(|| vec![EMAIL_NAME_ID.to_owned()]),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.to_owned(),
                location: callback_url.to_owned(),
                response_location: None,
                index: 0,
                is_default: Some(true),
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    descriptor
        .to_string()
        .map_err(|e| Error::msg(format!("cannot write the metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_is_an_ncname_bound_to_the_nonce() {
        let id = request_id("nonce");
        assert!(id.starts_with('_') && id.len() == 65);
        assert_eq!(id, request_id("nonce"));
        assert_ne!(id, request_id("other"));
    }
}
