//! `QueueService`: queues of partner users (staff manage them; members see theirs).

use tandem_platform::{
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{NAME_MAX, Validator},
};
use tandem_proto::deals::v1::{self as pb, queue_service_server::QueueService};
use tonic::Request;

use super::{DealsApi, caller, convert, grpc, require_staff};
use crate::{
    error::{DealsError, Result},
    store::{self, QueueRow},
};

grpc! {
    QueueService {
        create_queue => create_queue_(CreateQueueRequest) -> CreateQueueResponse;
        add_queue_member => add_queue_member_(AddQueueMemberRequest) -> AddQueueMemberResponse;
        remove_queue_member => remove_queue_member_(RemoveQueueMemberRequest) -> RemoveQueueMemberResponse;
        list_queues => list_queues_(ListQueuesRequest) -> ListQueuesResponse;
    }
}

impl DealsApi {
    async fn queue_message(&self, queue_id: &str) -> Result<pb::Queue> {
        let mut conn = self.db.acquire().await?;
        let q = store::queue(&mut conn, queue_id).await?.ok_or(DealsError::NotFound("queue"))?;
        let members = store::queue_members(&mut conn, queue_id).await?;
        Ok(convert::queue(&q, &members))
    }

    async fn create_queue_(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Result<pb::CreateQueueResponse> {
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff create queues")?;
        let pb::CreateQueueRequest { name, member_user_ids } = request.into_inner();
        let mut v = Validator::new();
        v.text("name", &name, NAME_MAX);
        for (i, id) in member_user_ids.iter().enumerate() {
            v.id(&format!("member_user_ids[{i}]"), "user", id);
        }
        v.finish()?;
        let mut members = Vec::with_capacity(member_user_ids.len());
        for id in &member_user_ids {
            members.push(self.resolve_partner(&caller, id, "").await?);
        }
        let now = now_micros();
        let queue = QueueRow { id: new_id("queue"), name: name.trim().to_owned(), create_time: now };
        let mut tx = self.db.begin().await?;
        store::insert_queue(&mut tx, &queue).await?;
        // Members join in the order given: that is the round-robin order.
        for (i, m) in members.iter().enumerate() {
            store::insert_queue_member(&mut tx, &queue.id, m, now + i64::try_from(i).unwrap_or(0)).await?;
        }
        self.commit(tx).await?;
        Ok(pb::CreateQueueResponse { queue: Some(self.queue_message(&queue.id).await?) })
    }

    async fn add_queue_member_(
        &self,
        request: Request<pb::AddQueueMemberRequest>,
    ) -> Result<pb::AddQueueMemberResponse> {
        let caller = caller(&request)?;
        require_staff(&caller, "only vendor staff manage queues")?;
        let pb::AddQueueMemberRequest { queue_id, user_id, team_id } = request.into_inner();
        let mut v = Validator::new();
        v.id("queue_id", "queue", &queue_id).id("user_id", "user", &user_id);
        if !team_id.is_empty() {
            v.id("team_id", "team", &team_id);
        }
        v.finish()?;
        let member = self.resolve_partner(&caller, &user_id, &team_id).await?;
        let mut tx = self.db.begin().await?;
        store::queue(&mut tx, &queue_id).await?.ok_or(DealsError::NotFound("queue"))?;
        store::insert_queue_member(&mut tx, &queue_id, &member, now_micros()).await?;
        self.commit(tx).await?;
        Ok(pb::AddQueueMemberResponse { queue: Some(self.queue_message(&queue_id).await?) })
    }

    async fn remove_queue_member_(
        &self,
        request: Request<pb::RemoveQueueMemberRequest>,
    ) -> Result<pb::RemoveQueueMemberResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff manage queues")?;
        let pb::RemoveQueueMemberRequest { queue_id, user_id } = request.into_inner();
        Validator::new().id("queue_id", "queue", &queue_id).id("user_id", "user", &user_id).finish()?;
        let mut tx = self.db.begin().await?;
        store::queue(&mut tx, &queue_id).await?.ok_or(DealsError::NotFound("queue"))?;
        if !store::delete_queue_member(&mut tx, &queue_id, &user_id).await? {
            return Err(DealsError::NotFound("queue member"));
        }
        self.commit(tx).await?;
        Ok(pb::RemoveQueueMemberResponse { queue: Some(self.queue_message(&queue_id).await?) })
    }

    async fn list_queues_(&self, request: Request<pb::ListQueuesRequest>) -> Result<pb::ListQueuesResponse> {
        let caller = caller(&request)?;
        let pb::ListQueuesRequest { page_size, page_token } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        let member = (!caller.is_staff()).then_some(caller.user_id.as_str());
        let mut conn = self.db.acquire().await?;
        let rows = store::list_queues(&mut conn, member, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |q| q.id.clone());
        // A queue spans teams: a partner sees the members of its own teams only, never who
        // else (of another team) takes turns in it. Its teams are those the copy of identity's
        // members knows, and those it sits in the queue for.
        let mut teams = match member {
            Some(user_id) => store::directory::user(&mut conn, user_id).await?.map(|u| u.team_ids),
            None => None,
        };
        let mut queues = Vec::with_capacity(rows.len());
        for q in &rows {
            let mut members = store::queue_members(&mut conn, &q.id).await?;
            if let Some(user_id) = member {
                let mine = teams.get_or_insert_with(Vec::new);
                for m in members.iter().filter(|m| m.user_id == user_id) {
                    if !mine.contains(&m.team_id) {
                        mine.push(m.team_id.clone());
                    }
                }
                members.retain(|m| mine.contains(&m.team_id));
            }
            queues.push(convert::queue(q, &members));
        }
        Ok(pb::ListQueuesResponse { queues, next_page_token })
    }
}
