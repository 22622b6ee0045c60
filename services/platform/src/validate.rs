//! Input validation that collects every field violation of a request before refusing it.

use crate::error::{ApiError, FieldViolation};

/// Longest name (team, program, company, display name).
pub const NAME_MAX: usize = 200;
/// Longest email address (RFC 5321 path limit).
pub const EMAIL_MAX: usize = 254;
/// Longest free text (notes, addresses, descriptions).
pub const TEXT_MAX: usize = 4000;
/// Longest id or token accepted from outside.
pub const ID_MAX: usize = 128;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;

#[derive(Debug, Default)]
pub struct Validator {
    violations: Vec<FieldViolation>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn violation(&mut self, field: &str, description: impl Into<String>) -> &mut Self {
        self.violations.push(FieldViolation::new(field, description));
        self
    }

    /// A check that must hold; records `description` for `field` otherwise.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) -> &mut Self {
        if !ok {
            self.violation(field, description);
        }
        self
    }

    /// Non-blank text of at most `max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        if value.trim().is_empty() {
            self.violation(field, "must not be empty")
        } else {
            self.optional_text(field, value, max)
        }
    }

    /// Text that may be empty, of at most `max` characters and no control characters.
    pub fn optional_text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        if value.chars().count() > max {
            self.violation(field, format!("must be at most {max} characters"))
        } else if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            self.violation(field, "must not contain control characters")
        } else {
            self
        }
    }

    pub fn email(&mut self, field: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            self.violation(field, "must not be empty")
        } else if !is_email(value) {
            self.violation(field, "must be an email address")
        } else {
            self
        }
    }

    /// An id with the given prefix, as `ids::new_id` makes them.
    pub fn id(&mut self, field: &str, prefix: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            self.violation(field, "must not be empty")
        } else if !crate::ids::is_valid(prefix, value) {
            self.violation(field, format!("must be a {prefix} id"))
        } else {
            self
        }
    }

    pub fn password(&mut self, field: &str, value: &str) -> &mut Self {
        let len = value.chars().count();
        self.check(
            (PASSWORD_MIN..=PASSWORD_MAX).contains(&len),
            field,
            "must be between 8 and 128 characters",
        )
    }

    /// A proto enum field: a known value other than the zero one.
    pub fn known_enum<E: TryFrom<i32>>(&mut self, field: &str, value: i32) -> &mut Self {
        self.check(
            value != 0 && E::try_from(value).is_ok(),
            field,
            "must be a known value other than unspecified",
        )
    }

    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(std::mem::take(&mut self.violations)))
        }
    }
}

/// An email address as people type them: `local@domain.tld`, within the RFC 5321 length.
pub fn is_email(value: &str) -> bool {
    if value.len() > EMAIL_MAX || value.chars().any(char::is_whitespace) {
        return false;
    }
    match value.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && local.len() <= 64 && !local.contains('@') && is_domain(domain)
        }
        None => false,
    }
}

/// A DNS name of at least two labels: letters, digits and hyphens, no label starting or ending
/// with a hyphen, at most 253 characters.
pub fn is_domain(value: &str) -> bool {
    let labels: Vec<&str> = value.split('.').collect();
    value.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels.last().is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

/// An email address as stored: trimmed and lower-cased.
pub fn normalize_email(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.com", "x@sub.example.org"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@", "@b.co", "a@b", "a b@c.co", "a@b..co", "a@-b.co", "a@@b.co", "a@1.2"] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(!is_email(&format!("{}@b.co", "a".repeat(65))));
    }

    #[test]
    fn collects_every_violation() {
        let err = Validator::new()
            .text("name", "  ", NAME_MAX)
            .email("email", "nope")
            .password("password", "short")
            .optional_text("note", &"x".repeat(TEXT_MAX + 1), TEXT_MAX)
            .finish()
            .unwrap_err();
        let ApiError::InvalidArgument(v) = err else { panic!("not invalid argument") };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["name", "email", "password", "note"]);
    }

    #[test]
    fn accepts_good_input() {
        assert!(Validator::new().text("name", "Acme", NAME_MAX).email("email", "a@b.co").finish().is_ok());
    }
}
