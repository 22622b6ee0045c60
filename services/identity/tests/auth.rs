//! Users and tokens: sign-up, authentication, refresh, keys, forged tokens, deactivation.

mod common;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tandem_platform::{
    auth::{AUDIENCE, Claims, ISSUER},
    testing::TestDb,
};
use tandem_proto::identity::v1::{self as pb, StaffRole, TeamRole};
use tonic::Code;

backend_tests!(
    signing_key_rotation_logs_nobody_out,
    sign_up_authenticate_refresh,
    forged_tokens_are_refused,
    deactivation_and_reactivation,
    concurrent_sign_ups_with_one_email
);

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(sub: &str, iat: i64, exp: i64) -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: sub.into(),
        iat,
        exp,
        jti: "tok_test".into(),
        staff: None,
        svc: None,
    }
}

async fn sign_up_authenticate_refresh(db: TestDb) {
    let app = TestApp::spawn(db).await;

    // Sign-up: a user and a default team it owns.
    let (user, team, ann) = app.sign_up("Ann@Example.com").await;
    assert!(user.id.starts_with("user_"));
    assert_eq!(user.email, "ann@example.com", "emails are stored normalised");
    assert!(user.active && !user.email_verified);
    assert_eq!(user.staff_role(), StaffRole::Unspecified);
    assert_eq!(team.owner_user_id, user.id);
    assert_eq!(team.name, "Ann's team");
    assert_eq!(team.rewards_visibility(), pb::RewardsVisibility::Show);
    assert_eq!(ann.user_id, user.id);
    let named = app
        .auth()
        .sign_up(pb::SignUpRequest {
            email: "bob@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Bob".into(),
            team_name: "Bob & Co".into(),
        })
        .await
        .must();
    assert_eq!(named.team.unwrap().name, "Bob & Co");

    // The same email again, in another case: ALREADY_EXISTS.
    app.auth()
        .sign_up(pb::SignUpRequest {
            email: "ANN@example.com".into(),
            password: PASSWORD.into(),
            display_name: "Ann again".into(),
            team_name: String::new(),
        })
        .await
        .refused(Code::AlreadyExists, "ALREADY_EXISTS");

    // Authenticate: tokens; wrong password and unknown email alike are UNAUTHENTICATED.
    let tokens = app
        .auth()
        .authenticate(pb::AuthenticateRequest { email: "ann@example.com".into(), password: PASSWORD.into() })
        .await
        .must();
    assert_eq!(tokens.token_type, "Bearer");
    assert!(tokens.expires_in > 0 && tokens.expires_in <= 3600);
    assert_eq!(tokens.access_token.split('.').count(), 3, "a JWT");
    assert!(!tokens.refresh_token.is_empty());
    for (email, password) in [("ann@example.com", "wrong password"), ("nobody@example.com", PASSWORD)] {
        app.auth()
            .authenticate(pb::AuthenticateRequest { email: email.into(), password: password.into() })
            .await
            .refused(Code::Unauthenticated, "INVALID_CREDENTIALS");
    }

    // The access token works on an authenticated RPC; no token does not.
    app.teams().list_teams(bearer(&tokens.access_token, pb::ListTeamsRequest::default())).await.must();
    app.teams().list_teams(pb::ListTeamsRequest::default()).await.fails(Code::Unauthenticated);
    app.auth().get_current_user(pb::GetCurrentUserRequest {}).await.fails(Code::Unauthenticated);

    // Refresh rotates: new tokens, and the presented refresh token is used up.
    let refreshed = app
        .auth()
        .refresh_token(pb::RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() })
        .await
        .must();
    assert_ne!(refreshed.refresh_token, tokens.refresh_token);
    app.teams().list_teams(bearer(&refreshed.access_token, pb::ListTeamsRequest::default())).await.must();
    app.auth()
        .refresh_token(pb::RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() })
        .await
        .refused(Code::FailedPrecondition, "TOKEN_INVALID");
    app.auth()
        .refresh_token(pb::RefreshTokenRequest { refresh_token: "made-up".into() })
        .await
        .refused(Code::FailedPrecondition, "TOKEN_INVALID");
    app.auth().refresh_token(pb::RefreshTokenRequest { refresh_token: refreshed.refresh_token }).await.must();

    // The published key: Ed25519, the one the server signs with.
    let jwks = app.auth().get_jwks(pb::GetJwksRequest {}).await.must();
    assert_eq!(jwks.keys.len(), 1);
    let jwk = &jwks.keys[0];
    assert_eq!((jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str()), ("OKP", "Ed25519", "EdDSA"));
    assert_eq!(jwk.r#use, "sig");
    assert_eq!(URL_SAFE_NO_PAD.decode(&jwk.x).expect("base64url x").len(), 32);
    let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(jwk.kid.as_str()));

    // The current user, with its memberships: its own team, and one it was invited to.
    let (_, _, cat) = app.sign_up("cat@example.com").await;
    let cat_team = app.teams().list_teams(cat.req(pb::ListTeamsRequest::default())).await.must().teams;
    let invitation = app.create_invitation(&cat, &cat_team[0].id, "", TeamRole::Finance).await;
    app.accept_signed_in(&ann, &invitation.token).await.must();
    let me = app.auth().get_current_user(ann.req(pb::GetCurrentUserRequest {})).await.must();
    assert_eq!(me.user.unwrap().id, ann.user_id);
    let mut memberships: Vec<_> = me.memberships.iter().map(|m| (m.team_id.clone(), m.role())).collect();
    memberships.sort();
    let mut expected = vec![(team.id.clone(), TeamRole::Owner), (cat_team[0].id.clone(), TeamRole::Finance)];
    expected.sort();
    assert_eq!(memberships, expected);

    // Email verification with the token of the sign-up email; single use.
    let token = app.emailed_token("ann@example.com", "/verify-email");
    let verified = app.auth().verify_email(pb::VerifyEmailRequest { token: token.clone() }).await.must();
    assert!(verified.user.unwrap().email_verified);
    app.auth()
        .verify_email(pb::VerifyEmailRequest { token })
        .await
        .refused(Code::FailedPrecondition, "TOKEN_INVALID");

    // Secrets are stored hashed: neither the refresh nor the verification token is in a table.
    let fresh = app.login("ann@example.com", PASSWORD).await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&mut *app.db.acquire().await.unwrap())
        .await
        .unwrap();
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|h| !h.contains(&fresh.refresh_token)));
    assert!(stored.contains(&tandem_identity::domain::secrets::hash_token(&fresh.refresh_token)));
}

