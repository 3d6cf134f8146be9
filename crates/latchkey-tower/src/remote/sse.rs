//! The event stream's events: `eventsource-stream` parses the server-sent events format
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>)
//! over the response's bytes; this file only bounds what it may buffer.

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};

use super::client::describe;

/// An event (its lines up to the blank line that ends it) longer than this ends the
/// stream: no event of the feed comes near it, and the parser buffers an event's lines
/// until it ends.
const MAX_EVENT: usize = 1 << 20;

/// The events of a response's body, in order; an error, which ends the stream, says why.
pub(super) fn events(response: reqwest::Response) -> impl Stream<Item = Result<Event, String>> {
    parse(response.bytes_stream()).map(|item| {
        item.map_err(|e| match e {
            EventStreamError::Transport(Broken::Transport(e)) => {
                format!("reading the stream: {}", describe(&e))
            }
            EventStreamError::Transport(Broken::EventTooLong) => {
                "an event longer than any the feed sends".to_owned()
            }
            EventStreamError::Utf8(e) => format!("reading the stream: {e}"),
            EventStreamError::Parser(e) => format!("reading the stream: {e}"),
        })
    })
}

/// Why the bytes ended before the parser read them.
#[derive(Debug)]
enum Broken<E> {
    /// Reading the body failed.
    Transport(E),
    /// An event went past [`MAX_EVENT`] bytes.
    EventTooLong,
}

/// Where the byte stream is: how far into the current event, and whether at a line's start.
#[derive(Default)]
struct Position {
    in_event: usize,
    at_line_start: bool,
    after_cr: bool,
}

impl Position {
    /// Moves over `bytes`; `false` once an event has grown past [`MAX_EVENT`]. A blank line
    /// (a line end right after a line end: `\n`, `\r` or `\r\n`) ends an event.
    fn advance(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    if self.at_line_start {
                        self.in_event = 0;
                    }
                    self.at_line_start = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.at_line_start = false;
                    self.after_cr = false;
                    self.in_event += 1;
                }
            }
        }
        self.in_event <= MAX_EVENT
    }
}

/// The events of a byte stream, each bounded to [`MAX_EVENT`] bytes.
fn parse<S, E>(bytes: S) -> impl Stream<Item = Result<Event, EventStreamError<Broken<E>>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut position = Position {
        at_line_start: true,
        ..Position::default()
    };
    let bounded = bytes.map(move |chunk| {
        let chunk = chunk.map_err(Broken::Transport)?;
        if position.advance(&chunk) {
            Ok(chunk)
        } else {
            Err(Broken::EventTooLong)
        }
    });
    bounded.eventsource()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;

    use super::*;

    type Parsed = Result<Event, EventStreamError<Broken<Infallible>>>;

    fn parse_all(chunks: Vec<Vec<u8>>) -> Vec<Parsed> {
        let bytes = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(parse(bytes).collect())
    }

    #[track_caller]
    fn check(chunks: &[&[u8]], expected: &[(&str, &str)]) {
        let got = parse_all(chunks.iter().map(|c| c.to_vec()).collect());
        let got: Vec<(String, String)> = got
            .into_iter()
            .map(|e| e.map(|e| (e.event, e.data)).unwrap())
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(e, d)| (e.to_string(), d.to_string()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn events_fields_and_comments() {
        check(
            &[b"event: change\nid: 7\ndata: {\"seq\":7}\n\n: keep-alive\n\nevent:heartbeat\ndata:{}\n\n"],
            &[("change", "{\"seq\":7}"), ("heartbeat", "{}")],
        );
        check(&[b"data: a\ndata: b\n\n"], &[("message", "a\nb")]);
        // No data, no event; an unfinished event is not dispatched.
        check(&[b"event: ready\n\nevent: x\ndata: 1\n"], &[]);
        check(
            &[b"retry: 10\nfoo: bar\ndata:  two spaces\n\n"],
            &[("message", " two spaces")],
        );
    }

    #[test]
    fn any_line_ending_and_any_split() {
        let text = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\n";
        let expected = [("a", "1"), ("b", "2"), ("c", "3")];
        check(&[text], &expected);
        for split in 0..text.len() {
            check(&[&text[..split], &text[split..]], &expected);
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        check(&bytes, &expected);
    }

    #[test]
    fn a_line_or_an_event_without_end_is_bounded() {
        let too_long = |got: &[Parsed]| {
            matches!(
                got.last(),
                Some(Err(EventStreamError::Transport(Broken::EventTooLong)))
            )
        };
        let line = parse_all(vec![vec![b'x'; 64 * 1024]; 20]);
        assert!(
            too_long(&line),
            "{:?}",
            line.last().map(|r| r.as_ref().map(|_| ()))
        );
        // Short lines, but no blank line to end the event: the parser would buffer them all.
        let lines = parse_all(vec![b"data: x\n".to_vec(); 200_000]);
        assert!(too_long(&lines));
        let lines = parse_all(vec![b"data: x\r\n".to_vec(); 200_000]);
        assert!(too_long(&lines));
        // Events that end keep the count low, however long the stream, split anywhere.
        for end in [&b"\n\n"[..], b"\r\r", b"\r\n\r\n"] {
            let mut chunks = Vec::new();
            for _ in 0..100_000 {
                chunks.push(b"data: x".to_vec());
                chunks.push(end[..1].to_vec());
                chunks.push(end[1..].to_vec());
            }
            chunks.push(b": end\n".to_vec());
            assert!(parse_all(chunks).iter().all(Result::is_ok));
        }
    }
}
