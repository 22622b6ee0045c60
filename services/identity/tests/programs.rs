//! Programs and enrolment, program access, and partner applications.

mod common;

use common::*;
use tandem_platform::testing::TestDb;
use tandem_proto::identity::v1::{self as pb, ApplicationStatus, StaffRole, TeamRole};
use tonic::Code;

backend_tests!(
    programs_enrolment_and_access,
    applications_are_reviewed_once,
    concurrent_reviews_onboard_once,
    other_services_learn_user_access_and_team_enrolment
);

/// What deals asks before giving a user work: active, staff, teams; and a team's enrolment.
async fn other_services_learn_user_access_and_team_enrolment(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (user, team, owner) = app.sign_up("owner@acme.example").await;
    let (stranger, _, solo) = app.sign_up("solo@elsewhere.example").await;
    let manager = app.create_staff("manager@vendor.example", StaffRole::ChannelManager).await;
    let program = app.create_program("Resellers").await;
    let access = |who: &Session, user_id: &str| {
        let request = who.req(pb::GetUserAccessRequest { user_id: user_id.into() });
        let mut client = app.access();
        async move { client.get_user_access(request).await }
    };
    let own = access(&owner, &user.id).await.must();
    assert!(own.active && own.staff_role == 0);
    assert_eq!(own.team_ids, vec![team.id.clone()]);
    access(&solo, &user.id).await.fails(Code::NotFound);
    let mate = app.invite_newcomer(&owner, &team.id, "mate@acme.example", TeamRole::Member).await;
    let seen_by_mate = access(&mate, &user.id).await.must();
    assert_eq!(seen_by_mate.team_ids, vec![team.id.clone()]);
    let staff_view = access(&manager, &manager.user_id).await.must();
    assert_eq!(staff_view.staff_role(), StaffRole::ChannelManager);
    assert!(staff_view.team_ids.is_empty());
    app.staff()
        .deactivate_user(app.admin.req(pb::DeactivateUserRequest { user_id: stranger.id.clone() }))
        .await
        .must();
    assert!(!access(&manager, &stranger.id).await.must().active);
    access(&manager, "user_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d").await.fails(Code::NotFound);

    let enrolled = |who: &Session| {
        let request = who
            .req(pb::CheckTeamEnrollmentRequest { program_id: program.id.clone(), team_id: team.id.clone() });
        let mut client = app.access();
        async move { client.check_team_enrollment(request).await }
    };
    assert!(!enrolled(&owner).await.must().enrolled);
    app.programs()
        .join_program(
            owner.req(pb::JoinProgramRequest { program_id: program.id.clone(), team_id: String::new() }),
        )
        .await
        .must();
    assert!(!enrolled(&manager).await.must().enrolled, "the owner alone is enrolled, not the team");
    app.programs()
        .join_program(
            owner.req(pb::JoinProgramRequest { program_id: program.id.clone(), team_id: team.id.clone() }),
        )
        .await
        .must();
    assert!(enrolled(&manager).await.must().enrolled);
    assert!(enrolled(&owner).await.must().enrolled);
    let (_, _, third) = app.sign_up("third@other.example").await;
    enrolled(&third).await.fails(Code::NotFound);

    // Identity caches the answer: leaving (or joining again) must show at once.
    app.programs()
        .leave_program(
            owner.req(pb::LeaveProgramRequest { program_id: program.id.clone(), team_id: team.id.clone() }),
        )
        .await
        .must();
    assert!(!enrolled(&owner).await.must().enrolled, "the team left");
    assert!(!enrolled(&manager).await.must().enrolled);
    app.programs()
        .join_program(
            owner.req(pb::JoinProgramRequest { program_id: program.id.clone(), team_id: team.id.clone() }),
        )
        .await
        .must();
    assert!(enrolled(&owner).await.must().enrolled, "the team joined again");
}

