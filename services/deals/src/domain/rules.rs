//! Assignment rules: criteria on lead fields, all of which must hold; rules run by ascending
//! priority (then creation order) and the first that matches wins. Round-robin picks the queue
//! members in turn from a cursor.

use std::cmp::Ordering;

/// The lead fields a criterion may test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Country,
    Industry,
    CompanyName,
    EmployeeCount,
}

impl Field {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "country" => Self::Country,
            "industry" => Self::Industry,
            "company_name" => Self::CompanyName,
            "employee_count" => Self::EmployeeCount,
            _ => return None,
        })
    }

    pub fn is_numeric(self) -> bool {
        self == Self::EmployeeCount
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    In,
    GreaterThan,
    LessThan,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "EQUALS",
            Self::In => "IN",
            Self::GreaterThan => "GREATER_THAN",
            Self::LessThan => "LESS_THAN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "EQUALS" => Self::Equals,
            "IN" => Self::In,
            "GREATER_THAN" => Self::GreaterThan,
            "LESS_THAN" => Self::LessThan,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criterion {
    pub field: Field,
    pub operator: Operator,
    pub value: String,
}

/// Why a criterion cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriterionError {
    #[error("is not a lead field (country, industry, company_name, employee_count)")]
    UnknownField,
    #[error("must not be empty")]
    EmptyValue,
    #[error("compares numbers: the field must be employee_count and the value an integer")]
    NotNumeric,
}

impl Criterion {
    /// A criterion from its parts, checked: a known field, a value, numbers for comparisons.
    pub fn new(field: &str, operator: Operator, value: &str) -> Result<Self, CriterionError> {
        let field = Field::parse(field.trim()).ok_or(CriterionError::UnknownField)?;
        let value = value.trim();
        if value.is_empty() {
            return Err(CriterionError::EmptyValue);
        }
        let numeric = matches!(operator, Operator::GreaterThan | Operator::LessThan);
        if numeric && (!field.is_numeric() || value.parse::<i64>().is_err()) {
            return Err(CriterionError::NotNumeric);
        }
        if field.is_numeric() && !numeric {
            let all_numbers = value.split(',').all(|v| v.trim().parse::<i64>().is_ok());
            if !all_numbers {
                return Err(CriterionError::NotNumeric);
            }
        }
        Ok(Self { field, operator, value: value.to_owned() })
    }

    /// Whether the lead satisfies this criterion. Text compares case-insensitively, trimmed.
    pub fn holds(&self, lead: &LeadFacts) -> bool {
        match self.field {
            Field::EmployeeCount => {
                let n = lead.employee_count;
                match self.operator {
                    Operator::Equals => self.value.parse::<i64>().is_ok_and(|v| v == n),
                    Operator::In => {
                        self.value.split(',').any(|v| v.trim().parse::<i64>().is_ok_and(|v| v == n))
                    }
                    Operator::GreaterThan => self.value.parse::<i64>().is_ok_and(|v| n > v),
                    Operator::LessThan => self.value.parse::<i64>().is_ok_and(|v| n < v),
                }
            }
            field => {
                let actual = match field {
                    Field::Country => &lead.country,
                    Field::Industry => &lead.industry,
                    _ => &lead.company_name,
                };
                let actual = actual.trim();
                let same = |v: &str| v.trim().eq_ignore_ascii_case(actual);
                match self.operator {
                    Operator::Equals => same(&self.value),
                    Operator::In => self.value.split(',').any(same),
                    Operator::GreaterThan => compare(actual, &self.value) == Ordering::Greater,
                    Operator::LessThan => compare(actual, &self.value) == Ordering::Less,
                }
            }
        }
    }
}

fn compare(a: &str, b: &str) -> Ordering {
    a.to_lowercase().cmp(&b.trim().to_lowercase())
}

/// What rules test on a lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadFacts {
    pub country: String,
    pub industry: String,
    pub company_name: String,
    pub employee_count: i64,
}

/// A rule as matching sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule<T> {
    pub priority: i64,
    /// Ties in priority run in creation order (ids sort by creation).
    pub id: String,
    pub criteria: Vec<Criterion>,
    pub target: T,
}

impl<T> Rule<T> {
    /// Every criterion holds (a rule without criteria matches every lead).
    pub fn matches(&self, lead: &LeadFacts) -> bool {
        self.criteria.iter().all(|c| c.holds(lead))
    }
}

/// The rules that match `lead`, in the order they run: ascending priority, then id. The caller
/// takes the first it can apply.
pub fn matching<'a, T>(rules: &'a [Rule<T>], lead: &LeadFacts) -> Vec<&'a Rule<T>> {
    let mut hits: Vec<&Rule<T>> = rules.iter().filter(|r| r.matches(lead)).collect();
    hits.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
    hits
}

/// The first matching rule.
pub fn first_match<'a, T>(rules: &'a [Rule<T>], lead: &LeadFacts) -> Option<&'a Rule<T>> {
    matching(rules, lead).into_iter().next()
}

