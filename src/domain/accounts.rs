//! Mailchimp accounts: validation of what operators send, the data centre taken from the
//! API key, and the webhook token behind each account's URL.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::apply;
use crate::error::{AppError, AppResult, Kind};
use crate::store::Store;
use crate::store::accounts::{self, AccountChanges, AccountRow, NewAccount, WebhookAccount};
use crate::store::lists::{self, ListRow};

/// Where generated webhook URLs point, and whether plain HTTP is tolerated.
#[derive(Debug, Clone, Default)]
pub struct WebhookBase {
    pub public_url: Option<String>,
    pub allow_insecure: bool,
}

impl WebhookBase {
    /// The URL Mailchimp calls for a token.
    pub fn url_for(&self, token: &str) -> Option<String> {
        let base = self.public_url.as_deref()?.trim_end_matches('/');
        Some(format!("{base}/webhooks/mailchimp/{token}"))
    }

    /// Refuses, at start-up, a public URL that could never make a webhook URL. A plain
    /// `http://` one starts, with a warning, and `GenerateWebhookUrl` refuses it.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.public_url else {
            return Ok(());
        };
        base_url(url).map_err(|problem| format!("--public-url {problem}"))?;
        if self.check().is_err() {
            tracing::warn!(
                "--public-url is not https://: webhook URLs will be refused until it is, or until --allow-insecure-webhook-url is given"
            );
        }
        Ok(())
    }

    pub fn check(&self) -> AppResult<()> {
        let Some(url) = &self.public_url else {
            let message = "no public URL is configured: start the service with --public-url";
            return Err(AppError::new(Kind::FailedPrecondition, message));
        };
        if url.starts_with("https://") || (self.allow_insecure && url.starts_with("http://")) {
            return Ok(());
        }
        Err(AppError::new(
            Kind::FailedPrecondition,
            "webhooks require an HTTPS URL",
        ))
    }
}

/// An account's fields as an operator sends them; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AccountInput {
    pub name: Option<String>,
    pub api_key: Option<String>,
    pub api_base_url: Option<String>,
    pub webhook_active: Option<bool>,
    pub webhook_signing_secret: Option<String>,
}

pub async fn create(store: &Store, input: AccountInput) -> AppResult<AccountRow> {
    let name = valid_name(input.name.as_deref().unwrap_or_default())?;
    let api_key = input.api_key.unwrap_or_default();
    let data_center = data_center(&api_key)?;
    let base_url = input
        .api_base_url
        .as_deref()
        .map(valid_base_url)
        .transpose()?;
    let now = crate::now();
    let row = store
        .run(move |conn| {
            let new = NewAccount {
                name: &name,
                api_key: &api_key,
                data_center: &data_center,
                api_base_url: base_url.as_deref(),
                create_date: now,
                write_date: now,
            };
            accounts::insert(conn, &new)
        })
        .await?;
    Ok(row)
}

pub async fn get(store: &Store, id: i64) -> AppResult<AccountRow> {
    store
        .run(move |conn| accounts::get(conn, id))
        .await
        .map_err(not_found)
}

pub async fn list(store: &Store) -> AppResult<Vec<AccountRow>> {
    Ok(store.run(accounts::list).await?)
}

pub async fn update(store: &Store, id: i64, input: AccountInput) -> AppResult<AccountRow> {
    let mut changes = AccountChanges {
        write_date: Some(crate::now()),
        ..Default::default()
    };
    if let Some(name) = &input.name {
        changes.name = Some(valid_name(name)?);
    }
    if let Some(key) = input.api_key {
        changes.data_center = Some(data_center(&key)?);
        changes.api_key = Some(key);
    }
    if let Some(url) = &input.api_base_url {
        changes.api_base_url = Some(
            Some(url)
                .filter(|u| !u.is_empty())
                .map(|u| valid_base_url(u))
                .transpose()?,
        );
    }
    changes.webhook_active = input.webhook_active;
    changes.webhook_signing_secret = input
        .webhook_signing_secret
        .map(|secret| Some(secret).filter(|s| !s.is_empty()));
    let row = store
        .run(move |conn| accounts::update(conn, id, &changes))
        .await
        .map_err(not_found);
    store.recent_tokens().forget_all();
    row
}

/// Deletes the account with its audiences. Their members leave through the change feed
/// first, as they would one by one, so an Odoo module following it lets them go too.
pub async fn delete(store: &Store, id: i64) -> AppResult<()> {
    let now = crate::now();
    let deleted = store
        .write(move |conn| {
            accounts::get(conn, id)?;
            for list in lists::for_account(conn, id)? {
                apply::remove_audience_members(conn, &list, now)?;
            }
            accounts::delete(conn, id)
        })
        .await
        .map_err(not_found);
    store.recent_tokens().forget_all();
    deleted
}

/// The audiences of an account, as far as the store has seen them.
pub async fn audiences(store: &Store, account_id: i64) -> AppResult<Vec<ListRow>> {
    get(store, account_id).await?;
    Ok(store
        .run(move |conn| lists::for_account(conn, account_id))
        .await?)
}

/// Issues a new token for the account's webhook URL; the old URL stops working at once.
pub async fn generate_webhook_url(
    store: &Store,
    base: &WebhookBase,
    account_id: i64,
) -> AppResult<String> {
    base.check()?;
    let token = new_token();
    let url = base.url_for(&token).expect("checked above");
    let changes = AccountChanges {
        webhook_token: Some(Some(token.clone())),
        webhook_token_hash: Some(Some(token_hash(&token))),
        write_date: Some(crate::now()),
        ..Default::default()
    };
    let updated = store
        .run(move |conn| accounts::update(conn, account_id, &changes))
        .await
        .map_err(not_found);
    store.recent_tokens().forget_all();
    updated?;
    Ok(url)
}