async fn programs_enrolment_and_access(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, team, owner) = app.sign_up("owner@acme.example").await;
    let admin = app.invite_newcomer(&owner, &team.id, "admin@acme.example", TeamRole::Admin).await;
    let member = app.invite_newcomer(&owner, &team.id, "member@acme.example", TeamRole::Member).await;
    let (_, _, solo) = app.sign_up("solo@elsewhere.example").await;
    let manager = app.create_staff("manager@vendor.example", StaffRole::ChannelManager).await;
    let finance_staff = app.create_staff("finance@vendor.example", StaffRole::Finance).await;
    collate_ignoring_punctuation(&app, "enrollments", &["team_id", "user_id"]).await;

    // Staff admins and channel managers create programs; no one else; names are unique.
    let create = |who: &Session, name: &str| {
        let request =
            who.req(pb::CreateProgramRequest { name: name.into(), description: "For resellers".into() });
        let mut client = app.programs();
        async move { client.create_program(request).await }
    };
    let resellers = create(&app.admin, "Resellers").await.must().program.unwrap();
    assert!(resellers.id.starts_with("prog_"));
    assert_eq!((resellers.name.as_str(), resellers.description.as_str()), ("Resellers", "For resellers"));
    let referrals = create(&manager, "Referrals").await.must().program.unwrap();
    for who in [&owner, &finance_staff] {
        create(who, "Mine").await.fails(Code::PermissionDenied);
    }
    create(&app.admin, "Resellers").await.refused(Code::AlreadyExists, "ALREADY_EXISTS");
    create(&app.admin, "").await.invalid(&["name"]);

    // Partners list them.
    let listed =
        app.programs().list_programs(member.req(pb::ListProgramsRequest::default())).await.must().programs;
    assert_eq!(
        distinct(listed.into_iter().map(|p| p.id)),
        distinct([resellers.id.clone(), referrals.id.clone()])
    );

    let join = |who: &Session, program: &str, team_id: &str| {
        let request = who.req(pb::JoinProgramRequest { program_id: program.into(), team_id: team_id.into() });
        let mut client = app.programs();
        async move { client.join_program(request).await }
    };
    let leave = |who: &Session, program: &str, team_id: &str| {
        let request =
            who.req(pb::LeaveProgramRequest { program_id: program.into(), team_id: team_id.into() });
        let mut client = app.programs();
        async move { client.leave_program(request).await }
    };
    let access = async |asker: &Session, program: &str, user: &Session| -> bool {
        app.programs()
            .check_program_access(asker.req(pb::CheckProgramAccessRequest {
                program_id: program.into(),
                user_id: user.user_id.clone(),
            }))
            .await
            .must()
            .allowed
    };

    // Nobody has access yet.
    for who in [&owner, &admin, &member, &solo] {
        assert!(!access(who, &resellers.id, who).await);
    }

    // The team is enrolled by its owner only.
    join(&admin, &resellers.id, &team.id).await.fails(Code::PermissionDenied);
    join(&member, &resellers.id, &team.id).await.fails(Code::PermissionDenied);
    join(&solo, &resellers.id, &team.id).await.fails(Code::NotFound);
    let enrollment = join(&owner, &resellers.id, &team.id).await.must().enrollment.unwrap();
    assert_eq!((enrollment.team_id.as_str(), enrollment.user_id.as_str()), (team.id.as_str(), ""));
    join(&owner, &resellers.id, &team.id).await.refused(Code::AlreadyExists, "ALREADY_ENROLLED");
    join(&owner, "prog_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d", &team.id).await.fails(Code::NotFound);

    // Access through the team: every member, whatever its role; not outsiders.
    for who in [&owner, &admin, &member] {
        assert!(access(who, &resellers.id, who).await);
        assert!(!access(who, &referrals.id, who).await, "another program");
    }
    assert!(!access(&solo, &resellers.id, &solo).await);

    // Individual enrolment, also in a program the user's team is in.
    let enrollment = join(&solo, &resellers.id, "").await.must().enrollment.unwrap();
    assert_eq!((enrollment.team_id.as_str(), enrollment.user_id.as_str()), ("", solo.user_id.as_str()));
    join(&solo, &resellers.id, "").await.refused(Code::AlreadyExists, "ALREADY_ENROLLED");
    join(&member, &resellers.id, "").await.must();
    join(&app.admin, &resellers.id, "").await.fails(Code::PermissionDenied);
    assert!(access(&solo, &resellers.id, &solo).await);

    // A partner asks about itself only; staff about anyone.
    app.programs()
        .check_program_access(member.req(pb::CheckProgramAccessRequest {
            program_id: resellers.id.clone(),
            user_id: solo.user_id.clone(),
        }))
        .await
        .fails(Code::PermissionDenied);
    assert!(access(&finance_staff, &resellers.id, &solo).await);
    assert!(!access(&app.admin, &referrals.id, &solo).await);
    let enrolled = app
        .programs()
        .list_enrollments(
            manager
                .req(pb::ListEnrollmentsRequest { program_id: resellers.id.clone(), ..Default::default() }),
        )
        .await
        .must()
        .enrollments;
    assert_eq!(enrolled.len(), 3, "the team, solo and the member: {enrolled:?}");
    for size in [1, 2] {
        let walked = walk(
            size as usize,
            pages!(app, programs.list_enrollments, app.admin,
                |page_token| pb::ListEnrollmentsRequest { program_id: resellers.id.clone(), page_size: size, page_token },
                enrollments => |e| format!("{}{}", e.team_id, e.user_id)),
        )
        .await;
        assert_eq!(
            distinct(walked),
            distinct([team.id.clone(), solo.user_id.clone(), member.user_id.clone()])
        );
    }
    // A token of another list ("v1:abc" has no team/user pair) is refused.
    let request = pb::ListEnrollmentsRequest {
        program_id: resellers.id.clone(),
        page_size: 1,
        page_token: "djE6YWJj".into(),
    };
    app.programs().list_enrollments(app.admin.req(request)).await.invalid(&["page_token"]);
    app.programs()
        .list_enrollments(
            owner.req(pb::ListEnrollmentsRequest { program_id: resellers.id.clone(), ..Default::default() }),
        )
        .await
        .fails(Code::PermissionDenied);

    // Leaving the team ends the access it gave; leaving the program ends the team's.
    app.teams().leave_team(admin.req(pb::LeaveTeamRequest { team_id: team.id.clone() })).await.must();
    assert!(!access(&admin, &resellers.id, &admin).await);
    leave(&admin, &resellers.id, &team.id).await.fails(Code::NotFound);
    leave(&member, &resellers.id, &team.id).await.fails(Code::PermissionDenied);
    leave(&owner, &resellers.id, &team.id).await.must();
    leave(&owner, &resellers.id, &team.id).await.refused(Code::FailedPrecondition, "NOT_ENROLLED");
    assert!(!access(&owner, &resellers.id, &owner).await);
    assert!(access(&member, &resellers.id, &member).await, "the member's own enrolment remains");
    assert!(access(&solo, &resellers.id, &solo).await);
    leave(&solo, &resellers.id, "").await.must();
    assert!(!access(&solo, &resellers.id, &solo).await);
}

