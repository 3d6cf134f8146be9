//! Durations as people type them: `30s`, `90m`, `24h`, `7d`, `1h30m`, `0`.
//!
//! [`humantime`] parses them: a sequence of whole numbers, each followed by a unit, spaces
//! allowed between (`1h 30m`). The units: `s`/`sec`/`secs`, `m`/`min`/`mins`, `h`/`hr`/`hrs`,
//! `d`/`day`/`days`, `w`/`week`/`weeks` (and humantime's longer spellings, and `M`
//! months of 30.44 days, `y` years of 365.25 days); a bare `0` means no time at all. A
//! decimal is read as humantime reads it (`1.5h` is 90 minutes), but a fraction of a second
//! (`500ms`, `1.5s`) is refused: every duration here is whole seconds.

use std::time::Duration;

/// Parses a duration such as `24h` or `1h30m`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// assert_eq!(latchkey_daemon::parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(latchkey_daemon::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("invalid duration {text:?}: expected e.g. 30s, 90m, 24h, 7d or 1h30m");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    match humantime::parse_duration(text) {
        Ok(duration) if duration.subsec_nanos() == 0 => Ok(duration),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(
            parse_duration(input).ok().map(|d| d.as_secs()),
            expected,
            "input: {input:?}"
        );
    }

    #[test]
    fn durations() {
        check("0", Some(0));
        check("30s", Some(30));
        check("90m", Some(5400));
        check("24h", Some(86_400));
        check("7d", Some(604_800));
        check("2w", Some(1_209_600));
        check("1h30m", Some(5400));
        check(" 1d12h ", Some(129_600));
        check("0s", Some(0));
        check("", None);
        check("h", None);
        check("24", None);
        check("24x", None);
        check("-1h", None);
        check("1.5h", Some(5400));
        check("1.5s", None);
        check("99999999999999999999w", None);
        check("999999999999999w", None);
        check("1h 30m", Some(5400));
        check("2days", Some(172_800));
        check("500ms", None);
    }
}
