//! Where a parsed head's parts lie in its bytes. A head is parsed once, where it is read, and
//! what takes it further takes its parts by place: the edge hands the lane a client's head
//! this way, and the answer reader keeps an upstream's fields so across freezing the buffer
//! that the parser's fields borrow.

/// A part of a head: its place in the head's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The place of `part`, a slice the parser took from `buf`; `None` when it is not one, or
    /// lies past 4 GiB.
    pub fn within(buf: &[u8], part: &[u8]) -> Option<Self> {
        let start = part.as_ptr().addr().checked_sub(buf.as_ptr().addr())?;
        let end = start
            .checked_add(part.len())
            .filter(|&end| end <= buf.len())?;
        Some(Self {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    /// The part in `head`, the bytes it was found in (or a copy of them); empty when `head` is
    /// too short to hold it.
    pub fn of(self, head: &[u8]) -> &[u8] {
        head.get(self.range()).unwrap_or_default()
    }

    /// The part in `head` as text; empty when it is not text.
    pub fn text(self, head: &[u8]) -> &str {
        std::str::from_utf8(self.of(head)).unwrap_or_default()
    }

    /// A request target's path: the part in `head` up to any `?`, as text; empty when it is
    /// not text. `memchr` finds the `?` many bytes at a time, where `str::split` tests each.
    pub fn path(self, head: &[u8]) -> &str {
        let target = self.of(head);
        let path = memchr::memchr(b'?', target).map_or(target, |end| &target[..end]);
        std::str::from_utf8(path).unwrap_or_default()
    }

    pub fn range(self) -> std::ops::Range<usize> {
        // Widening: `usize` holds 32 bits on every target Pingora builds for.
        self.start as usize..self.end as usize
    }
}

/// A header field's name and value by place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: Span,
    pub value: Span,
}

impl FieldSpan {
    /// The place of `field`, which httparse parsed out of `buf`.
    pub fn within(buf: &[u8], field: &httparse::Header<'_>) -> Option<Self> {
        Some(Self {
            name: Span::within(buf, field.name.as_bytes())?,
            value: Span::within(buf, field.value)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_finds_its_part_again_and_nothing_outside_its_head() {
        let head = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut parsed = [httparse::EMPTY_HEADER; 2];
        let mut request = httparse::Request::new(&mut parsed);
        assert!(request.parse(head).unwrap().is_complete());
        let target = Span::within(head, request.path.unwrap().as_bytes()).unwrap();
        assert_eq!(target.text(head), "/a?b");
        assert_eq!(target.range(), 4..8);
        let host = FieldSpan::within(head, &request.headers[0]).unwrap();
        assert_eq!(
            (host.name.of(head), host.value.of(head)),
            (&b"Host"[..], &b"x"[..])
        );

        assert_eq!(Span::within(head, &head[..0]), Some(Span::default()));
        assert_eq!(Span::within(&head[8..], &head[..4]), None);
        assert_eq!(Span::within(&head[..6], &head[4..8]), None);
        assert_eq!(target.of(&head[..6]), b"");
        let not_text = b"\xff\xfe";
        let whole = Span::within(not_text, not_text).unwrap();
        assert_eq!(whole.text(not_text), "");
    }

    /// A target's path ends at its first `?`, and a path that is not text reads as none.
    #[test]
    fn a_targets_path_ends_at_its_query() {
        let path = |target: &[u8]| {
            Span::within(target, target)
                .unwrap()
                .path(target)
                .to_owned()
        };
        assert_eq!(path(b"/a/b?c=d?e"), "/a/b");
        assert_eq!(path(b"/a/b"), "/a/b");
        assert_eq!(path(b"/a/b?"), "/a/b");
        assert_eq!(path(b"?x"), "");
        assert_eq!(path(b"http://h/p?q"), "http://h/p");
        assert_eq!(path(b"/\xff?q"), "");
        assert_eq!(path(b"/a?\xff"), "/a");
    }
}