fn application(program_id: &str, company: &str, terms_accepted: bool) -> pb::SubmitApplicationRequest {
    pb::SubmitApplicationRequest {
        company_name: company.into(),
        contact_email: "contact@applicant.example".into(),
        address: "1 Main Street, Springfield".into(),
        primary_expertise: "Cloud migrations".into(),
        experience: "Ten years of reselling".into(),
        terms_accepted,
        program_id: program_id.into(),
        plan: "Gold".into(),
    }
}

async fn applications_are_reviewed_once(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let program = app.create_program("Resellers").await;
    let (_, _, applicant) = app.sign_up("applicant@applicant.example").await;
    let (_, _, other) = app.sign_up("other@elsewhere.example").await;
    let submit = |who: &Session, request: pb::SubmitApplicationRequest| {
        let request = who.req(request);
        let mut client = app.applications();
        async move { client.submit_application(request).await }
    };
    let review = |who: &Session, id: &str, approve: bool| {
        let request = who.req(pb::ReviewApplicationRequest {
            application_id: id.into(),
            approve,
            note: "Checked".into(),
        });
        let mut client = app.applications();
        async move { client.review_application(request).await }
    };
    let list = |who: &Session| {
        let request = who.req(pb::ListApplicationsRequest::default());
        let mut client = app.applications();
        async move { client.list_applications(request).await.must().applications }
    };

    // The terms must be accepted; every other field is checked too.
    let status = submit(&applicant, application(&program.id, "Applicant Ltd", false))
        .await
        .invalid(&["terms_accepted"]);
    assert_eq!(violations(&status), ["terms_accepted"]);
    submit(
        &applicant,
        pb::SubmitApplicationRequest { contact_email: "nope".into(), ..application(&program.id, "", true) },
    )
    .await
    .invalid(&["company_name", "contact_email"]);
    submit(&applicant, application("prog_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d", "Applicant Ltd", true))
        .await
        .fails(Code::NotFound);
    submit(&app.admin, application(&program.id, "Vendor", true)).await.fails(Code::PermissionDenied);

    let submitted =
        submit(&applicant, application(&program.id, "Applicant Ltd", true)).await.must().application.unwrap();
    assert_eq!(submitted.status(), ApplicationStatus::Pending);
    assert_eq!(submitted.applicant_user_id, applicant.user_id);
    assert!(submitted.team_id.is_empty());
    // The applicant sees its own; another partner sees none; staff see all.
    assert_eq!(
        list(&applicant).await.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [submitted.id.as_str()]
    );
    assert!(list(&other).await.is_empty());
    assert_eq!(list(&app.admin).await.len(), 1);

    // Partners do not review, not even their own.
    review(&applicant, &submitted.id, true).await.fails(Code::PermissionDenied);
    review(&other, &submitted.id, true).await.fails(Code::PermissionDenied);

    // Approval onboards: a team named after the company, owned by the applicant, enrolled.
    let approved = review(&app.admin, &submitted.id, true).await.must().application.unwrap();
    assert_eq!(approved.status(), ApplicationStatus::Approved);
    assert_eq!(approved.reviewer_user_id, app.admin.user_id);
    assert_eq!(approved.review_note, "Checked");
    let team = app.get_team(&applicant, &approved.team_id).await.must().team.unwrap();
    assert_eq!(team.name, "Applicant Ltd");
    assert_eq!(team.owner_user_id, applicant.user_id);
    let members = app.members(&applicant, &team.id).await;
    assert_eq!(
        members.iter().map(|m| (m.user_id.as_str(), m.role())).collect::<Vec<_>>(),
        [(applicant.user_id.as_str(), TeamRole::Owner)]
    );
    let access = app
        .programs()
        .check_program_access(applicant.req(pb::CheckProgramAccessRequest {
            program_id: program.id.clone(),
            user_id: applicant.user_id.clone(),
        }))
        .await
        .must();
    assert!(access.allowed);
    let enrolled = app
        .programs()
        .list_enrollments(
            app.admin
                .req(pb::ListEnrollmentsRequest { program_id: program.id.clone(), ..Default::default() }),
        )
        .await
        .must()
        .enrollments;
    assert!(enrolled.iter().any(|e| e.team_id == team.id));
    // ... and a welcome in the applicant's inbox.
    let inbox = app
        .notifications()
        .list_notifications(applicant.req(pb::ListNotificationsRequest::default()))
        .await
        .must()
        .notifications;
    let welcome = inbox.iter().find(|n| n.kind == "application.approved").expect("a welcome notification");
    assert_eq!(welcome.subject_id, submitted.id);
    assert!(welcome.title.contains("Applicant Ltd"), "{}", welcome.title);
    assert!(!welcome.read);
    let read = app
        .notifications()
        .mark_notification_read(
            applicant.req(pb::MarkNotificationReadRequest { notification_id: welcome.id.clone() }),
        )
        .await
        .must()
        .notification
        .unwrap();
    assert!(read.read);
    app.notifications()
        .mark_notification_read(
            other.req(pb::MarkNotificationReadRequest { notification_id: welcome.id.clone() }),
        )
        .await
        .fails(Code::NotFound);

    // Reviewed once only.
    review(&app.admin, &submitted.id, true)
        .await
        .refused(Code::FailedPrecondition, "APPLICATION_ALREADY_REVIEWED");
    review(&app.admin, &submitted.id, false)
        .await
        .refused(Code::FailedPrecondition, "APPLICATION_ALREADY_REVIEWED");

    // A rejection: no team, a notification saying so.
    let second = submit(&other, application(&program.id, "Other Co", true)).await.must().application.unwrap();
    let manager = app.create_staff("manager@vendor.example", StaffRole::ChannelManager).await;
    let rejected = review(&manager, &second.id, false).await.must().application.unwrap();
    assert_eq!(rejected.status(), ApplicationStatus::Rejected);
    assert!(rejected.team_id.is_empty());
    let teams = app.teams().list_teams(other.req(pb::ListTeamsRequest::default())).await.must().teams;
    assert_eq!(teams.len(), 1, "only the sign-up team");
    let inbox = app
        .notifications()
        .list_notifications(other.req(pb::ListNotificationsRequest::default()))
        .await
        .must()
        .notifications;
    assert!(inbox.iter().any(|n| n.kind == "application.rejected" && n.subject_id == second.id));
    let approved_only = app
        .applications()
        .list_applications(app.admin.req(pb::ListApplicationsRequest {
            status: ApplicationStatus::Approved.into(),
            ..Default::default()
        }))
        .await
        .must()
        .applications;
    assert_eq!(approved_only.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [submitted.id.as_str()]);
}

