//! Lead states: who may move a lead where. Won, lost and unqualified are final.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadStatus {
    New,
    Assigned,
    Working,
    Won,
    Lost,
    Unqualified,
}

impl LeadStatus {
    pub const ALL: [LeadStatus; 6] =
        [Self::New, Self::Assigned, Self::Working, Self::Won, Self::Lost, Self::Unqualified];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Assigned => "ASSIGNED",
            Self::Working => "WORKING",
            Self::Won => "WON",
            Self::Lost => "LOST",
            Self::Unqualified => "UNQUALIFIED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Won, lost and unqualified leads never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Won | Self::Lost | Self::Unqualified)
    }

    /// The status a lead has once it gets (or loses) an owner.
    pub fn for_owner(has_owner: bool) -> Self {
        if has_owner { Self::Assigned } else { Self::New }
    }
}

/// Why a status change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the lead is final")]
    Final,
    #[error("a lead without an owner can only be marked unqualified")]
    NoOwner,
    #[error("NEW and ASSIGNED follow from assignment, not from an update")]
    Derived,
}

/// Whether an owner (or staff) may move a lead from `from` to `to` by an update.
pub fn transition(from: LeadStatus, to: LeadStatus, has_owner: bool) -> Result<(), TransitionError> {
    if from.is_final() {
        return Err(TransitionError::Final);
    }
    if from == to {
        return Ok(());
    }
    match to {
        LeadStatus::New | LeadStatus::Assigned => Err(TransitionError::Derived),
        LeadStatus::Unqualified => Ok(()),
        _ if !has_owner => Err(TransitionError::NoOwner),
        _ => Ok(()),
    }
}

/// Whether `team_id` may receive the lead: never a team that declined it.
pub fn may_receive(declined_team_ids: &[String], team_id: &str) -> bool {
    !declined_team_ids.iter().any(|t| t == team_id)
}

#[cfg(test)]
mod tests {
    use super::{LeadStatus::*, *};

    #[test]
    fn statuses_round_trip_and_finals_are_final() {
        for s in LeadStatus::ALL {
            assert_eq!(LeadStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(LeadStatus::parse("nope"), None);
        let finals: Vec<_> = LeadStatus::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [Won, Lost, Unqualified]);
    }

    #[test]
    fn final_leads_never_move() {
        for from in [Won, Lost, Unqualified] {
            for to in LeadStatus::ALL {
                assert_eq!(transition(from, to, true), Err(TransitionError::Final), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn open_leads_move_forward() {
        assert_eq!(transition(Assigned, Working, true), Ok(()));
        assert_eq!(transition(Working, Won, true), Ok(()));
        assert_eq!(transition(Assigned, Lost, true), Ok(()));
        assert_eq!(transition(New, Unqualified, false), Ok(()));
        assert_eq!(transition(New, Won, false), Err(TransitionError::NoOwner));
        assert_eq!(transition(Working, Assigned, true), Err(TransitionError::Derived));
        assert_eq!(transition(Assigned, New, true), Err(TransitionError::Derived));
        assert_eq!(transition(Working, Working, true), Ok(()));
    }

    #[test]
    fn a_declined_lead_never_goes_back_to_that_team() {
        let declined = vec!["team_a".to_owned(), "team_b".to_owned()];
        assert!(!may_receive(&declined, "team_a"));
        assert!(!may_receive(&declined, "team_b"));
        assert!(may_receive(&declined, "team_c"));
        assert!(may_receive(&[], "team_a"));
        assert_eq!(LeadStatus::for_owner(true), Assigned);
        assert_eq!(LeadStatus::for_owner(false), New);
    }
}
