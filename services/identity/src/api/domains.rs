//! `DomainService`: a team proves a domain with a DNS TXT record; users whose verified email
//! is on it may then join the team as members.

use tandem_platform::{
    db::DbError,
    paging::Page,
    time::now_micros,
    validate::{Validator, is_domain},
};
use tandem_proto::{
    common::v1::ErrorReason,
    events::v1::MembershipChange,
    identity::v1::{self as pb, TeamRole, domain_service_server::DomainService},
};
use tonic::Request;

use super::{IdentityApi, auth::membership_event, caller, convert, grpc};
use crate::{
    domain::{
        access::Action,
        secrets::new_token,
        teams::{email_domain, normalize_domain, txt_matches, txt_record_name, txt_record_value},
    },
    error::{IdentityError, Result},
    store::{self, DomainRow},
};

grpc! {
    DomainService {
        add_domain => add_domain_(AddDomainRequest) -> AddDomainResponse;
        verify_domain => verify_domain_(VerifyDomainRequest) -> VerifyDomainResponse;
        list_domains => list_domains_(ListDomainsRequest) -> ListDomainsResponse;
        join_team_by_domain => join_team_by_domain_(JoinTeamByDomainRequest) -> JoinTeamByDomainResponse;
    }
}

fn validated(team_id: &str, domain: &str) -> Result<String> {
    let domain = normalize_domain(domain);
    Validator::new()
        .id("team_id", "team", team_id)
        .check(is_domain(&domain), "domain", "must be a domain name such as example.com")
        .finish()?;
    Ok(domain)
}

impl IdentityApi {
    /// The team's record of `domain`, or NOT_FOUND.
    async fn team_domain(&self, team_id: &str, domain: &str) -> Result<DomainRow> {
        let mut conn = self.db.acquire().await?;
        store::domain(&mut conn, domain)
            .await?
            .filter(|d| d.team_id == team_id)
            .ok_or(IdentityError::NotFound("domain"))
    }

    async fn add_domain_(&self, request: Request<pb::AddDomainRequest>) -> Result<pb::AddDomainResponse> {
        let caller = caller(&request)?;
        let pb::AddDomainRequest { team_id, domain } = request.into_inner();
        let domain = validated(&team_id, &domain)?;
        self.authorize(&caller, &team_id, Action::ManageMembers).await?;
        let row = DomainRow {
            domain: domain.clone(),
            team_id: team_id.clone(),
            txt_value: txt_record_value(&new_token()),
            verify_time: None,
        };
        let mut tx = self.db.begin().await?;
        let row = match store::insert_domain(&mut tx, &row, now_micros()).await {
            Ok(()) => {
                tx.commit().await?;
                row
            }
            Err(DbError::UniqueViolation) => {
                drop(tx);
                // Adding a domain the team already has answers its record again.
                self.team_domain(&team_id, &domain).await.map_err(|_| {
                    IdentityError::Duplicate(
                        ErrorReason::DomainTaken,
                        "this domain belongs to another team".into(),
                    )
                })?
            }
            Err(err) => return Err(err.into()),
        };
        let d = convert::domain(&row);
        Ok(pb::AddDomainResponse {
            domain: d.domain,
            txt_record_name: d.txt_record_name,
            txt_record_value: d.txt_record_value,
            verified: d.verified,
        })
    }

    async fn verify_domain_(
        &self,
        request: Request<pb::VerifyDomainRequest>,
    ) -> Result<pb::VerifyDomainResponse> {
        let caller = caller(&request)?;
        let pb::VerifyDomainRequest { team_id, domain } = request.into_inner();
        let domain = validated(&team_id, &domain)?;
        self.authorize(&caller, &team_id, Action::ManageMembers).await?;
        let mut row = self.team_domain(&team_id, &domain).await?;
        if row.verify_time.is_none() {
            let found = self
                .ports
                .txt
                .txt(&txt_record_name(&domain))
                .await
                .map_err(|e| IdentityError::Unavailable(format!("DNS lookup failed: {e:#}")))?;
            if !txt_matches(&found, &row.txt_value) {
                return Err(IdentityError::rule(
                    ErrorReason::DomainVerificationFailed,
                    format!(
                        "no TXT record `{}` holding the expected value was found",
                        txt_record_name(&domain)
                    ),
                ));
            }
            let now = now_micros();
            let mut tx = self.db.begin().await?;
            store::mark_domain_verified(&mut tx, &domain, now).await?;
            tx.commit().await?;
            row.verify_time = Some(now);
        }
        let d = convert::domain(&row);
        Ok(pb::VerifyDomainResponse {
            domain: d.domain,
            txt_record_name: d.txt_record_name,
            txt_record_value: d.txt_record_value,
            verified: d.verified,
        })
    }

    async fn list_domains_(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<pb::ListDomainsResponse> {
        let caller = caller(&request)?;
        let pb::ListDomainsRequest { team_id, page_size, page_token } = request.into_inner();
        super::team_id("team_id", &team_id)?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize(&caller, &team_id, Action::View).await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_domains(&mut conn, &team_id, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |d| d.domain.clone());
        Ok(pb::ListDomainsResponse { domains: rows.iter().map(convert::domain).collect(), next_page_token })
    }

    async fn join_team_by_domain_(
        &self,
        request: Request<pb::JoinTeamByDomainRequest>,
    ) -> Result<pb::JoinTeamByDomainResponse> {
        let caller = caller(&request)?;
        let team_id = request.into_inner().team_id;
        super::team_id("team_id", &team_id)?;
        if caller.is_staff() {
            return Err(IdentityError::Denied("vendor staff do not join partner teams"));
        }
        let mut tx = self.db.begin().await?;
        store::team(&mut tx, &team_id).await?.ok_or(IdentityError::NotFound("team"))?;
        let user =
            store::user_by_id(&mut tx, &caller.user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        if !user.email_verified {
            return Err(IdentityError::rule(
                ErrorReason::EmailNotVerified,
                "verify your email address first",
            ));
        }
        let domain = email_domain(&user.email).unwrap_or_default();
        match store::domain(&mut tx, &domain).await?.filter(|d| d.team_id == team_id) {
            Some(d) if d.verify_time.is_some() => {}
            Some(_) => {
                return Err(IdentityError::rule(
                    ErrorReason::DomainNotVerified,
                    "the team has not verified this domain yet",
                ));
            }
            None => {
                return Err(IdentityError::rule(
                    ErrorReason::EmailDomainMismatch,
                    "your email address is not on a verified domain of this team",
                ));
            }
        }
        let now = now_micros();
        if !store::insert_member(&mut tx, &team_id, &user.id, TeamRole::Member.as_str_name(), now).await? {
            return Err(IdentityError::Duplicate(
                ErrorReason::AlreadyMember,
                "you are already a member of this team".into(),
            ));
        }
        self.emit(
            &mut tx,
            &team_id,
            membership_event(&team_id, &user.id, MembershipChange::Added, TeamRole::Member),
        )
        .await?;
        let member =
            store::member(&mut tx, &team_id, &user.id).await?.ok_or(IdentityError::NotFound("member"))?;
        self.commit(tx).await?;
        self.forget_member(&user.id, &team_id).await;
        Ok(pb::JoinTeamByDomainResponse { member: Some(convert::member(&member)) })
    }
}
