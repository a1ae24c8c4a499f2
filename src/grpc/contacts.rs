//! `ContactService` (state and change feed) and `BlacklistService`.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{
    self, blacklist_service_server::BlacklistService, contact_service_server::ContactService,
};
use crate::app::AppState;
use crate::domain::contacts::{self, Lookup};
use crate::domain::operations;
use crate::error::AppError;
use crate::store::contacts::ContactFilter;

/// How often a watcher looks for changes that another replica committed.
const WATCH_POLL: Duration = Duration::from_secs(1);
const WATCH_BATCH: i32 = 500;

pub struct Contacts(pub AppState);

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::Change, Status>> + Send>>;

#[tonic::async_trait]
impl ContactService for Contacts {
    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let lookup = match request.into_inner().lookup {
            Some(pb::get_contact_request::Lookup::Id(id)) => Lookup::Id(id),
            Some(pb::get_contact_request::Lookup::Email(email)) => Lookup::Email(email),
            None => return Err(AppError::invalid("lookup", "give an id or an email").into()),
        };
        let view = contacts::get(&self.0.store, lookup).await?;
        Ok(Response::new(convert::contact(view)))
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let request = request.into_inner();
        let filter = ContactFilter {
            list_id: request.audience_id,
            status: Some(request.status).filter(|status| !status.is_empty()),
        };
        let (views, next_page_token) = contacts::page(
            &self.0.store,
            filter,
            request.page_size,
            &request.page_token,
        )
        .await?;
        let mut contacts: Vec<pb::Contact> = views.into_iter().map(convert::contact).collect();
        let next_page_token = match within_message_budget(&contacts) {
            kept if kept < contacts.len() => {
                contacts.truncate(kept);
                contacts::page_token_after(contacts[kept - 1].id)
            }
            _ => next_page_token,
        };
        Ok(Response::new(pb::ListContactsResponse {
            contacts,
            next_page_token,
        }))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let request = request.into_inner();
        let rows =
            operations::list_changes(&self.0.store, request.after_sequence, request.limit).await?;
        let changes = rows.into_iter().map(convert::change).collect();
        Ok(Response::new(pb::ListChangesResponse { changes }))
    }

    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let after = request.into_inner().after_sequence;
        if after < 0 {
            return Err(AppError::invalid("after_sequence", "must not be negative").into());
        }
        let (sender, receiver) = mpsc::channel(WATCH_BATCH as usize);
        tokio::spawn(follow_changes(self.0.clone(), after, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Sends every change after `after`, then each new one as it is committed, until the
/// caller goes away. Wakes on this process's commits and polls for other replicas'.
async fn follow_changes(
    state: AppState,
    mut after: i64,
    sender: mpsc::Sender<Result<pb::Change, Status>>,
) {
    let mut commits = state.feed.subscribe();
    let mut stopping = state.stopping.clone();
    loop {
        let batch = match operations::list_changes(&state.store, after, WATCH_BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                let _ = sender.send(Err(error.into())).await;
                return;
            }
        };
        let full = batch.len() == WATCH_BATCH as usize;
        for row in batch {
            after = row.id;
            if sender.send(Ok(convert::change(row))).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        let stopped = tokio::select! {
            _ = commits.changed() => false,
            _ = tokio::time::sleep(WATCH_POLL) => false,
            _ = sender.closed() => return,
            _ = async { let _ = stopping.wait_for(|stopped| *stopped).await; } => true,
        };
        if stopped {
            let _ = sender
                .send(Err(Status::unavailable("the service is shutting down")))
                .await;
            return;
        }
    }
}

pub struct Blacklist(pub AppState);

#[tonic::async_trait]
impl BlacklistService for Blacklist {
    async fn list_blacklist(
        &self,
        request: Request<pb::ListBlacklistRequest>,
    ) -> Result<Response<pb::ListBlacklistResponse>, Status> {
        let request = request.into_inner();
        let (rows, next_page_token) = operations::list_blacklist(
            &self.0.store,
            request.page_size,
            &request.page_token,
            request.include_inactive,
        )
        .await?;
        let entries = rows.into_iter().map(convert::blacklist_entry).collect();
        Ok(Response::new(pb::ListBlacklistResponse {
            entries,
            next_page_token,
        }))
    }

    async fn get_blacklist_entry(
        &self,
        request: Request<pb::GetBlacklistEntryRequest>,
    ) -> Result<Response<pb::BlacklistEntry>, Status> {
        let row = contacts::blacklist_entry(&self.0.store, &request.into_inner().email).await?;
        Ok(Response::new(convert::blacklist_entry(row)))
    }

    async fn remove_from_blacklist(
        &self,
        request: Request<pb::RemoveFromBlacklistRequest>,
    ) -> Result<Response<pb::BlacklistEntry>, Status> {
        let email = request.into_inner().email;
        let row = operations::remove_from_blacklist(&self.0.store, &self.0.feed, &email).await?;
        Ok(Response::new(convert::blacklist_entry(row)))
    }
}

/// Contacts carry up to 64 KiB of merge fields each, so a page of many can outgrow the
/// 4 MiB message that gRPC clients accept by default. A page ends early, before this size;
/// its token then resumes after its last contact.
const PAGE_BYTES: usize = 3 << 20;

/// How many of the first contacts fit in one page: always at least one.
fn within_message_budget(contacts: &[pb::Contact]) -> usize {
    let mut total = 0;
    contacts
        .iter()
        .position(|contact| {
            // Each contact also takes a field tag and a length prefix in the response.
            total += prost::Message::encoded_len(contact) + 8;
            total > PAGE_BYTES
        })
        .map_or(contacts.len(), |first_over| first_over.max(1))
}
