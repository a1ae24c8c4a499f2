//! `/3.0/lists/{list_id}/webhooks`: registering, listing, changing and removing an
//! audience's webhooks.
//!
//! As in Mailchimp, the URL is checked with a GET *during* the create (or the change of
//! URL) call, and the call fails unless the URL answers 2xx; two webhooks of one audience
//! cannot share a URL, even with different query strings; and the signing secret appears in
//! the create response only.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reqwest::header::USER_AGENT;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::Source;
use super::problem::Refusal;
use super::server::json_response;
use super::{Shared, random_hex};

/// The event toggles of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookEvents {
    pub subscribe: bool,
    pub unsubscribe: bool,
    pub profile: bool,
    pub cleaned: bool,
    pub upemail: bool,
    pub campaign: bool,
}

impl WebhookEvents {
    pub(crate) fn allows(&self, kind: &str) -> bool {
        match kind {
            "subscribe" => self.subscribe,
            "unsubscribe" => self.unsubscribe,
            "profile" => self.profile,
            "cleaned" => self.cleaned,
            "upemail" => self.upemail,
            "campaign" => self.campaign,
            _ => false,
        }
    }
}

/// The source toggles of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSources {
    pub user: bool,
    pub admin: bool,
    pub api: bool,
}

impl WebhookSources {
    pub(crate) fn allows(&self, source: Source) -> bool {
        match source {
            Source::User => self.user,
            Source::Admin => self.admin,
            Source::Api => self.api,
        }
    }
}

/// A registered webhook. Webhooks made through the API always sign; `signing_secret` is
/// `None` only for one a test turned into a legacy, unsigned webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: WebhookEvents,
    pub sources: WebhookSources,
    pub signing_secret: Option<String>,
}

impl Webhook {
    fn to_json(&self, list_id: &str, with_secret: bool) -> Value {
        let mut value = json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "sources": self.sources,
            "list_id": list_id,
            "signing_enabled": self.signing_secret.is_some(),
            "_links": [],
        });
        if let (true, Some(secret)) = (with_secret, &self.signing_secret) {
            value["signing_secret"] = json!(secret);
        }
        value
    }
}

/// The body of a create or an update; everything is optional on an update.
#[derive(Debug, Deserialize)]
struct WebhookBody {
    url: Option<String>,
    events: Option<WebhookEvents>,
    sources: Option<WebhookSources>,
}

