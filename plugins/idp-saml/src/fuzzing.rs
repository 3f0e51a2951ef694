//! A `SAMLResponse` as the fuzz target drives it: any bytes, posted to a service provider that
//! trusts a certificate whose key nobody has. The invariants: without that key's signature no
//! document is accepted, none panics, and the namespace adjustment adds declarations and
//! nothing else.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};
use samael::crypto::CertificateDer;

use crate::config::{Provider, described};
use crate::{compat, response, screen};

const CALLBACK: &str = "http://127.0.0.1:8080/api/access/services/idp/saml/callback";
const IDP: &str = "http://127.0.0.1:18112/idp";

/// A service provider whose identity provider's key is made here and thrown away.
fn provider() -> &'static Provider {
    static PROVIDER: OnceLock<Provider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("an RSA key")).expect("a key");
        let mut name = X509NameBuilder::new().expect("a name");
        name.append_entry_by_text("CN", "fuzz").expect("a CN");
        let name = name.build();
        let mut builder = X509Builder::new().expect("a certificate");
        builder.set_subject_name(&name).expect("subject");
        builder.set_issuer_name(&name).expect("issuer");
        builder.set_pubkey(&key).expect("key");
        builder
            .set_not_before(&Asn1Time::days_from_now(0).expect("now"))
            .expect("not before");
        builder
            .set_not_after(&Asn1Time::days_from_now(1).expect("tomorrow"))
            .expect("not after");
        builder.sign(&key, MessageDigest::sha256()).expect("signed");
        let certificate = CertificateDer::from(builder.build().to_der().expect("DER"));
        Provider {
            sp_entity_id: "http://127.0.0.1:8080/saml/fuzz".to_owned(),
            sp_certificate: certificate.clone(),
            sp_key: key,
            idp: described(IDP.to_owned(), format!("{IDP}/sso"), &certificate),
            idp_sso_url: format!("{IDP}/sso"),
            sign_requests: false,
            email_attribute: None,
            allow_sha1: false,
            email_domains: vec!["acme.example".to_owned()],
        }
    })
}

pub fn response(data: &[u8]) {
    let provider = provider();
    // The document as posted, and the posted text itself (not base64: refused early).
    for encoded in [
        STANDARD.encode(data),
        String::from_utf8_lossy(data).into_owned(),
    ] {
        let verdict = response::verify(provider, &encoded, "_request", CALLBACK);
        assert!(verdict.is_err(), "an unsigned document was accepted");
    }
    if let Ok(xml) = std::str::from_utf8(data) {
        if let Ok(adjusted) = compat::declare_key_info_namespace(xml) {
            // The adjustment only adds declarations, byte for byte.
            let declaration = " xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"";
            let added = adjusted.matches(declaration).count() - xml.matches(declaration).count();
            assert_eq!(adjusted.len(), xml.len() + added * declaration.len());
            assert_eq!(
                adjusted.replace(declaration, ""),
                xml.replace(declaration, "")
            );
            let _ = screen::response(&adjusted, false);
        }
    }
}