async fn forged_tokens_are_refused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, _, ann) = app.sign_up("ann@example.com").await;
    let jwk = app.auth().get_jwks(pb::GetJwksRequest {}).await.must().keys.remove(0);
    let now = now_secs();

    // The harness signs like the server: a token it signs for Ann is accepted (the control).
    let genuine = app.sign(&claims(&ann.user_id, now, now + 60));
    app.teams().list_teams(bearer(&genuine, pb::ListTeamsRequest::default())).await.must();

    let [header, payload, signature]: [&str; 3] =
        ann.access_token.split('.').collect::<Vec<_>>().try_into().expect("three parts");
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let mut claims_json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();

    let mut forged: Vec<(&str, String)> = Vec::new();
    // alg none, no signature.
    let none = serde_json::json!({"alg": "none", "typ": "JWT", "kid": jwk.kid});
    forged.push(("alg none", format!("{}.{payload}.", b64(&none))));
    forged.push(("alg none, signature kept", format!("{}.{payload}.{signature}", b64(&none))));
    // HS256 keyed with the published key, as raw bytes and as its text.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(jwk.kid.clone());
    let ann_claims: Claims = serde_json::from_value(claims_json.clone()).unwrap();
    let x = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap();
    for (name, secret) in
        [("HS256 keyed with x bytes", x.as_slice()), ("HS256 keyed with x text", jwk.x.as_bytes())]
    {
        let token = jsonwebtoken::encode(&hs, &ann_claims, &EncodingKey::from_secret(secret)).unwrap();
        forged.push((name, token));
    }
    // Claims edited, signature kept: another subject, a staff role, a later expiry.
    claims_json["staff"] = "STAFF_ROLE_ADMIN".into();
    forged.push(("staff claim added", format!("{header}.{}.{signature}", b64(&claims_json))));
    claims_json["staff"] = serde_json::Value::Null;
    claims_json["sub"] = app.admin.user_id.clone().into();
    forged.push(("subject changed", format!("{header}.{}.{signature}", b64(&claims_json))));
    // Signed with the right key but not valid: expired, other issuer, other audience, unknown user.
    forged.push(("expired", app.sign(&claims(&ann.user_id, now - 7200, now - 3600))));
    forged.push((
        "other issuer",
        app.sign(&Claims { iss: "someone-else".into(), ..claims(&ann.user_id, now, now + 60) }),
    ));
    forged.push((
        "other audience",
        app.sign(&Claims { aud: "other".into(), ..claims(&ann.user_id, now, now + 60) }),
    ));
    forged.push(("unknown user", app.sign(&claims("user_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d", now, now + 60))));
    // Identity's own service principal is for other services, and a user cannot pose as one.
    forged.push((
        "service principal",
        app.sign(&Claims { svc: Some("identity".into()), ..claims("svc:identity", now, now + 60) }),
    ));
    forged.push((
        "user with a service claim",
        app.sign(&Claims { svc: Some("identity".into()), ..claims(&ann.user_id, now, now + 60) }),
    ));
    // Another Ed25519 key claiming the server's key id.
    let other = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let fresh = claims(&ann.user_id, now, now + 60);
    forged.push(("another key, same kid", sign_eddsa(&other, Some(jwk.kid.clone()), &fresh)));
    forged.push(("no kid", sign_eddsa(&app.signing_key, None, &fresh)));
    forged.push(("garbage", "not-a-jwt".into()));
    forged.push(("empty parts", "..".into()));

    for (what, token) in &forged {
        let status =
            app.teams().list_teams(bearer(token, pb::ListTeamsRequest::default())).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {}", status.message());
    }
    // Garbage in the header itself.
    for value in ["Basic YW5uOnB3", "Bearer", "Bearer ", &ann.access_token, "garbage"] {
        let status = app
            .teams()
            .list_teams(with_authorization(value, pb::ListTeamsRequest::default()))
            .await
            .expect_err(value);
        assert_eq!(status.code(), Code::Unauthenticated, "{value:?}: {}", status.message());
    }
    // A bad token is refused even where no token is needed.
    app.auth().get_jwks(bearer("not-a-jwt", pb::GetJwksRequest {})).await.fails(Code::Unauthenticated);
}

