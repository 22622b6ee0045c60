//! `AssignmentRuleService`: ordered assignment rules (staff).

use tandem_platform::{ids::new_id, paging::Page, time::now_micros, validate::Validator};
use tandem_proto::deals::v1::{self as pb, assignment_rule_service_server::AssignmentRuleService};
use tonic::Request;

use super::{DealsApi, caller, convert, grpc, require_staff};
use crate::{
    domain::rules::{Criterion, Operator},
    error::{DealsError, Result},
    store::{self, RuleRow},
};

grpc! {
    AssignmentRuleService {
        create_assignment_rule => create_assignment_rule_(CreateAssignmentRuleRequest) -> CreateAssignmentRuleResponse;
        list_assignment_rules => list_assignment_rules_(ListAssignmentRulesRequest) -> ListAssignmentRulesResponse;
        delete_assignment_rule => delete_assignment_rule_(DeleteAssignmentRuleRequest) -> DeleteAssignmentRuleResponse;
        apply_assignment_rules => apply_assignment_rules_(ApplyAssignmentRulesRequest) -> ApplyAssignmentRulesResponse;
    }
}

fn operator(op: i32) -> Option<Operator> {
    Some(match pb::CriterionOperator::try_from(op).ok()? {
        pb::CriterionOperator::Unspecified => return None,
        pb::CriterionOperator::Equals => Operator::Equals,
        pb::CriterionOperator::In => Operator::In,
        pb::CriterionOperator::GreaterThan => Operator::GreaterThan,
        pb::CriterionOperator::LessThan => Operator::LessThan,
    })
}

impl DealsApi {
    async fn create_assignment_rule_(
        &self,
        request: Request<pb::CreateAssignmentRuleRequest>,
    ) -> Result<pb::CreateAssignmentRuleResponse> {
        use pb::create_assignment_rule_request::Target;
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff define assignment rules")?;
        let pb::CreateAssignmentRuleRequest { priority, criteria, target, team_id } = request.into_inner();
        let mut v = Validator::new();
        v.check(priority >= 0, "priority", "must not be negative");
        v.check(criteria.len() <= 20, "criteria", "must hold at most 20 criteria");
        let mut checked = Vec::with_capacity(criteria.len());
        for (i, c) in criteria.iter().enumerate() {
            match operator(c.operator) {
                None => {
                    v.violation(
                        &format!("criteria[{i}].operator"),
                        "must be a known value other than unspecified",
                    );
                }
                Some(op) => match Criterion::new(&c.field, op, &c.value) {
                    Ok(c) => checked.push(c),
                    Err(e) => {
                        let field = match e {
                            crate::domain::rules::CriterionError::UnknownField => "field",
                            _ => "value",
                        };
                        v.violation(&format!("criteria[{i}].{field}"), e.to_string());
                    }
                },
            }
        }
        match &target {
            Some(Target::UserId(u)) => {
                v.id("user_id", "user", u);
            }
            Some(Target::QueueId(q)) => {
                v.id("queue_id", "queue", q);
            }
            Some(Target::RoundRobinQueueId(q)) => {
                v.id("round_robin_queue_id", "queue", q);
            }
            None => {
                v.violation("target", "give user_id, queue_id or round_robin_queue_id");
            }
        }
        if !team_id.is_empty() {
            v.id("team_id", "team", &team_id);
        }
        v.finish()?;
        let (kind, target_id, team_id) = match target {
            Some(Target::UserId(u)) => {
                let m = self.resolve_partner(&caller, &u, &team_id).await?;
                ("USER", m.user_id, m.team_id)
            }
            Some(Target::QueueId(q)) => ("QUEUE", q, String::new()),
            Some(Target::RoundRobinQueueId(q)) => ("ROUND_ROBIN", q, String::new()),
            None => {
                return Err(DealsError::invalid("target", "give user_id, queue_id or round_robin_queue_id"));
            }
        };
        let row = RuleRow {
            id: new_id("rule"),
            priority: i64::from(priority),
            target_kind: kind.to_owned(),
            target_id,
            team_id,
            create_time: now_micros(),
        };
        let stored: Vec<(String, String, String)> = checked
            .iter()
            .zip(&criteria)
            .map(|(c, raw)| (raw.field.trim().to_owned(), c.operator.as_str().to_owned(), c.value.clone()))
            .collect();
        let mut tx = self.db.begin().await?;
        if kind != "USER" {
            store::queue(&mut tx, &row.target_id).await?.ok_or(DealsError::NotFound("queue"))?;
        }
        store::insert_rule(&mut tx, &row, &stored).await?;
        let criteria_rows = store::criteria(&mut tx, std::slice::from_ref(&row.id)).await?;
        self.commit(tx).await?;
        Ok(pb::CreateAssignmentRuleResponse { assignment_rule: Some(convert::rule(&row, &criteria_rows)) })
    }

