//! Lead assignment use cases shared by the RPCs: who may receive a lead, the rules, the
//! round-robin turn and the notification of the new owner. Each runs inside the caller's
//! transaction.

use std::collections::HashMap;

use tandem_platform::{auth::Caller, db::Tx, time::now_micros};
use tandem_proto::common::v1::ErrorReason;

use crate::{
    Deals, UserInfo,
    domain::{
        directory::shared_teams,
        leads::{LeadStatus, may_receive},
        rules::{self, Criterion, LeadFacts, Operator, Rule},
    },
    error::{DealsError, Result},
    store::{self, LeadRow, MemberRow},
};

/// Where a rule sends a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User { user_id: String, team_id: String },
    Queue(String),
    RoundRobin(String),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::User { .. } => "USER",
            Self::Queue(_) => "QUEUE",
            Self::RoundRobin(_) => "ROUND_ROBIN",
        }
    }

    pub fn from_row(r: &store::RuleRow) -> Option<Self> {
        Some(match r.target_kind.as_str() {
            "USER" => Self::User { user_id: r.target_id.clone(), team_id: r.team_id.clone() },
            "QUEUE" => Self::Queue(r.target_id.clone()),
            "ROUND_ROBIN" => Self::RoundRobin(r.target_id.clone()),
            _ => return None,
        })
    }
}

pub fn facts(l: &LeadRow) -> LeadFacts {
    LeadFacts {
        country: l.country.clone(),
        industry: l.industry.clone(),
        company_name: l.company_name.clone(),
        employee_count: l.employee_count,
    }
}

