//! `WebhookEventService`: stored events and their replay.

use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{self, webhook_event_service_server::WebhookEventService};
use crate::app::AppState;
use crate::domain::operations;
use crate::store::events::EventFilter;

pub struct WebhookEvents(pub AppState);

#[tonic::async_trait]
impl WebhookEventService for WebhookEvents {
    async fn list_webhook_events(
        &self,
        request: Request<pb::ListWebhookEventsRequest>,
    ) -> Result<Response<pb::ListWebhookEventsResponse>, Status> {
        let request = request.into_inner();
        let filter = EventFilter {
            outcome: Some(request.outcome).filter(|outcome| !outcome.is_empty()),
            account_id: request.account_id,
        };
        let (rows, next_page_token) = operations::list_events(
            &self.0.store,
            filter,
            request.page_size,
            &request.page_token,
        )
        .await?;
        let events = rows.into_iter().map(convert::webhook_event).collect();
        Ok(Response::new(pb::ListWebhookEventsResponse {
            events,
            next_page_token,
        }))
    }

    async fn replay_webhook_event(
        &self,
        request: Request<pb::ReplayWebhookEventRequest>,
    ) -> Result<Response<pb::WebhookEvent>, Status> {
        let id = request.into_inner().id;
        let row = operations::replay_event(&self.0.store, &self.0.feed, id).await?;
        Ok(Response::new(convert::webhook_event(row)))
    }
}
