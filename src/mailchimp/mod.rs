//! A client for the Mailchimp Marketing API v3, polite by construction: at most a few
//! requests in flight per account, a timeout on each, exponential backoff with jitter on
//! 429, 5xx and network errors, and Mailchimp's problem+json errors surfaced with their
//! `detail`. The API key travels in the Authorization header only, never in a URL, a log
//! line or an error.

pub mod types;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::NaiveDateTime;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use types::{ApiList, ApiMember, ApiWebhook, ListsPage, MembersPage, Problem, WebhookSpec};

/// Mailchimp refuses more than ten simultaneous connections per user.
pub const MAX_CONCURRENCY: usize = 10;
/// The largest page Mailchimp serves.
pub const FULL_PAGE: u32 = 1000;
/// The page size Mailchimp support suggests when `count=1000` times out.
pub const REDUCED_PAGE: u32 = 500;

/// How hard the client may push.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_timeout: Duration,
    pub retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(60),
            retries: 6,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A failed call, with what Mailchimp said about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("Mailchimp answered {status}: {title}{}", detail_suffix(.detail))]
    Api {
        status: u16,
        title: String,
        detail: String,
    },
    #[error("cannot reach Mailchimp: {0}")]
    Network(String),
    #[error("Mailchimp sent an answer that cannot be read: {0}")]
    Decode(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl ApiError {
    /// Worth another try after a pause: rate limits, server errors and lost connections.
    /// A 403 without a body is how Mailchimp sometimes rate-limits under heavy load.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Api { status, title, .. } => {
                *status == 429 || *status >= 500 || (*status == 403 && title.is_empty())
            }
            ApiError::Network(_) => true,
            ApiError::Decode(_) => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The offset and filters of one members page.
#[derive(Debug, Clone, Default)]
pub struct MembersQuery {
    pub offset: u64,
    pub status: Option<String>,
    /// Exclusive, as Mailchimp applies it.
    pub since_last_changed: Option<NaiveDateTime>,
}

/// One account's connection to the API. Clones share the concurrency cap.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: Arc<str>,
    permits: Arc<Semaphore>,
    limits: Limits,
    page_size: Arc<AtomicU32>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `base_url` is the API root without `/3.0`; `permits` caps the requests in flight for
    /// the account, whichever task makes them.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: &str,
        permits: Arc<Semaphore>,
        limits: Limits,
    ) -> Client {
        Client {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            permits,
            limits,
            page_size: Arc::new(AtomicU32::new(FULL_PAGE)),
        }
    }

    /// Every audience of the account, page by page.
    pub async fn lists(&self) -> Result<Vec<ApiList>, ApiError> {
        let mut lists = Vec::new();
        loop {
            let query = [
                ("count", FULL_PAGE.to_string()),
                ("offset", lists.len().to_string()),
                ("fields", types::LIST_FIELDS.to_owned()),
            ];
            let page: ListsPage = self.call(Method::GET, "lists", &query, None::<&()>).await?;
            let short = page.lists.len() < FULL_PAGE as usize;
            lists.extend(page.lists);
            if short {
                return Ok(lists);
            }
        }
    }

    /// One page of members. A page shorter than [`Client::page_size`] is the last.
    /// After a 504 on a full page the client asks for smaller pages from then on.
    pub async fn members(
        &self,
        list_id: &str,
        query: &MembersQuery,
    ) -> Result<Vec<ApiMember>, ApiError> {
        let path = format!("lists/{}/members", path_segment(list_id));
        loop {
            let count = self.page_size();
            let pairs = members_query(query, count);
            match self
                .call::<MembersPage>(Method::GET, &path, &pairs, None::<&()>)
                .await
            {
                Err(error) if error.status() == Some(504) && count == FULL_PAGE => {
                    tracing::info!(
                        page_size = REDUCED_PAGE,
                        "mailchimp timed out on full pages"
                    );
                    self.page_size.store(REDUCED_PAGE, Ordering::Relaxed);
                }
                other => return other.map(|page| page.members),
            }
        }
    }

    pub fn page_size(&self) -> u32 {
        self.page_size.load(Ordering::Relaxed)
    }

    pub async fn webhooks(&self, list_id: &str) -> Result<Vec<ApiWebhook>, ApiError> {
        let path = format!("lists/{}/webhooks", path_segment(list_id));
        let page: types::WebhooksPage = self.call(Method::GET, &path, &[], None::<&()>).await?;
        Ok(page.webhooks)
    }

    pub async fn create_webhook(
        &self,
        list_id: &str,
        spec: &WebhookSpec,
    ) -> Result<ApiWebhook, ApiError> {
        let path = format!("lists/{}/webhooks", path_segment(list_id));
        self.call(Method::POST, &path, &[], Some(spec)).await
    }

    pub async fn update_webhook(
        &self,
        list_id: &str,
        webhook_id: &str,
        spec: &WebhookSpec,
    ) -> Result<ApiWebhook, ApiError> {
        let path = format!(
            "lists/{}/webhooks/{}",
            path_segment(list_id),
            path_segment(webhook_id)
        );
        self.call(Method::PATCH, &path, &[], Some(spec)).await
    }

    /// One call with retries; the 504 that a full members page may cause is left to the
    /// caller, which retries with a smaller page instead.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.limits.min_backoff)
            .with_max_delay(self.limits.max_backoff)
            .with_max_times(self.limits.retries)
            .with_jitter();
        let full_page = query.iter().any(|(k, v)| *k == "count" && v == "1000");
        (|| self.attempt(method.clone(), path, query, body))
            .retry(backoff)
            .when(|error| error.is_transient() && !(full_page && error.status() == Some(504)))
            .notify(|error, pause| {
                tracing::debug!(error = %error, pause_ms = pause.as_millis() as u64, "mailchimp call will be retried");
            })
            .await
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| network("client closed"))?;
        let mut request = self.request(method, path).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.network_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.network_error(e))?;
        if !status.is_success() {
            return Err(problem(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|error| ApiError::Decode(error.to_string()))
    }

    /// What went wrong on the wire, without the URL (it names the account's data centre
    /// and audience, which a log reader does not need).
    fn network_error(&self, error: reqwest::Error) -> ApiError {
        if error.is_timeout() {
            let seconds = self.limits.request_timeout.as_secs();
            return network(&format!(
                "no answer within {seconds} s (--mailchimp-timeout)"
            ));
        }
        network(&error.without_url().to_string())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/3.0/{path}", self.base_url))
            .basic_auth("mailchimp-sync", Some(&*self.api_key))
            .timeout(self.limits.request_timeout)
    }
}

