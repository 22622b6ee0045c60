//! The permission table of PRODUCT.md, tried for every role, an outsider and vendor staff:
//! through `CheckPermission`, and through every RPC that guards a team.

mod common;

use common::*;
use tandem_platform::testing::TestDb;
use tandem_proto::identity::v1::{self as pb, Permission, RewardsVisibility, TeamRole};
use tonic::{Code, Request, Status};

backend_tests!(check_permission_answers_the_table, guarded_rpcs_answer_the_table);

/// A team with one user of each role, an outsider, and the staff admin.
struct Crew {
    team_id: String,
    owner: Session,
    admin: Session,
    member: Session,
    finance: Session,
    outsider: Session,
    staff: Session,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Outsider,
    Staff,
    Finance,
    Member,
    Admin,
    Owner,
}

/// The least privileged first, so that an allowed call consuming something comes last.
const EVERYONE: [Who; 6] = [Who::Outsider, Who::Staff, Who::Finance, Who::Member, Who::Admin, Who::Owner];

impl Crew {
    async fn new(app: &TestApp) -> Self {
        let (_, team, owner) = app.sign_up("owner@acme.example").await;
        let admin = app.invite_newcomer(&owner, &team.id, "admin@acme.example", TeamRole::Admin).await;
        let member = app.invite_newcomer(&owner, &team.id, "member@acme.example", TeamRole::Member).await;
        let finance = app.invite_newcomer(&owner, &team.id, "finance@acme.example", TeamRole::Finance).await;
        let (_, _, outsider) = app.sign_up("outsider@elsewhere.example").await;
        Self { team_id: team.id, owner, admin, member, finance, outsider, staff: app.admin.clone() }
    }

    fn session(&self, who: Who) -> &Session {
        match who {
            Who::Outsider => &self.outsider,
            Who::Staff => &self.staff,
            Who::Finance => &self.finance,
            Who::Member => &self.member,
            Who::Admin => &self.admin,
            Who::Owner => &self.owner,
        }
    }
}

const PERMISSIONS: [Permission; 7] = [
    Permission::TeamView,
    Permission::TeamManage,
    Permission::MembersManage,
    Permission::ProgramsManage,
    Permission::DealsContribute,
    Permission::RewardsView,
    Permission::RewardsWithdraw,
];

/// PRODUCT.md's table, one letter per permission in the order of `PERMISSIONS`: Y yes, N no,
/// S only while the team shows rewards to members. Enrolling the team in programs is the
/// owner's; vendor staff see every team and its rewards and act through staff RPCs only.
fn table(who: Who) -> &'static str {
    match who {
        Who::Owner => "YYYYYYY",
        Who::Admin => "YYYNYYN",
        Who::Member => "YNNNYSN",
        Who::Finance => "YNNNNYY",
        Who::Outsider => "NNNNNNN",
        Who::Staff => "YNNNNYN",
    }
}

fn expected(who: Who, permission: usize, visibility: RewardsVisibility) -> bool {
    match table(who).as_bytes()[permission] {
        b'Y' => true,
        b'S' => visibility == RewardsVisibility::Show,
        _ => false,
    }
}

