//! Invitations: by email and by direct link, single use, revoke, resend, expiry, statuses,
//! hashed storage, and concurrent acceptance.

mod common;

use common::*;
use tandem_identity::domain::secrets::hash_token;
use tandem_platform::testing::TestDb;
use tandem_proto::identity::v1::{self as pb, InvitationStatus, TeamRole};
use tonic::Code;

backend_tests!(invitations_by_email_and_by_link, invitation_lifecycle, concurrent_accepts_admit_one);

async fn invitations_by_email_and_by_link(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;

    // By email: the token goes out in an email, and is in the creating response only.
    let invitation = app.create_invitation(&owner, &team.id, "New@Acme.example", TeamRole::Finance).await;
    assert_eq!(invitation.email, "new@acme.example");
    assert_eq!(invitation.status(), InvitationStatus::Pending);
    assert_eq!(invitation.role(), TeamRole::Finance);
    assert_eq!(invitation.invited_by_user_id, owner.user_id);
    assert!(!invitation.token.is_empty());
    let week = invitation.expire_time.unwrap().seconds - invitation.create_time.unwrap().seconds;
    assert_eq!(week, 7 * 24 * 3600);
    let emails = app.emails_to("new@acme.example");
    assert_eq!(emails.len(), 1);
    assert!(emails[0].subject.contains(&team.name), "{}", emails[0].subject);
    assert_eq!(app.emailed_token("new@acme.example", "/invitations/accept"), invitation.token);

    // A newcomer signs up by accepting: display name and password required.
    app.invitations()
        .accept_invitation(pb::AcceptInvitationRequest {
            token: invitation.token.clone(),
            ..Default::default()
        })
        .await
        .invalid(&["display_name", "password"]);
    let member = app.accept_as_newcomer(&invitation.token, "").await.must().member.unwrap();
    assert_eq!((member.email.as_str(), member.role()), ("new@acme.example", TeamRole::Finance));
    assert_eq!(member.team_id, team.id);
    let newcomer = app.login("new@acme.example", PASSWORD).await;
    assert_eq!(newcomer.user_id, member.user_id);
    let me = app.auth().get_current_user(newcomer.req(pb::GetCurrentUserRequest {})).await.must();
    assert!(me.user.unwrap().email_verified, "holding the emailed token proves the address");
    assert_eq!(me.memberships.len(), 1, "a newcomer by invitation gets no default team");

    // Single use.
    app.accept_signed_in(&owner, &invitation.token)
        .await
        .refused(Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");
    app.accept_as_newcomer(&invitation.token, "")
        .await
        .refused(Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");

    // An existing user, invited by email, accepts while signed in (and is told in its inbox).
    let (_, _, existing) = app.sign_up("existing@elsewhere.example").await;
    let invitation =
        app.create_invitation(&owner, &team.id, "existing@elsewhere.example", TeamRole::Admin).await;
    let inbox = app
        .notifications()
        .list_notifications(existing.req(pb::ListNotificationsRequest::default()))
        .await
        .must();
    assert!(inbox.notifications.iter().any(|n| n.kind == "team.invitation" && n.subject_id == team.id));
    // Signing up again with the address of an account is refused.
    app.accept_as_newcomer(&invitation.token, "").await.refused(Code::AlreadyExists, "ALREADY_EXISTS");
    // Another signed-in user cannot take it.
    let (_, _, intruder) = app.sign_up("intruder@elsewhere.example").await;
    app.accept_signed_in(&intruder, &invitation.token)
        .await
        .refused(Code::FailedPrecondition, "INVITATION_EMAIL_MISMATCH");
    // Nor vendor staff.
    app.accept_signed_in(&app.admin, &invitation.token).await.fails(Code::PermissionDenied);
    let view = tandem_proto::identity::v1::Permission::TeamView;
    assert!(!app.check_permission(&existing, &existing.user_id, &team.id, view).await);
    let member = app.accept_signed_in(&existing, &invitation.token).await.must().member.unwrap();
    assert!(app.check_permission(&existing, &existing.user_id, &team.id, view).await, "at once");
    assert_eq!((member.user_id.as_str(), member.role()), (existing.user_id.as_str(), TeamRole::Admin));
    // Inviting a member again is a duplicate.
    app.invitations()
        .create_invitation(owner.req(pb::CreateInvitationRequest {
            team_id: team.id.clone(),
            email: "existing@elsewhere.example".into(),
            role: TeamRole::Member.into(),
        }))
        .await
        .refused(Code::AlreadyExists, "ALREADY_MEMBER");

    // By direct link: no email; a newcomer gives its address; the address is not verified.
    let sent = app.mailer.sent().len();
    let link = app.create_invitation(&owner, &team.id, "", TeamRole::Member).await;
    assert_eq!(link.email, "");
    assert_eq!(app.mailer.sent().len(), sent, "a direct link sends no invitation email");
    app.accept_as_newcomer(&link.token, "").await.invalid(&["email"]);
    app.accept_as_newcomer(&link.token, "not-an-email").await.invalid(&["email"]);
    let member = app.accept_as_newcomer(&link.token, "Linked@Acme.example").await.must().member.unwrap();
    assert_eq!((member.email.as_str(), member.role()), ("linked@acme.example", TeamRole::Member));
    let linked = app.login("linked@acme.example", PASSWORD).await;
    let me = app.auth().get_current_user(linked.req(pb::GetCurrentUserRequest {})).await.must();
    assert!(!me.user.unwrap().email_verified);
    app.accept_signed_in(&intruder, &link.token)
        .await
        .refused(Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");
    // A link accepted by a member: already a member.
    let link = app.create_invitation(&owner, &team.id, "", TeamRole::Member).await;
    app.accept_signed_in(&linked, &link.token).await.refused(Code::AlreadyExists, "ALREADY_MEMBER");
    // The link is still open for someone else.
    app.accept_signed_in(&intruder, &link.token).await.must();

    app.accept_as_newcomer("no-such-token", "x@acme.example")
        .await
        .refused(Code::FailedPrecondition, "TOKEN_INVALID");
    let roles: Vec<_> =
        app.members(&owner, &team.id).await.iter().map(|m| (m.email.clone(), m.role())).collect();
    assert_eq!(roles.len(), 5, "{roles:?}");
}

async fn invitation_lifecycle(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let (_, _, joiner) = app.sign_up("joiner@elsewhere.example").await;
    let revoke = |id: &str| {
        let request = owner.req(pb::RevokeInvitationRequest { invitation_id: id.into() });
        let mut client = app.invitations();
        async move { client.revoke_invitation(request).await }
    };
    let resend = |id: &str| {
        let request = owner.req(pb::ResendInvitationRequest { invitation_id: id.into() });
        let mut client = app.invitations();
        async move { client.resend_invitation(request).await }
    };
    let mut tokens = Vec::new();

    // Revoked: cannot be accepted nor resent; revoking again changes nothing.
    let revoked = app.create_invitation(&owner, &team.id, "", TeamRole::Member).await;
    tokens.push(revoked.token.clone());
    let answer = revoke(&revoked.id).await.must().invitation.unwrap();
    assert_eq!(answer.status(), InvitationStatus::Revoked);
    assert!(answer.token.is_empty());
    app.accept_signed_in(&joiner, &revoked.token)
        .await
        .refused(Code::FailedPrecondition, "INVITATION_REVOKED");
    assert_eq!(revoke(&revoked.id).await.must().invitation.unwrap().status(), InvitationStatus::Revoked);
    resend(&revoked.id).await.refused(Code::FailedPrecondition, "INVITATION_REVOKED");

    // Resent: a fresh token by email; the previous one stops working.
    let resent = app.create_invitation(&owner, &team.id, "resent@acme.example", TeamRole::Member).await;
    tokens.push(resent.token.clone());
    let again = resend(&resent.id).await.must().invitation.unwrap();
    tokens.push(again.token.clone());
    assert_eq!(again.id, resent.id);
    assert_eq!(again.status(), InvitationStatus::Pending);
    assert!(!again.token.is_empty() && again.token != resent.token);
    assert_eq!(app.emails_to("resent@acme.example").len(), 2);
    assert_eq!(app.emailed_token("resent@acme.example", "/invitations/accept"), again.token);
    app.accept_as_newcomer(&resent.token, "").await.refused(Code::FailedPrecondition, "TOKEN_INVALID");
    app.accept_as_newcomer(&again.token, "").await.must();
    // Accepted: neither revoked nor resent.
    revoke(&resent.id).await.refused(Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");
    resend(&resent.id).await.refused(Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");

    // Expired (seven days are made to pass in the database): refused, then revived by a resend.
    let expired = app.create_invitation(&owner, &team.id, "", TeamRole::Finance).await;
    tokens.push(expired.token.clone());
    sqlx::query("UPDATE invitations SET expire_time = $1 WHERE id = $2")
        .bind(expired.create_time.unwrap().seconds * 1_000_000 - 1)
        .bind(&expired.id)
        .execute(&mut *app.db.acquire().await.unwrap())
        .await
        .unwrap();
    app.accept_signed_in(&joiner, &expired.token)
        .await
        .refused(Code::FailedPrecondition, "INVITATION_EXPIRED");
    let pending = app.create_invitation(&owner, &team.id, "pending@acme.example", TeamRole::Admin).await;
    tokens.push(pending.token.clone());

    // The list, with each status, and no tokens.
    let listed = app
        .invitations()
        .list_invitations(
            owner.req(pb::ListInvitationsRequest { team_id: team.id.clone(), ..Default::default() }),
        )
        .await
        .must()
        .invitations;
    let status_of = |id: &str| listed.iter().find(|i| i.id == id).map(|i| i.status());
    assert_eq!(listed.len(), 4);
    assert_eq!(status_of(&revoked.id), Some(InvitationStatus::Revoked));
    assert_eq!(status_of(&resent.id), Some(InvitationStatus::Accepted));
    assert_eq!(status_of(&expired.id), Some(InvitationStatus::Expired));
    assert_eq!(status_of(&pending.id), Some(InvitationStatus::Pending));
    assert!(listed.iter().all(|i| i.token.is_empty()), "tokens are shown once");
    let accepted = listed.iter().find(|i| i.id == resent.id).unwrap();
    assert!(accepted.accepted_by_user_id.starts_with("user_"));

    let revived = resend(&expired.id).await.must().invitation.unwrap();
    tokens.push(revived.token.clone());
    assert_eq!(revived.status(), InvitationStatus::Pending);
    let member = app.accept_signed_in(&joiner, &revived.token).await.must().member.unwrap();
    assert_eq!(member.role(), TeamRole::Finance);

    // Tokens are stored hashed: no plain token anywhere in the table.
    let rows: Vec<(String, String, String, String, String, String)> =
        sqlx::query_as("SELECT id, team_id, email, role, token_hash, invited_by_user_id FROM invitations")
            .fetch_all(&mut *app.db.acquire().await.unwrap())
            .await
            .unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let text = format!("{row:?}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "a plain token is stored: {row:?}");
        }
    }
    let pending_hash = rows.iter().find(|r| r.0 == pending.id).map(|r| r.4.clone());
    assert_eq!(pending_hash, Some(hash_token(&pending.token)));
}

async fn concurrent_accepts_admit_one(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(app.sign_up(&format!("user{i}@elsewhere.example")).await.2);
    }

    // Ten signed-in users race for one link.
    let link = app.create_invitation(&owner, &team.id, "", TeamRole::Member).await;
    let outcomes =
        futures::future::join_all(users.iter().map(|u| app.accept_signed_in(u, &link.token))).await;
    let winners: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0].get_ref().member.clone().unwrap().user_id;
    for outcome in outcomes {
        if let Err(status) = outcome {
            assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
            assert_eq!(reason(&status).as_deref(), Some("INVITATION_ALREADY_ACCEPTED"));
        }
    }
    let members: Vec<_> = app.members(&owner, &team.id).await.into_iter().map(|m| m.user_id).collect();
    assert_eq!(distinct(members), distinct([owner.user_id.clone(), winner.clone()]));

    // Ten newcomers race for another: one account is made, the others are rolled back.
    let link = app.create_invitation(&owner, &team.id, "", TeamRole::Member).await;
    let emails: Vec<String> = (0..10).map(|i| format!("new{i}@acme.example")).collect();
    let outcomes =
        futures::future::join_all(emails.iter().map(|e| app.accept_as_newcomer(&link.token, e))).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    let mut accounts = 0;
    for email in &emails {
        let answer = app
            .auth()
            .authenticate(pb::AuthenticateRequest { email: email.clone(), password: PASSWORD.into() })
            .await;
        accounts += usize::from(answer.is_ok());
    }
    assert_eq!(accounts, 1, "only the winner has an account");
    assert_eq!(app.members(&owner, &team.id).await.len(), 3);
    let listed = app
        .invitations()
        .list_invitations(
            owner.req(pb::ListInvitationsRequest { team_id: team.id.clone(), ..Default::default() }),
        )
        .await
        .must()
        .invitations;
    let first = listed.iter().find(|i| i.accepted_by_user_id == winner);
    assert!(first.is_some_and(|i| i.status() == InvitationStatus::Accepted));
}
