//! Decimal strings staff type (points per unit, rates): accepted values are positive, within
//! the digit limits, and round-trip through their displayed form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use tandem_tiers::domain::money::{format_decimal, parse_positive_decimal};

fuzz_target!(|text: &str| {
    if let Ok(value) = parse_positive_decimal(text) {
        assert!(value > Decimal::ZERO, "{text:?}");
        assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{text:?}");
        let shown = format_decimal(value);
        assert_eq!(parse_positive_decimal(&shown), Ok(value), "{text:?} shown as {shown:?}");
        assert_eq!(format_decimal(value), shown);
    }
});
