//! Property tests of round-robin assignment, on the plain function: each lead takes the queue's
//! next turn (the cursor, incremented once per lead as `store::take_turn` does) and the turn
//! falls on an eligible member. Over any run of leads, the members' counts differ by at most
//! one; members skipped (inactive, or of a team that declined) get nothing and cost nobody a
//! turn; and every N consecutive turns give each of N eligible members exactly one lead.

use proptest::prelude::*;
use tandem_deals::domain::rules::round_robin;

/// A queue member: its position and whether it may receive leads now.
#[derive(Debug, Clone, Copy)]
struct Member {
    active: bool,
}

/// Runs `leads` assignments from `start`, returning the leads each member received.
fn run(members: &[Member], start: i64, leads: usize) -> Vec<usize> {
    let mut counts = vec![0; members.len()];
    for cursor in (start..).take(leads) {
        let pick = round_robin(members, cursor, |m| m.active).expect("an eligible member");
        assert!(members[pick].active, "the turn fell on an ineligible member");
        counts[pick] += 1;
    }
    counts
}

fn spread(counts: impl Iterator<Item = usize> + Clone) -> usize {
    counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0)
}

/// Queues of 1 to 12 members, at least one of them active.
fn queue() -> impl Strategy<Value = Vec<Member>> {
    prop::collection::vec(any::<bool>(), 1..=12)
        .prop_filter("one member active", |a| a.contains(&true))
        .prop_map(|active| active.into_iter().map(|active| Member { active }).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn counts_differ_by_at_most_one(n in 1_usize..=12, start in 0_i64..1_000_000, leads in 0_usize..200) {
        let members = vec![Member { active: true }; n];
        let counts = run(&members, start, leads);
        prop_assert_eq!(counts.iter().sum::<usize>(), leads);
        prop_assert!(spread(counts.iter().copied()) <= 1, "{counts:?}");
    }

    #[test]
    fn skipped_members_keep_the_rest_fair(members in queue(), start in 0_i64..1_000_000, leads in 0_usize..200) {
        let counts = run(&members, start, leads);
        prop_assert_eq!(counts.iter().sum::<usize>(), leads);
        for (m, c) in members.iter().zip(&counts) {
            if !m.active {
                prop_assert_eq!(*c, 0, "an inactive member received a lead: {:?}", counts);
            }
        }
        let active = members.iter().zip(&counts).filter(|(m, _)| m.active).map(|(_, c)| *c);
        prop_assert!(spread(active) <= 1, "{members:?} {counts:?}");
    }

    #[test]
    fn every_round_gives_each_eligible_member_one_lead(members in queue(), start in any::<i64>()) {
        let eligible = members.iter().filter(|m| m.active).count();
        let start = start.clamp(i64::MIN / 2, i64::MAX / 2);
        let counts = run(&members, start, eligible);
        for (m, c) in members.iter().zip(&counts) {
            prop_assert_eq!(*c, usize::from(m.active), "{:?} {:?}", members, counts);
        }
    }

    #[test]
    fn skipping_a_member_gives_nobody_an_extra_turn(members in queue(), cursor in any::<i64>()) {
        // The member a turn falls on depends only on the order of the eligible members: the
        // turn goes where it would in a queue of the eligible members alone.
        let eligible: Vec<Member> = members.iter().copied().filter(|m| m.active).collect();
        let pick = round_robin(&members, cursor, |m| m.active).unwrap();
        let alone = round_robin(&eligible, cursor, |_| true).unwrap();
        let position = members[..pick].iter().filter(|m| m.active).count();
        prop_assert_eq!(position, alone);
    }

    #[test]
    fn no_eligible_member_means_no_turn(n in 0_usize..12, cursor in any::<i64>()) {
        let members = vec![Member { active: false }; n];
        prop_assert_eq!(round_robin(&members, cursor, |m| m.active), None);
    }
}
