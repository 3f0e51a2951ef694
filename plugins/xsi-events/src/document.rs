//! What arrives on an XSI-Events channel: the byte stream cut into documents, and each document
//! read as the channel answer, a heartbeat, a channel termination or a subscription event.
//!
//! Every document on a channel is its own XML document starting with a declaration, but a read
//! may hold part of one, or several (reference `xsi.md` §4.2). A document is complete when its
//! root element closes, so the last one read is handled at once, not when the next arrives.

use quick_xml::events::Event;
use xsigate_broadworks::{Node, tree};

/// A document that never completes is dropped once this much of it is buffered.
const DOCUMENT_MAX: usize = 1 << 20;

/// Cuts a channel's bytes into whole documents.
///
/// Work is linear in the bytes received, however the XSP cuts them: the document at the front
/// is scanned from where the last read left off (the open elements kept), and the search for a
/// next declaration goes on from where it stopped, so an XSP that sends a byte at a time cannot
/// make each byte cost a pass over all before it.
#[derive(Debug, Default)]
pub struct Splitter {
    buffer: Vec<u8>,
    scan: Scan,
    /// `buffer` has been searched for a next declaration up to here.
    searched: usize,
    /// Bytes looked at by scans and searches (how the work is bounded, for tests).
    examined: usize,
}

/// How far the document at the front of the buffer has been read: an event boundary, and the
/// elements open there.
#[derive(Debug, Default)]
struct Scan {
    offset: usize,
    open: Vec<String>,
}

/// Where a scan stopped.
enum Scanned {
    /// The root element closed after this many bytes.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// Not XML (an end tag that closes no open element).
    Broken,
}

impl Splitter {
    /// Takes more bytes; returns every document they complete, in order. An `Err` is a document
    /// that could not be read as XML (cut off by the next one, or too long): the stream goes on.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, Malformed>> {
        self.buffer.extend_from_slice(bytes);
        let mut documents = Vec::new();
        loop {
            let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace());
            let Some(start) = start else {
                self.drop_front(self.buffer.len());
                break;
            };
            if start > 0 {
                self.drop_front(start);
            }
            // Bytes that do not open a document are garbage up to the next declaration, never a
            // prefix glued onto it.
            if self.buffer[0] != b'<' {
                let Some(next) = self.next_declaration(0) else {
                    if self.buffer.len() > DOCUMENT_MAX {
                        self.drop_front(self.buffer.len());
                        documents.push(Err(Malformed));
                    }
                    break;
                };
                self.drop_front(next);
                documents.push(Err(Malformed));
                continue;
            }
            match self.scan() {
                Scanned::Complete(end) => {
                    documents.push(Ok(self.buffer[..end].to_vec()));
                    self.drop_front(end);
                    continue;
                }
                Scanned::Broken | Scanned::Partial => {}
            }
            // A later declaration ends this document however broken it is.
            if let Some(next) = self.next_declaration(1) {
                self.drop_front(next);
                documents.push(Err(Malformed));
                continue;
            }
            if self.buffer.len() > DOCUMENT_MAX {
                self.drop_front(self.buffer.len());
                documents.push(Err(Malformed));
            }
            break;
        }
        documents
    }

    /// Removes the first `count` bytes; what was learned about them goes with them.
    fn drop_front(&mut self, count: usize) {
        self.buffer.drain(..count);
        self.scan = Scan::default();
        self.searched = 0;
    }

    /// Where the next `<?xml` starts at or after `from`, searching only bytes not searched yet.
    fn next_declaration(&mut self, from: usize) -> Option<usize> {
        const NEEDLE: &[u8] = b"<?xml";
        // A declaration cut by the end of the last search is found whole this time.
        let begin = from.max(self.searched.saturating_sub(NEEDLE.len() - 1));
        let found = find(self.buffer.get(begin..)?, NEEDLE).map(|i| i + begin);
        self.examined += self.buffer.len().saturating_sub(begin);
        self.searched = self.buffer.len();
        found
    }

    /// Reads the front document on from where the last scan stopped.
    fn scan(&mut self) -> Scanned {
        let from = self.scan.offset;
        let Some(rest) = self.buffer.get(from..) else {
            return Scanned::Broken;
        };
        let mut reader = quick_xml::Reader::from_reader(rest);
        // End tags are matched here, against the elements still open from earlier reads.
        reader.config_mut().check_end_names = false;
        reader.config_mut().allow_unmatched_ends = true;
        let outcome = loop {
            let event = match reader.read_event() {
                Ok(Event::Eof) | Err(_) => break Scanned::Partial,
                Ok(event) => event,
            };
            let read = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            // The reader ends a markup event at the end of the input as if its `>` had come;
            // only one whose `>` is here is whole.
            let markup = !matches!(event, Event::Text(_) | Event::GeneralRef(_));
            if markup && read.checked_sub(1).and_then(|i| rest.get(i)) != Some(&b'>') {
                break Scanned::Partial;
            }
            let at = from + read;
            match event {
                Event::Start(start) => self.scan.open.push(start.name().into_inner().to_owned()),
                Event::End(end) => {
                    if self.scan.open.pop().as_deref() != Some(end.name().into_inner()) {
                        break Scanned::Broken;
                    }
                    if self.scan.open.is_empty() {
                        break Scanned::Complete(at);
                    }
                }
                Event::Empty(_) if self.scan.open.is_empty() => break Scanned::Complete(at),
                _ => {}
            }
            // Only a whole event moves the scan on; a cut one is read again with what follows.
            self.scan.offset = at;
        };
        self.examined += self.buffer.len() - from;
        outcome
    }
}

