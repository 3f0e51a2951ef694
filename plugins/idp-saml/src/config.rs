//! The plugin's `config` table, and each provider's identity provider and service-provider
//! keys as read at init: a file that does not parse stops the start with the key that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use samael::crypto::CertificateDer;
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    Endpoint, EntityDescriptor, HTTP_REDIRECT_BINDING, IdpSsoDescriptor, KeyDescriptor,
};
use serde::Deserialize;
use xsigate_plugin_sdk::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the login page shows for this method.
    #[serde(default = "default_label")]
    pub label: String,
    /// One user per enterprise whose directory is searched for the asserted address; the
    /// provider's master credentials must cover them.
    pub anchor_users: Vec<String>,
    /// By provider id. A provider that lists the plugin without an entry here offers nothing.
    pub providers: BTreeMap<String, ProviderTable>,
}

fn default_label() -> String {
    "Company sign-in".to_owned()
}

/// One provider's SAML identity provider and the gateway's service-provider identity there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTable {
    /// The identity provider's metadata (an `EntityDescriptor` with an `IDPSSODescriptor`),
    /// or the three `idp_*` keys below.
    pub idp_metadata_file: Option<PathBuf>,
    pub idp_entity_id: Option<String>,
    /// Its single sign-on service for the HTTP-Redirect binding.
    pub idp_sso_url: Option<String>,
    /// The certificate its responses are signed with (PEM). The only key that verifies them:
    /// a certificate a response carries in `KeyInfo` is never used.
    pub idp_certificate_file: Option<PathBuf>,
    /// The gateway's entity ID at this identity provider (the `Audience` it must assert).
    pub sp_entity_id: String,
    /// The gateway's certificate (PEM), published in its metadata.
    pub sp_certificate_file: PathBuf,
    /// Its private key (PEM): signs requests, decrypts `EncryptedAssertion`s.
    pub sp_key_file: PathBuf,
    /// Sign AuthnRequests (HTTP-Redirect binding's `SigAlg` and `Signature`).
    #[serde(default)]
    pub sign_requests: bool,
    /// The attribute that carries the e-mail address; the `NameID` when absent.
    pub email_attribute: Option<String>,
    /// Accept RSA-SHA1 signatures and SHA-1 digests (old ADFS farms). Off: SHA-1 is forgeable.
    #[serde(default)]
    pub allow_sha1: bool,
    /// The address domains this identity provider signs in: ZTP offers the method for these.
    pub email_domains: Vec<String>,
}

/// A provider's identity provider and keys, checked and loaded.
pub struct Provider {
    pub sp_entity_id: String,
    pub sp_certificate: CertificateDer,
    pub sp_key: PKey<Private>,
    pub idp: EntityDescriptor,
    pub idp_sso_url: String,
    pub sign_requests: bool,
    pub email_attribute: Option<String>,
    pub allow_sha1: bool,
    pub email_domains: Vec<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("sp_entity_id", &self.sp_entity_id)
            .field("idp", &self.idp.entity_id)
            .field("idp_sso_url", &self.idp_sso_url)
            .finish_non_exhaustive()
    }
}