/// The account a webhook token belongs to, if any, with its signing secrets. The hash
/// narrows the search through the index; the token itself is then compared in constant time.
pub async fn find_by_token(store: &Store, token: &str) -> AppResult<Option<Arc<WebhookAccount>>> {
    if !plausible_token(token) {
        return Ok(None);
    }
    let hash = token_hash(token);
    let found = match store.recent_tokens().get(&hash) {
        Ok(found) => Some(found),
        Err(generation) => {
            let (found, hash) = store
                .run(move |conn| Ok((accounts::find_for_webhook(conn, &hash)?, hash)))
                .await?;
            let found = found.map(Arc::new);
            if let Some(found) = &found {
                store.recent_tokens().put(generation, hash, found.clone());
            }
            found
        }
    };
    Ok(found.filter(|found| {
        let held = found.row.webhook_token.as_deref().unwrap_or_default();
        bool::from(held.as_bytes().ct_eq(token.as_bytes()))
    }))
}

/// 192 bits from a CSPRNG (the thread-local ChaCha generator, seeded by the OS), URL-safe.
fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn plausible_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_found(error: crate::store::StoreError) -> AppError {
    match error {
        crate::store::StoreError::NotFound => AppError::not_found("account"),
        other => other.into(),
    }
}

fn valid_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::invalid("name", "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// The data centre from an API key's suffix, as in `0123abcd…-us6`.
pub fn data_center(api_key: &str) -> AppResult<String> {
    let invalid = || {
        AppError::invalid(
            "api_key",
            "expected a Mailchimp API key ending in -<dc>, such as -us6",
        )
    };
    let (secret, dc) = api_key.rsplit_once('-').ok_or_else(invalid)?;
    let letters = dc.trim_end_matches(|c: char| c.is_ascii_digit());
    let well_formed = secret.len() >= 8
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
        && !letters.is_empty()
        && letters.len() < dc.len()
        && letters.bytes().all(|b| b.is_ascii_lowercase());
    if !well_formed {
        return Err(invalid());
    }
    Ok(dc.to_owned())
}

fn valid_base_url(url: &str) -> AppResult<String> {
    base_url(url).map_err(|problem| AppError::invalid("api_base_url", problem))
}

/// A base URL as the service uses one: http or https, a host, and nothing that would
/// carry credentials or end up in the middle of a longer URL (user info, query, fragment).
pub fn base_url(url: &str) -> Result<String, &'static str> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err("must be an http:// or https:// URL");
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be an http:// or https:// URL");
    }
    if rest.contains(['@', '?', '#']) {
        return Err("must not hold credentials, a query or a fragment");
    }
    Ok(url.to_owned())
}

/// The API key as an operator may see it: the last four characters of its secret part,
/// and the data centre.
pub fn key_hint(api_key: &str) -> String {
    let (secret, dc) = api_key.rsplit_once('-').unwrap_or((api_key, ""));
    let tail = secret
        .get(secret.len().saturating_sub(4)..)
        .unwrap_or_default();
    format!("…{tail}-{dc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_center_comes_from_the_key_suffix() {
        assert_eq!(
            data_center("0123456789abcdef0123456789abcdef-us6").unwrap(),
            "us6"
        );
        assert_eq!(data_center("0123456789abcdef-us21").unwrap(), "us21");
        for bad in [
            "",
            "nodash",
            "0123456789abcdef-",
            "0123456789abcdef-us",
            "short-us6",
            "0123456789abcdef-US6",
            "0123456789abcdef-6",
        ] {
            let error = data_center(bad).unwrap_err();
            assert_eq!(error.kind(), Kind::InvalidArgument, "{bad}");
            assert!(error.message().starts_with("api_key"));
        }
    }

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(plausible_token(&a));
    }

    #[test]
    fn only_https_public_urls_make_webhook_urls_unless_allowed() {
        let base = |url: &str, allow| WebhookBase {
            public_url: Some(url.into()),
            allow_insecure: allow,
        };
        assert!(base("https://sync.example.com", false).check().is_ok());
        let refused = base("http://sync.example.com", false).check().unwrap_err();
        assert_eq!(refused.kind(), Kind::FailedPrecondition);
        assert_eq!(refused.message(), "webhooks require an HTTPS URL");
        assert!(base("http://localhost:8080", true).check().is_ok());
        assert_eq!(
            WebhookBase::default().check().unwrap_err().kind(),
            Kind::FailedPrecondition
        );
        let url = base("https://sync.example.com/", false)
            .url_for("abc")
            .unwrap();
        assert_eq!(url, "https://sync.example.com/webhooks/mailchimp/abc");
    }

    #[test]
    fn base_urls_refuse_credentials_queries_and_fragments() {
        assert_eq!(
            base_url("https://sync.example.com/").unwrap(),
            "https://sync.example.com"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8090").unwrap(),
            "http://127.0.0.1:8090"
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://user:pw@x.example",
            "https://x.example?a=1",
            "https://x.example/#f",
            "https://x y",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_hint_shows_only_the_last_four_characters() {
        assert_eq!(key_hint("0123456789abcdef-us6"), "…cdef-us6");
    }
}