async fn concurrent_reviews_onboard_once(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let program = app.create_program("Resellers").await;
    let (_, _, applicant) = app.sign_up("applicant@applicant.example").await;
    let submitted = app
        .applications()
        .submit_application(applicant.req(application(&program.id, "Applicant Ltd", true)))
        .await
        .must()
        .application
        .unwrap();

    // Five reviewers approve at once: one onboarding, the others refused and rolled back.
    let reviews = (0..5).map(|_| {
        let request = app.admin.req(pb::ReviewApplicationRequest {
            application_id: submitted.id.clone(),
            approve: true,
            note: String::new(),
        });
        let mut client = app.applications();
        async move { client.review_application(request).await }
    });
    let outcomes = futures::future::join_all(reviews).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if let Err(status) = outcome {
            assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
            assert_eq!(reason(status).as_deref(), Some("APPLICATION_ALREADY_REVIEWED"));
        }
    }
    let teams = app.teams().list_teams(applicant.req(pb::ListTeamsRequest::default())).await.must().teams;
    let names: Vec<_> = teams.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "Applicant Ltd").count(), 1, "{names:?}");
    assert_eq!(teams.len(), 2, "the sign-up team and the onboarded one: {names:?}");
    let inbox = app
        .notifications()
        .list_notifications(applicant.req(pb::ListNotificationsRequest::default()))
        .await
        .must()
        .notifications;
    assert_eq!(inbox.iter().filter(|n| n.kind == "application.approved").count(), 1);
}
