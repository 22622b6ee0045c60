//! Teams: the owner's rules, deletion, paging, and invalid input.

mod common;

use common::*;
use tandem_platform::testing::TestDb;
use tandem_proto::identity::v1::{self as pb, Permission, TeamRole};
use tonic::Code;

backend_tests!(
    owner_rules_and_role_changes,
    team_deletion,
    lists_page_through_every_item,
    invalid_input_names_the_field
);

async fn owner_rules_and_role_changes(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let admin = app.invite_newcomer(&owner, &team.id, "admin@acme.example", TeamRole::Admin).await;
    let member = app.invite_newcomer(&owner, &team.id, "member@acme.example", TeamRole::Member).await;
    let set_role = |by: &Session, user: &Session, role: TeamRole| {
        let request = by.req(pb::UpdateMemberRoleRequest {
            team_id: team.id.clone(),
            user_id: user.user_id.clone(),
            role: role.into(),
        });
        let mut client = app.teams();
        async move { client.update_member_role(request).await }
    };
    let remove = |by: &Session, user: &Session| {
        let request =
            by.req(pb::RemoveMemberRequest { team_id: team.id.clone(), user_id: user.user_id.clone() });
        let mut client = app.teams();
        async move { client.remove_member(request).await }
    };
    let leave = |who: &Session| {
        let request = who.req(pb::LeaveTeamRequest { team_id: team.id.clone() });
        let mut client = app.teams();
        async move { client.leave_team(request).await }
    };

    // The owner is never demoted, removed, nor leaves; no one is made owner.
    for by in [&owner, &admin] {
        for role in [TeamRole::Admin, TeamRole::Member, TeamRole::Finance] {
            set_role(by, &owner, role).await.refused(Code::FailedPrecondition, "OWNER_IMMUTABLE");
        }
        remove(by, &owner).await.refused(Code::FailedPrecondition, "OWNER_IMMUTABLE");
        set_role(by, &member, TeamRole::Owner).await.refused(Code::FailedPrecondition, "OWNER_IMMUTABLE");
    }
    leave(&owner).await.refused(Code::FailedPrecondition, "OWNER_CANNOT_LEAVE");
    // A member manages no one, not even the owner's role.
    set_role(&member, &owner, TeamRole::Member).await.fails(Code::PermissionDenied);
    set_role(&member, &member, TeamRole::Admin).await.fails(Code::PermissionDenied);
    remove(&member, &admin).await.fails(Code::PermissionDenied);
    let team_now = app.get_team(&member, &team.id).await.must().team.unwrap();
    assert_eq!(team_now.owner_user_id, owner.user_id);

    // An admin promotes a member to admin: the new rights apply at once.
    assert!(!app.check_permission(&member, &member.user_id, &team.id, Permission::MembersManage).await);
    let promoted = set_role(&admin, &member, TeamRole::Admin).await.must().member.unwrap();
    assert_eq!((promoted.user_id.as_str(), promoted.role()), (member.user_id.as_str(), TeamRole::Admin));
    assert!(app.check_permission(&member, &member.user_id, &team.id, Permission::MembersManage).await);
    app.invitations()
        .list_invitations(
            member.req(pb::ListInvitationsRequest { team_id: team.id.clone(), ..Default::default() }),
        )
        .await
        .must();
    // ... and demotes to finance: rewards withdrawal, no more member management.
    set_role(&admin, &member, TeamRole::Finance).await.must();
    assert!(app.check_permission(&member, &member.user_id, &team.id, Permission::RewardsWithdraw).await);
    assert!(!app.check_permission(&member, &member.user_id, &team.id, Permission::MembersManage).await);
    set_role(&admin, &member, TeamRole::Unspecified).await.invalid(&["role"]);

    // Removal: the removed user no longer sees the team.
    remove(&admin, &member).await.must();
    assert!(!app.check_permission(&member, &member.user_id, &team.id, Permission::TeamView).await);
    app.get_team(&member, &team.id).await.fails(Code::NotFound);
    remove(&admin, &member).await.fails(Code::NotFound);
    set_role(&admin, &member, TeamRole::Member).await.fails(Code::NotFound);

    // The channel manager is the vendor's to assign: staff admins and channel managers.
    let manager = app.create_staff("manager@vendor.example", pb::StaffRole::ChannelManager).await;
    let assign = |by: &Session, manager_id: &str| {
        let request = by.req(pb::UpdateTeamRequest {
            team: Some(pb::Team {
                id: team.id.clone(),
                channel_manager_user_id: manager_id.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["channel_manager_user_id".into()] }),
        });
        let mut client = app.teams();
        async move { client.update_team(request).await }
    };
    assign(&owner, &manager.user_id).await.fails(Code::PermissionDenied);
    assign(&app.admin, &owner.user_id).await.invalid(&["team.channel_manager_user_id"]);
    let assigned = assign(&manager, &manager.user_id).await.must().team.unwrap();
    assert_eq!(assigned.channel_manager_user_id, manager.user_id);
    assert_eq!(assigned.name, team.name, "fields outside the mask are kept");
    let seen = app.get_team(&owner, &team.id).await.must().team.unwrap();
    assert_eq!(seen.channel_manager_user_id, manager.user_id);
    assign(&app.admin, "").await.must();

    // An admin may leave; then it is an outsider.
    leave(&admin).await.must();
    app.get_team(&admin, &team.id).await.fails(Code::NotFound);
    leave(&admin).await.fails(Code::NotFound);
    let members = app.members(&owner, &team.id).await;
    assert_eq!(
        members.iter().map(|m| (m.user_id.as_str(), m.role())).collect::<Vec<_>>(),
        [(owner.user_id.as_str(), TeamRole::Owner)]
    );
}

