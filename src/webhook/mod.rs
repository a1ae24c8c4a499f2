//! The webhook face: `GET|POST /webhooks/mailchimp/{token}`.
//!
//! The handler checks the token, reads the body (`Delivery::read`, on the request's own
//! thread), hands it to the writer and answers once the writer committed it. It never
//! applies anything itself: decoding (`form`), reading the event (`event`) and its effects
//! (`crate::domain::apply`) live elsewhere.

pub mod event;
pub mod form;
pub mod signature;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::domain::accounts;
use crate::domain::apply::Outcome;
use crate::domain::ingest::Delivery;
use crate::error::AppError;
use crate::store::accounts::WebhookAccount;

/// The largest body accepted; Mailchimp's events are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Mailchimp's URL check when a webhook is saved: 200 with an empty body for a known token.
pub async fn check_url(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    match account(&state, token).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

/// One event from Mailchimp. Answers only once the event is committed.
pub async fn receive(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let account = match account(&state, token).await {
        Ok(account) => account,
        Err(response) => return response,
    };
    if body.is_empty() {
        return StatusCode::OK.into_response();
    }
    let refusal = check_signature(&account.signing_secrets, &headers, &body);
    let unsigned = refusal.is_some();
    let delivery = Delivery::read(
        account.row.id,
        account.row.webhook_active,
        refusal,
        body,
        crate::now(),
    );
    match state.ingestor.submit(delivery).await {
        Ok(receipt) => {
            let (event_type, outcome) = (receipt.event_type.as_deref(), receipt.outcome.as_str());
            state
                .metrics
                .webhook_stored(event_type, outcome, started.elapsed());
            tracing::info!(
                account_id = account.row.id,
                event.type = event_type.unwrap_or("-"),
                outcome,
                duration_ms = started.elapsed().as_millis() as u64,
                "webhook received"
            );
            match (receipt.outcome, receipt.reason) {
                (Outcome::Rejected, Some(reason)) if unsigned => {
                    (StatusCode::UNAUTHORIZED, format!("{reason}\n")).into_response()
                }
                (Outcome::Rejected, Some(reason)) => {
                    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
                }
                _ => StatusCode::OK.into_response(),
            }
        }
        Err(error) => error_response(error),
    }
}

/// The account behind the token, or the answer to give: 404 for any token that is not
/// current, so that nothing tells a guess apart from a rotated token.
async fn account(
    state: &AppState,
    token: Result<Path<String>, PathRejection>,
) -> Result<Arc<WebhookAccount>, Response> {
    let Ok(Path(token)) = token else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    match accounts::find_by_token(&state.store, &token).await {
        Ok(Some(account)) => Ok(account),
        Ok(None) => Err(StatusCode::NOT_FOUND.into_response()),
        Err(error) => Err(error_response(error)),
    }
}

/// With signing secrets on the account, the request must carry a valid signature by one of
/// them (each audience's webhook has its own, and one URL serves them all); the reason it
/// does not is stored with the event and answered with a 401.
fn check_signature(secrets: &[String], headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let header = headers
        .get("x-mailchimp-signature")
        .and_then(|value| value.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let mut refusals = secrets
        .iter()
        .map(|secret| signature::verify(secret, header, body, now));
    let first = refusals.next()?.err()?;
    if refusals.any(|refusal| refusal.is_ok()) {
        return None;
    }
    Some(first.to_string())
}

fn error_response(error: AppError) -> Response {
    error.log();
    (error.kind().http_status(), format!("{}\n", error.message())).into_response()
}