async fn check_permission_answers_the_table(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let crew = Crew::new(&app).await;

    // Show (the default), then Hide, then Show again: each change must reach the answers at
    // once, past the permission cache.
    for (round, visibility) in
        [RewardsVisibility::Show, RewardsVisibility::Hide, RewardsVisibility::Show].into_iter().enumerate()
    {
        if round > 0 {
            app.set_rewards_visibility(&crew.admin, &crew.team_id, visibility).await;
        }
        for who in EVERYONE {
            let session = crew.session(who);
            for (i, permission) in PERMISSIONS.into_iter().enumerate() {
                let want = expected(who, i, visibility);
                let own = app.check_permission(session, &session.user_id, &crew.team_id, permission).await;
                assert_eq!(own, want, "{who:?} asking about itself: {permission:?} with {visibility:?}");
                let by_staff =
                    app.check_permission(&crew.staff, &session.user_id, &crew.team_id, permission).await;
                assert_eq!(by_staff, want, "staff asking about {who:?}: {permission:?} with {visibility:?}");
            }
        }
    }

    // A team that does not exist: nobody may do anything.
    let ghost = "team_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d";
    assert!(!app.check_permission(&crew.owner, &crew.owner.user_id, ghost, Permission::TeamView).await);
    assert!(!app.check_permission(&crew.staff, &crew.staff.user_id, ghost, Permission::TeamView).await);

    // A partner asks about itself only; the permission must be a known one.
    let ask = |asker: &Session, user: &str, permission: i32| {
        asker.req(pb::CheckPermissionRequest {
            user_id: user.into(),
            team_id: crew.team_id.clone(),
            permission,
        })
    };
    app.access()
        .check_permission(ask(&crew.admin, &crew.member.user_id, Permission::TeamView as i32))
        .await
        .fails(Code::PermissionDenied);
    app.access().check_permission(ask(&crew.owner, &crew.owner.user_id, 0)).await.invalid(&["permission"]);
    app.access().check_permission(ask(&crew.owner, &crew.owner.user_id, 99)).await.invalid(&["permission"]);
    app.access()
        .check_permission(Request::new(pb::CheckPermissionRequest {
            user_id: crew.owner.user_id.clone(),
            team_id: crew.team_id.clone(),
            permission: Permission::TeamView.into(),
        }))
        .await
        .fails(Code::Unauthenticated);
}

/// The RPCs that guard a team.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    GetTeam,
    UpdateTeam,
    DeleteTeam,
    ListMembers,
    UpdateMemberRole,
    RemoveMember,
    CreateInvitation,
    ListInvitations,
    ResendInvitation,
    RevokeInvitation,
    AddDomain,
    VerifyDomain,
    ListDomains,
    JoinProgram,
    LeaveProgram,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Ok,
    /// PERMISSION_DENIED: the caller sees the team but may not do this.
    Denied,
    /// NOT_FOUND, exactly as for a team that does not exist.
    Hidden,
    /// Authorised, then refused by a rule of the business (FAILED_PRECONDITION, reason).
    Refused(&'static str),
}

/// Columns in the order of `EVERYONE`: outsider, staff, finance, member, admin, owner.
fn guarded_table() -> Vec<(Rpc, [Expect; 6])> {
    use Expect::*;
    let view = [Hidden, Ok, Ok, Ok, Ok, Ok];
    let manage = [Hidden, Denied, Denied, Denied, Ok, Ok];
    let owner_only = [Hidden, Denied, Denied, Denied, Denied, Ok];
    vec![
        (Rpc::GetTeam, view),
        (Rpc::UpdateTeam, manage),
        // The owner passes the guard; the team still has members, which the rule refuses.
        (Rpc::DeleteTeam, [Hidden, Denied, Denied, Denied, Denied, Refused("TEAM_HAS_MEMBERS")]),
        (Rpc::ListMembers, view),
        (Rpc::UpdateMemberRole, manage),
        (Rpc::RemoveMember, manage),
        (Rpc::CreateInvitation, manage),
        (Rpc::ListInvitations, manage),
        (Rpc::ResendInvitation, manage),
        (Rpc::RevokeInvitation, manage),
        (Rpc::AddDomain, manage),
        (Rpc::VerifyDomain, manage),
        (Rpc::ListDomains, view),
        (Rpc::JoinProgram, owner_only),
        (Rpc::LeaveProgram, owner_only),
    ]
}

const GHOST_TEAM: &str = "team_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d";
const GHOST_INVITATION: &str = "inv_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d";

/// What the RPCs act on: a verified domain, a program, a member to re-role.
struct Scene {
    crew: Crew,
    domain: String,
    program_id: String,
    member_id: String,
}

