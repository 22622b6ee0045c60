//! Emails and domains as partners type them: never a panic; an accepted email has a local part
//! and an accepted domain; accepted domains respect the DNS limits; normalising is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_platform::validate::{EMAIL_MAX, is_domain, is_email, normalize_email};

fuzz_target!(|text: &str| {
    if is_domain(text) {
        assert!(text.len() <= 253 && text.contains('.'), "{text:?}");
        assert!(text.is_ascii());
        assert!(text.split('.').all(|l| !l.is_empty() && l.len() <= 63));
    }
    if is_email(text) {
        assert!(text.len() <= EMAIL_MAX);
        let (local, domain) = text.rsplit_once('@').expect("an accepted email has an @");
        assert!(!local.is_empty() && local.len() <= 64);
        assert!(is_domain(domain), "{text:?}");
        assert!(!text.chars().any(char::is_whitespace));
        // What is stored is still an email, and storing it again changes nothing.
        let stored = normalize_email(text);
        assert!(is_email(&stored), "{stored:?}");
        assert_eq!(normalize_email(&stored), stored);
    }
    let once = normalize_email(text);
    assert_eq!(normalize_email(&once), once);
});