impl Deals {
    /// The partner user a lead, queue seat or rule may go to: known, active, not staff, and a
    /// member of `team_hint` (or of exactly one team when no hint is given).
    pub async fn resolve_partner(
        &self,
        caller: &Caller,
        user_id: &str,
        team_hint: &str,
    ) -> Result<MemberRow> {
        let user = self.user_seen_by(caller, user_id).await?.ok_or(DealsError::NotFound("user"))?;
        if !user.active {
            return Err(DealsError::rule(ErrorReason::UserInactive, "the user is deactivated"));
        }
        if user.staff {
            return Err(DealsError::rule(ErrorReason::UserNotInTeam, "leads go to partner users, not staff"));
        }
        let team_id = if team_hint.is_empty() {
            match user.team_ids.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(DealsError::rule(ErrorReason::UserNotInTeam, "the user belongs to no team"));
                }
                _ => {
                    return Err(DealsError::rule(
                        ErrorReason::UserNotInTeam,
                        "the user belongs to several teams: name one in team_id",
                    ));
                }
            }
        } else if user.team_ids.iter().any(|t| t == team_hint) {
            team_hint.to_owned()
        } else {
            return Err(DealsError::rule(ErrorReason::UserNotInTeam, "the user is not a member of team_id"));
        };
        Ok(MemberRow { user_id: user_id.to_owned(), team_id })
    }

    /// The user as `caller` may learn of it, as identity's `GetUserAccess` would answer:
    /// staff and the user itself see all its teams, a partner the teams it shares with it, and
    /// a user of no shared team is unknown. From deals' copy of identity's members; asked of
    /// identity when the copy has never heard of the user or of the partner asking.
    pub async fn user_seen_by(&self, caller: &Caller, user_id: &str) -> Result<Option<UserInfo>> {
        let mut conn = self.db.acquire().await?;
        let Some(user) = store::directory::user(&mut conn, user_id).await? else {
            return Ok(self.directory.user(caller, user_id).await?);
        };
        let info = |team_ids| UserInfo { active: user.active, staff: false, team_ids };
        if caller.is_staff() || caller.user_id == user_id {
            return Ok(Some(info(user.team_ids.clone())));
        }
        let Some(viewer) = store::directory::user(&mut conn, &caller.user_id).await? else {
            return Ok(self.directory.user(caller, user_id).await?);
        };
        Ok(shared_teams(&viewer.team_ids, &user.team_ids).map(info))
    }

    /// Whether a member may receive a lead now: active, still in the team, and not of a team
    /// that declined it. Decided for the system, whoever's request runs the rules: from deals'
    /// copy of identity's members, read in `conn` (the assignment's transaction); asked of
    /// identity with the caller's token only for a user the copy has never heard of.
    async fn eligible(
        &self,
        caller: &Caller,
        conn: &mut sqlx::AnyConnection,
        m: &MemberRow,
        declined: &[String],
    ) -> Result<bool> {
        if !may_receive(declined, &m.team_id) {
            return Ok(false);
        }
        let user = match store::directory::user(conn, &m.user_id).await? {
            Some(known) => Some(UserInfo { active: known.active, staff: false, team_ids: known.team_ids }),
            None => self.directory.user(caller, &m.user_id).await?,
        };
        Ok(user.is_some_and(|u| u.active && u.team_ids.contains(&m.team_id)))
    }

    /// Takes the queue's next round-robin turn and the eligible member it falls on. The turn
    /// is taken in `tx` (its row lock serialises concurrent leads); eligibility is asked first,
    /// so the lock is held only for the update.
    pub async fn round_robin(
        &self,
        caller: &Caller,
        tx: &mut Tx,
        queue_id: &str,
        declined: &[String],
    ) -> Result<Option<MemberRow>> {
        let members = store::queue_members(tx, queue_id).await?;
        let mut eligible = Vec::with_capacity(members.len());
        for m in &members {
            eligible.push(self.eligible(caller, tx, m, declined).await?);
        }
        if !eligible.contains(&true) {
            return Ok(None);
        }
        let Some(cursor) = store::take_turn(tx, queue_id).await? else { return Ok(None) };
        // Members are re-read under the lock: one added or removed meanwhile counts now.
        let locked = store::queue_members(tx, queue_id).await?;
        let ok: HashMap<&str, bool> =
            members.iter().zip(&eligible).map(|(m, e)| (m.user_id.as_str(), *e)).collect();
        let pick =
            rules::round_robin(&locked, cursor, |m| ok.get(m.user_id.as_str()).copied().unwrap_or(false));
        Ok(pick.map(|i| locked[i].clone()))
    }

    /// The rules in running order with their criteria.
    pub async fn load_rules(&self, tx: &mut Tx) -> Result<Vec<Rule<Target>>> {
        let rows = store::all_rules(tx).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut criteria: HashMap<String, Vec<Criterion>> = HashMap::new();
        for c in store::criteria(tx, &ids).await? {
            let op = Operator::parse(&c.operator)
                .ok_or_else(|| anyhow::anyhow!("stored operator {:?} of rule {}", c.operator, c.rule_id))?;
            let criterion = Criterion::new(&c.field, op, &c.value)
                .map_err(|e| anyhow::anyhow!("stored criterion of rule {}: {e}", c.rule_id))?;
            criteria.entry(c.rule_id).or_default().push(criterion);
        }
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Rule {
                    priority: r.priority,
                    id: r.id.clone(),
                    criteria: criteria.remove(&r.id).unwrap_or_default(),
                    target: Target::from_row(r)?,
                })
            })
            .collect())
    }

    /// Runs the rules on an unowned lead: the first matching rule whose target can take the
    /// lead assigns it (a user who is inactive or of a team that declined the lead, or a
    /// round-robin queue with no eligible member, passes to the next rule). Returns whether a
    /// rule placed the lead; the caller writes the lead.
    pub async fn apply_rules(
        &self,
        caller: &Caller,
        tx: &mut Tx,
        lead: &mut LeadRow,
        declined: &[String],
    ) -> Result<bool> {
        if !lead.owner_user_id.is_empty() {
            return Ok(false);
        }
        let rules = self.load_rules(tx).await?;
        for rule in rules::matching(&rules, &facts(lead)) {
            match &rule.target {
                Target::User { user_id, team_id } => {
                    let m = MemberRow { user_id: user_id.clone(), team_id: team_id.clone() };
                    if self.eligible(caller, tx, &m, declined).await? {
                        set_owner(lead, &m);
                        return Ok(true);
                    }
                }
                Target::Queue(queue_id) => {
                    set_queue(lead, queue_id);
                    return Ok(true);
                }
                Target::RoundRobin(queue_id) => {
                    if let Some(m) = self.round_robin(caller, tx, queue_id, declined).await? {
                        set_owner(lead, &m);
                        lead.queue_id = queue_id.clone();
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Notifies a lead's new owner.
    pub async fn notify_owner(&self, tx: &mut Tx, lead: &LeadRow) -> Result<()> {
        if lead.owner_user_id.is_empty() {
            return Ok(());
        }
        self.notify(
            tx,
            vec![lead.owner_user_id.clone()],
            "lead.assigned",
            format!("New lead: {}", lead.company_name),
            &lead.id,
        )
        .await
    }
}

pub fn set_owner(lead: &mut LeadRow, m: &MemberRow) {
    lead.owner_user_id = m.user_id.clone();
    lead.team_id = m.team_id.clone();
    lead.status = LeadStatus::Assigned.as_str().to_owned();
    lead.update_time = now_micros().max(lead.update_time + 1);
}

pub fn set_queue(lead: &mut LeadRow, queue_id: &str) {
    lead.owner_user_id.clear();
    lead.team_id.clear();
    lead.queue_id = queue_id.to_owned();
    lead.status = LeadStatus::New.as_str().to_owned();
    lead.update_time = now_micros().max(lead.update_time + 1);
}
