//! `LeadService`: leads, their assignment, claims, declines and bulk reassignment.

use std::pin::Pin;

use tandem_platform::{
    auth::Caller,
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{EMAIL_MAX, ID_MAX, NAME_MAX, TEXT_MAX, Validator},
};
use tandem_proto::{
    common::v1::ErrorReason,
    deals::v1::{self as pb, lead_service_server::LeadService},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{DealsApi, caller, convert, require_staff};
use crate::{
    assign::{set_owner, set_queue},
    domain::leads::{LeadStatus, may_receive, transition},
    error::{DealsError, Result},
    store::{self, LeadFilter, LeadRow, MemberRow},
};

/// Most leads one bulk reassignment takes.
pub const BULK_MAX: usize = 1000;

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::BulkReassignLeadsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LeadService for DealsApi {
    async fn create_lead(
        &self,
        request: Request<pb::CreateLeadRequest>,
    ) -> Result<Response<pb::CreateLeadResponse>, Status> {
        Ok(Response::new(self.create_lead_(request).await?))
    }
    async fn get_lead(
        &self,
        request: Request<pb::GetLeadRequest>,
    ) -> Result<Response<pb::GetLeadResponse>, Status> {
        Ok(Response::new(self.get_lead_(request).await?))
    }
    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        Ok(Response::new(self.list_leads_(request).await?))
    }
    async fn update_lead(
        &self,
        request: Request<pb::UpdateLeadRequest>,
    ) -> Result<Response<pb::UpdateLeadResponse>, Status> {
        Ok(Response::new(self.update_lead_(request).await?))
    }
    async fn assign_lead(
        &self,
        request: Request<pb::AssignLeadRequest>,
    ) -> Result<Response<pb::AssignLeadResponse>, Status> {
        Ok(Response::new(self.assign_lead_(request).await?))
    }
    async fn claim_lead(
        &self,
        request: Request<pb::ClaimLeadRequest>,
    ) -> Result<Response<pb::ClaimLeadResponse>, Status> {
        Ok(Response::new(self.claim_lead_(request).await?))
    }
    async fn decline_lead(
        &self,
        request: Request<pb::DeclineLeadRequest>,
    ) -> Result<Response<pb::DeclineLeadResponse>, Status> {
        Ok(Response::new(self.decline_lead_(request).await?))
    }

    type BulkReassignLeadsStream = ProgressStream;

    async fn bulk_reassign_leads(
        &self,
        request: Request<pb::BulkReassignLeadsRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        Ok(Response::new(self.bulk_reassign_leads_(request).await?))
    }
}

/// Where a lead is sent by hand.
enum Destination {
    User(MemberRow),
    Queue(String),
}

fn check_lead_fields(v: &mut Validator, l: &LeadRow) {
    v.text("company_name", &l.company_name, NAME_MAX).optional_text("industry", &l.industry, NAME_MAX).check(
        l.employee_count >= 0,
        "employee_count",
        "must not be negative",
    );
    if !l.contact_email.is_empty() {
        v.email("contact_email", &l.contact_email);
    }
    v.check(
        l.country.is_empty() || (l.country.len() == 2 && l.country.bytes().all(|b| b.is_ascii_uppercase())),
        "country",
        "must be an ISO 3166-1 alpha-2 code such as FR",
    );
}

impl DealsApi {
    pub(crate) async fn lead_message(&self, lead: &LeadRow) -> Result<pb::Lead> {
        let mut conn = self.db.acquire().await?;
        let declined = store::declined_teams(&mut conn, &lead.id).await?;
        Ok(convert::lead(lead, declined))
    }

    /// The lead when the caller may see it: staff; a viewer of its team; a member of the queue
    /// it waits in. NOT_FOUND otherwise.
    async fn visible_lead(&self, caller: &Caller, lead_id: &str) -> Result<LeadRow> {
        Validator::new().id("lead_id", "lead", lead_id).finish()?;
        let mut conn = self.db.acquire().await?;
        let lead = store::lead(&mut conn, lead_id).await?.ok_or(DealsError::NotFound("lead"))?;
        if self.can_view(caller, &lead.team_id).await? {
            return Ok(lead);
        }
        if lead.owner_user_id.is_empty()
            && !lead.queue_id.is_empty()
            && store::queue_member(&mut conn, &lead.queue_id, &caller.user_id).await?.is_some()
        {
            return Ok(lead);
        }
        Err(DealsError::NotFound("lead"))
    }

