//! Money: integer minor units of an ISO 4217 currency, never a float.

use std::fmt;

/// An amount in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    pub currency: String,
    pub minor: i64,
}

impl Money {
    pub fn new(currency: &str, minor: i64) -> Self {
        Self { currency: currency.to_owned(), minor }
    }

    pub fn zero(currency: &str) -> Self {
        Self::new(currency, 0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

/// Three upper-case ASCII letters, as ISO 4217 writes currency codes.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Why an amount was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is required")]
    Missing,
    #[error("must be an ISO 4217 currency code such as \"USD\"")]
    Currency,
    #[error("must be positive")]
    NotPositive,
    #[error("must not be negative")]
    Negative,
}

/// A strictly positive amount in a well-formed currency.
pub fn positive(currency: &str, minor: i64) -> Result<Money, AmountError> {
    if !is_currency_code(currency) {
        return Err(AmountError::Currency);
    }
    if minor <= 0 {
        return Err(AmountError::NotPositive);
    }
    Ok(Money::new(currency, minor))
}

/// A non-negative amount in a well-formed currency.
pub fn non_negative(currency: &str, minor: i64) -> Result<Money, AmountError> {
    if !is_currency_code(currency) {
        return Err(AmountError::Currency);
    }
    if minor < 0 {
        return Err(AmountError::Negative);
    }
    Ok(Money::new(currency, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_checked() {
        assert_eq!(positive("USD", 1), Ok(Money::new("USD", 1)));
        assert_eq!(positive("USD", 0), Err(AmountError::NotPositive));
        assert_eq!(positive("USD", -5), Err(AmountError::NotPositive));
        assert_eq!(positive("usd", 5), Err(AmountError::Currency));
        assert_eq!(positive("US", 5), Err(AmountError::Currency));
        assert_eq!(non_negative("EUR", 0), Ok(Money::zero("EUR")));
        assert_eq!(non_negative("EUR", -1), Err(AmountError::Negative));
    }
}
