//! proto3 JSON durations: `"1.5s"`.

use std::time::Duration;

/// The largest duration proto3 allows: 10,000 years, in seconds.
const MAX_SECONDS: u64 = 315_576_000_000;

/// Parses a proto3 JSON duration: decimal seconds with an `s` suffix.
///
/// Accepts what grpc-go accepts, less signs: digits before the point, after
/// it, or both (`"1s"`, `".1s"`, `"1.s"`, `"1.5s"`), at most nine
/// fractional digits. A6's own examples write `".1s"`, so the whole part
/// may be empty. `Err` says what is wrong, without the value.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    const FORM: &str = "expected decimal seconds with an \"s\" suffix, like \"1.5s\"";
    let number = text.strip_suffix('s').ok_or(FORM)?;
    if number.starts_with('-') {
        return Err("must not be negative".to_owned());
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(FORM.to_owned());
    }
    if fraction.len() > 9 {
        return Err(format!(
            "at most 9 fractional digits (nanoseconds), got {}",
            fraction.len()
        ));
    }
    let too_long = || format!("must be at most {MAX_SECONDS}s");
    let seconds: u64 = match whole {
        "" => 0,
        // Only digits, so the one failure left is overflow.
        _ => whole.parse().map_err(|_| too_long())?,
    };
    // Right-pad to nine digits: ".5" is 500_000_000 nanoseconds.
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    if seconds > MAX_SECONDS || (seconds == MAX_SECONDS && nanos > 0) {
        return Err(too_long());
    }
    Ok(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_durations_parse() {
        let cases = [
            ("1.5s", Duration::from_millis(1500)),
            ("0s", Duration::ZERO),
            ("0.000000001s", Duration::from_nanos(1)),
            ("0.000001s", Duration::from_micros(1)),
            ("10s", Duration::from_secs(10)),
            (".1s", Duration::from_millis(100)),
            ("1.s", Duration::from_secs(1)),
            ("0.123456789s", Duration::new(0, 123_456_789)),
            ("315576000000s", Duration::from_secs(MAX_SECONDS)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn invalid_durations_do_not() {
        for text in [
            "1.5",
            "1.5ms",
            "-1s",
            "1.1234567890s",
            "s",
            ".s",
            "",
            "+1s",
            "1e3s",
            "1,5s",
            " 1s",
            "1 s",
            "1.2.3s",
            "315576000001s",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} parsed");
        }
        assert_eq!(
            parse_duration("-1s"),
            Err("must not be negative".to_owned())
        );
        assert!(
            parse_duration("1.1234567890s")
                .unwrap_err()
                .contains("at most 9 fractional digits")
        );
    }
}