/// Round-robin: the turn `cursor` falls on among the members `eligible` accepts, in member
/// order (the index in `members`). Turns rotate over the eligible members only, so one who is
/// skipped (inactive, or of a team that declined the lead) gives no one an extra turn. `None`
/// when no member is eligible.
pub fn round_robin<M>(members: &[M], cursor: i64, eligible: impl Fn(&M) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..members.len()).filter(|&i| eligible(&members[i])).collect();
    let n = i64::try_from(candidates.len()).ok().filter(|n| *n > 0)?;
    candidates.get(usize::try_from(cursor.rem_euclid(n)).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(country: &str, industry: &str, employees: i64) -> LeadFacts {
        LeadFacts {
            country: country.into(),
            industry: industry.into(),
            company_name: "Acme".into(),
            employee_count: employees,
        }
    }

    fn c(field: &str, op: Operator, value: &str) -> Criterion {
        Criterion::new(field, op, value).unwrap()
    }

    #[test]
    fn equals_is_case_insensitive_and_trimmed() {
        let l = lead("FR", "Software", 10);
        assert!(c("country", Operator::Equals, "fr").holds(&l));
        assert!(c("industry", Operator::Equals, " software ").holds(&l));
        assert!(!c("country", Operator::Equals, "DE").holds(&l));
        assert!(c("employee_count", Operator::Equals, "10").holds(&l));
        assert!(!c("employee_count", Operator::Equals, "11").holds(&l));
    }

    #[test]
    fn in_takes_a_comma_separated_list() {
        let l = lead("BE", "Retail", 250);
        assert!(c("country", Operator::In, "FR, BE ,LU").holds(&l));
        assert!(!c("country", Operator::In, "FR,LU").holds(&l));
        assert!(c("employee_count", Operator::In, "100,250").holds(&l));
        assert!(!c("employee_count", Operator::In, "100,251").holds(&l));
        // A value that merely contains the field is not a member.
        assert!(!c("country", Operator::In, "BEL").holds(&l));
    }

    #[test]
    fn comparisons_are_strict_and_numeric() {
        let l = lead("US", "Retail", 500);
        assert!(c("employee_count", Operator::GreaterThan, "499").holds(&l));
        assert!(!c("employee_count", Operator::GreaterThan, "500").holds(&l));
        assert!(c("employee_count", Operator::LessThan, "501").holds(&l));
        assert!(!c("employee_count", Operator::LessThan, "500").holds(&l));
        // Numeric, not lexical: 500 > 60.
        assert!(c("employee_count", Operator::GreaterThan, "60").holds(&l));
    }

    #[test]
    fn bad_criteria_are_refused() {
        assert_eq!(Criterion::new("colour", Operator::Equals, "red"), Err(CriterionError::UnknownField));
        assert_eq!(Criterion::new("country", Operator::Equals, "  "), Err(CriterionError::EmptyValue));
        assert_eq!(Criterion::new("country", Operator::GreaterThan, "5"), Err(CriterionError::NotNumeric));
        assert_eq!(
            Criterion::new("employee_count", Operator::LessThan, "many"),
            Err(CriterionError::NotNumeric)
        );
        assert_eq!(Criterion::new("employee_count", Operator::In, "1,x"), Err(CriterionError::NotNumeric));
    }

    fn rule(priority: i64, id: &str, criteria: Vec<Criterion>) -> Rule<&'static str> {
        Rule { priority, id: id.into(), criteria, target: "t" }
    }

    #[test]
    fn all_criteria_must_hold() {
        let r = rule(
            1,
            "a",
            vec![c("country", Operator::Equals, "FR"), c("employee_count", Operator::GreaterThan, "100")],
        );
        assert!(r.matches(&lead("FR", "x", 101)));
        assert!(!r.matches(&lead("FR", "x", 100)));
        assert!(!r.matches(&lead("DE", "x", 101)));
        assert!(rule(1, "b", vec![]).matches(&lead("", "", 0)));
    }

    #[test]
    fn the_first_match_by_ascending_priority_wins() {
        let rules = vec![
            rule(20, "r1", vec![c("country", Operator::Equals, "FR")]),
            rule(10, "r2", vec![c("industry", Operator::Equals, "Retail")]),
            rule(5, "r3", vec![c("country", Operator::Equals, "DE")]),
            rule(10, "r0", vec![c("country", Operator::In, "FR,BE")]),
        ];
        let l = lead("FR", "Retail", 1);
        assert_eq!(first_match(&rules, &l).unwrap().id, "r0", "priority 10, earlier id");
        let ids: Vec<_> = matching(&rules, &l).iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r0", "r2", "r1"]);
        assert_eq!(first_match(&rules, &lead("DE", "Retail", 1)).unwrap().id, "r3");
        assert!(first_match(&rules, &lead("IT", "Food", 1)).is_none());
    }

    #[test]
    fn round_robin_goes_in_turn_and_skips_the_ineligible() {
        let members = ["a", "b", "c"];
        let picks: Vec<_> = (0..6).map(|k| members[round_robin(&members, k, |_| true).unwrap()]).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(round_robin(&members, 1, |m| *m != "b"), Some(2));
        assert_eq!(round_robin(&members, 2, |m| *m == "a"), Some(0));
        assert_eq!(round_robin(&members, 0, |_| false), None);
        assert_eq!(round_robin::<&str>(&[], 3, |_| true), None);
        assert_eq!(round_robin(&members, -1, |_| true), Some(2));
    }

    #[test]
    fn a_skipped_member_gives_no_one_an_extra_turn() {
        let members = ["a", "b", "c"];
        let mut counts = [0; 3];
        for k in 0..10 {
            counts[round_robin(&members, k, |m| *m != "b").unwrap()] += 1;
        }
        assert_eq!(counts, [5, 0, 5]);
    }

    #[test]
    fn round_robin_over_many_turns_is_exactly_fair() {
        let members = ["a", "b", "c"];
        let mut counts = [0; 3];
        for k in 0..30 {
            counts[round_robin(&members, k, |_| true).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }
}