/// How long the URL check waits, as Mailchimp does for its deliveries.
pub(crate) const URL_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Path(list_id): Path<String>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = parse(&body)?;
    let url = body
        .url
        .filter(|url| is_http_url(url))
        .ok_or(Refusal::InvalidUrl)?;
    check_free(&shared, &list_id, &url, None).await?;
    let hook = Webhook {
        id: random_hex(10),
        url,
        events: body.events.unwrap_or_default(),
        sources: body.sources.unwrap_or_default(),
        signing_secret: Some(random_hex(64)),
    };
    let stored = shared.with_list(&list_id, |list| {
        // Checked again: another create for the same URL may have finished meanwhile.
        let taken = list
            .webhooks
            .iter()
            .any(|other| same_url(&other.url, &hook.url));
        (!taken).then(|| list.webhooks.push(hook.clone()))
    });
    stored.ok_or(Refusal::NotFound)?.ok_or_else(duplicate_url)?;
    Ok(json_response(StatusCode::OK, &hook.to_json(&list_id, true)))
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Path(list_id): Path<String>,
) -> Result<Response, Refusal> {
    let hooks = shared.with_list(&list_id, |list| list.webhooks.clone());
    let hooks = hooks.ok_or(Refusal::NotFound)?;
    let shown: Vec<Value> = hooks
        .iter()
        .map(|hook| hook.to_json(&list_id, false))
        .collect();
    let total = hooks.len();
    let body = json!({ "webhooks": shown, "list_id": list_id, "total_items": total, "_links": [] });
    Ok(json_response(StatusCode::OK, &body))
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path((list_id, hook_id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let hook = find(&shared, &list_id, &hook_id)?;
    Ok(json_response(
        StatusCode::OK,
        &hook.to_json(&list_id, false),
    ))
}

/// Changes what the body names; a new URL is checked as on creation.
pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    Path((list_id, hook_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = parse(&body)?;
    let current = find(&shared, &list_id, &hook_id)?;
    if let Some(url) = body.url.as_deref().filter(|url| *url != current.url) {
        if !is_http_url(url) {
            return Err(Refusal::InvalidUrl);
        }
        check_free(&shared, &list_id, url, Some(&hook_id)).await?;
    }
    let updated = shared.with_list(&list_id, |list| {
        let hook = list.webhooks.iter_mut().find(|hook| hook.id == hook_id)?;
        hook.url = body.url.unwrap_or_else(|| hook.url.clone());
        hook.events = body.events.unwrap_or(hook.events);
        hook.sources = body.sources.unwrap_or(hook.sources);
        Some(hook.clone())
    });
    let hook = updated.flatten().ok_or(Refusal::NotFound)?;
    Ok(json_response(
        StatusCode::OK,
        &hook.to_json(&list_id, false),
    ))
}

pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((list_id, hook_id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let removed = shared.with_list(&list_id, |list| {
        let before = list.webhooks.len();
        list.webhooks.retain(|hook| hook.id != hook_id);
        list.webhooks.len() < before
    });
    match removed {
        Some(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        _ => Err(Refusal::NotFound),
    }
}

fn find(shared: &Shared, list_id: &str, hook_id: &str) -> Result<Webhook, Refusal> {
    let hook = shared.with_list(list_id, |list| {
        list.webhooks
            .iter()
            .find(|hook| hook.id == hook_id)
            .cloned()
    });
    hook.flatten().ok_or(Refusal::NotFound)
}

fn parse(body: &[u8]) -> Result<WebhookBody, Refusal> {
    serde_json::from_slice(body).map_err(|_| Refusal::JsonParse)
}

/// Refuses a URL another webhook of the list has (`except` is the one being changed), then
/// checks that it answers. The list lock is not held across the check: the receiver may well
/// be calling this fake while it answers.
async fn check_free(
    shared: &Shared,
    list_id: &str,
    url: &str,
    except: Option<&str>,
) -> Result<(), Refusal> {
    let taken = shared.with_list(list_id, |list| {
        let other = |hook: &&Webhook| Some(hook.id.as_str()) != except;
        list.webhooks
            .iter()
            .filter(other)
            .any(|hook| same_url(&hook.url, url))
    });
    match taken {
        None => Err(Refusal::NotFound),
        Some(true) => Err(duplicate_url()),
        Some(false) => verify(&shared.http, url).await,
    }
}

/// Mailchimp's URL check: a GET without parameters of its own, redirects not followed.
async fn verify(http: &reqwest::Client, url: &str) -> Result<(), Refusal> {
    let answer = http
        .get(url)
        .header(USER_AGENT, "MailChimp.com WebHook Validator")
        .timeout(URL_CHECK_TIMEOUT)
        .send()
        .await;
    // An unreachable URL has no HTTP code; Mailchimp's message then shows 0.
    let code = answer.map_or(0, |response| response.status().as_u16());
    if (200..300).contains(&code) {
        return Ok(());
    }
    Err(Refusal::Invalid(format!(
        "We couldn't verify the URL is working. \
         Please double check and try again. HTTP Code: {code}"
    )))
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https"))
}

/// Mailchimp compares webhook URLs without their query strings.
fn same_url(a: &str, b: &str) -> bool {
    let bare = |url: &str| url.split(['?', '#']).next().unwrap_or_default().to_owned();
    bare(a) == bare(b)
}

fn duplicate_url() -> Refusal {
    Refusal::Invalid("Sorry, you can't set up multiple WebHooks for one URL.".to_owned())
}
