//! The webhooks Mailchimp sends when a member changes: the form-encoded body, exactly as it
//! travels, the HMAC signature, and the background delivery to registered webhooks.
//!
//! Every change that Mailchimp would announce is kept as a [`WebhookEvent`], whether or not
//! a webhook is registered or delivery is on, so that a test can also deliver a body itself:
//! late, twice, or never.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

use super::member::Member;
use super::webhooks::Webhook;
use super::{Shared, lock};

/// Who made a change, matched against a webhook's `sources` toggles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The contact, through a signup form or the preferences page.
    User,
    /// An account admin, in the Mailchimp web app.
    Admin,
    /// An API call.
    Api,
}

/// One change as Mailchimp would announce it, and where it was (or would be) delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `subscribe`, `unsubscribe`, `profile`, `upemail` or `cleaned`.
    pub kind: &'static str,
    pub source: Source,
    pub list_id: String,
    pub fired_at: DateTime<Utc>,
    /// The raw `application/x-www-form-urlencoded` body.
    pub body: String,
    /// One per registered webhook whose event and source toggles let this change through.
    pub deliveries: Vec<WebhookDelivery>,
}

/// One webhook an event is meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub webhook_id: String,
    pub url: String,
    pub signing_secret: Option<String>,
    pub outcome: DeliveryOutcome,
}