    async fn create_lead_(&self, request: Request<pb::CreateLeadRequest>) -> Result<pb::CreateLeadResponse> {
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff create leads")?;
        let pb::CreateLeadRequest { company_name, contact_email, country, industry, employee_count, notify } =
            request.into_inner();
        let now = now_micros();
        let mut lead = LeadRow {
            id: new_id("lead"),
            company_name: company_name.trim().to_owned(),
            contact_email: tandem_platform::validate::normalize_email(&contact_email),
            country: country.trim().to_ascii_uppercase(),
            industry: industry.trim().to_owned(),
            employee_count,
            owner_user_id: String::new(),
            team_id: String::new(),
            queue_id: String::new(),
            status: LeadStatus::New.as_str().to_owned(),
            create_time: now,
            update_time: now,
        };
        let mut v = Validator::new();
        check_lead_fields(&mut v, &lead);
        v.optional_text("contact_email", &lead.contact_email, EMAIL_MAX);
        v.finish()?;
        let mut tx = self.db.begin().await?;
        self.apply_rules(&caller, &mut tx, &mut lead, &[]).await?;
        store::insert_lead(&mut tx, &lead).await?;
        if notify {
            self.notify_owner(&mut tx, &lead).await?;
        }
        self.commit(tx).await?;
        Ok(pb::CreateLeadResponse { lead: Some(convert::lead(&lead, Vec::new())) })
    }

    async fn get_lead_(&self, request: Request<pb::GetLeadRequest>) -> Result<pb::GetLeadResponse> {
        let caller = caller(&request)?;
        let lead = self.visible_lead(&caller, &request.get_ref().lead_id).await?;
        Ok(pb::GetLeadResponse { lead: Some(self.lead_message(&lead).await?) })
    }

    async fn list_leads_(&self, request: Request<pb::ListLeadsRequest>) -> Result<pb::ListLeadsResponse> {
        let caller = caller(&request)?;
        let pb::ListLeadsRequest { team_id, queue_id, owner_user_id, status, page_size, page_token } =
            request.into_inner();
        let mut v = Validator::new();
        if !team_id.is_empty() {
            v.id("team_id", "team", &team_id);
        }
        if !queue_id.is_empty() {
            v.id("queue_id", "queue", &queue_id);
        }
        if !owner_user_id.is_empty() {
            v.id("owner_user_id", "user", &owner_user_id);
        }
        let status = match pb::LeadStatus::try_from(status) {
            Ok(s) => convert::lead_status_from(s),
            Err(_) => {
                v.violation("status", "must be a known value");
                None
            }
        };
        v.finish()?;
        let page = Page::parse(page_size, &page_token)?;
        let mut conn = self.db.acquire().await?;
        // Partners list a team of theirs, or the unclaimed leads of a queue they belong to.
        let mut filter = LeadFilter {
            team_id: team_id.clone(),
            queue_id: queue_id.clone(),
            owner_user_id,
            status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        };
        if !caller.is_staff() {
            if !team_id.is_empty() {
                self.authorize_view(&caller, &team_id, "team").await?;
            } else if !queue_id.is_empty() {
                if store::queue_member(&mut conn, &queue_id, &caller.user_id).await?.is_none() {
                    return Err(DealsError::NotFound("queue"));
                }
                filter.status = LeadStatus::New.as_str().to_owned();
            } else {
                return Err(DealsError::invalid("team_id", "partners list the leads of one of their teams"));
            }
        }
        let rows = store::list_leads(&mut conn, &filter, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |l| l.id.clone());
        let mut leads = Vec::with_capacity(rows.len());
        for l in &rows {
            leads.push(convert::lead(l, store::declined_teams(&mut conn, &l.id).await?));
        }
        Ok(pb::ListLeadsResponse { leads, next_page_token })
    }

