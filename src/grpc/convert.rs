//! Store rows and domain views turned into gRPC messages.

use chrono::NaiveDateTime;
use serde_json::Value;

use super::pb;
use crate::domain::accounts::{WebhookBase, key_hint};
use crate::domain::contacts::ContactView;
use crate::domain::register::Registered;
use crate::store::accounts::AccountRow;
use crate::store::blacklist::BlacklistRow;
use crate::store::changes::ChangeRow;
use crate::store::events::EventSummary;
use crate::store::fetch_runs::FetchRunRow;
use crate::store::lists::ListRow;

pub fn timestamp(at: NaiveDateTime) -> prost_types::Timestamp {
    let utc = at.and_utc();
    prost_types::Timestamp {
        seconds: utc.timestamp(),
        nanos: utc.timestamp_subsec_nanos() as i32,
    }
}

fn opt_timestamp(at: Option<NaiveDateTime>) -> Option<prost_types::Timestamp> {
    at.map(timestamp)
}

pub fn account(row: AccountRow, base: &WebhookBase) -> pb::Account {
    let webhook_url = row
        .webhook_token
        .as_deref()
        .and_then(|token| base.url_for(token));
    let api_base_url = row
        .api_base_url
        .clone()
        .unwrap_or_else(|| format!("https://{}.api.mailchimp.com", row.data_center));
    pb::Account {
        id: row.id,
        api_key_hint: key_hint(&row.api_key),
        name: row.name,
        data_center: row.data_center,
        api_base_url,
        webhook_url: webhook_url.unwrap_or_default(),
        webhook_active: row.webhook_active,
        has_signing_secret: row.webhook_signing_secret.is_some(),
        create_time: Some(timestamp(row.create_date)),
        update_time: Some(timestamp(row.write_date)),
    }
}

pub fn audience(row: ListRow) -> pb::Audience {
    pb::Audience {
        id: row.id,
        account_id: row.account_id,
        mailchimp_list_id: row.mailchimp_list_id,
        name: row.name,
        member_count: row.member_count,
        last_fetch_time: opt_timestamp(row.last_fetch_date),
        webhook_registered: row.webhook_registered,
        create_time: Some(timestamp(row.create_date)),
    }
}

pub fn contact(view: ContactView) -> pb::Contact {
    let ContactView {
        contact,
        subscriptions,
        is_blacklisted,
    } = view;
    let merge_fields = serde_json::from_str(&contact.merge_fields).unwrap_or(Value::Null);
    let strings = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap_or_default();
    pb::Contact {
        id: contact.id,
        interests: strings(&contact.interests),
        tags: strings(&contact.tags),
        name: contact.name,
        first_name: contact.first_name,
        last_name: contact.last_name,
        email: contact.email,
        email_normalized: contact.email_normalized,
        is_blacklisted,
        merge_fields: match json_to_value(merge_fields).kind {
            Some(prost_types::value::Kind::StructValue(fields)) => Some(fields),
            _ => None,
        },
        subscriptions: subscriptions
            .into_iter()
            .map(|(sub, mailchimp_list_id)| pb::Subscription {
                audience_id: sub.list_id,
                mailchimp_list_id,
                status: sub.status,
                opt_out: sub.opt_out,
                opt_out_datetime: opt_timestamp(sub.opt_out_datetime),
                opt_out_reason: sub.opt_out_reason.unwrap_or_default(),
                last_changed: Some(timestamp(sub.last_changed)),
                unique_email_id: sub.unique_email_id.unwrap_or_default(),
                subscriber_hash: sub.subscriber_hash,
            })
            .collect(),
        create_time: Some(timestamp(contact.create_date)),
        update_time: Some(timestamp(contact.write_date)),
    }
}

/// JSON as protobuf's `google.protobuf.Value`, so merge fields keep their shape.
fn json_to_value(json: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn change(row: ChangeRow) -> pb::Change {
    pb::Change {
        sequence: row.id,
        contact_id: row.contact_id,
        email_normalized: row.email_normalized,
        audience_id: row.list_id,
        mailchimp_list_id: row.mailchimp_list_id.unwrap_or_default(),
        kind: row.kind,
        status: row.status.unwrap_or_default(),
        opt_out: row.opt_out.unwrap_or_default(),
        change_time: Some(timestamp(row.create_date)),
    }
}

pub fn blacklist_entry(row: BlacklistRow) -> pb::BlacklistEntry {
    pb::BlacklistEntry {
        id: row.id,
        email: row.email,
        active: row.active,
        reason: row.reason.unwrap_or_default(),
        create_time: Some(timestamp(row.create_date)),
        update_time: Some(timestamp(row.write_date)),
    }
}

pub fn webhook_event(row: EventSummary) -> pb::WebhookEvent {
    pb::WebhookEvent {
        id: row.id,
        account_id: row.account_id,
        mailchimp_list_id: row.mailchimp_list_id.unwrap_or_default(),
        event_type: row.event_type.unwrap_or_default(),
        fired_at: opt_timestamp(row.fired_at),
        outcome: row.outcome,
        error: row.error.unwrap_or_default(),
        received_time: Some(timestamp(row.received_date)),
        body_size: i64::from(row.body_size),
        replay_count: row.replay_count,
    }
}

pub fn registered_webhook(registered: Registered) -> pb::RegisteredWebhook {
    let flags = |map: &serde_json::Map<String, Value>| {
        map.iter()
            .map(|(name, on)| (name.clone(), on.as_bool().unwrap_or_default()))
            .collect()
    };
    pb::RegisteredWebhook {
        audience_id: registered.audience_id,
        events: flags(&registered.webhook.events),
        sources: flags(&registered.webhook.sources),
        webhook_id: registered.webhook.id,
        url: registered.webhook.url,
        signing_secret_kept: registered.secret_kept,
        created: registered.created,
    }
}

pub fn fetch_run(row: FetchRunRow, mailchimp_list_id: String) -> pb::FetchRun {
    pb::FetchRun {
        id: row.id,
        audience_id: row.list_id,
        mailchimp_list_id,
        trigger: row.trigger,
        mode: row.mode,
        state: row.state,
        pages: row.pages,
        members_seen: row.members_seen,
        members_written: row.members_written,
        error: row.error.unwrap_or_default(),
        started_time: opt_timestamp(row.started_date),
        finished_time: opt_timestamp(row.finished_date),
        heartbeat_time: opt_timestamp(row.heartbeat_date),
    }
}
