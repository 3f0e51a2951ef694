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
use quick_xml::writer::Writer;

const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const XENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";

/// The document with `xmlns:ds` declared on each `KeyInfo` directly inside `EncryptedData`
/// that declares neither `xmlns:ds` nor `xmlns:dsig`; unchanged when there is none.
pub fn declare_key_info_namespace(xml: &str) -> Result<String, &'static str> {
    if !xml.contains(XENC_NS) {
        return Ok(xml.to_owned());
    }
    let mut reader = NsReader::from_str(xml);
    let mut writer = Writer::new(Vec::with_capacity(xml.len() + 64));
    // Whether each open element is an `EncryptedData`.
    let mut open: Vec<bool> = Vec::new();
    loop {
        let (namespace, event) = reader
            .read_resolved_event()
            .map_err(|_| "not well-formed XML")?;
        let in_encrypted_data = open.last().copied().unwrap_or(false);
        let key_info = |start: &BytesStart<'_>| {
            in_encrypted_data && is(&namespace, DSIG_NS) && local(start) == "KeyInfo"
        };
        let event = match event {
            Event::Start(start) if key_info(&start) => {
                open.push(false);
                Event::Start(declared(start))
            }
            Event::Empty(start) if key_info(&start) => Event::Empty(declared(start)),
            Event::Start(start) => {
                open.push(is(&namespace, XENC_NS) && local(&start) == "EncryptedData");
                Event::Start(start)
            }
            Event::End(end) => {
                open.pop();
                Event::End(end)
            }
            Event::Eof => break,
            other => other,
        };
        writer
            .write_event(event)
            .map_err(|_| "the document cannot be written back")?;
    }
    String::from_utf8(writer.into_inner()).map_err(|_| "the document is not UTF-8")
}

fn is(namespace: &ResolveResult<'_>, wanted: &str) -> bool {
    matches!(namespace, ResolveResult::Bound(Namespace(ns)) if *ns == wanted)
}

fn local<'a>(start: &'a BytesStart<'_>) -> &'a str {
    start.local_name().into_inner()
}

/// The element with `xmlns:ds` declared, unless it declares `xmlns:ds` or `xmlns:dsig`.
fn declared(start: BytesStart<'_>) -> BytesStart<'static> {
    let declared = start
        .attributes()
        .flatten()
        .any(|a| matches!(a.key.into_inner(), "xmlns:ds" | "xmlns:dsig"));
    let mut start = start.into_owned();
    if !declared {
        start.push_attribute(("xmlns:ds", DSIG_NS));
    }
    start
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