    async fn update_lead_(&self, request: Request<pb::UpdateLeadRequest>) -> Result<pb::UpdateLeadResponse> {
        const UPDATABLE: &[&str] =
            &["company_name", "contact_email", "country", "industry", "employee_count", "status"];
        let caller = caller(&request)?;
        let pb::UpdateLeadRequest { lead, update_mask } = request.into_inner();
        let input = lead.unwrap_or_default();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Validator::new();
        v.check(!paths.is_empty(), "update_mask", "must name the fields to change");
        for path in &paths {
            v.check(
                UPDATABLE.contains(&path.as_str()),
                "update_mask",
                "names a field that cannot be changed",
            );
        }
        v.finish()?;
        let current = self.visible_lead(&caller, &input.id).await.map_err(|e| match e {
            DealsError::Invalid(_) => DealsError::invalid("lead.id", "must be a lead id"),
            other => other,
        })?;
        self.authorize_contribute(&caller, &current.team_id, "lead").await?;
        let mut row = current.clone();
        let mut new_status = None;
        for path in &paths {
            match path.as_str() {
                "company_name" => row.company_name = input.company_name.trim().to_owned(),
                "contact_email" => {
                    row.contact_email = tandem_platform::validate::normalize_email(&input.contact_email)
                }
                "country" => row.country = input.country.trim().to_ascii_uppercase(),
                "industry" => row.industry = input.industry.trim().to_owned(),
                "employee_count" => row.employee_count = input.employee_count,
                "status" => {
                    let s = pb::LeadStatus::try_from(input.status).ok().and_then(convert::lead_status_from);
                    match s {
                        Some(s) => new_status = Some(s),
                        None => return Err(DealsError::invalid("lead.status", "must be a known value")),
                    }
                }
                _ => {}
            }
        }
        let mut v = Validator::new();
        check_lead_fields(&mut v, &row);
        v.finish().map_err(|e| super::nested("lead", e))?;
        let from = LeadStatus::parse(&current.status).unwrap_or(LeadStatus::New);
        if from.is_final() {
            return Err(DealsError::rule(ErrorReason::LeadFinal, "the lead is won, lost or unqualified"));
        }
        if let Some(to) = new_status {
            transition(from, to, !row.owner_user_id.is_empty())
                .map_err(|e| DealsError::rule(ErrorReason::LeadFinal, e.to_string()))?;
            row.status = to.as_str().to_owned();
        }
        row.update_time = now_micros().max(current.update_time + 1);
        let mut tx = self.db.begin().await?;
        if !store::update_lead(&mut tx, &row, current.update_time).await? {
            return Err(DealsError::Conflict("the lead"));
        }
        self.commit(tx).await?;
        Ok(pb::UpdateLeadResponse { lead: Some(self.lead_message(&row).await?) })
    }

    /// Validates a hand assignment's target and resolves it.
    async fn destination(
        &self,
        caller: &Caller,
        user_id: Option<&str>,
        queue_id: Option<&str>,
        team_id: &str,
    ) -> Result<Destination> {
        let mut v = Validator::new();
        match (user_id, queue_id) {
            (Some(user), None) => v.id("user_id", "user", user),
            (None, Some(queue)) => v.id("queue_id", "queue", queue),
            _ => v.violation("target", "give user_id or queue_id"),
        };
        if !team_id.is_empty() {
            v.id("team_id", "team", team_id);
        }
        v.finish()?;
        if let Some(queue_id) = queue_id {
            let mut conn = self.db.acquire().await?;
            store::queue(&mut conn, queue_id).await?.ok_or(DealsError::NotFound("queue"))?;
            return Ok(Destination::Queue(queue_id.to_owned()));
        }
        Ok(Destination::User(self.resolve_partner(caller, user_id.unwrap_or_default(), team_id).await?))
    }

