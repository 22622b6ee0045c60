//! Domain-based membership: a team proves a domain with a DNS TXT record (the fake resolver),
//! then users whose verified email is on it join as members.

mod common;

use common::*;
use tandem_platform::testing::TestDb;
use tandem_proto::identity::v1::{self as pb, TeamRole};
use tonic::Code;

backend_tests!(domains_are_proved_then_admit_verified_users);

async fn domains_are_proved_then_admit_verified_users(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let (_, rival_team, rival) = app.sign_up("rival@rival.example").await;
    let add = |who: &Session, team_id: &str, domain: &str| {
        let request = who.req(pb::AddDomainRequest { team_id: team_id.into(), domain: domain.into() });
        let mut client = app.domains();
        async move { client.add_domain(request).await }
    };
    let verify = || {
        let request =
            owner.req(pb::VerifyDomainRequest { team_id: team.id.clone(), domain: "acme.example".into() });
        let mut client = app.domains();
        async move { client.verify_domain(request).await }
    };
    let join = |who: &Session| {
        let request = who.req(pb::JoinTeamByDomainRequest { team_id: team.id.clone() });
        let mut client = app.domains();
        async move { client.join_team_by_domain(request).await }
    };

    // Adding: the TXT record to publish, normalised; adding again answers the same record.
    let added = add(&owner, &team.id, " Acme.EXAMPLE. ").await.must();
    assert_eq!(added.domain, "acme.example");
    assert_eq!(added.txt_record_name, "_tandem-challenge.acme.example");
    assert!(added.txt_record_value.starts_with("tandem-verification="), "{}", added.txt_record_value);
    assert!(!added.verified);
    let again = add(&owner, &team.id, "acme.example").await.must();
    assert_eq!(again.txt_record_value, added.txt_record_value);
    // Another team cannot claim it.
    add(&rival, &rival_team.id, "acme.example").await.refused(Code::AlreadyExists, "DOMAIN_TAKEN");

    // Users: one on the domain with a verified email, one unverified, one verified elsewhere.
    let (_, _, verified) = app.sign_up("verified@acme.example").await;
    let token = app.emailed_token("verified@acme.example", "/verify-email");
    let user = app.auth().verify_email(pb::VerifyEmailRequest { token }).await.must().user.unwrap();
    assert!(user.email_verified);
    let (_, _, unverified) = app.sign_up("unverified@acme.example").await;
    let (_, _, elsewhere) = app.sign_up("someone@elsewhere.example").await;
    let token = app.emailed_token("someone@elsewhere.example", "/verify-email");
    app.auth().verify_email(pb::VerifyEmailRequest { token }).await.must();

    // Before the proof: no one joins.
    join(&verified).await.refused(Code::FailedPrecondition, "DOMAIN_NOT_VERIFIED");

    // The proof: refused until the expected value is published under the expected name.
    verify().await.refused(Code::FailedPrecondition, "DOMAIN_VERIFICATION_FAILED");
    app.txt.publish(&added.txt_record_name, "tandem-verification=something-else");
    app.txt.publish("acme.example", &added.txt_record_value);
    verify().await.refused(Code::FailedPrecondition, "DOMAIN_VERIFICATION_FAILED");
    app.txt.publish(&added.txt_record_name, &format!("\"{}\"", added.txt_record_value));
    let proved = verify().await.must();
    assert!(proved.verified);
    assert_eq!(proved.domain, "acme.example");
    let listed = app
        .domains()
        .list_domains(owner.req(pb::ListDomainsRequest { team_id: team.id.clone(), ..Default::default() }))
        .await
        .must()
        .domains;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].verified && listed[0].verify_time.is_some());
    // Verifying a domain the team does not have.
    app.domains()
        .verify_domain(
            owner.req(pb::VerifyDomainRequest { team_id: team.id.clone(), domain: "other.example".into() }),
        )
        .await
        .fails(Code::NotFound);

    // Joining: only a verified email on the domain.
    join(&unverified).await.refused(Code::FailedPrecondition, "EMAIL_NOT_VERIFIED");
    join(&elsewhere).await.refused(Code::FailedPrecondition, "EMAIL_DOMAIN_MISMATCH");
    join(&app.admin).await.fails(Code::PermissionDenied);
    let view = pb::Permission::TeamView;
    assert!(!app.check_permission(&verified, &verified.user_id, &team.id, view).await);
    let member = join(&verified).await.must().member.unwrap();
    assert!(app.check_permission(&verified, &verified.user_id, &team.id, view).await, "at once");
    assert_eq!((member.user_id.as_str(), member.role()), (verified.user_id.as_str(), TeamRole::Member));
    assert_eq!(member.team_id, team.id);
    join(&verified).await.refused(Code::AlreadyExists, "ALREADY_MEMBER");
    // The rival's team has no such domain.
    app.domains()
        .join_team_by_domain(verified.req(pb::JoinTeamByDomainRequest { team_id: rival_team.id.clone() }))
        .await
        .refused(Code::FailedPrecondition, "EMAIL_DOMAIN_MISMATCH");
    app.domains()
        .join_team_by_domain(
            verified
                .req(pb::JoinTeamByDomainRequest { team_id: "team_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d".into() }),
        )
        .await
        .fails(Code::NotFound);

    // Once the address is verified, the other user joins too.
    let token = app.emailed_token("unverified@acme.example", "/verify-email");
    app.auth().verify_email(pb::VerifyEmailRequest { token }).await.must();
    join(&unverified).await.must();
    let members: Vec<_> =
        app.members(&owner, &team.id).await.into_iter().map(|m| (m.user_id.clone(), m.role())).collect();
    assert_eq!(members.len(), 3);
    assert!(members.contains(&(unverified.user_id.clone(), TeamRole::Member)));
}