    async fn list_assignment_rules_(
        &self,
        request: Request<pb::ListAssignmentRulesRequest>,
    ) -> Result<pb::ListAssignmentRulesResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff see assignment rules")?;
        let pb::ListAssignmentRulesRequest { page_size, page_token } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        // The key of the last rule returned: `priority/id`.
        let after = match &page.after {
            None => (i64::MIN, String::new()),
            Some(key) => key
                .split_once('/')
                .and_then(|(p, id)| Some((p.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| DealsError::invalid("page_token", "is not a token of this list"))?,
        };
        let mut conn = self.db.acquire().await?;
        let rows = store::list_rules(&mut conn, (after.0, &after.1), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |r| format!("{}/{}", r.priority, r.id));
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let criteria = store::criteria(&mut conn, &ids).await?;
        Ok(pb::ListAssignmentRulesResponse {
            assignment_rules: rows.iter().map(|r| convert::rule(r, &criteria)).collect(),
            next_page_token,
        })
    }

    async fn delete_assignment_rule_(
        &self,
        request: Request<pb::DeleteAssignmentRuleRequest>,
    ) -> Result<pb::DeleteAssignmentRuleResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff define assignment rules")?;
        let rule_id = request.into_inner().rule_id;
        Validator::new().id("rule_id", "rule", &rule_id).finish()?;
        let mut tx = self.db.begin().await?;
        if !store::delete_rule(&mut tx, &rule_id).await? {
            return Err(DealsError::NotFound("assignment rule"));
        }
        self.commit(tx).await?;
        Ok(pb::DeleteAssignmentRuleResponse {})
    }

    async fn apply_assignment_rules_(
        &self,
        request: Request<pb::ApplyAssignmentRulesRequest>,
    ) -> Result<pb::ApplyAssignmentRulesResponse> {
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff run assignment rules")?;
        let lead_ids = request.into_inner().lead_ids;
        let mut v = Validator::new();
        v.check(!lead_ids.is_empty(), "lead_ids", "must name at least one lead");
        v.check(lead_ids.len() <= super::leads::BULK_MAX, "lead_ids", "must name at most 1000 leads");
        for (i, id) in lead_ids.iter().enumerate() {
            v.id(&format!("lead_ids[{i}]"), "lead", id);
        }
        v.finish()?;
        let mut leads = Vec::with_capacity(lead_ids.len());
        for id in &lead_ids {
            // One transaction per lead, as if each had just been created.
            let mut tx = self.db.begin().await?;
            let current = store::lead(&mut tx, id).await?.ok_or(DealsError::NotFound("lead"))?;
            let declined = store::declined_teams(&mut tx, id).await?;
            let mut row = current.clone();
            let open = !crate::domain::leads::LeadStatus::parse(&row.status)
                .is_some_and(crate::domain::leads::LeadStatus::is_final);
            if open && self.apply_rules(&caller, &mut tx, &mut row, &declined).await? {
                if !store::update_lead(&mut tx, &row, current.update_time).await? {
                    return Err(DealsError::Conflict("the lead"));
                }
                self.commit(tx).await?;
            }
            leads.push(convert::lead(&row, declined));
        }
        Ok(pb::ApplyAssignmentRulesResponse { leads })
    }
}