    /// Sends one lead to `dest` in its own transaction. `Ok(false)` when it was already there
    /// (a retry): nothing is written.
    async fn reassign(&self, lead_id: &str, dest: &Destination, notify: bool) -> Result<(bool, LeadRow)> {
        let mut tx = self.db.begin().await?;
        let current = store::lead(&mut tx, lead_id).await?.ok_or(DealsError::NotFound("lead"))?;
        if LeadStatus::parse(&current.status).is_some_and(LeadStatus::is_final) {
            return Err(DealsError::rule(ErrorReason::LeadFinal, "the lead is won, lost or unqualified"));
        }
        let mut row = current.clone();
        match dest {
            Destination::User(m) => {
                if current.owner_user_id == m.user_id && current.team_id == m.team_id {
                    return Ok((false, current));
                }
                let declined = store::declined_teams(&mut tx, lead_id).await?;
                if !may_receive(&declined, &m.team_id) {
                    return Err(DealsError::rule(
                        ErrorReason::LeadDeclinedByTeam,
                        "this partner team declined the lead",
                    ));
                }
                set_owner(&mut row, m);
                row.queue_id.clear();
            }
            Destination::Queue(queue_id) => {
                if current.queue_id == *queue_id && current.owner_user_id.is_empty() {
                    return Ok((false, current));
                }
                set_queue(&mut row, queue_id);
            }
        }
        if !store::update_lead(&mut tx, &row, current.update_time).await? {
            return Err(DealsError::Conflict("the lead"));
        }
        if notify {
            self.notify_owner(&mut tx, &row).await?;
        }
        self.commit(tx).await?;
        Ok((true, row))
    }

    async fn assign_lead_(&self, request: Request<pb::AssignLeadRequest>) -> Result<pb::AssignLeadResponse> {
        use pb::assign_lead_request::Target;
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff assign leads")?;
        let pb::AssignLeadRequest { lead_id, target, team_id, notify } = request.into_inner();
        Validator::new().id("lead_id", "lead", &lead_id).finish()?;
        let (user, queue) = match &target {
            Some(Target::UserId(u)) => (Some(u.as_str()), None),
            Some(Target::QueueId(q)) => (None, Some(q.as_str())),
            None => (None, None),
        };
        let dest = self.destination(&caller, user, queue, &team_id).await?;
        let (_, row) = self.reassign(&lead_id, &dest, notify).await?;
        Ok(pb::AssignLeadResponse { lead: Some(self.lead_message(&row).await?) })
    }

    async fn claim_lead_(&self, request: Request<pb::ClaimLeadRequest>) -> Result<pb::ClaimLeadResponse> {
        let caller = caller(&request)?;
        let lead_id = request.into_inner().lead_id;
        Validator::new().id("lead_id", "lead", &lead_id).finish()?;
        let mut conn = self.db.acquire().await?;
        let lead = store::lead(&mut conn, &lead_id).await?.ok_or(DealsError::NotFound("lead"))?;
        // Members of the lead's queue learn that another member was first; others see nothing.
        let member = match lead.queue_id.as_str() {
            "" => None,
            queue_id => store::queue_member(&mut conn, queue_id, &caller.user_id).await?,
        };
        let Some(member) = member else {
            return Err(if self.can_view(&caller, &lead.team_id).await? {
                DealsError::rule(ErrorReason::NotQueueMember, "only the members of the lead's queue claim it")
            } else {
                DealsError::NotFound("lead")
            });
        };
        let declined = store::declined_teams(&mut conn, &lead.id).await?;
        drop(conn);
        if !may_receive(&declined, &member.team_id) {
            return Err(DealsError::rule(ErrorReason::LeadDeclinedByTeam, "your team declined this lead"));
        }
        let now = now_micros().max(lead.update_time + 1);
        let mut tx = self.db.begin().await?;
        if !store::claim_lead(&mut tx, &lead.id, &lead.queue_id, &member.user_id, &member.team_id, now)
            .await?
        {
            return Err(DealsError::rule(ErrorReason::LeadAlreadyClaimed, "the lead was already claimed"));
        }
        let row = store::lead(&mut tx, &lead.id).await?.ok_or(DealsError::NotFound("lead"))?;
        self.commit(tx).await?;
        Ok(pb::ClaimLeadResponse { lead: Some(self.lead_message(&row).await?) })
    }

