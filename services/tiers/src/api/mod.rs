//! The gRPC surface of tiers: thin handlers that validate, authorise, run the use case and
//! convert. `TiersApi` implements every tiers service.
//!
//! Access: team members read their team's figures (identity answers `PERMISSION_TEAM_VIEW`);
//! a caller who may not see the team gets NOT_FOUND. Vendor staff read every team's figures and
//! alone define tiers, rates, multipliers, adjustments and certifications (others get
//! PERMISSION_DENIED). Tier lists, rate lists, the calculator and conversions are open to any
//! signed-in caller.

mod convert;
pub mod points;
pub mod rates;
pub mod tiers;

use std::sync::Arc;

use tandem_platform::{auth::Caller, server::ServiceSet, service_set, validate::Validator};
use tandem_proto::{
    identity::v1::Permission,
    tiers::v1::{
        points_service_server::PointsServiceServer, rates_service_server::RatesServiceServer,
        tier_service_server::TierServiceServer,
    },
};

use crate::{
    Tiers,
    error::{Result, TiersError},
};

/// The handlers of every tiers service.
#[derive(Clone)]
pub struct TiersApi(pub Arc<Tiers>);

impl std::ops::Deref for TiersApi {
    type Target = Tiers;
    fn deref(&self) -> &Tiers {
        &self.0
    }
}

/// Every tiers service, with message size limits.
pub fn services(tiers: &Arc<Tiers>, max_message_bytes: usize) -> ServiceSet {
    let api = TiersApi(tiers.clone());
    service_set![
        max_message_bytes;
        TierServiceServer::new(api.clone()),
        PointsServiceServer::new(api.clone()),
        RatesServiceServer::new(api),
    ]
}

pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>> {
    // UNAUTHENTICATED without a token; PERMISSION_DENIED for a service principal.
    tandem_platform::auth::caller(request).cloned().map_err(TiersError::Api)
}

/// Only vendor staff may do this.
pub(crate) fn require_staff(caller: &Caller, what: &'static str) -> Result<()> {
    if caller.is_staff() { Ok(()) } else { Err(TiersError::Denied(what)) }
}

/// Longest client id (a normalised domain).
pub(crate) const CLIENT_ID_MAX: usize = 253;

/// Validates the team and program a read or write is about.
pub(crate) fn team_and_program(v: &mut Validator, team_id: &str, program_id: &str) {
    v.id("team_id", "team", team_id).id("program_id", "prog", program_id);
}

impl TiersApi {
    /// Authorises reading a team's figures: staff read all, members their team's; anyone else
    /// gets NOT_FOUND, as if the team did not exist.
    pub(crate) async fn authorize_read(&self, caller: &Caller, team_id: &str) -> Result<()> {
        if caller.is_staff() {
            return Ok(());
        }
        if self.permissions.check(caller, team_id, Permission::TeamView).await? {
            Ok(())
        } else {
            Err(TiersError::NotFound("team"))
        }
    }
}

/// Implements a generated service trait for [`TiersApi`]: see `tandem_platform::grpc_service!`.
macro_rules! grpc {
    ($($body:tt)*) => {
        tandem_platform::grpc_service!($crate::api::TiersApi; $($body)*);
    };
}
pub(crate) use grpc;
