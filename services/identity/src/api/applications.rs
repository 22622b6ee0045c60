//! `ApplicationService`: a company applies to a program; vendor staff review; approval
//! onboards it (a team owned by the applicant, enrolled in the program, and a welcome).

use tandem_platform::{
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{NAME_MAX, TEXT_MAX, Validator, normalize_email},
};
use tandem_proto::{
    common::v1::ErrorReason,
    identity::v1::{self as pb, ApplicationStatus, application_service_server::ApplicationService},
};
use tonic::Request;

use super::{
    IdentityApi, caller, convert, grpc,
    programs::{PROGRAM_MANAGERS, enrollment_event},
};
use crate::{
    domain::teams::review,
    error::{IdentityError, Result},
    store::{self, ApplicationRow, EnrollmentRow, NotificationRow},
};

grpc! {
    ApplicationService {
        submit_application => submit_application_(SubmitApplicationRequest) -> SubmitApplicationResponse;
        list_applications => list_applications_(ListApplicationsRequest) -> ListApplicationsResponse;
        review_application => review_application_(ReviewApplicationRequest) -> ReviewApplicationResponse;
    }
}

impl IdentityApi {
    async fn submit_application_(
        &self,
        request: Request<pb::SubmitApplicationRequest>,
    ) -> Result<pb::SubmitApplicationResponse> {
        let caller = caller(&request)?;
        if caller.is_staff() {
            return Err(IdentityError::Denied("vendor staff do not apply to programs"));
        }
        let pb::SubmitApplicationRequest {
            company_name,
            contact_email,
            address,
            primary_expertise,
            experience,
            terms_accepted,
            program_id,
            plan,
        } = request.into_inner();
        Validator::new()
            .text("company_name", &company_name, NAME_MAX)
            .email("contact_email", &contact_email)
            .text("address", &address, TEXT_MAX)
            .text("primary_expertise", &primary_expertise, NAME_MAX)
            .text("experience", &experience, TEXT_MAX)
            .optional_text("plan", &plan, NAME_MAX)
            .id("program_id", "prog", &program_id)
            .check(terms_accepted, "terms_accepted", "the program terms must be accepted")
            .finish()?;
        let application = ApplicationRow {
            id: new_id("app"),
            status: ApplicationStatus::Pending.as_str_name().to_owned(),
            applicant_user_id: caller.user_id.clone(),
            program_id,
            company_name: company_name.trim().to_owned(),
            contact_email: normalize_email(&contact_email),
            address,
            primary_expertise,
            experience,
            plan,
            terms_accepted,
            review_note: String::new(),
            reviewer_user_id: String::new(),
            team_id: String::new(),
            create_time: now_micros(),
            review_time: None,
        };
        let mut tx = self.db.begin().await?;
        store::program(&mut tx, &application.program_id).await?.ok_or(IdentityError::NotFound("program"))?;
        store::insert_application(&mut tx, &application).await?;
        tx.commit().await?;
        Ok(pb::SubmitApplicationResponse { application: Some(convert::application(&application)) })
    }

    async fn list_applications_(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Result<pb::ListApplicationsResponse> {
        let caller = caller(&request)?;
        let pb::ListApplicationsRequest { page_size, page_token, status } = request.into_inner();
        let mut v = Validator::new();
        if status != 0 {
            v.known_enum::<ApplicationStatus>("status", status);
        }
        v.finish()?;
        let page = Page::parse(page_size, &page_token)?;
        let status = if status == 0 {
            String::new()
        } else {
            ApplicationStatus::try_from(status).map(|s| s.as_str_name().to_owned()).unwrap_or_default()
        };
        let applicant = if caller.is_staff() { String::new() } else { caller.user_id.clone() };
        let mut conn = self.db.acquire().await?;
        let rows =
            store::list_applications(&mut conn, &applicant, &status, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |a| a.id.clone());
        Ok(pb::ListApplicationsResponse {
            applications: rows.iter().map(convert::application).collect(),
            next_page_token,
        })
    }

    async fn review_application_(
        &self,
        request: Request<pb::ReviewApplicationRequest>,
    ) -> Result<pb::ReviewApplicationResponse> {
        let caller = caller(&request)?;
        if !caller.has_staff_role(PROGRAM_MANAGERS) {
            return Err(IdentityError::Denied(
                "only vendor staff admins and channel managers review applications",
            ));
        }
        let pb::ReviewApplicationRequest { application_id, approve, note } = request.into_inner();
        Validator::new()
            .id("application_id", "app", &application_id)
            .optional_text("note", &note, TEXT_MAX)
            .finish()?;
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let mut application = store::application(&mut tx, &application_id)
            .await?
            .ok_or(IdentityError::NotFound("application"))?;
        let current =
            ApplicationStatus::from_str_name(&application.status).unwrap_or(ApplicationStatus::Unspecified);
        let next = review(current, approve).ok_or_else(|| {
            IdentityError::rule(
                ErrorReason::ApplicationAlreadyReviewed,
                "the application was already reviewed",
            )
        })?;
        application.status = next.as_str_name().to_owned();
        application.review_note = note;
        application.reviewer_user_id = caller.user_id.clone();
        application.review_time = Some(now);
        let (title, body) = if approve {
            let team = self
                .create_team_in(&mut tx, &application.company_name, &application.applicant_user_id)
                .await?;
            let enrollment = EnrollmentRow {
                program_id: application.program_id.clone(),
                team_id: team.id.clone(),
                user_id: String::new(),
                create_time: now,
            };
            store::insert_enrollment(&mut tx, &enrollment).await?;
            self.emit(&mut tx, &enrollment.program_id, enrollment_event(&enrollment, true)).await?;
            application.team_id = team.id;
            (
                format!("Welcome: {} is now a partner", application.company_name),
                "Your application was approved. Your team is ready and enrolled in the program.".to_owned(),
            )
        } else {
            (
                format!("Your application for {} was not accepted", application.company_name),
                application.review_note.clone(),
            )
        };
        if !store::review_application(&mut tx, &application).await? {
            return Err(IdentityError::rule(
                ErrorReason::ApplicationAlreadyReviewed,
                "the application was already reviewed",
            ));
        }
        store::insert_notification(
            &mut tx,
            &NotificationRow {
                id: new_id("ntf"),
                user_id: application.applicant_user_id.clone(),
                kind: if approve { "application.approved" } else { "application.rejected" }.into(),
                title,
                body,
                subject_id: application.id.clone(),
                read_time: None,
                create_time: now,
            },
        )
        .await?;
        self.commit(tx).await?;
        if approve {
            // A new team: nothing can be cached for it, but stay exact whatever the ids.
            self.cache.invalidate_enrollment(&application.team_id, &application.program_id);
        }
        Ok(pb::ReviewApplicationResponse { application: Some(convert::application(&application)) })
    }
}