    async fn decline_lead_(
        &self,
        request: Request<pb::DeclineLeadRequest>,
    ) -> Result<pb::DeclineLeadResponse> {
        let caller = caller(&request)?;
        let pb::DeclineLeadRequest { lead_id, reason } = request.into_inner();
        Validator::new()
            .id("lead_id", "lead", &lead_id)
            .optional_text("reason", &reason, TEXT_MAX)
            .finish()?;
        let lead = self.visible_lead(&caller, &lead_id).await?;
        if lead.owner_user_id.is_empty() {
            return Err(DealsError::NotFound("lead"));
        }
        self.authorize_contribute(&caller, &lead.team_id, "lead").await?;
        if LeadStatus::parse(&lead.status).is_some_and(LeadStatus::is_final) {
            return Err(DealsError::rule(ErrorReason::LeadFinal, "the lead is won, lost or unqualified"));
        }
        let mut tx = self.db.begin().await?;
        store::insert_decline(&mut tx, &lead.id, &lead.team_id, &caller.user_id, reason.trim(), now_micros())
            .await?;
        let declined = store::declined_teams(&mut tx, &lead.id).await?;
        let mut row = lead.clone();
        row.owner_user_id.clear();
        row.team_id.clear();
        row.queue_id.clear();
        row.status = LeadStatus::New.as_str().to_owned();
        row.update_time = now_micros().max(lead.update_time + 1);
        // Back to the rules, which skip every team that declined it.
        self.apply_rules(&caller, &mut tx, &mut row, &declined).await?;
        if !store::update_lead(&mut tx, &row, lead.update_time).await? {
            return Err(DealsError::Conflict("the lead"));
        }
        self.notify_owner(&mut tx, &row).await?;
        self.commit(tx).await?;
        Ok(pb::DeclineLeadResponse { lead: Some(convert::lead(&row, declined)) })
    }

    async fn bulk_reassign_leads_(
        &self,
        request: Request<pb::BulkReassignLeadsRequest>,
    ) -> Result<ProgressStream> {
        use pb::bulk_reassign_leads_request::Target;
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff reassign leads")?;
        let pb::BulkReassignLeadsRequest { lead_ids, target, team_id, notify } = request.into_inner();
        let mut v = Validator::new();
        v.check(!lead_ids.is_empty(), "lead_ids", "must name at least one lead");
        v.check(lead_ids.len() <= BULK_MAX, "lead_ids", "must name at most 1000 leads");
        for (i, id) in lead_ids.iter().enumerate() {
            if !tandem_platform::ids::is_valid("lead", id) || id.len() > ID_MAX {
                v.violation(&format!("lead_ids[{i}]"), "must be a lead id");
            }
        }
        v.finish()?;
        let (user, queue) = match &target {
            Some(Target::UserId(u)) => (Some(u.as_str()), None),
            Some(Target::QueueId(q)) => (None, Some(q.as_str())),
            None => (None, None),
        };
        let dest = self.destination(&caller, user, queue, &team_id).await?;
        let api = self.clone();
        let total = i32::try_from(lead_ids.len()).unwrap_or(i32::MAX);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for (i, lead_id) in lead_ids.into_iter().enumerate() {
                let (outcome, error) = match api.reassign(&lead_id, &dest, notify).await {
                    Ok((true, _)) => (pb::ReassignOutcome::Reassigned, String::new()),
                    Ok((false, _)) => (pb::ReassignOutcome::Unchanged, String::new()),
                    Err(e) => {
                        let status = Status::from(e);
                        (pb::ReassignOutcome::Failed, status.message().to_owned())
                    }
                };
                let progress = pb::BulkReassignLeadsResponse {
                    lead_id,
                    outcome: outcome.into(),
                    error,
                    done: i32::try_from(i + 1).unwrap_or(i32::MAX),
                    total,
                };
                if tx.send(Ok(progress)).await.is_err() {
                    // The client went away; the leads done so far stay done, a retry skips them.
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
