//! What a SAML document must be before libxml2 and xmlsec see it. A tokenizer (quick-xml,
//! which expands no entity and fetches nothing) reads it once:
//!
//! - no DOCTYPE: so no DTD, no entity to expand, no external reference to fetch;
//! - no comment: canonicalization drops comments, so a comment inside a signed `NameID`
//!   (`alice@acme.com<!---->.evil.com`) keeps the signature valid while a reader that takes
//!   the first text node sees another address;
//! - no processing instruction but the XML declaration, no undeclared namespace prefix;
//! - signature, digest, canonicalization, transform and encryption algorithms from an
//!   allow-list (no XSLT, no XPath transform, no SHA-1 unless the operator allowed it, no RSA
//!   PKCS#1 v1.5 key transport);
//! - exactly one assertion, plain or encrypted, anywhere in the document: a second one is
//!   how signature wrapping smuggles its own.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

/// The largest response accepted, decoded.
pub const MAX_RESPONSE: usize = 256 * 1024;

const XENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";
const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

const SIGNATURES: [&str; 6] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
const DIGESTS: [&str; 3] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
const SHA1_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const SHA1_DIGEST: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
/// Canonicalizations and transforms: exclusive and inclusive C14N (1.0, 1.1) without
/// comments, and the enveloped-signature transform.
const TRANSFORMS: [&str; 4] = [
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
];

/// Key transport and content encryption of an `EncryptedAssertion`: RSA-OAEP (never RSA
/// PKCS#1 v1.5, open to Bleichenbacher's oracle) and AES.
const ENCRYPTIONS: [&str; 6] = [
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
];

/// Refuses a DOCTYPE, a comment and a processing instruction other than the leading XML
/// declaration; for any XML the plugin reads (a response, a metadata file).
pub fn well_behaved(xml: &str) -> Result<(), &'static str> {
    walk(xml, |_, _| Ok(()))
}

/// Everything the module's comment lists, for a response.
pub fn response(xml: &str, allow_sha1: bool) -> Result<(), &'static str> {
    let mut assertions = 0;
    walk(xml, |namespace, element| {
        let refused = match (namespace, element.local_name().into_inner()) {
            (Some(ASSERTION_NS), "Assertion" | "EncryptedAssertion") => {
                assertions += 1;
                (assertions > 1).then_some("more than one assertion")
            }
            (Some(DSIG_NS), "SignatureMethod") => {
                let algorithm = algorithm(element)?;
                let allowed = SIGNATURES.contains(&algorithm.as_str())
                    || (allow_sha1 && algorithm == SHA1_SIGNATURE);
                (!allowed).then_some("a signature algorithm that is not allowed")
            }
            (Some(DSIG_NS), "DigestMethod") => {
                let algorithm = algorithm(element)?;
                let allowed = DIGESTS.contains(&algorithm.as_str())
                    || (allow_sha1 && algorithm == SHA1_DIGEST);
                (!allowed).then_some("a digest algorithm that is not allowed")
            }
            (Some(DSIG_NS), "CanonicalizationMethod" | "Transform") => {
                let allowed = TRANSFORMS.contains(&algorithm(element)?.as_str());
                (!allowed).then_some("a canonicalization or transform that is not allowed")
            }
            (Some(XENC_NS), "EncryptionMethod") => {
                let allowed = ENCRYPTIONS.contains(&algorithm(element)?.as_str());
                (!allowed).then_some("an encryption algorithm that is not allowed")
            }
            _ => None,
        };
        refused.map_or(Ok(()), Err)
    })?;
    if assertions == 0 {
        return Err("no assertion");
    }
    Ok(())
}

