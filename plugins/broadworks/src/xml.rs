//! Reading the few values plugins need out of XSI documents.

use quick_xml::events::{BytesRef, Event};

/// An XSI document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed XSI document: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

/// Appends what a character or predefined entity reference (`&amp;`, `&#39;`) stands for.
fn push_reference(text: &mut String, reference: &BytesRef<'_>) -> Result<(), XmlError> {
    let resolved = match reference
        .resolve_char_ref()
        .map_err(|e| XmlError(e.to_string()))?
    {
        Some(c) => Some(c),
        None => quick_xml::escape::resolve_predefined_entity(&reference.xml10_content())
            .and_then(|s| s.chars().next()),
    };
    text.push(resolved.ok_or_else(|| XmlError("unknown entity reference".to_owned()))?);
    Ok(())
}

/// The text of the first element with this local name, trimmed; `None` when it is absent,
/// empty, or the document is not XML.
pub fn element_text(xml: &[u8], name: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut text: Option<String> = None;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) if e.local_name().as_ref() == name => {
                text = Some(String::new());
            }
            Event::Text(t) => {
                if let Some(text) = text.as_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(text) = text.as_mut() {
                    push_reference(text, &reference).ok()?;
                }
            }
            Event::End(_) => {
                if let Some(text) = text.take() {
                    let text = text.trim();
                    return (!text.is_empty()).then(|| text.to_owned());
                }
            }
            Event::Eof => return None,
            _ => {}
        }
        buf.clear();
    }
}

/// The fields of each `<directoryDetails>` in a directory answer, by local name. Only leaf
/// elements are kept (`additionalDetails` is flattened into its children).
pub fn records(xml: &[u8]) -> Result<Vec<Vec<(String, String)>>, XmlError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut records = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    let mut element: Option<(String, String)> = None;
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| XmlError(e.to_string()))?
        {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                if name == "directoryDetails" {
                    current = Some(Vec::new());
                } else if current.is_some() {
                    element = Some((name, String::new()));
                }
            }
            Event::Text(t) => {
                if let Some((_, text)) = element.as_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                if let Some((_, text)) = element.as_mut() {
                    push_reference(text, &reference)?;
                }
            }
            Event::End(e) => {
                if let (Some(fields), Some((name, text))) = (current.as_mut(), element.take()) {
                    let text = text.trim();
                    if !text.is_empty() {
                        fields.push((name, text.to_owned()));
                    }
                }
                if e.local_name().as_ref() == "directoryDetails" {
                    records.extend(current.take());
                }
            }
            Event::Eof => return Ok(records),
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_element_of_a_name_is_read() {
        let xml = br#"<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi"><details><userId>Alice@Acme.example</userId><firstName>A</firstName></details></Profile>"#;
        assert_eq!(
            element_text(xml, "userId").as_deref(),
            Some("Alice@Acme.example")
        );
        assert_eq!(element_text(b"<Profile/>", "userId"), None);
        assert_eq!(
            element_text(
                b"<p><emailAddress>o&apos;brien&#64;x</emailAddress></p>",
                "emailAddress"
            )
            .as_deref(),
            Some("o'brien@x")
        );
        assert_eq!(element_text(b"not xml <<", "userId"), None);
    }

    #[test]
    fn directory_records_are_read_with_their_additional_details() {
        let xml = br#"<Enterprise xmlns="http://schema.broadsoft.com/xsi"><startIndex>1</startIndex><numberOfRecords>2</numberOfRecords><totalAvailableRecords>2</totalAvailableRecords><enterpriseDirectory><directoryDetails><userId>agent1@172.16.25.102</userId><firstName>agent1</firstName><number>+19008005006</number><additionalDetails><emailAddress>A@x.example</emailAddress></additionalDetails></directoryDetails><directoryDetails><userId>b@x</userId></directoryDetails></enterpriseDirectory></Enterprise>"#;
        let records = records(xml).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[0].contains(&("emailAddress".to_owned(), "A@x.example".to_owned())));
        assert!(records[0].contains(&("number".to_owned(), "+19008005006".to_owned())));
        assert_eq!(records[1], [("userId".to_owned(), "b@x".to_owned())]);
        assert!(super::records(b"<a><directoryDetails><b>x</c>").is_err());
    }
}