async fn team_deletion(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let member = app.add_member(&owner, &team.id, "member@acme.example").await;
    // Things hanging on the team, which go with it.
    let pending = app.create_invitation(&owner, &team.id, "", TeamRole::Member).await;
    app.domains()
        .add_domain(
            owner.req(pb::AddDomainRequest { team_id: team.id.clone(), domain: "acme.example".into() }),
        )
        .await
        .must();
    let program = app.create_program("Resellers").await;
    app.programs()
        .join_program(
            owner.req(pb::JoinProgramRequest { program_id: program.id.clone(), team_id: team.id.clone() }),
        )
        .await
        .must();
    let delete = || {
        let request = owner.req(pb::DeleteTeamRequest { team_id: team.id.clone() });
        let mut client = app.teams();
        async move { client.delete_team(request).await }
    };

    // Another member remains.
    delete().await.refused(Code::FailedPrecondition, "TEAM_HAS_MEMBERS");
    app.teams()
        .remove_member(
            owner.req(pb::RemoveMemberRequest { team_id: team.id.clone(), user_id: member.user_id }),
        )
        .await
        .must();
    // The team holds rewards, says commissions.
    app.rewards.set_holds_rewards(true);
    delete().await.refused(Code::FailedPrecondition, "TEAM_HOLDS_REWARDS");
    app.get_team(&owner, &team.id).await.must();
    app.rewards.set_holds_rewards(false);
    assert!(app.check_permission(&owner, &owner.user_id, &team.id, Permission::TeamView).await);
    delete().await.must();

    // Gone for good, and with it what hung on it.
    app.get_team(&owner, &team.id).await.fails(Code::NotFound);
    app.get_team(&app.admin, &team.id).await.fails(Code::NotFound);
    delete().await.fails(Code::NotFound);
    assert!(!app.check_permission(&owner, &owner.user_id, &team.id, Permission::TeamView).await);
    let teams = app.teams().list_teams(owner.req(pb::ListTeamsRequest::default())).await.must().teams;
    assert!(teams.iter().all(|t| t.id != team.id));
    app.accept_as_newcomer(&pending.token, "late@acme.example")
        .await
        .refused(Code::FailedPrecondition, "TOKEN_INVALID");
    let access = app
        .programs()
        .check_program_access(owner.req(pb::CheckProgramAccessRequest {
            program_id: program.id.clone(),
            user_id: owner.user_id.clone(),
        }))
        .await
        .must();
    assert!(!access.allowed);
    // The domain is free again.
    let (_, other_team, other) = app.sign_up("other@elsewhere.example").await;
    app.domains()
        .add_domain(other.req(pb::AddDomainRequest { team_id: other_team.id, domain: "acme.example".into() }))
        .await
        .must();
}

