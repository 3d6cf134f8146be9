//! Durations as people type them: `30s`, `90m`, `24h`, `7d`, `1h30m`, `0`.
//!
//! A dozen lines do what the CLI needs, so no crate for it: a sequence of whole numbers, each
//! followed by a unit (`s`, `m`, `h`, `d`, `w`); a bare `0` means no time at all.

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
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("invalid duration {text:?}: expected e.g. 30s, 90m, 24h, 7d or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let seconds = match &rest[digits..digits + unit_len] {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hr" | "hrs" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(Duration::from_secs(total))
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
        check("1.5h", None);
        check("99999999999999999999w", None);
        check("999999999999999w", None);
    }
}
