//! Deal registration: the customer domain as conflicts compare it, which registrations are
//! active, when they expire, and the money a deal may carry.

use tandem_platform::time::{MICROS_PER_DAY, Micros};

/// How long a registration lasts without progress (HubSpot's program policy).
pub const DEFAULT_EXPIRY_DAYS: i64 = 90;

/// The ISO 4217 currencies deals accept, with their minor-unit exponent.
pub const CURRENCIES: &[(&str, u32)] = &[
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("NZD", 2),
    ("JPY", 0),
    ("CNY", 2),
    ("INR", 2),
    ("BRL", 2),
    ("MXN", 2),
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("SGD", 2),
    ("HKD", 2),
    ("KRW", 0),
    ("ZAR", 2),
];

pub fn is_known_currency(code: &str) -> bool {
    CURRENCIES.iter().any(|(c, _)| *c == code)
}

/// The customer domain as conflicts compare it: lower case, without scheme, credentials,
/// `www.`, port, path, query or trailing dot. `None` when what remains is not a domain.
pub fn normalize_domain(input: &str) -> Option<String> {
    let mut s = input.trim().to_ascii_lowercase();
    if let Some((_, rest)) = s.split_once("://") {
        s = rest.to_owned();
    }
    let end = s.find(['/', '?', '#']).unwrap_or(s.len());
    s.truncate(end);
    if let Some((_, host)) = s.rsplit_once('@') {
        s = host.to_owned();
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        s = host.to_owned();
    }
    let s = s.trim_end_matches('.');
    let s = s.strip_prefix("www.").unwrap_or(s);
    tandem_platform::validate::is_domain(s).then(|| s.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl RegistrationStatus {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Approved, Self::Rejected, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Pending and approved registrations hold the customer (until they expire).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Approved)
    }
}

/// When a registration made (or last progressed) at `from` expires.
pub fn expire_time(from: Micros, expiry_days: i64) -> Micros {
    from.saturating_add(expiry_days.saturating_mul(MICROS_PER_DAY))
}

/// Whether a registration must now be marked expired: active, open, and past its time.
pub fn is_due(status: RegistrationStatus, closed: bool, expire_at: Micros, now: Micros) -> bool {
    status.is_active() && !closed && expire_at <= now
}

/// An active registration of a customer domain, as conflict detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRegistration {
    pub deal_id: String,
    pub team_id: String,
    pub create_time: Micros,
    /// Empty when this registration itself holds the customer.
    pub conflicting_deal_id: String,
}

/// The deal a new registration conflicts with. The first registration wins: the customer is
/// held by the earliest active registration that conflicts with none (when the holder expired
/// or was rejected, by the earliest still active). None when the team itself holds it.
pub fn conflict<'a>(team_id: &str, active: &'a [ActiveRegistration]) -> Option<&'a str> {
    let earliest = |r: &&ActiveRegistration| (r.create_time, r.deal_id.clone());
    let holder = active
        .iter()
        .filter(|r| r.conflicting_deal_id.is_empty())
        .min_by_key(earliest)
        .or_else(|| active.iter().min_by_key(earliest))?;
    (holder.team_id != team_id).then_some(holder.deal_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_normalise_for_conflicts() {
        for (input, want) in [
            ("Acme.com", "acme.com"),
            ("https://www.Acme.com/pricing?x=1", "acme.com"),
            ("http://acme.com:8080", "acme.com"),
            ("acme.com.", "acme.com"),
            ("WWW.ACME.COM.", "acme.com"),
            ("  shop.acme.co.uk/  ", "shop.acme.co.uk"),
            ("ftp://user@acme.com", "acme.com"),
            ("acme.com#top", "acme.com"),
            ("www2.acme.com", "www2.acme.com"),
        ] {
            assert_eq!(normalize_domain(input).as_deref(), Some(want), "{input}");
        }
        for bad in ["", "acme", "http://", "a b.com", "-acme.com", "www.", "acme..com", "https://:80"] {
            assert_eq!(normalize_domain(bad), None, "{bad}");
        }
    }

    #[test]
    fn currencies_are_iso_codes_we_list() {
        assert!(is_known_currency("USD") && is_known_currency("JPY") && is_known_currency("EUR"));
        assert!(!is_known_currency("usd") && !is_known_currency("XXX") && !is_known_currency(""));
    }

    #[test]
    fn registrations_expire_after_the_period_unless_closed_or_inactive() {
        let start = 1_700_000_000_000_000;
        let at = expire_time(start, DEFAULT_EXPIRY_DAYS);
        assert_eq!(at - start, 90 * MICROS_PER_DAY);
        assert!(!is_due(RegistrationStatus::Pending, false, at, at - 1));
        assert!(is_due(RegistrationStatus::Pending, false, at, at));
        assert!(is_due(RegistrationStatus::Approved, false, at, at + 1));
        assert!(!is_due(RegistrationStatus::Approved, true, at, at + 1), "closed deals stay");
        assert!(!is_due(RegistrationStatus::Rejected, false, at, at + 1));
        assert!(!is_due(RegistrationStatus::Expired, false, at, at + 1));
        assert_eq!(expire_time(start, 7) - start, 7 * MICROS_PER_DAY);
    }

    #[test]
    fn statuses_round_trip_and_only_pending_and_approved_are_active() {
        for s in RegistrationStatus::ALL {
            assert_eq!(RegistrationStatus::parse(s.as_str()), Some(s));
        }
        let active: Vec<_> = RegistrationStatus::ALL.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [RegistrationStatus::Pending, RegistrationStatus::Approved]);
    }

    fn reg(deal: &str, team: &str, at: Micros, conflicting: &str) -> ActiveRegistration {
        ActiveRegistration {
            deal_id: deal.into(),
            team_id: team.into(),
            create_time: at,
            conflicting_deal_id: conflicting.into(),
        }
    }

    #[test]
    fn the_holder_is_the_first_registration_without_a_conflict() {
        // deal_x is older but lost a race to deal_h: it conflicts, so deal_h holds.
        let active = vec![reg("deal_x", "team_x", 5, "deal_h"), reg("deal_h", "team_h", 7, "")];
        assert_eq!(conflict("team_new", &active), Some("deal_h"));
        assert_eq!(conflict("team_h", &active), None);
        // The holder expired: the earliest still active holds.
        let active = vec![reg("deal_x", "team_x", 5, "deal_gone"), reg("deal_y", "team_y", 9, "deal_gone")];
        assert_eq!(conflict("team_new", &active), Some("deal_x"));
        assert_eq!(conflict("team_x", &active), None);
    }

    #[test]
    fn the_first_registration_of_another_team_wins() {
        let others = vec![
            reg("deal_b", "team_b", 20, ""),
            reg("deal_a", "team_a", 10, ""),
            reg("deal_c", "team_c", 5, ""),
        ];
        assert_eq!(conflict("team_c", &others), None, "the team that registered first holds the customer");
        assert_eq!(conflict("team_a", &others), Some("deal_c"), "not the later deal_a of its own");
        assert_eq!(conflict("team_x", &others), Some("deal_c"));
        assert_eq!(conflict("team_a", &others[..1]), Some("deal_b"));
        assert_eq!(conflict("team_b", &others[..1]), None);
        assert_eq!(conflict("team_b", &[]), None);
    }
}