impl ProviderTable {
    /// Checks the table and reads its files; errors name `providers.<id>.<key>`.
    pub fn load(&self, id: &str) -> Result<Provider, Error> {
        let key = |name: &str, why: &str| Error::msg(format!("providers.{id}.{name}: {why}"));
        if self.sp_entity_id.trim().is_empty() {
            return Err(key("sp_entity_id", "must not be empty"));
        }
        if self.email_domains.is_empty()
            || self
                .email_domains
                .iter()
                .any(|d| !d.contains('.') || d.contains('@') || d.trim() != d)
        {
            return Err(key(
                "email_domains",
                "name the address domains this identity provider signs in (\"acme.com\")",
            ));
        }
        let sp_certificate = read_certificate(&self.sp_certificate_file)
            .map_err(|why| key("sp_certificate_file", &why))?;
        let sp_key = read(&self.sp_key_file)
            .and_then(|pem| {
                PKey::private_key_from_pem(&pem).map_err(|_| "is no PEM private key".to_owned())
            })
            .map_err(|why| key("sp_key_file", &why))?;
        let matches = X509::from_der(sp_certificate.der_data())
            .and_then(|certificate| certificate.public_key())
            .is_ok_and(|public| public.public_eq(&sp_key));
        if !matches {
            return Err(key(
                "sp_key_file",
                "is not the key of sp_certificate_file's certificate",
            ));
        }
        let explicit = [
            self.idp_entity_id.is_some(),
            self.idp_sso_url.is_some(),
            self.idp_certificate_file.is_some(),
        ];
        let idp = match (&self.idp_metadata_file, explicit) {
            (Some(file), [false, false, false]) => {
                read_metadata(file).map_err(|why| key("idp_metadata_file", &why))?
            }
            (None, [true, true, true]) => {
                let certificate = read_certificate(
                    self.idp_certificate_file
                        .as_deref()
                        .unwrap_or(Path::new("")),
                )
                .map_err(|why| key("idp_certificate_file", &why))?;
                described(
                    self.idp_entity_id.clone().unwrap_or_default(),
                    self.idp_sso_url.clone().unwrap_or_default(),
                    &certificate,
                )
            }
            _ => {
                return Err(key(
                    "idp_metadata_file",
                    "name the identity provider by its metadata file, or by idp_entity_id, \
                     idp_sso_url and idp_certificate_file (one way, not both)",
                ));
            }
        };
        let idp_sso_url = redirect_sso_url(&idp).ok_or_else(|| {
            key(
                "idp_metadata_file",
                "the identity provider has no single sign-on service for the HTTP-Redirect binding",
            )
        })?;
        if !url::Url::parse(&idp_sso_url).is_ok_and(|u| matches!(u.scheme(), "https" | "http")) {
            return Err(key("idp_sso_url", "must be an http or https URL"));
        }
        if idp.entity_id.as_deref().is_none_or(str::is_empty) {
            return Err(key(
                "idp_entity_id",
                "the identity provider's entity ID is required",
            ));
        }
        if !has_signing_certificate(&idp) {
            return Err(key(
                "idp_certificate_file",
                "the identity provider's signing certificate is required: nothing is accepted \
                 unsigned",
            ));
        }
        Ok(Provider {
            sp_entity_id: self.sp_entity_id.clone(),
            sp_certificate,
            sp_key,
            idp,
            idp_sso_url,
            sign_requests: self.sign_requests,
            email_attribute: self.email_attribute.clone(),
            allow_sha1: self.allow_sha1,
            email_domains: self
                .email_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_certificate(path: &Path) -> Result<CertificateDer, String> {
    let pem = read(path)?;
    let der = X509::from_pem(&pem)
        .and_then(|certificate| certificate.to_der())
        .map_err(|_| format!("{} is no PEM certificate", path.display()))?;
    Ok(CertificateDer::from(der))
}

fn read_metadata(path: &Path) -> Result<EntityDescriptor, String> {
    let bytes = read(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "is not UTF-8".to_owned())?;
    // A metadata file is the operator's, but it is XML all the same: no DTD.
    crate::screen::well_behaved(text).map_err(|why| format!("is refused: {why}"))?;
    let descriptor: EntityDescriptor = text
        .parse()
        .map_err(|_| format!("{} is no SAML EntityDescriptor", path.display()))?;
    if descriptor
        .idp_sso_descriptors
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        return Err(format!("{} describes no identity provider", path.display()));
    }
    Ok(descriptor)
}

/// The metadata the three explicit keys describe.
pub(crate) fn described(
    entity_id: String,
    sso_url: String,
    certificate: &CertificateDer,
) -> EntityDescriptor {
    EntityDescriptor {
        entity_id: Some(entity_id),
        idp_sso_descriptors: Some(vec![IdpSsoDescriptor {
            id: None,
            valid_until: None,
            cache_duration: None,
            protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".to_owned()),
            error_url: None,
            signature: None,
            key_descriptors: vec![KeyDescriptor {
                key_use: Some("signing".to_owned()),
                key_info: KeyInfo {
                    id: None,
                    x509_data: Some(X509Data {
                        certificates: vec![STANDARD.encode(certificate.der_data())],
                    }),
                },
                encryption_methods: None,
            }],
            organization: None,
            contact_people: Vec::new(),
            artifact_resolution_service: Vec::new(),
            single_logout_services: Vec::new(),
            manage_name_id_services: Vec::new(),
            name_id_formats: Vec::new(),
            want_authn_requests_signed: None,
            single_sign_on_services: vec![Endpoint {
                binding: HTTP_REDIRECT_BINDING.to_owned(),
                location: sso_url,
                response_location: None,
            }],
            name_id_mapping_services: Vec::new(),
            assertion_id_request_services: Vec::new(),
            attribute_profiles: Vec::new(),
            attributes: Vec::new(),
        }]),
        ..EntityDescriptor::default()
    }
}

fn redirect_sso_url(idp: &EntityDescriptor) -> Option<String> {
    idp.idp_sso_descriptors
        .iter()
        .flatten()
        .flat_map(|d| &d.single_sign_on_services)
        .find(|service| service.binding == HTTP_REDIRECT_BINDING)
        .map(|service| service.location.clone())
}

fn has_signing_certificate(idp: &EntityDescriptor) -> bool {
    idp.idp_sso_descriptors
        .iter()
        .flatten()
        .flat_map(|d| &d.key_descriptors)
        .filter(|k| {
            k.key_use
                .as_deref()
                .is_none_or(|u| u.is_empty() || u == "signing")
        })
        .any(|k| {
            k.key_info
                .x509_data
                .as_ref()
                .is_some_and(|data| !data.certificates.is_empty())
        })
}
