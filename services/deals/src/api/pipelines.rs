//! `PipelineService`: pipelines and stages (staff), and a team's default pipeline for shared
//! deals (its owner and admins).

use std::collections::HashSet;

use tandem_platform::{
    db::DbError,
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{NAME_MAX, Validator},
};
use tandem_proto::{
    deals::v1::{self as pb, pipeline_service_server::PipelineService},
    identity::v1::Permission,
};
use tonic::Request;

use super::{DealsApi, caller, convert, grpc, require_staff};
use crate::{
    error::{DealsError, Result},
    store::{self, PipelineRow},
};

grpc! {
    PipelineService {
        create_pipeline => create_pipeline_(CreatePipelineRequest) -> CreatePipelineResponse;
        list_pipelines => list_pipelines_(ListPipelinesRequest) -> ListPipelinesResponse;
        set_default_shared_deal_pipeline => set_default_shared_deal_pipeline_(SetDefaultSharedDealPipelineRequest) -> SetDefaultSharedDealPipelineResponse;
    }
}

impl DealsApi {
    async fn create_pipeline_(
        &self,
        request: Request<pb::CreatePipelineRequest>,
    ) -> Result<pb::CreatePipelineResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff define pipelines")?;
        let pb::CreatePipelineRequest { name, stages } = request.into_inner();
        let stages: Vec<String> = stages.into_iter().map(|s| s.name.trim().to_owned()).collect();
        let mut v = Validator::new();
        v.text("name", &name, NAME_MAX);
        v.check(!stages.is_empty(), "stages", "must hold at least one stage");
        v.check(stages.len() <= 50, "stages", "must hold at most 50 stages");
        let mut seen = HashSet::new();
        for (i, s) in stages.iter().enumerate() {
            let field = format!("stages[{i}].name");
            v.text(&field, s, NAME_MAX);
            if !s.is_empty() && !seen.insert(s.to_lowercase()) {
                v.violation(&field, "must differ from the other stages");
            }
        }
        v.finish()?;
        let row = PipelineRow { id: new_id("pipe"), name: name.trim().to_owned(), create_time: now_micros() };
        let mut tx = self.db.begin().await?;
        store::insert_pipeline(&mut tx, &row, &stages).await.map_err(|e| match e {
            DbError::UniqueViolation => DealsError::invalid("stages", "must differ from each other"),
            other => other.into(),
        })?;
        self.commit(tx).await?;
        Ok(pb::CreatePipelineResponse { pipeline: Some(convert::pipeline(&row, &stages)) })
    }

    async fn list_pipelines_(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<pb::ListPipelinesResponse> {
        caller(&request)?;
        let pb::ListPipelinesRequest { page_size, page_token } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_pipelines(&mut conn, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        let mut pipelines = Vec::with_capacity(rows.len());
        for p in &rows {
            pipelines.push(convert::pipeline(p, &store::stages(&mut conn, &p.id).await?));
        }
        Ok(pb::ListPipelinesResponse { pipelines, next_page_token })
    }

    async fn set_default_shared_deal_pipeline_(
        &self,
        request: Request<pb::SetDefaultSharedDealPipelineRequest>,
    ) -> Result<pb::SetDefaultSharedDealPipelineResponse> {
        let caller = caller(&request)?;
        let pb::SetDefaultSharedDealPipelineRequest { team_id, pipeline_id } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).id("pipeline_id", "pipe", &pipeline_id).finish()?;
        // A setting of the partner's own account: its owner and admins.
        if !self.permissions.check(&caller, &team_id, Permission::TeamManage).await? {
            return Err(if self.can_view(&caller, &team_id).await? && !caller.is_staff() {
                DealsError::Denied("only the team's owner and admins choose its default pipeline")
            } else if caller.is_staff() {
                DealsError::Denied("the default pipeline is a setting of the partner's own account")
            } else {
                DealsError::NotFound("team")
            });
        }
        let mut tx = self.db.begin().await?;
        store::pipeline(&mut tx, &pipeline_id).await?.ok_or(DealsError::NotFound("pipeline"))?;
        // Only new deals follow it: existing deals keep their pipeline.
        store::set_default_pipeline(&mut tx, &team_id, &pipeline_id, now_micros()).await?;
        self.commit(tx).await?;
        Ok(pb::SetDefaultSharedDealPipelineResponse { team_id, pipeline_id })
    }
}
