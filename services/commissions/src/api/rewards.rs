//! `RewardService`: a team's balance, its reward lines, withdrawals of the whole available
//! balance, and whether a team holds rewards.

use tandem_platform::{
    idempotency::{self, Claim},
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::Validator,
};
use tandem_proto::{
    commissions::v1::{self as pb, reward_service_server::RewardService},
    common::v1::ErrorReason,
    identity::v1::Permission,
};
use tonic::Request;

use super::{CommissionsApi, caller, convert, grpc, request_id, request_id_reused, require_staff};
use crate::{
    domain::{
        ledger::{Posting, TeamBalance, WithdrawalRefusal, withdrawable},
        money::{Money, is_currency_code},
    },
    error::{CommissionsError, Result},
    store::{self, PayoutRow},
};

grpc! {
    RewardService {
        get_reward_balance => get_reward_balance_(GetRewardBalanceRequest) -> GetRewardBalanceResponse;
        list_rewards => list_rewards_(ListRewardsRequest) -> ListRewardsResponse;
        request_withdrawal => request_withdrawal_(RequestWithdrawalRequest) -> RequestWithdrawalResponse;
        check_team_rewards => check_team_rewards_(CheckTeamRewardsRequest) -> CheckTeamRewardsResponse;
    }
}

const WITHDRAWAL_SCOPE: &str = "commissions.RequestWithdrawal";
/// The service principal that may ask `CheckTeamRewards` besides staff.
const IDENTITY_SERVICE: &str = "identity";

fn currency_field(v: &mut Validator, currency: &str) {
    v.check(
        currency.is_empty() || is_currency_code(currency),
        "currency_code",
        "must be an ISO 4217 currency code such as \"USD\"",
    );
}

impl CommissionsApi {
    /// The currency a balance or withdrawal is in: the one asked for, else the newest plan's
    /// minimum payout currency, else USD.
    async fn rewards_currency(&self, c: &mut sqlx::AnyConnection, asked: &str) -> Result<(String, i64)> {
        let plan = store::current_plan(c).await?;
        let currency = match (asked, &plan) {
            ("", Some(p)) => p.minimum_currency.clone(),
            ("", None) => "USD".to_owned(),
            (asked, _) => asked.to_owned(),
        };
        // The minimum payout applies in its own currency.
        let minimum = plan.filter(|p| p.minimum_currency == currency).map_or(0, |p| p.minimum_minor);
        Ok((currency, minimum))
    }

    async fn get_reward_balance_(
        &self,
        request: Request<pb::GetRewardBalanceRequest>,
    ) -> Result<pb::GetRewardBalanceResponse> {
        let caller = caller(&request)?;
        let pb::GetRewardBalanceRequest { team_id, currency_code } = request.into_inner();
        let mut v = Validator::new();
        v.id("team_id", "team", &team_id);
        currency_field(&mut v, &currency_code);
        v.finish()?;
        self.authorize(&caller, &team_id, Permission::RewardsView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        let (currency, _) = self.rewards_currency(&mut conn, &currency_code).await?;
        let balances = store::team_balances(&mut conn, &team_id).await?;
        let main = balances.iter().find(|(c, _)| *c == currency).map(|(_, b)| *b).unwrap_or_default();
        let b = convert::balance(&currency, &main);
        Ok(pb::GetRewardBalanceResponse {
            available: b.available,
            pending: b.pending,
            paid: b.paid,
            payable: b.payable,
            balances: balances.iter().map(|(c, b)| convert::balance(c, b)).collect(),
        })
    }

    async fn list_rewards_(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> Result<pb::ListRewardsResponse> {
        let caller = caller(&request)?;
        let pb::ListRewardsRequest { team_id, page_size, page_token } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize(&caller, &team_id, Permission::RewardsView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_rewards(&mut conn, &team_id, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.id.clone());
        Ok(pb::ListRewardsResponse { rewards: rows.iter().map(convert::reward).collect(), next_page_token })
    }

    async fn request_withdrawal_(
        &self,
        request: Request<pb::RequestWithdrawalRequest>,
    ) -> Result<pb::RequestWithdrawalResponse> {
        let caller = caller(&request)?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::RequestWithdrawalRequest { team_id, request_id: rid, currency_code } = request.into_inner();
        let mut v = Validator::new();
        v.id("team_id", "team", &team_id);
        request_id(&mut v, &rid);
        currency_field(&mut v, &currency_code);
        v.finish()?;
        self.authorize(&caller, &team_id, Permission::RewardsWithdraw, false, "team").await?;

        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::RequestWithdrawalResponse>(
            &mut tx,
            WITHDRAWAL_SCOPE,
            &rid,
            &fingerprint,
        )
        .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => return Err(request_id_reused("withdrawal")),
            Claim::New => {}
        }
        // One withdrawal of a team at a time: the balance read below stays true until commit.
        store::lock_team(&mut tx, &team_id).await?;
        let (currency, minimum) = self.rewards_currency(&mut tx, &currency_code).await?;
        let balance: TeamBalance = store::team_balances(&mut tx, &team_id)
            .await?
            .into_iter()
            .find(|(c, _)| *c == currency)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let amount = withdrawable(balance.available, minimum).map_err(|refusal| match refusal {
            WithdrawalRefusal::Negative(available) => CommissionsError::rule(
                ErrorReason::NegativeBalance,
                format!("the available balance is {available} {currency}: clawbacks must be covered by earnings first"),
            ),
            WithdrawalRefusal::BelowMinimum { available, minimum } => CommissionsError::rule(
                ErrorReason::BelowMinimumPayout,
                format!("{available} {currency} is available; the minimum payout is {minimum} {currency}"),
            ),
        })?;
        let now = now_micros();
        let payout = PayoutRow {
            id: new_id("pout"),
            team_id: team_id.clone(),
            currency_code: currency.clone(),
            amount_minor: amount,
            status: store::REQUESTED.to_owned(),
            batch_id: None,
            requested_by: caller.user_id.clone(),
            create_time: now,
            paid_time: None,
        };
        store::insert_payout(&mut tx, &payout).await?;
        let posting = Posting::withdrawal(&team_id, &Money::new(&currency, amount))
            .map_err(|e| CommissionsError::Internal(anyhow::anyhow!("{e}")))?;
        store::insert_posting(&mut tx, &posting, None, Some(&payout.id), now).await?;
        let response = pb::RequestWithdrawalResponse { payout: Some(convert::payout(&payout)) };
        idempotency::record(&mut tx, WITHDRAWAL_SCOPE, &rid, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }

    async fn check_team_rewards_(
        &self,
        request: Request<pb::CheckTeamRewardsRequest>,
    ) -> Result<pb::CheckTeamRewardsResponse> {
        // Identity asks as its service principal before deleting a team; staff may ask too.
        let caller =
            tandem_platform::auth::caller_or_service(&request).cloned().map_err(CommissionsError::Api)?;
        if !caller.is_service(IDENTITY_SERVICE) {
            require_staff(&caller, "only vendor staff and identity ask whether a team holds rewards")?;
        }
        let pb::CheckTeamRewardsRequest { team_id } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        Ok(pb::CheckTeamRewardsResponse { holds_rewards: self.team_holds_rewards(&team_id).await? })
    }
}
