//! `ProgramService`: the vendor's partner programs; team and individual enrolment.

use tandem_platform::{
    FieldViolation,
    auth::Caller,
    db::DbError,
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{NAME_MAX, TEXT_MAX, Validator},
};
use tandem_proto::{
    common::v1::ErrorReason,
    events::v1::{EnrollmentChanged, event::Payload},
    identity::v1::{self as pb, StaffRole, program_service_server::ProgramService},
};
use tonic::Request;

use super::{IdentityApi, caller, convert, grpc};
use crate::{
    domain::access::Action,
    error::{IdentityError, Result},
    store::{self, EnrollmentRow, ProgramRow},
};

grpc! {
    ProgramService {
        create_program => create_program_(CreateProgramRequest) -> CreateProgramResponse;
        list_programs => list_programs_(ListProgramsRequest) -> ListProgramsResponse;
        join_program => join_program_(JoinProgramRequest) -> JoinProgramResponse;
        leave_program => leave_program_(LeaveProgramRequest) -> LeaveProgramResponse;
        check_program_access => check_program_access_(CheckProgramAccessRequest) -> CheckProgramAccessResponse;
        list_enrollments => list_enrollments_(ListEnrollmentsRequest) -> ListEnrollmentsResponse;
    }
}

pub(crate) const PROGRAM_MANAGERS: &[StaffRole] = &[StaffRole::Admin, StaffRole::ChannelManager];

impl IdentityApi {
    /// Whose enrolment a join or leave is about: the team (its owner acting) or the caller.
    async fn enrollment_subject(
        &self,
        caller: &Caller,
        program_id: &str,
        team_id: &str,
    ) -> Result<(String, String)> {
        let mut v = Validator::new();
        v.id("program_id", "prog", program_id);
        if !team_id.is_empty() {
            v.id("team_id", "team", team_id);
        }
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        store::program(&mut conn, program_id).await?.ok_or(IdentityError::NotFound("program"))?;
        drop(conn);
        if team_id.is_empty() {
            if caller.is_staff() {
                return Err(IdentityError::Denied("vendor staff do not enrol in programs"));
            }
            Ok((String::new(), caller.user_id.clone()))
        } else {
            self.authorize(caller, team_id, Action::ManagePrograms).await?;
            Ok((team_id.to_owned(), String::new()))
        }
    }

