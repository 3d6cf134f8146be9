//! The `Date` header of the daemon's answers.
//!
//! hyper writes one from a cache it renews once the clock has passed the next second: after
//! the wall clock steps back, it kept the later date until the clock passed it again (an
//! hour, after a step of an hour; a hunt saw one stuck in 2028). The router writes its own
//! on every answer, renewed whenever the second changes, in either direction; hyper adds
//! its own only to an answer that has none (those it makes itself: a 431, a 400 for a
//! request it cannot read).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// A rendered date and the second it is of.
#[derive(Debug)]
struct Rendered {
    second: Option<u64>,
    value: HeaderValue,
}

impl Rendered {
    /// The date of `now`, rendered again unless it is of the second last rendered.
    fn at(&mut self, now: SystemTime) -> HeaderValue {
        let second = now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        if second.is_none() || second != self.second {
            self.value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .expect("an HTTP date is visible ASCII");
            self.second = second;
        }
        self.value.clone()
    }
}

thread_local! {
    static RENDERED: RefCell<Rendered> = const {
        RefCell::new(Rendered {
            second: None,
            value: HeaderValue::from_static(""),
        })
    };
}

/// The `Date` of an answer given now.
pub(crate) fn now() -> HeaderValue {
    RENDERED.with(|rendered| rendered.borrow_mut().at(SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_date_follows_the_clock_back_as_well_as_forward() {
        let mut rendered = Rendered {
            second: None,
            value: HeaderValue::from_static(""),
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        assert_eq!(rendered.at(t), "Sat, 06 Dec 2025 05:46:40 GMT");
        assert_eq!(
            rendered.at(t + Duration::from_millis(999)),
            "Sat, 06 Dec 2025 05:46:40 GMT"
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(rendered.at(t + hour), "Sat, 06 Dec 2025 06:46:40 GMT");
        assert_eq!(
            rendered.at(t),
            "Sat, 06 Dec 2025 05:46:40 GMT",
            "stepped back"
        );
        assert!(now().to_str().unwrap().ends_with(" GMT"));
    }
}
