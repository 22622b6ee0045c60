//! Deals' copy of identity's members on SQLite and PostgreSQL: identity's events applied once
//! and in event-time order whatever order they arrive in, and what a caller may learn of a
//! user from it.

mod common;

use common::{Harness, backend_tests};
use tandem_deals::{directory::DIRECTORY_CONSUMER, store::directory::KnownUser};
use tandem_platform::{
    auth::Caller,
    ids::new_id,
    testing::TestDb,
    time::{Micros, to_timestamp},
};
use tandem_proto::events::v1::{
    Event, MembershipChange, MembershipChanged, TeamDeleted, UserStatusChanged, event::Payload,
};

backend_tests!(events_apply_once_and_never_over_a_newer_state, a_caller_learns_what_identity_would_tell_it,);

/// An identity event at `time` microseconds.
fn event(time: Micros, payload: Payload) -> Event {
    Event {
        id: new_id("evt"),
        aggregate_id: String::new(),
        occur_time: Some(to_timestamp(time)),
        source: "identity".into(),
        headers: Default::default(),
        payload: Some(payload),
    }
}

fn membership(time: Micros, team: &str, user: &str, change: MembershipChange) -> Event {
    let role = if change == MembershipChange::Removed { "" } else { "TEAM_ROLE_MEMBER" };
    event(
        time,
        Payload::MembershipChanged(MembershipChanged {
            team_id: team.into(),
            user_id: user.into(),
            change: change.into(),
            role: role.into(),
        }),
    )
}

fn status(time: Micros, user: &str, active: bool) -> Event {
    event(time, Payload::UserStatusChanged(UserStatusChanged { user_id: user.into(), active }))
}

async fn known(h: &Harness, user: &str) -> Option<KnownUser> {
    let mut conn = h.db.acquire().await.unwrap();
    tandem_deals::store::directory::user(&mut conn, user).await.unwrap()
}

fn teams(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn events_apply_once_and_never_over_a_newer_state(db: TestDb) {
    use MembershipChange::{Added, Removed, RoleChanged};
    let h = Harness::start(db).await;
    let copy = h.deals.directory_handler();
    let apply = async |e: &Event| copy.handle(e).await.unwrap();
    let (a, b) = (new_id("team"), new_id("team"));
    let ann = new_id("user");
    assert_eq!(known(&h, &ann).await, None, "never heard of");

    apply(&membership(100, &a, &ann, Added)).await;
    assert_eq!(known(&h, &ann).await, Some(KnownUser { active: true, team_ids: teams(&[&a]) }));
    // An older removal delivered late changes nothing.
    apply(&membership(50, &a, &ann, Removed)).await;
    assert_eq!(known(&h, &ann).await.unwrap().team_ids, teams(&[&a]));
    // A newer one removes; an older addition delivered after it does not bring her back.
    apply(&membership(200, &a, &ann, Removed)).await;
    apply(&membership(150, &a, &ann, RoleChanged)).await;
    assert_eq!(
        known(&h, &ann).await,
        Some(KnownUser { active: true, team_ids: vec![] }),
        "known, in no team"
    );
    // A redelivered event is applied once: re-adding at 300, removing at 400, then the add
    // delivered again, leaves her removed.
    let again = membership(300, &a, &ann, Added);
    apply(&again).await;
    apply(&membership(400, &a, &ann, Removed)).await;
    apply(&again).await;
    assert!(known(&h, &ann).await.unwrap().team_ids.is_empty());
    let mut tx = h.db.begin().await.unwrap();
    assert!(
        !tandem_platform::outbox::mark_handled(&mut tx, DIRECTORY_CONSUMER, &again.id).await.unwrap(),
        "recorded as handled"
    );
    drop(tx);

    // Status: newest wins whatever the arrival order.
    apply(&membership(500, &b, &ann, Added)).await;
    apply(&status(600, &ann, false)).await;
    apply(&status(550, &ann, true)).await;
    assert_eq!(known(&h, &ann).await, Some(KnownUser { active: false, team_ids: teams(&[&b]) }));
    apply(&status(700, &ann, true)).await;
    assert!(known(&h, &ann).await.unwrap().active);

    // A deleted team loses its members, and keeps none that arrive late.
    let bob = new_id("user");
    apply(&membership(800, &b, &bob, Added)).await;
    apply(&event(900, Payload::TeamDeleted(TeamDeleted { team_id: b.clone() }))).await;
    assert!(known(&h, &ann).await.unwrap().team_ids.is_empty());
    assert!(known(&h, &bob).await.unwrap().team_ids.is_empty());
    let cid = new_id("user");
    apply(&membership(850, &b, &cid, Added)).await;
    assert_eq!(known(&h, &cid).await, None, "no membership of a deleted team is kept");

    // Events the copy cannot order, or of no interest to it, change nothing.
    let mut untimed = membership(1_000, &a, &cid, Added);
    untimed.occur_time = None;
    apply(&untimed).await;
    apply(&membership(1_000, &a, &cid, MembershipChange::Unspecified)).await;
    apply(&event(1_000, Payload::TeamCreated(Default::default()))).await;
    assert_eq!(known(&h, &cid).await, None);
    // Other events of the stream mark nothing handled (another group may need them).
    let created = event(1_000, Payload::TeamCreated(Default::default()));
    apply(&created).await;
    let mut tx = h.db.begin().await.unwrap();
    assert!(tandem_platform::outbox::mark_handled(&mut tx, DIRECTORY_CONSUMER, &created.id).await.unwrap());
}

fn caller(id: &str, staff: bool) -> Caller {
    Caller {
        user_id: id.into(),
        staff_role: staff.then_some(tandem_proto::identity::v1::StaffRole::ChannelManager),
        issued_at: 0,
        token: None,
        service: None,
    }
}

async fn a_caller_learns_what_identity_would_tell_it(db: TestDb) {
    let h = Harness::start(db).await;
    let copy = h.deals.directory_handler();
    let (a, b, c) = (new_id("team"), new_id("team"), new_id("team"));
    let (u1, u2, u3) = (new_id("user"), new_id("user"), new_id("user"));
    for (team, user) in [(&a, &u1), (&a, &u2), (&b, &u2), (&c, &u3)] {
        copy.handle(&membership(10, team, user, MembershipChange::Added)).await.unwrap();
    }
    let seen = async |by: &Caller, id: &str| h.deals.user_seen_by(by, id).await.unwrap().map(|u| u.team_ids);
    let p1 = caller(&u1, false);
    // A partner: the teams it shares with the user, else nothing.
    assert_eq!(seen(&p1, &u2).await, Some(teams(&[&a])));
    assert_eq!(seen(&p1, &u3).await, None);
    // Itself and staff: everything.
    assert_eq!(seen(&caller(&u2, false), &u2).await, Some(teams(&[&a, &b])));
    assert_eq!(seen(&caller(&h.staff.id, true), &u3).await, Some(teams(&[&c])));
    // Users the copy never heard of are asked of identity (here the fake, which knows the
    // harness's users and not `u9`).
    assert_eq!(seen(&p1, &new_id("user")).await, None);
    let staff = h.deals.user_seen_by(&caller(&h.staff.id, true), &h.staff.id).await.unwrap().unwrap();
    assert!(staff.staff, "staff are never in the copy: identity says who they are");
    assert_eq!(seen(&caller(&h.staff.id, true), &h.member.id).await, Some(teams(&[&h.team])));
}