    async fn create_program_(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Result<pb::CreateProgramResponse> {
        let caller = caller(&request)?;
        if !caller.has_staff_role(PROGRAM_MANAGERS) {
            return Err(IdentityError::Denied(
                "only vendor staff admins and channel managers create programs",
            ));
        }
        let pb::CreateProgramRequest { name, description } = request.into_inner();
        Validator::new()
            .text("name", &name, NAME_MAX)
            .optional_text("description", &description, TEXT_MAX)
            .finish()?;
        let program = ProgramRow {
            id: new_id("prog"),
            name: name.trim().to_owned(),
            description,
            create_time: now_micros(),
        };
        let mut conn = self.db.acquire().await?;
        match store::insert_program(&mut conn, &program).await {
            Err(DbError::UniqueViolation) => {
                return Err(IdentityError::Duplicate(
                    ErrorReason::AlreadyExists,
                    "a program with this name exists".into(),
                ));
            }
            other => other?,
        }
        Ok(pb::CreateProgramResponse { program: Some(convert::program(&program)) })
    }

    async fn list_programs_(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Result<pb::ListProgramsResponse> {
        caller(&request)?;
        let pb::ListProgramsRequest { page_size, page_token } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_programs(&mut conn, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        Ok(pb::ListProgramsResponse {
            programs: rows.iter().map(convert::program).collect(),
            next_page_token,
        })
    }

    async fn join_program_(
        &self,
        request: Request<pb::JoinProgramRequest>,
    ) -> Result<pb::JoinProgramResponse> {
        let caller = caller(&request)?;
        let pb::JoinProgramRequest { program_id, team_id } = request.into_inner();
        let (team_id, user_id) = self.enrollment_subject(&caller, &program_id, &team_id).await?;
        let enrollment = EnrollmentRow { program_id, team_id, user_id, create_time: now_micros() };
        let mut tx = self.db.begin().await?;
        if !store::insert_enrollment(&mut tx, &enrollment).await? {
            return Err(IdentityError::Duplicate(
                ErrorReason::AlreadyEnrolled,
                "already enrolled in this program".into(),
            ));
        }
        self.emit(&mut tx, &enrollment.program_id, enrollment_event(&enrollment, true)).await?;
        self.commit(tx).await?;
        self.cache.invalidate_enrollment(&enrollment.team_id, &enrollment.program_id);
        Ok(pb::JoinProgramResponse { enrollment: Some(convert::enrollment(&enrollment)) })
    }

    async fn leave_program_(
        &self,
        request: Request<pb::LeaveProgramRequest>,
    ) -> Result<pb::LeaveProgramResponse> {
        let caller = caller(&request)?;
        let pb::LeaveProgramRequest { program_id, team_id } = request.into_inner();
        let (team_id, user_id) = self.enrollment_subject(&caller, &program_id, &team_id).await?;
        let enrollment = EnrollmentRow { program_id, team_id, user_id, create_time: now_micros() };
        let mut tx = self.db.begin().await?;
        if !store::delete_enrollment(
            &mut tx,
            &enrollment.program_id,
            &enrollment.team_id,
            &enrollment.user_id,
        )
        .await?
        {
            return Err(IdentityError::rule(ErrorReason::NotEnrolled, "not enrolled in this program"));
        }
        self.emit(&mut tx, &enrollment.program_id, enrollment_event(&enrollment, false)).await?;
        self.commit(tx).await?;
        self.cache.invalidate_enrollment(&enrollment.team_id, &enrollment.program_id);
        Ok(pb::LeaveProgramResponse {})
    }

    async fn check_program_access_(
        &self,
        request: Request<pb::CheckProgramAccessRequest>,
    ) -> Result<pb::CheckProgramAccessResponse> {
        let caller = caller(&request)?;
        let pb::CheckProgramAccessRequest { program_id, user_id } = request.into_inner();
        Validator::new().id("program_id", "prog", &program_id).id("user_id", "user", &user_id).finish()?;
        if caller.user_id != user_id && !caller.is_staff() {
            return Err(IdentityError::Denied("a user may only ask about itself"));
        }
        let mut conn = self.db.acquire().await?;
        let active = store::user_by_id(&mut conn, &user_id).await?.is_some_and(|u| u.active);
        let allowed = active && store::has_program_access(&mut conn, &program_id, &user_id).await?;
        Ok(pb::CheckProgramAccessResponse { allowed })
    }

    async fn list_enrollments_(
        &self,
        request: Request<pb::ListEnrollmentsRequest>,
    ) -> Result<pb::ListEnrollmentsResponse> {
        let caller = caller(&request)?;
        if !caller.is_staff() {
            return Err(IdentityError::Denied("only vendor staff list a program's enrolments"));
        }
        let pb::ListEnrollmentsRequest { program_id, page_size, page_token } = request.into_inner();
        Validator::new().id("program_id", "prog", &program_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        // The key of the last enrolment returned: `team_id/user_id` (ids hold no `/`).
        let after = match &page.after {
            None => ("", ""),
            Some(key) => key.split_once('/').ok_or_else(|| {
                IdentityError::Invalid(vec![FieldViolation::new("page_token", "is not a token of this list")])
            })?,
        };
        let mut conn = self.db.acquire().await?;
        let rows = store::list_enrollments(&mut conn, &program_id, after, page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |e| format!("{}/{}", e.team_id, e.user_id));
        Ok(pb::ListEnrollmentsResponse {
            enrollments: rows.iter().map(convert::enrollment).collect(),
            next_page_token,
        })
    }
}

pub(crate) fn enrollment_event(e: &EnrollmentRow, enrolled: bool) -> Payload {
    Payload::EnrollmentChanged(EnrollmentChanged {
        program_id: e.program_id.clone(),
        team_id: e.team_id.clone(),
        user_id: e.user_id.clone(),
        enrolled,
    })
}
