//! `NotificationService`: the caller's inbox, newest first.

use tandem_platform::{paging::Page, time::now_micros, validate::Validator};
use tandem_proto::identity::v1::{self as pb, notification_service_server::NotificationService};
use tonic::Request;

use super::{IdentityApi, caller, convert, grpc};
use crate::{
    error::{IdentityError, Result},
    store,
};

grpc! {
    NotificationService {
        list_notifications => list_notifications_(ListNotificationsRequest) -> ListNotificationsResponse;
        mark_notification_read => mark_notification_read_(MarkNotificationReadRequest) -> MarkNotificationReadResponse;
    }
}

impl IdentityApi {
    async fn list_notifications_(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<pb::ListNotificationsResponse> {
        let caller = caller(&request)?;
        let pb::ListNotificationsRequest { page_size, page_token, unread_only } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_notifications(
            &mut conn,
            &caller.user_id,
            unread_only,
            page.after_key(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, |n| n.id.clone());
        Ok(pb::ListNotificationsResponse {
            notifications: rows.iter().map(convert::notification).collect(),
            next_page_token,
        })
    }

    async fn mark_notification_read_(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<pb::MarkNotificationReadResponse> {
        let caller = caller(&request)?;
        let id = request.into_inner().notification_id;
        Validator::new().id("notification_id", "ntf", &id).finish()?;
        let mut conn = self.db.acquire().await?;
        let row = store::mark_notification_read(&mut conn, &id, &caller.user_id, now_micros())
            .await?
            .ok_or(IdentityError::NotFound("notification"))?;
        Ok(pb::MarkNotificationReadResponse { notification: Some(convert::notification(&row)) })
    }
}
