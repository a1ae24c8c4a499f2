//! `FetchService`: starting fetches and following their runs.

use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{self, fetch_service_server::FetchService};
use crate::app::AppState;
use crate::domain::contacts::{decode_page_token, next_page_token, page_limit};
use crate::domain::fetch::{Mode, Target, Trigger};
use crate::error::{AppError, AppResult};
use crate::store::fetch_runs::{self, FetchRunRow, RunFilter};
use crate::store::{StoreError, lists};

pub struct Fetches(pub AppState);

impl Fetches {
    /// Runs with their audience's Mailchimp id.
    async fn messages(&self, rows: Vec<FetchRunRow>) -> AppResult<Vec<pb::FetchRun>> {
        let ids: Vec<i64> = rows.iter().map(|row| row.list_id).collect();
        let names = self
            .0
            .store
            .run(move |conn| {
                ids.iter()
                    .map(|&id| lists::get(conn, id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .zip(names)
            .map(|(row, list)| convert::fetch_run(row, list.mailchimp_list_id))
            .collect())
    }
}

#[tonic::async_trait]
impl FetchService for Fetches {
    async fn trigger_fetch(
        &self,
        request: Request<pb::TriggerFetchRequest>,
    ) -> Result<Response<pb::TriggerFetchResponse>, Status> {
        let request = request.into_inner();
        let target = match request.target {
            Some(pb::trigger_fetch_request::Target::AccountId(id)) => Target::Account(id),
            Some(pb::trigger_fetch_request::Target::AudienceId(id)) => Target::Audience(id),
            None => {
                return Err(
                    AppError::invalid("target", "give an account_id or an audience_id").into(),
                );
            }
        };
        let mode = match pb::FetchMode::try_from(request.mode) {
            Ok(pb::FetchMode::Full) => Mode::Full,
            Ok(_) => Mode::Incremental,
            Err(_) => return Err(AppError::invalid("mode", "unknown fetch mode").into()),
        };
        let rows = self.0.fetcher.trigger(target, mode, Trigger::Grpc).await?;
        Ok(Response::new(pb::TriggerFetchResponse {
            runs: self.messages(rows).await?,
        }))
    }

    async fn get_fetch_run(
        &self,
        request: Request<pb::GetFetchRunRequest>,
    ) -> Result<Response<pb::FetchRun>, Status> {
        let id = request.into_inner().id;
        let row = match self
            .0
            .store
            .run(move |conn| fetch_runs::get(conn, id))
            .await
        {
            Err(StoreError::NotFound) => return Err(AppError::not_found("fetch run").into()),
            other => other.map_err(AppError::from)?,
        };
        let mut runs = self.messages(vec![row]).await?;
        Ok(Response::new(runs.remove(0)))
    }

    async fn list_fetch_runs(
        &self,
        request: Request<pb::ListFetchRunsRequest>,
    ) -> Result<Response<pb::ListFetchRunsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_limit(request.page_size)?;
        let before = decode_page_token(&request.page_token)?;
        let filter = RunFilter {
            list_id: request.audience_id,
            state: Some(request.state).filter(|state| !state.is_empty()),
        };
        let rows = self
            .0
            .store
            .run(move |conn| fetch_runs::page(conn, &filter, before, limit))
            .await
            .map_err(AppError::from)?;
        let next_page_token = next_page_token(&rows, limit, |row| row.id);
        let runs = self.messages(rows).await?;
        Ok(Response::new(pb::ListFetchRunsResponse {
            runs,
            next_page_token,
        }))
    }
}
