//! Currencies, amounts and the decimal strings staff configure: ISO 4217 minor-unit exponents,
//! amounts as exact decimals, and a strict parser for rates and multipliers.

use rust_decimal::Decimal;

/// Most digits accepted before and after the decimal point of a configured decimal.
pub const MAX_INTEGER_DIGITS: usize = 12;
pub const MAX_FRACTION_DIGITS: usize = 12;

/// The number of minor-unit digits of an ISO 4217 currency: 2 unless listed.
pub fn exponent(currency_code: &str) -> u32 {
    match currency_code {
        // No minor unit.
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        // Thousandths.
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        // Ten-thousandths.
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// Three upper-case ASCII letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Two upper-case ASCII letters (ISO 3166-1 alpha-2).
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// An amount of money: integer minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub minor: i64,
    pub currency: String,
}

impl Amount {
    pub fn new(minor: i64, currency: &str) -> Self {
        Self { minor, currency: currency.to_owned() }
    }

    /// The amount in units of its currency, exactly (`1234` JPY is 1234, `1234` USD is 12.34).
    pub fn units(&self) -> Decimal {
        Decimal::new(self.minor, exponent(&self.currency))
    }
}

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("must not be empty")]
    Empty,
    #[error("must be a plain decimal number such as \"1.25\"")]
    Malformed,
    #[error("must have at most 12 digits before and 12 after the decimal point")]
    TooManyDigits,
    #[error("must be greater than zero")]
    NotPositive,
}

/// A positive decimal as staff type it: digits, optionally a point and more digits. No sign,
/// exponent, spaces, separators, `NaN` or infinity; at most 12 digits on each side.
pub fn parse_positive_decimal(text: &str) -> Result<Decimal, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(DecimalError::Malformed);
    }
    if int.len() > MAX_INTEGER_DIGITS || frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
        return Err(DecimalError::TooManyDigits);
    }
    let value: Decimal = text.parse().map_err(|_| DecimalError::Malformed)?;
    if value <= Decimal::ZERO {
        return Err(DecimalError::NotPositive);
    }
    Ok(value.normalize())
}

/// A configured decimal as it is shown: normalised, no trailing zeros (`"1.50"` → `"1.5"`).
pub fn format_decimal(value: Decimal) -> String {
    value.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn exponents_of_common_currencies() {
        for (code, exp) in [
            ("USD", 2),
            ("EUR", 2),
            ("GBP", 2),
            ("CHF", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("VND", 0),
            ("CLP", 0),
            ("ISK", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("JOD", 3),
            ("OMR", 3),
            ("TND", 3),
            ("CLF", 4),
        ] {
            assert_eq!(exponent(code), exp, "{code}");
        }
    }

    #[test]
    fn amounts_in_units_are_exact() {
        assert_eq!(Amount::new(1234, "USD").units(), d("12.34"));
        assert_eq!(Amount::new(1234, "JPY").units(), d("1234"));
        assert_eq!(Amount::new(1234, "KWD").units(), d("1.234"));
        assert_eq!(Amount::new(1, "EUR").units(), d("0.01"));
        assert_eq!(Amount::new(-250, "USD").units(), d("-2.5"));
        assert_eq!(Amount::new(i64::MAX, "USD").units(), d("92233720368547758.07"));
    }

    #[test]
    fn codes() {
        assert!(is_currency_code("USD"));
        for bad in ["usd", "US", "USDX", "", "U$D"] {
            assert!(!is_currency_code(bad), "{bad}");
        }
        assert!(is_country_code("BR"));
        for bad in ["br", "BRA", "", "B1"] {
            assert!(!is_country_code(bad), "{bad}");
        }
    }

    #[test]
    fn decimals_accepted() {
        for (text, value) in [
            ("1", "1"),
            ("1.10", "1.1"),
            ("0.5", "0.5"),
            ("007", "7"),
            ("0.000000000001", "0.000000000001"),
            ("999999999999.999999999999", "999999999999.999999999999"),
            ("1.0", "1"),
        ] {
            assert_eq!(parse_positive_decimal(text), Ok(d(value)), "{text}");
        }
    }

    #[test]
    fn decimals_refused() {
        use DecimalError::*;
        for (text, err) in [
            ("", Empty),
            ("-1", Malformed),
            ("+1", Malformed),
            ("NaN", Malformed),
            ("nan", Malformed),
            ("inf", Malformed),
            ("Infinity", Malformed),
            ("1e3", Malformed),
            ("1E-2", Malformed),
            (" 1", Malformed),
            ("1 ", Malformed),
            ("1,5", Malformed),
            (".5", Malformed),
            ("5.", Malformed),
            ("1.2.3", Malformed),
            ("1_000", Malformed),
            ("٣", Malformed),
            ("0", NotPositive),
            ("0.000", NotPositive),
            ("1234567890123", TooManyDigits),
            ("1.1234567890123", TooManyDigits),
            ("00000000000001", TooManyDigits),
        ] {
            assert_eq!(parse_positive_decimal(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn decimals_format_without_trailing_zeros() {
        assert_eq!(format_decimal(d("1.50")), "1.5");
        assert_eq!(format_decimal(d("2.000")), "2");
        assert_eq!(format_decimal(d("0.0001")), "0.0001");
    }
}
