//! Opaque identifiers: a short type prefix and a UUIDv7, so ids sort by creation time.

/// A new id such as `team_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Whether `id` has the shape [`new_id`] gives with this prefix.
pub fn is_valid(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_sort_by_creation() {
        let a = new_id("team");
        let b = new_id("team");
        assert!(is_valid("team", &a));
        assert!(a < b);
        assert!(!is_valid("user", &a));
        assert!(!is_valid("team", "team_xyz"));
        assert!(!is_valid("team", ""));
    }
}