/// The shared HTTP client: rustls, certificates checked against the platform's trust store
/// (so a company proxy's CA installed there works) and Mozilla's roots bundled in the binary
/// (so a minimal container without a CA bundle works too), keep-alive on.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    let bundled = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok());
    reqwest::Client::builder()
        .tls_certs_merge(bundled)
        .user_agent(concat!("mailchimp-sync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

fn members_query(query: &MembersQuery, count: u32) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("count", count.to_string()),
        ("offset", query.offset.to_string()),
        ("fields", types::MEMBER_FIELDS.to_owned()),
    ];
    if let Some(status) = &query.status {
        pairs.push(("status", status.clone()));
    }
    if let Some(since) = query.since_last_changed {
        // Whole seconds in UTC with `Z`: Mailchimp ignores offsets and mishandles fractions.
        pairs.push((
            "since_last_changed",
            since.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ));
    }
    pairs
}

fn network(message: &str) -> ApiError {
    ApiError::Network(message.to_owned())
}

fn problem(status: StatusCode, body: &[u8]) -> ApiError {
    let parsed: Problem = serde_json::from_slice(body).unwrap_or_default();
    let title = if parsed.title.is_empty() && !body.is_empty() {
        status.canonical_reason().unwrap_or_default().to_owned()
    } else {
        parsed.title
    };
    ApiError::Api {
        status: status.as_u16(),
        title,
        detail: parsed.detail,
    }
}

/// Ids come from Mailchimp or operators; keep them from reshaping the path.
fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_sent_as_whole_utc_seconds_with_z() {
        let since = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
            .unwrap()
            .and_hms_milli_opt(9, 15, 1, 637)
            .unwrap();
        let query = MembersQuery {
            since_last_changed: Some(since),
            ..Default::default()
        };
        let pairs = members_query(&query, 1000);
        assert!(pairs.contains(&("since_last_changed", "2026-03-02T09:15:01Z".to_owned())));
        assert!(pairs.contains(&("count", "1000".to_owned())));
    }

    #[test]
    fn transient_errors_are_rate_limits_server_errors_and_network() {
        let api = |status, title: &str| ApiError::Api {
            status,
            title: title.into(),
            detail: String::new(),
        };
        assert!(api(429, "Too Many Requests").is_transient());
        assert!(api(503, "").is_transient());
        assert!(api(403, "").is_transient());
        assert!(!api(403, "Forbidden").is_transient());
        assert!(!api(401, "API Key Invalid").is_transient());
        assert!(ApiError::Network("reset".into()).is_transient());
    }

    #[test]
    fn problem_details_are_kept_and_html_errors_get_a_title() {
        let body = br#"{"type":"x","title":"Resource Not Found","status":404,"detail":"The requested resource could not be found.","instance":"abc"}"#;
        let error = problem(StatusCode::NOT_FOUND, body);
        assert_eq!(
            error.to_string(),
            "Mailchimp answered 404: Resource Not Found: The requested resource could not be found."
        );
        let html = problem(StatusCode::GATEWAY_TIMEOUT, b"<html>timeout</html>");
        assert_eq!(html.to_string(), "Mailchimp answered 504: Gateway Timeout");
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("4f1c9a7e20"), "4f1c9a7e20");
        assert_eq!(path_segment("../../x?y"), "xy");
    }
}
