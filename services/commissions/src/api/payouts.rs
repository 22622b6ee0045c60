//! `PayoutService`: vendor payout batches and paid marks (staff), payout lists.

use std::collections::BTreeMap;

use tandem_platform::{
    idempotency::{self, Claim},
    ids::new_id,
    outbox,
    paging::Page,
    time::{now_micros, to_timestamp},
    validate::Validator,
};
use tandem_proto::{
    commissions::v1::{self as pb, payout_service_server::PayoutService},
    common::v1::ErrorReason,
    events::v1::{NotificationRequested, event::Payload},
    identity::v1::Permission,
};
use tonic::Request;

use super::{CommissionsApi, caller, convert, grpc, request_id, request_id_reused, require_staff};
use crate::{
    SOURCE, STREAM,
    domain::{
        ledger::Posting,
        money::{Money, is_currency_code},
    },
    error::{CommissionsError, Result},
    store,
};

grpc! {
    PayoutService {
        create_payout_batch => create_payout_batch_(CreatePayoutBatchRequest) -> CreatePayoutBatchResponse;
        list_payouts => list_payouts_(ListPayoutsRequest) -> ListPayoutsResponse;
        mark_payout_paid => mark_payout_paid_(MarkPayoutPaidRequest) -> MarkPayoutPaidResponse;
    }
}

const BATCH_SCOPE: &str = "commissions.CreatePayoutBatch";
const PAID_SCOPE: &str = "commissions.MarkPayoutPaid";

impl CommissionsApi {
    async fn create_payout_batch_(
        &self,
        request: Request<pb::CreatePayoutBatchRequest>,
    ) -> Result<pb::CreatePayoutBatchResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff batch payouts")?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::CreatePayoutBatchRequest { currency_code, request_id: rid } = request.into_inner();
        let mut v = Validator::new();
        v.check(
            currency_code.is_empty() || is_currency_code(&currency_code),
            "currency_code",
            "must be an ISO 4217 currency code such as \"USD\"",
        );
        request_id(&mut v, &rid);
        v.finish()?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::CreatePayoutBatchResponse>(&mut tx, BATCH_SCOPE, &rid, &fingerprint)
            .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => return Err(request_id_reused("payout batch")),
            Claim::New => {}
        }
        let now = now_micros();
        let batch_id = new_id("batch");
        let mut payouts = store::batch_requested(&mut tx, &batch_id, &currency_code, now).await?;
        if payouts.is_empty() {
            return Err(CommissionsError::rule(ErrorReason::NothingToBatch, "no requested payout waits"));
        }
        payouts.sort_by(|a, b| a.id.cmp(&b.id));
        let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
        for p in &payouts {
            *totals.entry(&p.currency_code).or_default() += p.amount_minor;
        }
        let response = pb::CreatePayoutBatchResponse {
            batch: Some(pb::PayoutBatch {
                id: batch_id,
                payout_ids: payouts.iter().map(|p| p.id.clone()).collect(),
                totals: totals.into_iter().map(|(c, m)| convert::money(c, m)).collect(),
                create_time: Some(to_timestamp(now)),
            }),
        };
        idempotency::record(&mut tx, BATCH_SCOPE, &rid, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }

    async fn list_payouts_(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Result<pb::ListPayoutsResponse> {
        let caller = caller(&request)?;
        let pb::ListPayoutsRequest { team_id, page_size, page_token, status } = request.into_inner();
        let mut v = Validator::new();
        if !team_id.is_empty() || !caller.is_staff() {
            v.id("team_id", "team", &team_id);
        }
        let status = match pb::PayoutStatus::try_from(status) {
            Ok(pb::PayoutStatus::Unspecified) => None,
            Ok(pb::PayoutStatus::Requested) => Some(store::REQUESTED),
            Ok(pb::PayoutStatus::Batched) => Some(store::BATCHED),
            Ok(pb::PayoutStatus::Paid) => Some(store::PAID),
            Err(_) => {
                v.violation("status", "must be a known payout status");
                None
            }
        };
        v.finish()?;
        let page = Page::parse(page_size, &page_token)?;
        if !team_id.is_empty() {
            self.authorize(&caller, &team_id, Permission::RewardsView, true, "team").await?;
        }
        let mut conn = self.db.acquire().await?;
        let team = (!team_id.is_empty()).then_some(team_id.as_str());
        let rows = store::list_payouts(&mut conn, team, status, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        Ok(pb::ListPayoutsResponse { payouts: rows.iter().map(convert::payout).collect(), next_page_token })
    }

    async fn mark_payout_paid_(
        &self,
        request: Request<pb::MarkPayoutPaidRequest>,
    ) -> Result<pb::MarkPayoutPaidResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff mark payouts paid")?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::MarkPayoutPaidRequest { payout_id, request_id: rid } = request.into_inner();
        let mut v = Validator::new();
        v.id("payout_id", "pout", &payout_id);
        request_id(&mut v, &rid);
        v.finish()?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::MarkPayoutPaidResponse>(&mut tx, PAID_SCOPE, &rid, &fingerprint)
            .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => return Err(request_id_reused("payout")),
            Claim::New => {}
        }
        let now = now_micros();
        if !store::mark_paid(&mut tx, &payout_id, now).await? {
            return Err(match store::payout(&mut tx, &payout_id).await? {
                None => CommissionsError::NotFound("payout"),
                Some(_) => CommissionsError::rule(ErrorReason::PayoutState, "the payout is already paid"),
            });
        }
        let payout = store::payout(&mut tx, &payout_id).await?.ok_or(CommissionsError::NotFound("payout"))?;
        let posting =
            Posting::payout_paid(&payout.team_id, &Money::new(&payout.currency_code, payout.amount_minor))
                .map_err(|e| CommissionsError::Internal(anyhow::anyhow!("{e}")))?;
        store::insert_posting(&mut tx, &posting, None, Some(&payout.id), now).await?;
        // The member who asked for the payout learns that it was paid (identity's inbox).
        let notice = NotificationRequested {
            user_ids: vec![payout.requested_by.clone()],
            kind: "payout_paid".into(),
            title: "Your payout was paid".into(),
            body: format!("{} {} was paid to your team.", payout.amount_minor, payout.currency_code),
            subject_id: payout.id.clone(),
        };
        outbox::enqueue(&mut tx, STREAM, SOURCE, &payout.team_id, Payload::NotificationRequested(notice))
            .await?;
        let response = pb::MarkPayoutPaidResponse { payout: Some(convert::payout(&payout)) };
        idempotency::record(&mut tx, PAID_SCOPE, &rid, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }
}