async fn deactivation_and_reactivation(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (pat, team, pat_session) = app.sign_up("pat@example.com").await;
    let (_, _, other) = app.sign_up("other@example.com").await;
    let manager = app.create_staff("manager@vendor.example", StaffRole::ChannelManager).await;
    let deactivate = |id: &str| pb::DeactivateUserRequest { user_id: id.into() };
    let activate = |id: &str| pb::ActivateUserRequest { user_id: id.into() };

    // Only staff admins (de)activate users.
    for who in [&other, &pat_session, &manager] {
        app.staff().deactivate_user(who.req(deactivate(&pat.id))).await.fails(Code::PermissionDenied);
        app.staff().activate_user(who.req(activate(&pat.id))).await.fails(Code::PermissionDenied);
    }
    app.staff().deactivate_user(deactivate(&pat.id)).await.fails(Code::Unauthenticated);
    app.staff().deactivate_user(app.admin.req(deactivate("nope"))).await.invalid(&["user_id"]);
    app.staff()
        .deactivate_user(app.admin.req(deactivate("user_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d")))
        .await
        .fails(Code::NotFound);
    app.staff().deactivate_user(app.admin.req(deactivate(&app.admin.user_id))).await.invalid(&["user_id"]);
    app.teams().list_teams(pat_session.req(pb::ListTeamsRequest::default())).await.must();
    assert!(app.check_permission(&app.admin, &pat.id, &team.id, pb::Permission::TeamView).await);

    // Staff users: created by staff admins only, with a known role, each email once.
    let create = |by: &Session, email: &str, role: i32| {
        let request = by.req(pb::CreateStaffUserRequest {
            email: email.into(),
            display_name: "Staff".into(),
            password: PASSWORD.into(),
            role,
        });
        let mut client = app.staff();
        async move { client.create_staff_user(request).await }
    };
    let finance = StaffRole::Finance as i32;
    create(&manager, "f@vendor.example", finance).await.fails(Code::PermissionDenied);
    create(&pat_session, "f@vendor.example", finance).await.fails(Code::PermissionDenied);
    create(&app.admin, "f@vendor.example", 0).await.invalid(&["role"]);
    create(&app.admin, "manager@vendor.example", finance)
        .await
        .refused(Code::AlreadyExists, "ALREADY_EXISTS");
    let staff = create(&app.admin, "f@vendor.example", finance).await.must().user.unwrap();
    assert_eq!(staff.staff_role(), StaffRole::Finance);
    let me = app.auth().get_current_user(manager.req(pb::GetCurrentUserRequest {})).await.must();
    assert_eq!(me.user.unwrap().staff_role(), StaffRole::ChannelManager);
    assert!(me.memberships.is_empty(), "staff belong to no partner team");
    // The bootstrap admin is created once: starting again with other settings changes nothing.
    app.identity.bootstrap_admin(ADMIN_EMAIL, "another password").await.map_err(tonic::Status::from).unwrap();
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let users = app.staff().list_users(app.admin.req(pb::ListUsersRequest::default())).await.must().users;
    assert_eq!(users.iter().filter(|u| u.staff_role() == StaffRole::Admin).count(), 1);
    let program = app.create_program("Resellers").await;
    let join = pb::JoinProgramRequest { program_id: program.id.clone(), team_id: String::new() };
    app.programs().join_program(pat_session.req(join)).await.must();
    let access = async || {
        let request =
            pb::CheckProgramAccessRequest { program_id: program.id.clone(), user_id: pat.id.clone() };
        app.programs().check_program_access(app.admin.req(request)).await.must().allowed
    };
    assert!(access().await);

    let user = app.staff().deactivate_user(app.admin.req(deactivate(&pat.id))).await.must().user.unwrap();
    assert!(!user.active);

    // The token issued before is refused at once; so are authentication and refresh.
    app.teams()
        .list_teams(pat_session.req(pb::ListTeamsRequest::default()))
        .await
        .fails(Code::Unauthenticated);
    app.auth()
        .authenticate(pb::AuthenticateRequest { email: pat.email.clone(), password: PASSWORD.into() })
        .await
        .refused(Code::FailedPrecondition, "USER_INACTIVE");
    app.auth()
        .refresh_token(pb::RefreshTokenRequest { refresh_token: pat_session.refresh_token.clone() })
        .await
        .fails(Code::FailedPrecondition);
    // A wrong password still says nothing about the account.
    app.auth()
        .authenticate(pb::AuthenticateRequest { email: pat.email.clone(), password: "wrong password".into() })
        .await
        .refused(Code::Unauthenticated, "INVALID_CREDENTIALS");
    // The other services' permission check says no for an inactive user.
    assert!(!app.check_permission(&app.admin, &pat.id, &team.id, pb::Permission::TeamView).await);
    // Staff list them as inactive; they lose program access.
    let users = app.staff().list_users(app.admin.req(pb::ListUsersRequest::default())).await.must().users;
    assert!(!users.iter().find(|u| u.id == pat.id).unwrap().active);
    assert!(!access().await);

    // Reactivation: the user authenticates again; the new token works, the old one stays dead.
    let user = app.staff().activate_user(app.admin.req(activate(&pat.id))).await.must().user.unwrap();
    assert!(user.active);
    let again = app.login(&pat.email, PASSWORD).await;
    app.teams().list_teams(again.req(pb::ListTeamsRequest::default())).await.must();
    assert!(app.check_permission(&again, &pat.id, &team.id, pb::Permission::TeamView).await);
    assert!(access().await);
    app.teams()
        .list_teams(pat_session.req(pb::ListTeamsRequest::default()))
        .await
        .fails(Code::Unauthenticated);
    app.auth()
        .refresh_token(pb::RefreshTokenRequest { refresh_token: pat_session.refresh_token.clone() })
        .await
        .fails(Code::FailedPrecondition);
    app.auth().refresh_token(pb::RefreshTokenRequest { refresh_token: again.refresh_token }).await.must();
}