async fn lists_page_through_every_item(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, first, owner) = app.sign_up("owner@acme.example").await;
    let (other_user, foreign, other) = app.sign_up("other@elsewhere.example").await;
    let team_id = &first.id;
    let mut team_ids = vec![first.id.clone()];
    let mut invitation_ids = Vec::new();
    for name in ["Second", "Third", "Fourth"] {
        let team =
            app.teams().create_team(owner.req(pb::CreateTeamRequest { name: name.into() })).await.must();
        let team = team.team.unwrap();
        assert_eq!(team.owner_user_id, owner.user_id);
        // Each invitation of an existing user lands in its inbox.
        app.create_invitation(&owner, &team.id, &other.email, TeamRole::Member).await;
        team_ids.push(team.id);
    }
    let mut member_ids = vec![owner.user_id.clone()];
    for i in 0..3 {
        member_ids.push(app.add_member(&owner, team_id, &format!("m{i}@acme.example")).await.user_id);
    }
    let mut user_ids = vec![app.admin.user_id.clone(), other_user.id.clone()];
    user_ids.extend(member_ids.iter().cloned());
    let mut domains = Vec::new();
    let mut program_ids = Vec::new();
    let mut application_ids = Vec::new();
    for i in 0..3 {
        invitation_ids.push(app.create_invitation(&owner, team_id, "", TeamRole::Member).await.id);
        let domain = format!("d{i}.acme.example");
        let request = pb::AddDomainRequest { team_id: team_id.clone(), domain: domain.clone() };
        app.domains().add_domain(owner.req(request)).await.must();
        domains.push(domain);
        let program = app.create_program(&format!("Program {i}")).await;
        let request = pb::SubmitApplicationRequest {
            company_name: format!("Company {i}"),
            contact_email: owner.email.clone(),
            address: "1 Main Street".into(),
            primary_expertise: "Reselling".into(),
            experience: "Years".into(),
            terms_accepted: true,
            program_id: program.id.clone(),
            plan: String::new(),
        };
        let application = app.applications().submit_application(owner.req(request)).await.must();
        application_ids.push(application.application.unwrap().id);
        program_ids.push(program.id);
    }
    let all_invitations = app
        .invitations()
        .list_invitations(
            owner.req(pb::ListInvitationsRequest { team_id: team_id.clone(), ..Default::default() }),
        )
        .await
        .must()
        .invitations;
    assert_eq!(all_invitations.len(), 6, "three accepted by the members, three open");

    for size in [1, 2, 0] {
        let limit = if size == 0 { 50 } else { size as usize };
        let context = format!("page_size {size}");
        let teams = walk(
            limit,
            pages!(app, teams.list_teams, owner, |page_token| pb::ListTeamsRequest { page_size: size, page_token },
                teams => |t| t.id.clone()),
        )
        .await;
        assert_eq!(distinct(teams), distinct(team_ids.clone()), "ListTeams, {context}");
        let members = walk(
            limit,
            pages!(app, teams.list_members, owner,
                |page_token| pb::ListMembersRequest { team_id: team_id.clone(), page_size: size, page_token },
                members => |m| m.user_id.clone()),
        )
        .await;
        assert_eq!(distinct(members), distinct(member_ids.clone()), "ListMembers, {context}");
        let invitations = walk(
            limit,
            pages!(app, invitations.list_invitations, owner,
                |page_token| pb::ListInvitationsRequest { team_id: team_id.clone(), page_size: size, page_token },
                invitations => |i| i.id.clone()),
        )
        .await;
        assert_eq!(
            distinct(invitations),
            distinct(all_invitations.iter().map(|i| i.id.clone())),
            "{context}"
        );
        let listed_domains = walk(
            limit,
            pages!(app, domains.list_domains, owner,
                |page_token| pb::ListDomainsRequest { team_id: team_id.clone(), page_size: size, page_token },
                domains => |d| d.domain.clone()),
        )
        .await;
        assert_eq!(distinct(listed_domains), distinct(domains.clone()), "ListDomains, {context}");
        let programs = walk(
            limit,
            pages!(app, programs.list_programs, owner,
                |page_token| pb::ListProgramsRequest { page_size: size, page_token },
                programs => |p| p.id.clone()),
        )
        .await;
        assert_eq!(distinct(programs), distinct(program_ids.clone()), "ListPrograms, {context}");
        let applications = walk(
            limit,
            pages!(app, applications.list_applications, owner,
                |page_token| pb::ListApplicationsRequest { page_size: size, page_token, ..Default::default() },
                applications => |a| a.id.clone()),
        )
        .await;
        assert_eq!(distinct(applications), distinct(application_ids.clone()), "ListApplications, {context}");
        let notifications = walk(
            limit,
            pages!(app, notifications.list_notifications, other,
                |page_token| pb::ListNotificationsRequest { page_size: size, page_token, unread_only: false },
                notifications => |n| n.id.clone()),
        )
        .await;
        assert_eq!(notifications.len(), 3, "ListNotifications, {context}: {notifications:?}");
        let mut newest_first = notifications.clone();
        newest_first.sort_by(|a, b| b.cmp(a));
        assert_eq!(notifications, newest_first, "the inbox lists the newest first");
        let users = walk(
            limit,
            pages!(app, staff.list_users, app.admin,
                |page_token| pb::ListUsersRequest { page_size: size, page_token },
                users => |u| u.id.clone()),
        )
        .await;
        assert_eq!(distinct(users), distinct(user_ids.clone()), "ListUsers, {context}");
    }
    // Vendor staff list every team.
    let all = walk(
        1,
        pages!(app, teams.list_teams, app.admin, |page_token| pb::ListTeamsRequest { page_size: 1, page_token },
            teams => |t| t.id.clone()),
    )
    .await;
    let all = distinct(all);
    assert_eq!(all.len(), team_ids.len() + 1);
    assert!(all.contains(&foreign.id));
    app.staff().list_users(owner.req(pb::ListUsersRequest::default())).await.fails(Code::PermissionDenied);
}

