//! The channel's parsers as the fuzz targets drive them: bytes as a channel delivers them, in
//! reads of any size, cut into documents, each document read.

use crate::document::{Document, Splitter};

/// Feeds `bytes` to a channel's splitter in reads cut where `cuts` says, and reads every
/// document it completes.
pub fn channel(bytes: &[u8], cuts: &[u8]) {
    let mut splitter = Splitter::default();
    let mut rest = bytes;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let size = usize::from(*cuts.next().unwrap_or(&255))
            .max(1)
            .min(rest.len());
        let (read, after) = rest.split_at(size);
        rest = after;
        for document in splitter.push(read).into_iter().flatten() {
            // A document the splitter passes opens as one: nothing before it is glued on.
            assert_eq!(document.first(), Some(&b'<'));
            let _ = Document::read(&document);
        }
    }
}
