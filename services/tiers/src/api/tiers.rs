//! `TierService`: tier definitions per program and team certifications.

use tandem_platform::{
    db::DbError,
    ids::new_id,
    paging::Page,
    time::{from_timestamp, now_micros},
    validate::{NAME_MAX, Validator},
};
use tandem_proto::{
    common::v1::ErrorReason,
    tiers::v1::{self as pb, tier_service_server::TierService},
};
use tonic::Request;

use super::{TiersApi, caller, convert, grpc, require_staff};
use crate::{
    error::{Result, TiersError},
    ledger,
    store::{self, CertificationRow, TierRow},
};

grpc! {
    TierService {
        create_tier => create_tier_(CreateTierRequest) -> CreateTierResponse;
        list_tiers => list_tiers_(ListTiersRequest) -> ListTiersResponse;
        update_tier => update_tier_(UpdateTierRequest) -> UpdateTierResponse;
        record_certification => record_certification_(RecordCertificationRequest) -> RecordCertificationResponse;
    }
}

/// The fields `UpdateTier` may change.
const UPDATABLE: &[&str] = &[
    "name",
    "rank",
    "points_threshold",
    "sold_points_minimum",
    "managed_points_minimum",
    "requires_certification",
];

fn check_tier(v: &mut Validator, t: &TierRow) {
    v.text("name", &t.name, NAME_MAX)
        .check(t.rank > 0, "rank", "must be positive")
        .check(t.points_threshold >= 0, "points_threshold", "must not be negative")
        .check(t.sold_points_minimum >= 0, "sold_points_minimum", "must not be negative")
        .check(t.managed_points_minimum >= 0, "managed_points_minimum", "must not be negative");
}

fn duplicate(err: DbError) -> TiersError {
    match err {
        DbError::UniqueViolation => TiersError::Duplicate(
            ErrorReason::AlreadyExists,
            "the program already has a tier with this rank or name".into(),
        ),
        other => other.into(),
    }
}

impl TiersApi {
    async fn create_tier_(&self, request: Request<pb::CreateTierRequest>) -> Result<pb::CreateTierResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff define tiers")?;
        let pb::CreateTierRequest {
            program_id,
            name,
            rank,
            points_threshold,
            sold_points_minimum,
            managed_points_minimum,
            requires_certification,
        } = request.into_inner();
        let now = now_micros();
        let tier = TierRow {
            id: new_id("tier"),
            program_id,
            name: name.trim().to_owned(),
            rank: i64::from(rank),
            points_threshold,
            sold_points_minimum,
            managed_points_minimum,
            requires_certification,
            create_time: now,
            update_time: now,
        };
        let mut v = Validator::new();
        v.id("program_id", "prog", &tier.program_id);
        check_tier(&mut v, &tier);
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        store::insert_tier(&mut conn, &tier).await.map_err(duplicate)?;
        self.sweep.notify_one();
        Ok(pb::CreateTierResponse { tier: Some(convert::tier(&tier)) })
    }

    async fn list_tiers_(&self, request: Request<pb::ListTiersRequest>) -> Result<pb::ListTiersResponse> {
        caller(&request)?;
        let pb::ListTiersRequest { program_id, page_size, page_token } = request.into_inner();
        Validator::new().id("program_id", "prog", &program_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        let after = match &page.after {
            None => i64::MIN,
            Some(key) => {
                key.parse().map_err(|_| TiersError::invalid("page_token", "is not a token of this list"))?
            }
        };
        let mut conn = self.db.acquire().await?;
        let rows = store::list_tiers(&mut conn, &program_id, after, page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |t| t.rank.to_string());
        Ok(pb::ListTiersResponse { tiers: rows.iter().map(convert::tier).collect(), next_page_token })
    }

    async fn update_tier_(&self, request: Request<pb::UpdateTierRequest>) -> Result<pb::UpdateTierResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff define tiers")?;
        let pb::UpdateTierRequest { tier, update_mask } = request.into_inner();
        let tier = tier.unwrap_or_default();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Validator::new();
        v.id("tier.id", "tier", &tier.id);
        v.check(!paths.is_empty(), "update_mask", "must name the fields to change");
        for path in &paths {
            v.check(
                UPDATABLE.contains(&path.as_str()),
                "update_mask",
                "names a field that cannot be changed",
            );
        }
        v.finish()?;
        let mut tx = self.db.begin().await?;
        let mut row = store::tier(&mut tx, &tier.id).await?.ok_or(TiersError::NotFound("tier"))?;
        for path in &paths {
            match path.as_str() {
                "name" => row.name = tier.name.trim().to_owned(),
                "rank" => row.rank = i64::from(tier.rank),
                "points_threshold" => row.points_threshold = tier.points_threshold,
                "sold_points_minimum" => row.sold_points_minimum = tier.sold_points_minimum,
                "managed_points_minimum" => row.managed_points_minimum = tier.managed_points_minimum,
                "requires_certification" => row.requires_certification = tier.requires_certification,
                _ => {}
            }
        }
        let mut v = Validator::new();
        check_tier(&mut v, &row);
        v.finish().map_err(|e| match TiersError::from(e) {
            TiersError::Invalid(violations) => TiersError::Invalid(
                violations
                    .into_iter()
                    .map(|mut f| {
                        f.field = format!("tier.{}", f.field);
                        f
                    })
                    .collect(),
            ),
            other => other,
        })?;
        row.update_time = now_micros();
        store::update_tier(&mut tx, &row).await.map_err(duplicate)?;
        self.commit(tx).await?;
        self.sweep.notify_one();
        Ok(pb::UpdateTierResponse { tier: Some(convert::tier(&row)) })
    }

    async fn record_certification_(
        &self,
        request: Request<pb::RecordCertificationRequest>,
    ) -> Result<pb::RecordCertificationResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff record certifications")?;
        let pb::RecordCertificationRequest { team_id, valid_until } = request.into_inner();
        let now = now_micros();
        let valid_until = valid_until.as_ref().and_then(from_timestamp);
        let mut v = Validator::new();
        v.id("team_id", "team", &team_id);
        match valid_until {
            None => v.violation("valid_until", "must be a valid timestamp"),
            Some(t) => v.check(t > now, "valid_until", "must be in the future"),
        };
        v.finish()?;
        let row = CertificationRow {
            id: new_id("cert"),
            team_id,
            valid_until: valid_until.unwrap_or_default(),
            create_time: now,
        };
        let mut tx = self.db.begin().await?;
        store::insert_certification(&mut tx, &row).await?;
        for program_id in store::team_programs(&mut tx, &row.team_id).await? {
            ledger::refresh_credited_tier(&mut tx, &program_id, &row.team_id, now).await?;
        }
        self.commit(tx).await?;
        Ok(pb::RecordCertificationResponse { certification: Some(convert::certification(&row)) })
    }
}
