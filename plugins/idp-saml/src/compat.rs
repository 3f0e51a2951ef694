//! One adjustment samael 0.0.22 needs to read an `EncryptedAssertion`: its `KeyInfo` type for
//! the key inside `EncryptedData` requires a literal `xmlns:ds` (or `xmlns:dsig`) attribute on
//! that element, while identity providers declare the XML-DSig namespace wherever they like
//! (pysaml2 on the root, ADFS as a default namespace). Without it the whole response fails to
//! parse after its signature verified.
//!
//! Adding `xmlns:ds="http://www.w3.org/2000/09/xmldsig#"` there changes nothing a signature
//! covers under exclusive canonicalization, which renders only the namespaces an element uses
//! (and no element uses `ds:` unless it was declared already); under inclusive
//! canonicalization the digest changes and the response is refused, which fails closed. The
//! document samael verifies is the one it reads, so nothing is checked on one text and used
//! from another.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const XENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";

/// The document with `xmlns:ds` declared on each `KeyInfo` directly inside `EncryptedData`
/// that declares neither `xmlns:ds` nor `xmlns:dsig`; unchanged when there is none. The
/// declaration is inserted into the text as it came, after the element's name: every other
/// byte stays as it was. The screen reads the adjusted document, which is the one samael
/// reads (a `ds:` element under that `KeyInfo` with no declaration of its own is bound by the
/// adjustment, so it must be screened after it).
pub fn declare_key_info_namespace(xml: &str) -> Result<String, &'static str> {
    if !xml.contains(XENC_NS) {
        return Ok(xml.to_owned());
    }
    let mut reader = NsReader::from_str(xml);
    // Where each declaration goes: just after a qualifying tag's name.
    let mut insertions = Vec::new();
    // Whether each open element is an `EncryptedData`.
    let mut open: Vec<bool> = Vec::new();
    loop {
        let tag_start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let (namespace, event) = reader
            .read_resolved_event()
            .map_err(|_| "not well-formed XML")?;
        let in_encrypted_data = open.last().copied().unwrap_or(false);
        match event {
            Event::Start(ref start) | Event::Empty(ref start)
                if in_encrypted_data && is(&namespace, DSIG_NS) && local(start) == "KeyInfo" =>
            {
                if !declares_dsig(start) {
                    let name_end = tag_start + 1 + start.name().into_inner().len();
                    if xml.get(tag_start..=tag_start).is_some_and(|lt| lt == "<") {
                        insertions.push(name_end);
                    }
                }
                if matches!(event, Event::Start(_)) {
                    open.push(false);
                }
            }
            Event::Start(start) => {
                open.push(is(&namespace, XENC_NS) && local(&start) == "EncryptedData");
            }
            Event::End(_) => {
                open.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let declaration = format!(" xmlns:ds=\"{DSIG_NS}\"");
    let mut adjusted = String::with_capacity(xml.len() + insertions.len() * declaration.len());
    let mut copied = 0;
    for at in insertions {
        let before = xml
            .get(copied..at)
            .ok_or("the document cannot be adjusted")?;
        adjusted.push_str(before);
        adjusted.push_str(&declaration);
        copied = at;
    }
    adjusted.push_str(xml.get(copied..).ok_or("the document cannot be adjusted")?);
    Ok(adjusted)
}

fn is(namespace: &ResolveResult<'_>, wanted: &str) -> bool {
    matches!(namespace, ResolveResult::Bound(Namespace(ns)) if *ns == wanted)
}

fn local<'a>(start: &'a BytesStart<'_>) -> &'a str {
    start.local_name().into_inner()
}

/// Whether the element declares `xmlns:ds` or `xmlns:dsig` itself.
fn declares_dsig(start: &BytesStart<'_>) -> bool {
    start
        .attributes()
        .flatten()
        .any(|a| matches!(a.key.into_inner(), "xmlns:ds" | "xmlns:dsig"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCRYPTED: &str = r#"<?xml version="1.0"?>
<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:d="http://www.w3.org/2000/09/xmldsig#" xmlns:e="http://www.w3.org/2001/04/xmlenc#" ID="r"><d:KeyInfo/><a:EncryptedAssertion><e:EncryptedData><d:KeyInfo><e:EncryptedKey/></d:KeyInfo><e:CipherData/></e:EncryptedData></a:EncryptedAssertion></p:Response>"#;

    #[test]
    fn only_the_key_info_inside_encrypted_data_is_declared() {
        let adjusted = declare_key_info_namespace(ENCRYPTED).unwrap();
        assert_eq!(
            adjusted,
            ENCRYPTED.replace(
                "<e:EncryptedData><d:KeyInfo>",
                "<e:EncryptedData><d:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">"
            )
        );
    }

    #[test]
    fn every_other_byte_stays_as_it_came() {
        // Oddities a writer would normalise: a second declaration, attribute quoting, spacing.
        let odd = ENCRYPTED
            .replace(
                "<?xml version=\"1.0\"?>",
                "<?xml vers xmlns:p='x'?>\n<?xml version=\"1.0\"?>",
            )
            .replace(
                "<d:KeyInfo><e:EncryptedKey/>",
                "<d:KeyInfo  ><e:EncryptedKey a='1' />",
            );
        let adjusted = declare_key_info_namespace(&odd).unwrap();
        assert_eq!(
            adjusted.replacen(" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"", "", 1),
            odd
        );
        assert_ne!(adjusted, odd);
    }

    #[test]
    fn a_document_without_encryption_or_already_declared_is_unchanged() {
        let plain = ENCRYPTED.replace("http://www.w3.org/2001/04/xmlenc#", "urn:other");
        assert_eq!(declare_key_info_namespace(&plain).unwrap(), plain);
        let declared = ENCRYPTED.replace(
            "<e:EncryptedData><d:KeyInfo>",
            "<e:EncryptedData><d:KeyInfo xmlns:dsig=\"http://www.w3.org/2000/09/xmldsig#\">",
        );
        assert_eq!(declare_key_info_namespace(&declared).unwrap(), declared);
    }
}