/// `msg`, with the token of `who` when there is one.
fn req<T>(who: Option<&Session>, msg: T) -> Request<T> {
    match who {
        Some(session) => session.req(msg),
        None => Request::new(msg),
    }
}

/// Calls `rpc` as `who` on the crew's team (or on a team that does not exist, `ghost`).
/// What a call consumes (an invitation to resend, a member to remove) is made fresh by the
/// owner first.
async fn call(
    app: &TestApp,
    scene: &Scene,
    rpc: Rpc,
    who: Option<&Session>,
    n: usize,
    ghost: bool,
) -> Result<(), Status> {
    let owner = &scene.crew.owner;
    let team_id = if ghost { GHOST_TEAM.to_owned() } else { scene.crew.team_id.clone() };
    let fresh_invitation = || async {
        if ghost {
            GHOST_INVITATION.to_owned()
        } else {
            app.create_invitation(owner, &team_id, "", TeamRole::Member).await.id
        }
    };
    match rpc {
        Rpc::GetTeam => app.teams().get_team(req(who, pb::GetTeamRequest { team_id })).await.map(drop),
        Rpc::UpdateTeam => app
            .teams()
            .update_team(req(
                who,
                pb::UpdateTeamRequest {
                    team: Some(pb::Team { id: team_id, name: format!("Acme {n}"), ..Default::default() }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
                },
            ))
            .await
            .map(drop),
        Rpc::DeleteTeam => {
            app.teams().delete_team(req(who, pb::DeleteTeamRequest { team_id })).await.map(drop)
        }
        Rpc::ListMembers => app
            .teams()
            .list_members(req(who, pb::ListMembersRequest { team_id, ..Default::default() }))
            .await
            .map(drop),
        Rpc::UpdateMemberRole => {
            let role = if n.is_multiple_of(2) { TeamRole::Finance } else { TeamRole::Member };
            app.teams()
                .update_member_role(req(
                    who,
                    pb::UpdateMemberRoleRequest {
                        team_id,
                        user_id: scene.member_id.clone(),
                        role: role.into(),
                    },
                ))
                .await
                .map(drop)
        }
        Rpc::RemoveMember => {
            let user_id = if ghost {
                scene.member_id.clone()
            } else {
                app.add_member(owner, &team_id, &format!("removable{n}@acme.example")).await.user_id
            };
            app.teams().remove_member(req(who, pb::RemoveMemberRequest { team_id, user_id })).await.map(drop)
        }
        Rpc::CreateInvitation => app
            .invitations()
            .create_invitation(req(
                who,
                pb::CreateInvitationRequest { team_id, email: String::new(), role: TeamRole::Member.into() },
            ))
            .await
            .map(drop),
        Rpc::ListInvitations => app
            .invitations()
            .list_invitations(req(who, pb::ListInvitationsRequest { team_id, ..Default::default() }))
            .await
            .map(drop),
        Rpc::ResendInvitation => {
            let invitation_id = fresh_invitation().await;
            app.invitations()
                .resend_invitation(req(who, pb::ResendInvitationRequest { invitation_id }))
                .await
                .map(drop)
        }
        Rpc::RevokeInvitation => {
            let invitation_id = fresh_invitation().await;
            app.invitations()
                .revoke_invitation(req(who, pb::RevokeInvitationRequest { invitation_id }))
                .await
                .map(drop)
        }
        Rpc::AddDomain => app
            .domains()
            .add_domain(req(who, pb::AddDomainRequest { team_id, domain: format!("d{n}.acme.example") }))
            .await
            .map(drop),
        Rpc::VerifyDomain => app
            .domains()
            .verify_domain(req(who, pb::VerifyDomainRequest { team_id, domain: scene.domain.clone() }))
            .await
            .map(drop),
        Rpc::ListDomains => app
            .domains()
            .list_domains(req(who, pb::ListDomainsRequest { team_id, ..Default::default() }))
            .await
            .map(drop),
        Rpc::JoinProgram => app
            .programs()
            .join_program(req(who, pb::JoinProgramRequest { program_id: scene.program_id.clone(), team_id }))
            .await
            .map(drop),
        Rpc::LeaveProgram => app
            .programs()
            .leave_program(req(
                who,
                pb::LeaveProgramRequest { program_id: scene.program_id.clone(), team_id },
            ))
            .await
            .map(drop),
    }
}

async fn guarded_rpcs_answer_the_table(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let crew = Crew::new(&app).await;
    let member_id = app.add_member(&crew.owner, &crew.team_id, "extra@acme.example").await.user_id;
    let domain = app
        .domains()
        .add_domain(
            crew.owner
                .req(pb::AddDomainRequest { team_id: crew.team_id.clone(), domain: "acme.example".into() }),
        )
        .await
        .must();
    app.txt.publish(&domain.txt_record_name, &domain.txt_record_value);
    let program_id = app.create_program("Resellers").await.id;
    let scene = Scene { crew, domain: domain.domain, program_id, member_id };

    let mut n = 0;
    for (rpc, expectations) in guarded_table() {
        // Without a token: UNAUTHENTICATED, before anything else.
        n += 1;
        let status = call(&app, &scene, rpc, None, n, false).await.expect_err("anonymous");
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc:?} anonymous: {}", status.message());
        // What a team that does not exist answers its owner-to-be: the outsider must get the same.
        n += 1;
        let ghost = call(&app, &scene, rpc, Some(&scene.crew.owner), n, true).await.expect_err("ghost");
        assert_eq!(ghost.code(), Code::NotFound, "{rpc:?} on a team that does not exist");

        for (who, expect) in EVERYONE.into_iter().zip(expectations) {
            n += 1;
            let outcome = call(&app, &scene, rpc, Some(scene.crew.session(who)), n, false).await;
            let context = format!("{rpc:?} by {who:?}");
            match (expect, outcome) {
                (Expect::Ok, Ok(())) => {}
                (Expect::Ok, Err(status)) => {
                    panic!("{context}: expected OK, got {:?} {}", status.code(), status.message())
                }
                (_, Ok(())) => panic!("{context}: expected {expect:?}, got OK"),
                (Expect::Denied, Err(status)) => {
                    assert_eq!(status.code(), Code::PermissionDenied, "{context}: {}", status.message());
                    assert_eq!(reason(&status).as_deref(), Some("PERMISSION_DENIED"), "{context}");
                }
                (Expect::Hidden, Err(status)) => {
                    assert_eq!(status.code(), Code::NotFound, "{context}: {}", status.message());
                    assert_eq!(status.message(), ghost.message(), "{context}: reveals the team");
                }
                (Expect::Refused(why), Err(status)) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{context}: {}", status.message());
                    assert_eq!(reason(&status).as_deref(), Some(why), "{context}");
                }
            }
        }
    }

    // The denied calls changed nothing: the team is still there, named by an allowed update.
    let team = app.get_team(&scene.crew.owner, &scene.crew.team_id).await.must().team.unwrap();
    assert!(team.name.starts_with("Acme "), "{}", team.name);
    let members = app.members(&scene.crew.owner, &scene.crew.team_id).await;
    let role_of = |s: &Session| members.iter().find(|m| m.user_id == s.user_id).map(|m| m.role());
    let crew = &scene.crew;
    assert_eq!(role_of(&crew.owner), Some(TeamRole::Owner));
    assert_eq!(role_of(&crew.admin), Some(TeamRole::Admin));
    assert_eq!(role_of(&crew.member), Some(TeamRole::Member));
    assert_eq!(role_of(&crew.finance), Some(TeamRole::Finance));
    assert_eq!(role_of(&crew.outsider), None);
}
