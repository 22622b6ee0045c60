//! Ids from requests (`team_…`, `deal_…`): any text is accepted or refused without panicking,
//! an accepted id has exactly the shape `new_id` makes, and every made id is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_platform::ids::{is_valid, new_id};

fuzz_target!(|input: (&str, &str)| {
    let (prefix, id) = input;
    if is_valid(prefix, id) {
        let hex = &id[prefix.len() + 1..];
        assert_eq!(&id[..prefix.len()], prefix);
        assert_eq!(id.as_bytes()[prefix.len()], b'_');
        assert!(hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    }
    if !prefix.is_empty() && prefix.len() < 32 {
        let made = new_id(prefix);
        assert!(is_valid(prefix, &made), "{made:?}");
    }
});