async fn concurrent_sign_ups_with_one_email(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let sign_ups = (0..5).map(|i| {
        let mut client = app.auth();
        async move {
            client
                .sign_up(pb::SignUpRequest {
                    email: "race@example.com".into(),
                    password: PASSWORD.into(),
                    display_name: format!("Racer {i}"),
                    team_name: String::new(),
                })
                .await
        }
    });
    let outcomes = futures::future::join_all(sign_ups).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if let Err(status) = outcome {
            assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());
        }
    }
    // One user, with one team: the losers left nothing behind.
    let winner = app.login("race@example.com", PASSWORD).await;
    let teams = app.teams().list_teams(app.admin.req(pb::ListTeamsRequest::default())).await.must().teams;
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].owner_user_id, winner.user_id);
}

/// A rotation: identity restarts signing with a new key and the old one configured as a
/// previous key. Both are published; new tokens carry the new `kid`; every token and refresh
/// token issued before keeps working.
async fn signing_key_rotation_logs_nobody_out(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, _, ann) = app.sign_up("ann@example.com").await;
    let old_kid = app.kid();
    let before = jsonwebtoken::decode_header(&ann.access_token).unwrap();
    assert_eq!(before.kid.as_deref(), Some(old_kid.as_str()));

    let app = app.restart_with_new_key().await;
    let new_kid = app.kid();
    assert_ne!(new_kid, old_kid);
    let kids: Vec<String> =
        app.auth().get_jwks(pb::GetJwksRequest {}).await.must().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec![new_kid.clone(), old_kid.clone()], "the current key first, then the previous");

    // The access token signed by the old key still verifies; so does the refresh token.
    app.teams().list_teams(ann.req(pb::ListTeamsRequest::default())).await.must();
    let refreshed = app
        .auth()
        .refresh_token(pb::RefreshTokenRequest { refresh_token: ann.refresh_token.clone() })
        .await
        .must();
    let header = jsonwebtoken::decode_header(&refreshed.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()), "new tokens are signed with the new key");
    app.teams().list_teams(bearer(&refreshed.access_token, pb::ListTeamsRequest::default())).await.must();
    let fresh = app.login("ann@example.com", PASSWORD).await;
    let header = jsonwebtoken::decode_header(&fresh.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));

    // The old key only verifies: a token of an unknown key with the old kid is still refused.
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let now = now_secs();
    let forged = sign_eddsa(&stranger, Some(old_kid), &claims(&ann.user_id, now, now + 60));
    app.teams()
        .list_teams(bearer(&forged, pb::ListTeamsRequest::default()))
        .await
        .fails(Code::Unauthenticated);
}
