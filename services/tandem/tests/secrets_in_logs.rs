//! A full run of `tandem dev` at debug logging: sign-up, sign-in, refresh, invitation, calls
//! with and without valid tokens. Not one log line carries a password, an access or refresh
//! token, an invitation token or the signing key.

mod support;

use support::*;
use tandem_proto::identity::v1::{
    self as pb, auth_service_client::AuthServiceClient, invitation_service_client::InvitationServiceClient,
    team_service_client::TeamServiceClient,
};

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let mut dev = Dev::start();
    let channel = dev.channel().await;
    let password = "a partner's secret password";
    let mut auth = AuthServiceClient::new(channel.clone());
    auth.sign_up(pb::SignUpRequest {
        email: "ann@logs.example".into(),
        password: password.into(),
        display_name: "Ann".into(),
        team_name: String::new(),
    })
    .await
    .expect("sign up");
    let wrong = auth
        .authenticate(pb::AuthenticateRequest {
            email: "ann@logs.example".into(),
            password: "a wrong guess of a password".into(),
        })
        .await;
    assert!(wrong.is_err());
    let tokens = auth
        .authenticate(pb::AuthenticateRequest { email: "ann@logs.example".into(), password: password.into() })
        .await
        .expect("sign in")
        .into_inner();
    let refreshed = auth
        .refresh_token(pb::RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner();
    let team = TeamServiceClient::new(channel.clone())
        .list_teams(authed(&refreshed.access_token, pb::ListTeamsRequest::default()))
        .await
        .expect("list teams")
        .into_inner()
        .teams[0]
        .id
        .clone();
    let invitation = InvitationServiceClient::new(channel.clone())
        .create_invitation(authed(
            &refreshed.access_token,
            pb::CreateInvitationRequest {
                team_id: team,
                email: String::new(),
                role: pb::TeamRole::Member.into(),
            },
        ))
        .await
        .expect("invite")
        .into_inner()
        .invitation
        .unwrap();
    // A refused token is logged as refused, never itself.
    let forged = format!("{}x", refreshed.access_token);
    let refused = TeamServiceClient::new(channel.clone())
        .list_teams(authed(&forged, pb::ListTeamsRequest::default()))
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    let admin = login_admin(&channel).await;

    let key =
        std::fs::read_to_string(dev.data.path().join("state").join("signing-key.pem")).expect("key file");
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let log = dev.stop_and_read_log().await;
    assert!(log.lines().count() > 10, "the run logged: {log}");
    assert!(log.contains("shutting down"), "the log runs to the stop: {log}");
    assert!(log.contains("DEBUG") || log.contains("debug"), "debug logging was on");
    let secrets = [
        ("password", password.to_owned()),
        ("wrong password", "a wrong guess of a password".to_owned()),
        ("admin password", ADMIN_PASSWORD.to_owned()),
        ("access token", tokens.access_token.clone()),
        ("refreshed access token", refreshed.access_token.clone()),
        ("admin access token", admin),
        ("refresh token", tokens.refresh_token.clone()),
        ("new refresh token", refreshed.refresh_token.clone()),
        ("invitation token", invitation.token.clone()),
        ("signing key", key_body),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is too short to search for");
        // A token's signature alone is as secret as the token.
        let tail = &secret[secret.len() - 16..];
        for line in log.lines() {
            assert!(!line.contains(&secret) && !line.contains(tail), "the log carries the {what}: {line}");
        }
    }
}

async fn login_admin(channel: &tonic::transport::Channel) -> String {
    AuthServiceClient::new(channel.clone())
        .authenticate(pb::AuthenticateRequest { email: ADMIN_EMAIL.into(), password: ADMIN_PASSWORD.into() })
        .await
        .expect("admin signs in")
        .into_inner()
        .access_token
}
