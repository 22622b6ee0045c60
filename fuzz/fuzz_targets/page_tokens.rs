//! `page_size` and `page_token` of every List RPC: any token is refused or gives a key, the
//! size is always within 1..=MAX_PAGE_SIZE, and the tokens the server makes round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_platform::paging::{MAX_PAGE_SIZE, Page};

fuzz_target!(|input: (i32, &str, String)| {
    let (page_size, token, key) = input;
    if let Ok(page) = Page::parse(page_size, token) {
        assert!((1..=MAX_PAGE_SIZE).contains(&page.size), "{page:?}");
        assert!(page.after.as_ref().is_none_or(|k| !k.is_empty() && k.len() <= 256));
        assert_eq!(page.limit(), page.size + 1);
    } else {
        assert!(page_size < 0 || !token.is_empty(), "a non-negative size without a token is fine");
    }

    // A page that is full makes a token for its last key, which parses back to that key.
    let page = Page::parse(1, "").expect("size 1");
    let (rows, next) = page.finish(vec![key.clone(), String::from("more")], Clone::clone);
    assert_eq!(rows, [key.clone()]);
    match Page::parse(1, &next) {
        Ok(again) => assert_eq!(again.after.as_deref(), Some(key.as_str())),
        Err(_) => assert!(key.is_empty() || key.len() > 256, "token of {key:?} refused"),
    }
});