async fn invalid_input_names_the_field(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let long = "x".repeat(201);
    let sign_up = |email: &str, password: &str, display_name: &str, team_name: &str| {
        let request = pb::SignUpRequest {
            email: email.into(),
            password: password.into(),
            display_name: display_name.into(),
            team_name: team_name.into(),
        };
        let mut client = app.auth();
        async move { client.sign_up(request).await }
    };

    // Sign-up: every violation at once, each naming its field.
    sign_up("not-an-email", "short", "", &long).await.invalid(&[
        "email",
        "password",
        "display_name",
        "team_name",
    ]);
    for email in ["", "a@b", "two@@example.com", "sp ace@example.com"] {
        sign_up(email, PASSWORD, "Ann", "").await.invalid(&["email"]);
    }
    for display_name in ["", "   ", long.as_str(), "bell\u{7}"] {
        sign_up("ann@example.com", PASSWORD, display_name, "").await.invalid(&["display_name"]);
    }
    sign_up("ann@example.com", &"p".repeat(7), "Ann", "").await.invalid(&["password"]);
    sign_up("ann@example.com", &"p".repeat(129), "Ann", "").await.invalid(&["password"]);
    // At the limits: 200 characters (not bytes) and an 8-character password pass.
    sign_up("ann@example.com", "12345678", &"é".repeat(200), &"é".repeat(200)).await.must();

    // Team names.
    let create = |name: &str| {
        let request = owner.req(pb::CreateTeamRequest { name: name.into() });
        let mut client = app.teams();
        async move { client.create_team(request).await }
    };
    for name in ["", "  ", long.as_str()] {
        create(name).await.invalid(&["name"]);
    }
    create(&"n".repeat(200)).await.must();
    let update = |team: pb::Team, paths: &[&str]| {
        let request = owner.req(pb::UpdateTeamRequest {
            team: Some(team),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        });
        let mut client = app.teams();
        async move { client.update_team(request).await }
    };
    let with_name = |name: &str| pb::Team { id: team.id.clone(), name: name.into(), ..Default::default() };
    update(with_name(&long), &["name"]).await.invalid(&["team.name"]);
    update(with_name(""), &["name"]).await.invalid(&["team.name"]);
    update(with_name("Fine"), &[]).await.invalid(&["update_mask"]);
    update(with_name("Fine"), &["owner_user_id"]).await.invalid(&["update_mask"]);
    update(
        pb::Team { id: team.id.clone(), rewards_visibility: 99, ..Default::default() },
        &["rewards_visibility"],
    )
    .await
    .invalid(&["team.rewards_visibility"]);
    update(pb::Team { id: "nope".into(), name: "Fine".into(), ..Default::default() }, &["name"])
        .await
        .invalid(&["team.id"]);
    app.teams()
        .update_team(owner.req(pb::UpdateTeamRequest { team: None, update_mask: None }))
        .await
        .invalid(&["team"]);

    // Unknown enum values.
    let member = app.add_member(&owner, &team.id, "member@acme.example").await;
    for role in [0, 99, -1] {
        app.teams()
            .update_member_role(owner.req(pb::UpdateMemberRoleRequest {
                team_id: team.id.clone(),
                user_id: member.user_id.clone(),
                role,
            }))
            .await
            .invalid(&["role"]);
    }
    for (role, email) in [(99, ""), (TeamRole::Owner as i32, ""), (TeamRole::Member as i32, "not-an-email")] {
        let status = app
            .invitations()
            .create_invitation(owner.req(pb::CreateInvitationRequest {
                team_id: team.id.clone(),
                email: email.into(),
                role,
            }))
            .await
            .fails(Code::InvalidArgument);
        let field = if email.is_empty() { "role" } else { "email" };
        assert_eq!(violations(&status), [field]);
    }

    // Malformed ids, refused before any lookup.
    for id in [
        "",
        "nope",
        "team_123",
        "user_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d",
        "team_0190b2c4e5f67a8b9c0d1e2f3a4b5c6g",
    ] {
        app.teams()
            .get_team(owner.req(pb::GetTeamRequest { team_id: id.into() }))
            .await
            .invalid(&["team_id"]);
    }
    app.teams()
        .remove_member(owner.req(pb::RemoveMemberRequest { team_id: "x".into(), user_id: "y".into() }))
        .await
        .invalid(&["team_id", "user_id"]);
    app.invitations()
        .resend_invitation(owner.req(pb::ResendInvitationRequest { invitation_id: team.id.clone() }))
        .await
        .invalid(&["invitation_id"]);
    app.access()
        .check_permission(owner.req(pb::CheckPermissionRequest {
            user_id: "me".into(),
            team_id: team.id.clone(),
            permission: Permission::TeamView.into(),
        }))
        .await
        .invalid(&["user_id"]);
    app.domains()
        .add_domain(
            owner.req(pb::AddDomainRequest { team_id: team.id.clone(), domain: "not a domain".into() }),
        )
        .await
        .invalid(&["domain"]);
    app.programs()
        .join_program(
            owner.req(pb::JoinProgramRequest { program_id: "prog_x".into(), team_id: String::new() }),
        )
        .await
        .invalid(&["program_id"]);

    // Paging parameters.
    app.teams()
        .list_teams(owner.req(pb::ListTeamsRequest { page_size: -1, page_token: String::new() }))
        .await
        .invalid(&["page_size"]);
    app.teams()
        .list_members(owner.req(pb::ListMembersRequest {
            team_id: team.id.clone(),
            page_size: -5,
            page_token: String::new(),
        }))
        .await
        .invalid(&["page_size"]);
    for token in ["garbage!", "bm9wZQ", "djE6"] {
        app.teams()
            .list_teams(owner.req(pb::ListTeamsRequest { page_size: 1, page_token: token.into() }))
            .await
            .invalid(&["page_token"]);
        app.notifications()
            .list_notifications(
                owner.req(pb::ListNotificationsRequest { page_token: token.into(), ..Default::default() }),
            )
            .await
            .invalid(&["page_token"]);
    }
    // A huge page size is capped, not refused.
    app.teams()
        .list_teams(owner.req(pb::ListTeamsRequest { page_size: i32::MAX, page_token: String::new() }))
        .await
        .must();

    // Refusals by a business rule carry their reason in an ErrorInfo.
    let status = app
        .teams()
        .leave_team(owner.req(pb::LeaveTeamRequest { team_id: team.id.clone() }))
        .await
        .refused(Code::FailedPrecondition, "OWNER_CANNOT_LEAVE");
    assert!(violations(&status).is_empty());
}
