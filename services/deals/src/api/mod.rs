//! The gRPC surface of deals: thin handlers that validate, authorise, run the use case in one
//! transaction and convert. `DealsApi` implements every deals service.
//!
//! Access, every decision through identity's permission check: vendor staff see and manage
//! everything and alone create leads, queues, rules and pipelines, assign leads and review
//! registrations; a partner sees the leads and deals of its teams (`PERMISSION_TEAM_VIEW`) and
//! the unclaimed leads of its queues, and works them, registers and updates deals with
//! `PERMISSION_DEALS_CONTRIBUTE` (owner, admin, member — not finance). Anything a caller may not
//! see answers NOT_FOUND.

mod convert;
pub mod deals;
pub mod leads;
pub mod pipelines;
pub mod queues;
pub mod rules;

use std::sync::Arc;

use tandem_platform::{auth::Caller, server::ServiceSet, service_set};
use tandem_proto::{
    deals::v1::{
        assignment_rule_service_server::AssignmentRuleServiceServer, deal_service_server::DealServiceServer,
        lead_service_server::LeadServiceServer, pipeline_service_server::PipelineServiceServer,
        queue_service_server::QueueServiceServer,
    },
    identity::v1::Permission,
};

use crate::{
    Deals,
    error::{DealsError, Result},
};

/// The handlers of every deals service.
#[derive(Clone)]
pub struct DealsApi(pub Arc<Deals>);

impl std::ops::Deref for DealsApi {
    type Target = Deals;
    fn deref(&self) -> &Deals {
        &self.0
    }
}

/// Every deals service, with message size limits.
pub fn services(deals: &Arc<Deals>, max_message_bytes: usize) -> ServiceSet {
    let api = DealsApi(deals.clone());
    service_set![
        max_message_bytes;
        LeadServiceServer::new(api.clone()),
        QueueServiceServer::new(api.clone()),
        AssignmentRuleServiceServer::new(api.clone()),
        DealServiceServer::new(api.clone()),
        PipelineServiceServer::new(api),
    ]
}

pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>> {
    // UNAUTHENTICATED without a token; PERMISSION_DENIED for a service principal.
    tandem_platform::auth::caller(request).cloned().map_err(DealsError::Api)
}

/// Only vendor staff may do this.
pub(crate) fn require_staff(caller: &Caller, what: &'static str) -> Result<()> {
    if caller.is_staff() { Ok(()) } else { Err(DealsError::Denied(what)) }
}

/// The staff who run the partner relationship: admins and channel managers. Reviewing a
/// partner's deal registration is theirs, as reviewing its application is in identity;
/// finance staff handle money, not registrations.
pub(crate) fn require_channel_staff(caller: &Caller, what: &'static str) -> Result<()> {
    use tandem_proto::identity::v1::StaffRole;
    if caller.has_staff_role(&[StaffRole::Admin, StaffRole::ChannelManager]) {
        Ok(())
    } else {
        Err(DealsError::Denied(what))
    }
}

impl DealsApi {
    /// Whether the caller may see the team's leads and deals (staff always).
    pub(crate) async fn can_view(&self, caller: &Caller, team_id: &str) -> Result<bool> {
        Ok(caller.is_staff()
            || (!team_id.is_empty() && self.permissions.check(caller, team_id, Permission::TeamView).await?))
    }

    /// Authorises reading a team's leads and deals: NOT_FOUND for a caller who may not.
    pub(crate) async fn authorize_view(
        &self,
        caller: &Caller,
        team_id: &str,
        what: &'static str,
    ) -> Result<()> {
        if self.can_view(caller, team_id).await? { Ok(()) } else { Err(DealsError::NotFound(what)) }
    }

    /// Authorises contributing to a team's leads and deals: staff, or a member whose role
    /// contributes. A member who may only look gets PERMISSION_DENIED; others NOT_FOUND.
    pub(crate) async fn authorize_contribute(
        &self,
        caller: &Caller,
        team_id: &str,
        what: &'static str,
    ) -> Result<()> {
        if caller.is_staff() || self.permissions.check(caller, team_id, Permission::DealsContribute).await? {
            return Ok(());
        }
        if self.can_view(caller, team_id).await? {
            Err(DealsError::Denied("your role in this team does not contribute deals"))
        } else {
            Err(DealsError::NotFound(what))
        }
    }
}

/// Implements a generated service trait for [`DealsApi`]: see `tandem_platform::grpc_service!`.
macro_rules! grpc {
    ($($body:tt)*) => {
        tandem_platform::grpc_service!($crate::api::DealsApi; $($body)*);
    };
}
pub(crate) use grpc;

/// Prefixes each violation's field with `prefix.` (`deal.amount`).
pub(crate) fn nested(prefix: &str, err: tandem_platform::ApiError) -> DealsError {
    match DealsError::from(err) {
        DealsError::Invalid(v) => DealsError::Invalid(
            v.into_iter()
                .map(|mut f| {
                    f.field = format!("{prefix}.{}", f.field);
                    f
                })
                .collect(),
        ),
        other => other,
    }
}
