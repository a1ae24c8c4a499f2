//! Registering an audience's webhook through the API, as an operator would in Mailchimp's
//! settings: every contact event on, the subscriber and admin sources on, the API source
//! off (changes made through the API would otherwise echo back), and this service's URL.

use serde_json::{Map, Value, json};

use crate::domain::accounts::WebhookBase;
use crate::domain::fetch::{Fetcher, api_error};
use crate::error::{AppError, AppResult, Kind};
use crate::mailchimp::types::{ApiWebhook, WebhookSpec};
use crate::store::accounts::{self, AccountChanges};
use crate::store::lists;

/// The webhook as Mailchimp now holds it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub audience_id: i64,
    pub webhook: ApiWebhook,
    pub created: bool,
    pub secret_kept: bool,
}

pub async fn register_webhook(
    fetcher: &Fetcher,
    base: &WebhookBase,
    audience_id: i64,
) -> AppResult<Registered> {
    let list = fetcher.audience(audience_id).await?;
    let account = crate::domain::accounts::get(fetcher.store(), list.account_id).await?;
    let Some(url) = account
        .webhook_token
        .as_deref()
        .and_then(|token| base.url_for(token))
    else {
        let message = "the account has no webhook URL yet: call GenerateWebhookUrl first";
        return Err(AppError::new(Kind::FailedPrecondition, message));
    };
    base.check()?;
    let client = fetcher.account_client(account.id).await?;
    let spec = spec(&url);
    let existing = client
        .webhooks(&list.mailchimp_list_id)
        .await
        .map_err(api_error)?;
    let same = existing.iter().find(|hook| same_url(&hook.url, &url));
    let (webhook, created) = match same {
        Some(hook) => {
            let updated = client
                .update_webhook(&list.mailchimp_list_id, &hook.id, &spec)
                .await;
            (updated.map_err(api_error)?, false)
        }
        None => (
            client
                .create_webhook(&list.mailchimp_list_id, &spec)
                .await
                .map_err(api_error)?,
            true,
        ),
    };
    let secret = webhook.signing_secret.clone();
    let secret_kept = secret.is_some();
    let account_id = account.id;
    let stored = fetcher
        .store()
        .write(move |conn| {
            let now = crate::now();
            if let Some(secret) = secret {
                // Every audience's webhook signs with a secret of its own; the account's
                // field shows the last one and still takes one typed in by hand.
                lists::set_signing_secret(conn, audience_id, &secret)?;
                let changes = AccountChanges {
                    webhook_signing_secret: Some(Some(secret)),
                    write_date: Some(now),
                    ..Default::default()
                };
                accounts::update(conn, account_id, &changes)?;
            }
            lists::set_webhook_registered(conn, audience_id, now)
        })
        .await;
    fetcher.store().recent_tokens().forget_all();
    stored?;
    Ok(Registered {
        audience_id,
        webhook,
        created,
        secret_kept,
    })
}

fn spec(url: &str) -> WebhookSpec {
    let flags = |pairs: &[(&str, bool)]| -> Map<String, Value> {
        pairs
            .iter()
            .map(|(name, on)| ((*name).to_owned(), json!(on)))
            .collect()
    };
    WebhookSpec {
        url: url.to_owned(),
        events: flags(&[
            ("subscribe", true),
            ("unsubscribe", true),
            ("profile", true),
            ("cleaned", true),
            ("upemail", true),
            ("campaign", false),
        ]),
        sources: flags(&[("user", true), ("admin", true), ("api", false)]),
    }
}

/// Mailchimp treats URLs that differ only in their query string as the same webhook.
fn same_url(a: &str, b: &str) -> bool {
    let strip = |url: &str| {
        url.split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_turns_every_contact_event_on_and_the_api_source_off() {
        let spec = spec("https://sync.example.com/webhooks/mailchimp/t");
        for event in ["subscribe", "unsubscribe", "profile", "cleaned", "upemail"] {
            assert_eq!(spec.events[event], json!(true), "{event}");
        }
        assert_eq!(spec.sources["user"], json!(true));
        assert_eq!(spec.sources["admin"], json!(true));
        assert_eq!(spec.sources["api"], json!(false));
    }

    #[test]
    fn urls_match_without_their_query() {
        assert!(same_url("https://a.example/x?k=1", "https://a.example/x"));
        assert!(!same_url("https://a.example/x", "https://a.example/y"));
    }
}