impl WebhookDelivery {
    /// The `X-Mailchimp-Signature` value for `body` signed at `timestamp` (Unix seconds),
    /// when the webhook signs.
    pub fn signature(&self, body: &str, timestamp: i64) -> Option<String> {
        let secret = self.signing_secret.as_deref()?;
        Some(signature_header(secret, timestamp, body))
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivery was off when the change happened.
    NotSent,
    Queued,
    /// The receiver answered with this status.
    Answered(u16),
    /// No answer: refused connection, timeout after 10 s, and so on.
    Failed(String),
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret>`.
pub fn signature_header(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={:x}", mac.finalize().into_bytes())
}

/// A member change that Mailchimp announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Subscribed,
    Unsubscribed,
    /// Removed from the audience, for good or not: an `unsubscribe` with `action=delete`.
    Deleted,
    Profile,
    EmailChanged {
        old_email: String,
    },
    /// `reason` is `hard` (a hard bounce) or `abuse` (a spam complaint).
    Cleaned {
        reason: &'static str,
    },
}

/// The event for `change`, addressed to the webhooks that want it.
pub(crate) fn event_for(
    change: &Change,
    member: &Member,
    list_id: &str,
    source: Source,
    at: DateTime<Utc>,
    webhooks: &[Webhook],
) -> WebhookEvent {
    let (kind, body) = body(change, member, list_id, at);
    let wanted = |hook: &&Webhook| hook.events.allows(kind) && hook.sources.allows(source);
    let deliveries = webhooks
        .iter()
        .filter(wanted)
        .map(|hook| WebhookDelivery {
            webhook_id: hook.id.clone(),
            url: hook.url.clone(),
            signing_secret: hook.signing_secret.clone(),
            outcome: DeliveryOutcome::NotSent,
        })
        .collect();
    WebhookEvent {
        kind,
        source,
        list_id: list_id.to_owned(),
        fired_at: at,
        body,
        deliveries,
    }
}

/// The event type and the body, keys in the order Mailchimp sends them. The serializer
/// writes brackets as `%5B`/`%5D`, `@` as `%40` and spaces as `+`, as real captures show.
fn body(
    change: &Change,
    member: &Member,
    list_id: &str,
    at: DateTime<Utc>,
) -> (&'static str, String) {
    let kind = match change {
        Change::Subscribed => "subscribe",
        Change::Unsubscribed | Change::Deleted => "unsubscribe",
        Change::Profile => "profile",
        Change::EmailChanged { .. } => "upemail",
        Change::Cleaned { .. } => "cleaned",
    };
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("type", kind);
    form.append_pair("fired_at", &at.format("%Y-%m-%d %H:%M:%S").to_string());
    match change {
        Change::Subscribed => member_data(&mut form, member, list_id, true),
        Change::Unsubscribed | Change::Deleted => {
            let action = if *change == Change::Deleted {
                "delete"
            } else {
                "unsub"
            };
            form.append_pair("data[action]", action);
            form.append_pair("data[reason]", "manual");
            member_data(&mut form, member, list_id, false);
        }
        Change::Profile => member_data(&mut form, member, list_id, false),
        Change::EmailChanged { old_email } => {
            form.append_pair("data[list_id]", list_id);
            form.append_pair("data[new_id]", &member.unique_email_id);
            form.append_pair("data[new_email]", &member.email_address);
            form.append_pair("data[old_email]", old_email);
        }
        Change::Cleaned { reason } => {
            form.append_pair("data[list_id]", list_id);
            form.append_pair("data[campaign_id]", "");
            form.append_pair("data[reason]", reason);
            form.append_pair("data[email]", &member.email_address);
        }
    }
    (kind, form.finish())
}

type Form = form_urlencoded::Serializer<'static, String>;

/// The member part of `subscribe`, `unsubscribe` and `profile`. `data[id]` is the member's
/// 10-character `unique_email_id`, not the MD5 hash.
fn member_data(form: &mut Form, member: &Member, list_id: &str, with_signup_ip: bool) {
    form.append_pair("data[id]", &member.unique_email_id);
    form.append_pair("data[list_id]", list_id);
    form.append_pair("data[email]", &member.email_address);
    form.append_pair("data[email_type]", &member.email_type);
    form.append_pair("data[ip_opt]", &member.ip_opt);
    if with_signup_ip {
        form.append_pair("data[ip_signup]", &member.ip_signup);
    }
    form.append_pair("data[web_id]", &member.web_id.to_string());
    form.append_pair("data[merges][EMAIL]", &member.email_address);
    for (tag, value) in &member.merge_fields {
        merge_value(form, &format!("data[merges][{tag}]"), value);
    }
}

/// Merge values travel as text; an address set travels as sub-keys, an empty one as `""`.
fn merge_value(form: &mut Form, key: &str, value: &Value) {
    match value {
        Value::Object(parts) => {
            for (part, value) in parts {
                merge_value(form, &format!("{key}[{part}]"), value);
            }
        }
        Value::String(text) => {
            form.append_pair(key, text);
        }
        Value::Null => {
            form.append_pair(key, "");
        }
        other => {
            form.append_pair(key, &other.to_string());
        }
    }
}

/// One delivery waiting for the background sender.
pub(crate) struct Job {
    event: usize,
    delivery: usize,
    url: String,
    body: String,
    secret: Option<String>,
}

/// The queue between changes (made from plain Rust calls) and the task that POSTs them,
/// with a count of deliveries not yet finished so a test can wait for them.
pub(crate) struct Outbox {
    sender: mpsc::UnboundedSender<Job>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    pending: watch::Sender<usize>,
}

impl Outbox {
    pub fn new() -> Outbox {
        let (sender, receiver) = mpsc::unbounded_channel();
        Outbox {
            sender,
            receiver: Mutex::new(Some(receiver)),
            pending: watch::Sender::new(0),
        }
    }

    /// Queues every delivery of `event`, which will sit at `index` in the event log.
    pub fn queue(&self, index: usize, event: &mut WebhookEvent) {
        for (number, delivery) in event.deliveries.iter_mut().enumerate() {
            delivery.outcome = DeliveryOutcome::Queued;
            self.pending.send_modify(|pending| *pending += 1);
            let job = Job {
                event: index,
                delivery: number,
                url: delivery.url.clone(),
                body: event.body.clone(),
                secret: delivery.signing_secret.clone(),
            };
            // The receiver lives as long as the fake; a send can only fail after shutdown.
            let _ = self.sender.send(job);
        }
    }

    /// Resolves once no delivery is queued or in progress.
    pub async fn drained(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|count| *count == 0).await;
    }
}

/// Starts the sender task, once per fake: deliveries go out one at a time, in order.
pub(crate) fn start_sender(shared: &Arc<Shared>) {
    let Some(mut receiver) = lock(&shared.outbox.receiver).take() else {
        return;
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        while let Some(job) = receiver.recv().await {
            let outcome = deliver(&shared.http, &job).await;
            let mut events = lock(&shared.events);
            if let Some(delivery) = events[job.event].deliveries.get_mut(job.delivery) {
                delivery.outcome = outcome;
            }
            drop(events);
            shared.outbox.pending.send_modify(|pending| *pending -= 1);
        }
    });
}

/// POSTs delivery `delivery` of `event` now, whatever became of it before; the outcome is
/// returned, not recorded.
pub(crate) async fn deliver_again(
    http: &reqwest::Client,
    event: &WebhookEvent,
    delivery: usize,
) -> DeliveryOutcome {
    let Some(target) = event.deliveries.get(delivery) else {
        return DeliveryOutcome::Failed(format!("the event has no delivery {delivery}"));
    };
    let job = Job {
        event: 0,
        delivery,
        url: target.url.clone(),
        body: event.body.clone(),
        secret: target.signing_secret.clone(),
    };
    deliver(http, &job).await
}

/// POSTs one event as Mailchimp does, signed with the current Unix time.
async fn deliver(http: &reqwest::Client, job: &Job) -> DeliveryOutcome {
    let mut request = http
        .post(&job.url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(USER_AGENT, "MailChimp.com")
        .body(job.body.clone());
    if let Some(secret) = &job.secret {
        let signature = signature_header(secret, Utc::now().timestamp(), &job.body);
        request = request.header("X-Mailchimp-Signature", signature);
    }
    match request.send().await {
        Ok(response) => DeliveryOutcome::Answered(response.status().as_u16()),
        Err(error) => DeliveryOutcome::Failed(error.to_string()),
    }
}
