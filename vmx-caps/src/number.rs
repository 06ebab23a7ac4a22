//! The one number syntax of every text this workspace reads: MSR snapshots, VMCS snapshot
//! keys, and `vmxtool`'s command-line arguments.
//!
//! A number is an optional radix prefix (`0x` or `0X` for hexadecimal) followed by one or more
//! digits of that radix, with `_` allowed between two digits. Nothing else: no sign (`+` or
//! `-`), no surrounding whitespace, no other prefix. Without a prefix the radix is the one the
//! format names ([`Radix`]): hexadecimal in an MSR snapshot, decimal elsewhere.
//!
//! ```
//! use vmx_caps::number::{NumberError, Radix, parse_u64};
//! assert_eq!(parse_u64("0xffff_ffff", Radix::Decimal), Ok(0xffff_ffff));
//! assert_eq!(parse_u64("480", Radix::Hex), Ok(0x480));
//! assert_eq!(parse_u64("+5", Radix::Decimal), Err(NumberError::Sign));
//! ```

/// The radix of a number written without a `0x` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Radix {
    /// Base 10.
    Decimal,
    /// Base 16.
    Hex,
}

/// Why a text is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// No digits (an empty text, or a prefix alone).
    #[error("no digits")]
    Empty,
    /// A leading `+` or `-`: numbers are written without a sign.
    #[error("a sign (`+` or `-`) is not part of a number")]
    Sign,
    /// A character that is not a digit of the radix, or a misplaced `_`.
    #[error("{found:?} at position {position} is not a {radix} digit")]
    InvalidDigit {
        /// The character.
        found: char,
        /// Its 0-based position (in characters) in the text.
        position: usize,
        /// "decimal" or "hexadecimal".
        radix: &'static str,
    },
    /// The value does not fit in the destination's width.
    #[error("the value does not fit in {bits} bits")]
    TooLarge {
        /// The destination width.
        bits: u32,
    },
}

/// Parses `text` by the module's syntax into a `u64`.
pub fn parse_u64(text: &str, radix: Radix) -> Result<u64, NumberError> {
    if text.starts_with(['+', '-']) {
        return Err(NumberError::Sign);
    }
    let (digits, base, prefix_len, name) =
        match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => (hex, 16, 2, "hexadecimal"),
            None if radix == Radix::Hex => (text, 16, 0, "hexadecimal"),
            None => (text, 10, 0, "decimal"),
        };
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    let mut value: u64 = 0;
    let mut previous_digit = false;
    let count = digits.chars().count();
    for (i, c) in digits.chars().enumerate() {
        let invalid = NumberError::InvalidDigit {
            found: c,
            position: prefix_len + i,
            radix: name,
        };
        if c == '_' {
            // Only between two digits.
            if !previous_digit || i + 1 == count {
                return Err(invalid);
            }
            previous_digit = false;
            continue;
        }
        let digit = c.to_digit(base).ok_or(invalid)?;
        value = value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(NumberError::TooLarge { bits: 64 })?;
        previous_digit = true;
    }
    Ok(value)
}

/// Parses `text` by the module's syntax into a `u32`.
pub fn parse_u32(text: &str, radix: Radix) -> Result<u32, NumberError> {
    let value = parse_u64(text, radix).map_err(|e| match e {
        NumberError::TooLarge { .. } => NumberError::TooLarge { bits: 32 },
        other => other,
    })?;
    u32::try_from(value).map_err(|_| NumberError::TooLarge { bits: 32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(parse_u64("0", Radix::Decimal), Ok(0));
        assert_eq!(parse_u64("10", Radix::Decimal), Ok(10));
        assert_eq!(parse_u64("10", Radix::Hex), Ok(16));
        assert_eq!(parse_u64("0X1F", Radix::Decimal), Ok(31));
        assert_eq!(parse_u64("1_000", Radix::Decimal), Ok(1000));
        assert_eq!(
            parse_u64("0xffffffffffffffff", Radix::Decimal),
            Ok(u64::MAX)
        );
        assert_eq!(
            parse_u64("0x1_0000_0000_0000_0000", Radix::Decimal),
            Err(NumberError::TooLarge { bits: 64 })
        );
        assert_eq!(
            parse_u32("0x1_0000_0000", Radix::Decimal),
            Err(NumberError::TooLarge { bits: 32 })
        );
        assert_eq!(parse_u64("+1", Radix::Hex), Err(NumberError::Sign));
        assert_eq!(parse_u64("-1", Radix::Decimal), Err(NumberError::Sign));
        assert_eq!(parse_u64("0x", Radix::Decimal), Err(NumberError::Empty));
        assert_eq!(parse_u64("", Radix::Decimal), Err(NumberError::Empty));
        for (text, position) in [("0x+1", 2), (" 1", 0), ("1 ", 1), ("_1", 0), ("1_", 1)] {
            assert!(
                matches!(
                    parse_u64(text, Radix::Decimal),
                    Err(NumberError::InvalidDigit { position: p, .. }) if p == position
                ),
                "{text:?}"
            );
        }
        assert!(parse_u64("1a", Radix::Decimal).is_err());
        assert!(parse_u64("1__0", Radix::Decimal).is_err());
    }

    proptest::proptest! {
        /// Against the standard library's own formatting: every value round-trips in both
        /// radixes, with and without separators.
        #[test]
        fn round_trip(value: u64) {
            extern crate std;
            use std::format;
            proptest::prop_assert_eq!(parse_u64(&format!("{value}"), Radix::Decimal), Ok(value));
            proptest::prop_assert_eq!(parse_u64(&format!("{value:x}"), Radix::Hex), Ok(value));
            proptest::prop_assert_eq!(parse_u64(&format!("{value:#X}"), Radix::Decimal), Ok(value));
            let hex = format!("{value:x}");
            let spaced: std::string::String = hex
                .chars()
                .enumerate()
                .flat_map(|(i, c)| (i > 0).then_some('_').into_iter().chain([c]))
                .collect();
            proptest::prop_assert_eq!(parse_u64(&format!("0x{spaced}"), Radix::Decimal), Ok(value));
        }

        /// Total, and accepting nothing the standard library would read differently: any text
        /// gives a value or an error, never a panic; an accepted text is, once its prefix and
        /// separators are removed, what `u64::from_str_radix` reads as the same value.
        #[test]
        fn total(text in "(0[xX])?[0-9a-fA-F_+ -]{0,20}") {
            extern crate std;
            use std::string::String;
            if let Ok(value) = parse_u64(&text, Radix::Hex) {
                let digits: String = text
                    .strip_prefix("0x")
                    .or_else(|| text.strip_prefix("0X"))
                    .unwrap_or(&text)
                    .chars()
                    .filter(|c| *c != '_')
                    .collect();
                proptest::prop_assert!(!digits.starts_with('+'));
                proptest::prop_assert_eq!(u64::from_str_radix(&digits, 16), Ok(value));
            }
        }
    }
}
