//! AIP-158 paging: a capped `page_size` and an opaque `page_token` that carries the sort key of
//! the last item returned, so each page is one index range scan.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;
const PREFIX: &str = "v1:";

/// A validated page request: how many rows, and after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: i64,
    pub after: Option<String>,
}

impl Page {
    /// `page_size` 0 means the default; above the maximum it is capped (AIP-158); negative is
    /// refused, as is a token this server did not make.
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, ApiError> {
        if page_size < 0 {
            return Err(ApiError::invalid("page_size", "must not be negative"));
        }
        let size = if page_size == 0 { DEFAULT_PAGE_SIZE } else { i64::from(page_size).min(MAX_PAGE_SIZE) };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(
                decode(page_token)
                    .ok_or_else(|| ApiError::invalid("page_token", "is not a token of this list"))?,
            )
        };
        Ok(Self { size, after })
    }

    /// The `LIMIT` to query: one more than the page, to know whether another page follows.
    pub fn limit(&self) -> i64 {
        self.size + 1
    }

    /// The key to resume after, `""` sorting before every id.
    pub fn after_key(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }

    /// Trims the extra row and makes the next token from the last kept item's key.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() > size {
            rows.truncate(size);
            let token = rows.last().map(|r| encode(&key(r))).unwrap_or_default();
            (rows, token)
        } else {
            (rows, String::new())
        }
    }
}

fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{key}"))
}

fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let key = text.strip_prefix(PREFIX)?;
    (!key.is_empty() && key.len() <= 256).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(Page::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(10_000, "").unwrap().size, MAX_PAGE_SIZE);
        assert!(Page::parse(-1, "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let page = Page::parse(2, "").unwrap();
        let (rows, token) = page.finish(vec!["a", "b", "c"], |s| s.to_string());
        assert_eq!(rows, ["a", "b"]);
        assert_eq!(Page::parse(2, &token).unwrap().after.as_deref(), Some("b"));
        let (_, last) = page.finish(vec!["a"], |s| s.to_string());
        assert_eq!(last, "");
        for bad in ["!!", "bm9wZQ", "djE6"] {
            assert!(Page::parse(2, bad).is_err(), "{bad}");
        }
    }
}
