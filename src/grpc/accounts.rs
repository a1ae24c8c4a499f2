//! `AccountService` and `AudienceService`.

use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{
    self, account_service_server::AccountService, audience_service_server::AudienceService,
};
use crate::app::AppState;
use crate::domain::accounts::{self, AccountInput};
use crate::domain::register;

pub struct Accounts(pub AppState);

#[tonic::async_trait]
impl AccountService for Accounts {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        let input = AccountInput {
            name: Some(request.name),
            api_key: Some(request.api_key),
            api_base_url: request.api_base_url,
            ..Default::default()
        };
        let row = accounts::create(&self.0.store, input).await?;
        Ok(Response::new(convert::account(row, &self.0.webhook_base)))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let row = accounts::get(&self.0.store, request.into_inner().id).await?;
        Ok(Response::new(convert::account(row, &self.0.webhook_base)))
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let rows = accounts::list(&self.0.store).await?;
        let accounts = rows
            .into_iter()
            .map(|row| convert::account(row, &self.0.webhook_base))
            .collect();
        Ok(Response::new(pb::ListAccountsResponse { accounts }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        let input = AccountInput {
            name: request.name,
            api_key: request.api_key,
            api_base_url: request.api_base_url,
            webhook_active: request.webhook_active,
            webhook_signing_secret: request.webhook_signing_secret,
        };
        let row = accounts::update(&self.0.store, request.id, input).await?;
        Ok(Response::new(convert::account(row, &self.0.webhook_base)))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        accounts::delete(&self.0.store, request.into_inner().id).await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn generate_webhook_url(
        &self,
        request: Request<pb::GenerateWebhookUrlRequest>,
    ) -> Result<Response<pb::GenerateWebhookUrlResponse>, Status> {
        let account_id = request.into_inner().account_id;
        let webhook_url =
            accounts::generate_webhook_url(&self.0.store, &self.0.webhook_base, account_id).await?;
        Ok(Response::new(pb::GenerateWebhookUrlResponse {
            webhook_url,
        }))
    }
}

pub struct Audiences(pub AppState);

#[tonic::async_trait]
impl AudienceService for Audiences {
    async fn list_audiences(
        &self,
        request: Request<pb::ListAudiencesRequest>,
    ) -> Result<Response<pb::ListAudiencesResponse>, Status> {
        let account_id = request.into_inner().account_id;
        let rows = accounts::audiences(&self.0.store, account_id).await?;
        let audiences = rows.into_iter().map(convert::audience).collect();
        Ok(Response::new(pb::ListAudiencesResponse { audiences }))
    }

    async fn refresh_audiences(
        &self,
        request: Request<pb::RefreshAudiencesRequest>,
    ) -> Result<Response<pb::ListAudiencesResponse>, Status> {
        let account_id = request.into_inner().account_id;
        let rows = self.0.fetcher.refresh_audiences(account_id).await?;
        let audiences = rows.into_iter().map(convert::audience).collect();
        Ok(Response::new(pb::ListAudiencesResponse { audiences }))
    }

    async fn register_webhook(
        &self,
        request: Request<pb::RegisterWebhookRequest>,
    ) -> Result<Response<pb::RegisteredWebhook>, Status> {
        let audience_id = request.into_inner().audience_id;
        let registered =
            register::register_webhook(&self.0.fetcher, &self.0.webhook_base, audience_id).await?;
        Ok(Response::new(convert::registered_webhook(registered)))
    }
}
