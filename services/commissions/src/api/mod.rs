//! The gRPC surface of commissions: thin handlers that validate, authorise, run the use case
//! and convert. `CommissionsApi` implements every commissions service.
//!
//! Access, as identity answers `CheckPermission` for the team:
//! - customers: team members list them and their renewals (`PERMISSION_TEAM_VIEW`); the team's
//!   managers, owner and admins (`PERMISSION_TEAM_MANAGE`), add, verify, change plans and record
//!   payments and refunds;
//! - rewards, commissions, statements and payouts of a team: `PERMISSION_REWARDS_VIEW` (owner,
//!   admin, finance, and members when the team shows rewards);
//! - withdrawals: `PERMISSION_REWARDS_WITHDRAW` (owner and finance), never staff;
//! - vendor staff act on every team's customers and read every team's rewards, and alone define
//!   plans and batch and pay payouts;
//! - whether a team holds rewards (`CheckTeamRewards`) is asked by staff and by identity's
//!   service principal (before it deletes a team); no other service token is taken anywhere.
//!
//! A caller who may see the team but not do the thing gets PERMISSION_DENIED; one who may not
//! even see it gets NOT_FOUND, as if the team (or customer, or payment) did not exist.

mod convert;
pub mod customers;
pub mod payouts;
pub mod plans;
pub mod rewards;

use std::sync::Arc;

use tandem_platform::{auth::Caller, server::ServiceSet, service_set, validate::Validator};
use tandem_proto::{
    commissions::v1::{
        commission_service_server::CommissionServiceServer, customer_service_server::CustomerServiceServer,
        payout_service_server::PayoutServiceServer, renewal_service_server::RenewalServiceServer,
        reward_service_server::RewardServiceServer,
    },
    common::v1::{ErrorReason, Money},
    identity::v1::Permission,
};

use crate::{
    Commissions,
    domain::money::{self, AmountError},
    error::{CommissionsError, Result},
};

/// The handlers of every commissions service.
#[derive(Clone)]
pub struct CommissionsApi(pub Arc<Commissions>);

impl std::ops::Deref for CommissionsApi {
    type Target = Commissions;
    fn deref(&self) -> &Commissions {
        &self.0
    }
}

/// Every commissions service, with message size limits.
pub fn services(commissions: &Arc<Commissions>, max_message_bytes: usize) -> ServiceSet {
    let api = CommissionsApi(commissions.clone());
    service_set![
        max_message_bytes;
        CustomerServiceServer::new(api.clone()),
        CommissionServiceServer::new(api.clone()),
        RewardServiceServer::new(api.clone()),
        PayoutServiceServer::new(api.clone()),
        RenewalServiceServer::new(api),
    ]
}

pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>> {
    // UNAUTHENTICATED without a token; PERMISSION_DENIED for a service principal.
    tandem_platform::auth::caller(request).cloned().map_err(CommissionsError::Api)
}

/// Only vendor staff may do this.
pub(crate) fn require_staff(caller: &Caller, what: &'static str) -> Result<()> {
    if caller.is_staff() { Ok(()) } else { Err(CommissionsError::Denied(what)) }
}

/// Validates a `request_id`: present and at most an id's length.
pub(crate) fn request_id(v: &mut Validator, value: &str) {
    v.text("request_id", value, tandem_platform::validate::ID_MAX);
}

/// Validates an amount that must be positive; returns it when valid.
pub(crate) fn positive_amount(
    v: &mut Validator,
    field: &str,
    amount: Option<&Money>,
) -> Option<money::Money> {
    amount_with(v, field, amount, money::positive)
}

/// Validates an amount that may be zero; returns it when valid.
pub(crate) fn non_negative_amount(
    v: &mut Validator,
    field: &str,
    amount: Option<&Money>,
) -> Option<money::Money> {
    amount_with(v, field, amount, money::non_negative)
}

fn amount_with(
    v: &mut Validator,
    field: &str,
    amount: Option<&Money>,
    check: fn(&str, i64) -> std::result::Result<money::Money, AmountError>,
) -> Option<money::Money> {
    let Some(amount) = amount else {
        v.violation(field, AmountError::Missing.to_string());
        return None;
    };
    match check(&amount.currency_code, amount.amount_minor) {
        Ok(m) => Some(m),
        Err(AmountError::Currency) => {
            v.violation(&format!("{field}.currency_code"), AmountError::Currency.to_string());
            None
        }
        Err(e) => {
            v.violation(&format!("{field}.amount_minor"), e.to_string());
            None
        }
    }
}

pub(crate) fn request_id_reused(what: &str) -> CommissionsError {
    CommissionsError::Duplicate(
        ErrorReason::RequestIdReused,
        format!("request_id was already used for a different {what}"),
    )
}

impl CommissionsApi {
    /// Authorises `permission` on the team. Staff pass when `staff_may`; others must be allowed
    /// by identity. A refused caller who may see the team gets PERMISSION_DENIED, anyone else
    /// NOT_FOUND (`what` names the object they asked about).
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        team_id: &str,
        permission: Permission,
        staff_may: bool,
        what: &'static str,
    ) -> Result<()> {
        if caller.is_staff() {
            return if staff_may {
                Ok(())
            } else {
                Err(CommissionsError::Denied("vendor staff cannot do this for a team"))
            };
        }
        if self.permissions.check(caller, team_id, permission).await? {
            return Ok(());
        }
        if permission != Permission::TeamView
            && self.permissions.check(caller, team_id, Permission::TeamView).await?
        {
            Err(CommissionsError::Denied(match permission {
                Permission::RewardsView => "the team's rewards are hidden from this member",
                Permission::RewardsWithdraw => "only the team's owner and finance members withdraw rewards",
                _ => "only the team's owner and admins manage its customers",
            }))
        } else {
            Err(CommissionsError::NotFound(what))
        }
    }
}

/// Implements a generated service trait for [`CommissionsApi`]: see `tandem_platform::grpc_service!`.
macro_rules! grpc {
    ($($body:tt)*) => {
        tandem_platform::grpc_service!($crate::api::CommissionsApi; $($body)*);
    };
}
pub(crate) use grpc;
