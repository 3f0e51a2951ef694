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
    records_of(xml, "directoryDetails")
}

/// The fields of each `<record>` element of a document (a directory's `directoryDetails`, a
/// Busy Lamp Field list's `userDetails`), by local name, leaves only.
pub fn records_of(xml: &[u8], record: &str) -> Result<Vec<Vec<(String, String)>>, XmlError> {
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
                if name == record {
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
                if e.local_name().as_ref() == record {
                    records.extend(current.take());
                }
            }
            Event::Eof => return Ok(records),
            _ => {}
        }
        buf.clear();
    }
}

/// An element of an XSI document, by local name: prefixes are dropped, since BroadWorks writes
/// the same document with `xsi:` prefixes on a stream and with a default namespace in answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// The local part of an `xsi:type` (any prefix) attribute, such as `DoNotDisturbEvent`.
    pub kind: Option<String>,
    /// `xsi:nil="true"`.
    pub nil: bool,
    /// Text directly inside the element, trimmed.
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child with this name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child with this name, when present, not nil and not empty.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name)
            .filter(|c| !c.nil && !c.text.is_empty())
            .map(|c| c.text.as_str())
    }
}

/// Documents nest no deeper than this; deeper input is refused rather than followed.
const DEPTH_MAX: usize = 32;

/// Reads a whole document into its root [`Node`].
pub fn tree(xml: &[u8]) -> Result<Node, XmlError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut open: Vec<Node> = Vec::new();
    let mut buf = Vec::new();
    let node = |e: &quick_xml::events::BytesStart<'_>| -> Result<Node, XmlError> {
        let mut node = Node {
            name: e.local_name().as_ref().to_owned(),
            ..Node::default()
        };
        for attribute in e.attributes() {
            let attribute = attribute.map_err(|e| XmlError(e.to_string()))?;
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| XmlError(e.to_string()))?;
            match attribute.key.local_name().as_ref() {
                "type" => {
                    let local = value.rsplit(':').next().unwrap_or_default();
                    node.kind = Some(local.to_owned());
                }
                "nil" => node.nil = value.as_ref() == "true",
                _ => {}
            }
        }
        Ok(node)
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| XmlError(e.to_string()))?;
        match event {
            Event::Start(e) => {
                if open.len() >= DEPTH_MAX {
                    return Err(XmlError("nested too deeply".to_owned()));
                }
                open.push(node(&e)?);
            }
            Event::Empty(e) => {
                let child = node(&e)?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(child),
                    None => return Ok(child),
                }
            }
            Event::Text(t) => {
                if let Some(current) = open.last_mut() {
                    current.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(current) = open.last_mut() {
                    current.text.push_str(t.as_ref());
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(current) = open.last_mut() {
                    push_reference(&mut current.text, &reference)?;
                }
            }
            Event::End(_) => {
                let Some(mut done) = open.pop() else {
                    return Err(XmlError("unbalanced end tag".to_owned()));
                };
                done.text = done.text.trim().to_owned();
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Eof => return Err(XmlError("the document ended early".to_owned())),
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_reads_local_names_types_nil_and_text() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xmlns:xsi="http://schema.broadsoft.com/xsi" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:SubscriptionEvent"><xsi:eventID>e1</xsi:eventID><xsi:eventData xsi1:type="xsi:CommPilotExpressEvent"><xsi:info><xsi:profile xsi1:nil="true"/><xsi:note> a &amp; b </xsi:note></xsi:info></xsi:eventData></xsi:Event>"#;
        let root = tree(xml).unwrap();
        assert_eq!(root.name, "Event");
        assert_eq!(root.kind.as_deref(), Some("SubscriptionEvent"));
        assert_eq!(root.text_of("eventID"), Some("e1"));
        let data = root.child("eventData").unwrap();
        assert_eq!(data.kind.as_deref(), Some("CommPilotExpressEvent"));
        let info = data.child("info").unwrap();
        assert!(info.child("profile").unwrap().nil);
        assert_eq!(info.text_of("profile"), None);
        assert_eq!(info.text_of("note"), Some("a & b"));
        assert!(tree(b"<a><b></a>").is_err());
        assert!(tree(b"<a><b>").is_err());
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(tree(deep.as_bytes()).is_err());
    }

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