fn algorithm(element: &BytesStart<'_>) -> Result<String, &'static str> {
    element
        .try_get_attribute("Algorithm")
        .ok()
        .flatten()
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
        .ok_or("an algorithm element without its algorithm")
}

/// Reads the whole document, handing each element start to `element` with its namespace.
fn walk(
    xml: &str,
    mut element: impl FnMut(Option<&str>, &BytesStart<'_>) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let mut reader = NsReader::from_str(xml);
    let mut first = true;
    loop {
        let (namespace, event) = reader
            .read_resolved_event()
            .map_err(|_| "not well-formed XML")?;
        let namespace = match namespace {
            ResolveResult::Bound(Namespace(ns)) => Some(ns),
            // A prefix nobody declared: libxml2 reads such an element as in no namespace,
            // and an adjustment could bind it later; neither is worth the doubt.
            ResolveResult::Unknown(_) => return Err("an undeclared namespace prefix"),
            ResolveResult::Unbound => None,
        };
        match event {
            Event::Decl(_) if first => {}
            Event::Decl(_) | Event::PI(_) => return Err("a processing instruction"),
            Event::DocType(_) => return Err("a DOCTYPE"),
            Event::Comment(_) => return Err("a comment"),
            Event::Start(start) | Event::Empty(start) => element(namespace, &start)?,
            Event::Eof => return Ok(()),
            _ => {}
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = r##"<?xml version="1.0"?>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
  xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"
  xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
 <saml:Assertion ID="a"><ds:Signature><ds:SignedInfo>
  <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
  <ds:SignatureMethod Algorithm="SIG"/>
  <ds:Reference URI="#a"><ds:Transforms>
   <ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
  </ds:Transforms><ds:DigestMethod Algorithm="DIGEST"/></ds:Reference>
 </ds:SignedInfo></ds:Signature>
 <saml:Subject><saml:NameID>alice@acme.com</saml:NameID></saml:Subject></saml:Assertion>
</samlp:Response>"##;

    fn signed(signature: &str, digest: &str) -> String {
        SIGNED
            .replace("\"SIG\"", &format!("\"{signature}\""))
            .replace("\"DIGEST\"", &format!("\"{digest}\""))
    }

    fn sha256() -> String {
        signed(SIGNATURES[0], DIGESTS[0])
    }

    #[test]
    fn a_plain_signed_response_passes() {
        assert_eq!(response(&sha256(), false), Ok(()));
    }

    #[test]
    fn sha1_passes_only_where_allowed() {
        let sha1 = signed(SHA1_SIGNATURE, SHA1_DIGEST);
        assert!(response(&sha1, false).is_err());
        assert_eq!(response(&sha1, true), Ok(()));
        assert!(response(&signed(SIGNATURES[0], SHA1_DIGEST), false).is_err());
        assert!(
            response(
                &signed("http://www.w3.org/2000/09/xmldsig#hmac-sha1", DIGESTS[0]),
                true
            )
            .is_err()
        );
    }

    #[test]
    fn an_xslt_transform_is_refused() {
        let xslt = sha256().replace(
            "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
        );
        assert_eq!(
            response(&xslt, false),
            Err("a canonicalization or transform that is not allowed")
        );
    }

    #[test]
    fn a_comment_a_doctype_or_an_instruction_is_refused() {
        let comment = sha256().replace("alice@acme.com", "alice@acme.com<!---->.evil.com");
        assert_eq!(response(&comment, false), Err("a comment"));
        let doctype = sha256().replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"http://127.0.0.1:1/\">]>",
        );
        assert_eq!(response(&doctype, false), Err("a DOCTYPE"));
        let instruction = sha256().replace("<saml:Subject>", "<?evil?><saml:Subject>");
        assert_eq!(
            response(&instruction, false),
            Err("a processing instruction")
        );
    }

    #[test]
    fn an_undeclared_prefix_is_refused() {
        let unbound = sha256().replace("<ds:Transforms>", "<ds:Transforms><x:Transform/>");
        assert_eq!(
            response(&unbound, false),
            Err("an undeclared namespace prefix")
        );
    }

    #[test]
    fn exactly_one_assertion() {
        let two = sha256().replace(
            "</samlp:Response>",
            "<saml:Assertion ID=\"b\"/></samlp:Response>",
        );
        assert_eq!(response(&two, false), Err("more than one assertion"));
        let hidden = sha256().replace(
            "<saml:Assertion ID=\"a\">",
            "<samlp:Extensions><saml:Assertion ID=\"b\"/></samlp:Extensions><saml:Assertion ID=\"a\">",
        );
        assert_eq!(response(&hidden, false), Err("more than one assertion"));
        let none = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"/>"#;
        assert_eq!(response(none, false), Err("no assertion"));
    }
}
