//! A server-sent events parser over a byte stream, as the HTML standard specifies it
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>),
//! for the four fields latchkey's feed uses.
//!
//! Hand-written rather than the `eventsource-stream` crate: the format is a few lines of
//! parsing, and the crate would bring reqwest's `stream` feature and a futures `Stream`
//! adapter for what `Response::chunk` already gives.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub(super) event: String,
    /// The `id:` field of this event, when it had one.
    pub(super) id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub(super) data: String,
}

/// A line longer than this ends the stream: no event of the feed comes near it.
const MAX_LINE: usize = 1 << 20;

/// Parses a stream fed chunk by chunk; chunks may split lines and characters anywhere.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    line: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` starting the next one ends the same line.
    after_cr: bool,
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

/// The stream broke the format (a line over [`MAX_LINE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineTooLong;

impl SseParser {
    /// Feeds a chunk; pushes the events it completes onto `out`.
    pub(super) fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<SseEvent>,
    ) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                    id: self.id.take(),
                    data,
                });
            }
            // An event without data is not dispatched (the standard's rule).
            self.event = None;
            self.id = None;
            return;
        }
        if line[0] == b':' {
            return; // A comment.
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // `retry` and unknown fields: nothing the feed needs.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(chunks: &[&[u8]], expected: &[(&str, Option<&str>, &str)]) {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out).unwrap();
        }
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.event.as_str(), e.id.as_deref(), e.data.as_str()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn events_fields_and_comments() {
        check(
            &[b"event: change\nid: 7\ndata: {\"seq\":7}\n\n: keep-alive\n\nevent:heartbeat\ndata:{}\n\n"],
            &[("change", Some("7"), "{\"seq\":7}"), ("heartbeat", None, "{}")],
        );
        check(&[b"data: a\ndata: b\n\n"], &[("message", None, "a\nb")]);
        check(&[b"data\n\n"], &[("message", None, "")]);
        // No data, no event; an unfinished event is not dispatched.
        check(&[b"event: ready\n\nevent: x\ndata: 1\n"], &[]);
        check(
            &[b"retry: 10\nfoo: bar\ndata:  two spaces\n\n"],
            &[("message", None, " two spaces")],
        );
    }

    #[test]
    fn any_line_ending_and_any_split() {
        let text = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\n";
        let expected = [("a", None, "1"), ("b", None, "2"), ("c", None, "3")];
        check(&[text], &expected);
        for split in 0..text.len() {
            check(&[&text[..split], &text[split..]], &expected);
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        check(&bytes, &expected);
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..20 {
            result = parser.feed(&chunk, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(LineTooLong));
    }
}