/// A stream document that is not XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One document of a channel.
#[derive(Debug)]
pub enum Document {
    /// The first document: the channel the XSP opened.
    Channel {
        channel_id: String,
        expires: u64,
    },
    HeartBeat,
    /// The channel has ended; no acknowledgement is expected.
    Terminated {
        reason: String,
    },
    Event(Box<Envelope>),
    /// XML, but nothing a channel carries; `event_id` when it has one to acknowledge.
    Unknown {
        event_id: Option<String>,
    },
}

/// A `SubscriptionEvent`: who it is for, and its `eventData`.
#[derive(Debug)]
pub struct Envelope {
    pub event_id: String,
    pub sequence: Option<u64>,
    pub subscription_id: String,
    pub channel_id: Option<String>,
    /// The user the event is about (in a collection subscription, one of many).
    pub target_id: Option<String>,
    /// The `xsi:type` of `eventData`, such as `DoNotDisturbEvent`.
    pub event_type: String,
    pub data: Node,
}

impl Document {
    pub fn read(bytes: &[u8]) -> Result<Self, Malformed> {
        let root = tree(bytes).map_err(|_| Malformed)?;
        Ok(match (root.name.as_str(), root.kind.as_deref()) {
            ("Channel", _) => Self::Channel {
                channel_id: root.text_of("channelId").ok_or(Malformed)?.to_owned(),
                expires: root
                    .text_of("expires")
                    .and_then(|e| e.parse().ok())
                    .ok_or(Malformed)?,
            },
            ("ChannelHeartBeat", _) => Self::HeartBeat,
            ("Event", Some("ChannelTerminatedEvent")) => Self::Terminated {
                reason: root.text_of("reason").unwrap_or("unknown").to_owned(),
            },
            ("Event", Some("SubscriptionEvent")) => {
                let event_id = root.text_of("eventID").ok_or(Malformed)?.to_owned();
                let envelope = (|| {
                    let data = root.child("eventData")?;
                    Some(Envelope {
                        event_id: event_id.clone(),
                        sequence: root.text_of("sequenceNumber").and_then(|s| s.parse().ok()),
                        subscription_id: root.text_of("subscriptionId")?.to_owned(),
                        channel_id: root.text_of("channelId").map(str::to_owned),
                        target_id: root.text_of("targetId").map(str::to_owned),
                        event_type: data.kind.clone()?,
                        data: data.clone(),
                    })
                })();
                match envelope {
                    Some(envelope) => Self::Event(Box::new(envelope)),
                    None => Self::Unknown {
                        event_id: Some(event_id),
                    },
                }
            }
            _ => Self::Unknown {
                event_id: root.text_of("eventID").map(str::to_owned),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: &str = r#"<?xml version="1.0" encoding="UTF-8"?><ChannelHeartBeat xmlns="http://schema.broadsoft.com/xsi"/>"#;
    const EVENT: &str = r#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xmlns:xsi="http://schema.broadsoft.com/xsi" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:SubscriptionEvent"><xsi:eventID>e-1</xsi:eventID><xsi:sequenceNumber>2</xsi:sequenceNumber><xsi:userId>a@x</xsi:userId><xsi:externalApplicationId>app</xsi:externalApplicationId><xsi:subscriptionId>s-1</xsi:subscriptionId><xsi:channelId>c-1</xsi:channelId><xsi:targetId>a@x</xsi:targetId><xsi:eventData xsi1:type="xsi:DoNotDisturbEvent"><xsi:info><xsi:active>true</xsi:active><xsi:ringSplash>false</xsi:ringSplash></xsi:info></xsi:eventData></xsi:Event>"#;

    #[test]
    fn an_xsp_sending_a_byte_at_a_time_costs_work_linear_in_the_bytes() {
        // An event with a long text, then garbage with no declaration in it.
        let long = EVENT.replace(
            "<xsi:active>true</xsi:active>",
            &format!("<xsi:active>{}</xsi:active>", "t".repeat(50_000)),
        );
        let garbage = "g".repeat(50_000);
        let stream = format!("{HEARTBEAT}{long}{garbage}{EVENT}");
        let mut splitter = Splitter::default();
        let mut documents = Vec::new();
        for byte in stream.as_bytes() {
            documents.extend(splitter.push(std::slice::from_ref(byte)));
        }
        assert!(
            matches!(documents.as_slice(), [Ok(a), Ok(b), Err(Malformed), Ok(c)]
                if a == HEARTBEAT.as_bytes() && b == long.as_bytes() && c == EVENT.as_bytes()),
            "{} documents",
            documents.len()
        );
        // Each byte is looked at a few times, not once per byte after it (that would be 10^10).
        assert!(
            splitter.examined < 8 * stream.len(),
            "{} bytes examined for {} received",
            splitter.examined,
            stream.len()
        );
    }

    #[test]
    fn a_document_that_never_ends_is_dropped_at_the_limit_and_the_stream_goes_on() {
        let mut splitter = Splitter::default();
        let opening = br#"<?xml version="1.0"?><xsi:Event xmlns:xsi="http://schema.broadsoft.com/xsi"><xsi:eventID>"#;
        let mut dropped = 0;
        for (i, read) in std::iter::once(&opening[..])
            .chain(std::iter::repeat_n(&[b'z'; 65536][..], 80))
            .enumerate()
        {
            dropped += splitter.push(read).iter().filter(|d| d.is_err()).count();
            assert!(
                splitter.buffer.len() <= DOCUMENT_MAX + 65536,
                "read {i}: {} bytes held",
                splitter.buffer.len()
            );
        }
        assert!(dropped >= 1);
        // The rest of the endless document is dropped by the next declaration; the event after
        // it is whole.
        let after = splitter.push(EVENT.as_bytes());
        assert!(
            matches!(after.as_slice(), [Err(Malformed), Ok(document)] if document == EVENT.as_bytes()),
            "{after:?}"
        );
    }

    #[test]
    fn documents_are_cut_wherever_the_reads_end() {
        let opened = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Channel xmlns=\"http://schema.broadsoft.com/xsi\"><channelId>c-1</channelId><expires>3600</expires></Channel>\n";
        let all = format!("{opened}{HEARTBEAT}\n{EVENT}\n{HEARTBEAT}");
        for cut in [1, 7, 50, 151, 300, all.len() - 1] {
            let mut splitter = Splitter::default();
            let mut documents = splitter.push(&all.as_bytes()[..cut]);
            documents.extend(splitter.push(&all.as_bytes()[cut..]));
            let documents: Vec<Document> = documents
                .into_iter()
                .map(|d| Document::read(&d.unwrap()).unwrap())
                .collect();
            assert_eq!(documents.len(), 4, "cut at {cut}");
            assert!(
                matches!(&documents[0], Document::Channel { channel_id, expires: 3600 } if channel_id == "c-1")
            );
            assert!(matches!(documents[1], Document::HeartBeat));
            let Document::Event(event) = &documents[2] else {
                panic!("{:?}", documents[2]);
            };
            assert_eq!(
                (
                    event.event_id.as_str(),
                    event.sequence,
                    event.subscription_id.as_str()
                ),
                ("e-1", Some(2), "s-1")
            );
            assert_eq!(event.event_type, "DoNotDisturbEvent");
            assert_eq!(event.target_id.as_deref(), Some("a@x"));
            assert!(matches!(documents[3], Document::HeartBeat));
        }
    }

    #[test]
    fn a_broken_document_is_reported_and_the_stream_goes_on() {
        let mut splitter = Splitter::default();
        let broken = "<?xml version=\"1.0\"?><xsi:Event><xsi:eventID>e-9</xsi:eventID><oops>";
        let documents = splitter.push(format!("{broken}{HEARTBEAT}").as_bytes());
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[0], Err(Malformed));
        assert!(matches!(
            Document::read(documents[1].as_ref().unwrap()),
            Ok(Document::HeartBeat)
        ));
        let terminated = r#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xsi1:type="xsi:ChannelTerminatedEvent" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsi="http://schema.broadsoft.com/xsi"><xsi:channelId>c</xsi:channelId><xsi:reason>ExplicitDelete</xsi:reason></xsi:Event>"#;
        assert!(matches!(
            Document::read(terminated.as_bytes()),
            Ok(Document::Terminated { reason }) if reason == "ExplicitDelete"
        ));
        let no_data = EVENT.replace(
            "xsi1:type=\"xsi:DoNotDisturbEvent\"",
            "xsi1:note=\"untyped\"",
        );
        assert!(matches!(
            Document::read(no_data.as_bytes()),
            Ok(Document::Unknown { event_id: Some(id) }) if id == "e-1"
        ));
    }
}
