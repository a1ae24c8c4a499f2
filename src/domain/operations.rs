//! Operator actions beyond contacts: the blacklist, the change feed, and stored webhook
//! events with their replay.

use tokio::sync::watch;

use crate::domain::apply::Outcome;
use crate::domain::contacts::{decode_page_token, next_page_token, page_limit};
use crate::domain::ingest::apply_raw;
use crate::email::EmailIdentity;
use crate::error::{AppError, AppResult, Kind};
use crate::store::blacklist::{self, BlacklistRow};
use crate::store::changes::{self, ChangeRow, NewChange};
use crate::store::events::{self, EventFilter, EventSummary};
use crate::store::{DbConnection, Store, StoreError, StoreResult, accounts, contacts};
use crate::webhook::event::{self, Envelope};

pub async fn list_blacklist(
    store: &Store,
    page_size: i32,
    page_token: &str,
    include_inactive: bool,
) -> AppResult<(Vec<BlacklistRow>, String)> {
    let limit = page_limit(page_size)?;
    let after = decode_page_token(page_token)?;
    let rows = store
        .run(move |conn| blacklist::page(conn, after, limit, include_inactive))
        .await?;
    let next = next_page_token(&rows, limit, |row| row.id);
    Ok((rows, next))
}

/// Archives the address's blacklist entry, as unblacklisting does in Odoo; the contact with
/// that address, if any, gets a change-feed entry.
pub async fn remove_from_blacklist(
    store: &Store,
    feed: &watch::Sender<i64>,
    raw: &str,
) -> AppResult<BlacklistRow> {
    let email = EmailIdentity::parse(raw)
        .ok_or_else(|| AppError::invalid("email", "not a valid email address"))?;
    let now = crate::now();
    let row = store
        .write(move |conn| unblacklist(conn, &email, now))
        .await?;
    publish(store, feed).await;
    row.ok_or_else(|| AppError::not_found("blacklist entry"))
}

fn unblacklist(
    conn: &mut DbConnection,
    email: &EmailIdentity,
    now: chrono::NaiveDateTime,
) -> StoreResult<Option<BlacklistRow>> {
    let Some((row, changed)) = blacklist::deactivate(conn, &email.normalized, now)? else {
        return Ok(None);
    };
    if changed && let Some(contact) = contacts::find_by_email(conn, &email.normalized)? {
        let change = NewChange {
            contact_id: contact.id,
            email_normalized: contact.email_normalized,
            list_id: None,
            mailchimp_list_id: None,
            kind: "unblacklisted",
            status: None,
            opt_out: None,
            create_date: now,
        };
        changes::insert_all(conn, &[change])?;
    }
    Ok(Some(row))
}

pub async fn list_changes(store: &Store, after: i64, limit: i32) -> AppResult<Vec<ChangeRow>> {
    if after < 0 {
        return Err(AppError::invalid("after_sequence", "must not be negative"));
    }
    let limit =
        page_limit(limit).map_err(|_| AppError::invalid("limit", "must be between 0 and 1000"))?;
    Ok(store
        .run(move |conn| changes::after(conn, after, limit))
        .await?)
}

pub async fn list_events(
    store: &Store,
    filter: EventFilter,
    page_size: i32,
    page_token: &str,
) -> AppResult<(Vec<EventSummary>, String)> {
    const OUTCOMES: [&str; 6] = [
        "applied",
        "unchanged",
        "stale",
        "ignored",
        "rejected",
        "failed",
    ];
    if let Some(outcome) = &filter.outcome
        && !OUTCOMES.contains(&outcome.as_str())
    {
        return Err(AppError::invalid(
            "outcome",
            "must be one of applied, unchanged, stale, ignored, rejected, failed",
        ));
    }
    let limit = page_limit(page_size)?;
    let before = decode_page_token(page_token)?;
    let rows = store
        .run(move |conn| events::page(conn, &filter, before, limit))
        .await?;
    let next = next_page_token(&rows, limit, |row| row.id);
    Ok((rows, next))
}

/// Applies a stored event again and records the new outcome on it.
pub async fn replay_event(
    store: &Store,
    feed: &watch::Sender<i64>,
    id: i64,
) -> AppResult<EventSummary> {
    let stored = store.run(move |conn| events::get(conn, id)).await;
    let stored = match stored {
        Err(StoreError::NotFound) => return Err(AppError::not_found("webhook event")),
        other => other?,
    };
    // A refused request stays refused: its signature cannot be checked again, since only
    // its body is kept, and a body that is no Mailchimp event does not become one.
    if stored.outcome == Outcome::Rejected.as_str() {
        let message = "a rejected request is kept as it came and is never applied";
        return Err(AppError::new(Kind::FailedPrecondition, message));
    }
    let now = crate::now();
    let result = store.write(move |conn| replay(conn, id, now)).await;
    let summary = match result {
        Err(StoreError::NotFound) => return Err(AppError::not_found("webhook event")),
        other => other?,
    };
    publish(store, feed).await;
    Ok(summary)
}

fn replay(
    conn: &mut DbConnection,
    id: i64,
    now: chrono::NaiveDateTime,
) -> StoreResult<EventSummary> {
    let summary = events::get(conn, id)?;
    let body = events::raw_body(conn, id)?;
    let (outcome, note) = match event::parse(&body) {
        Err(rejection) => (Outcome::Rejected, Some(rejection.to_string())),
        Ok(Envelope::UrlCheck) => (Outcome::Ignored, Some("no event type".to_owned())),
        Ok(Envelope::Event(_)) if !accounts::get(conn, summary.account_id)?.webhook_active => (
            Outcome::Ignored,
            Some("the account's webhook is inactive".to_owned()),
        ),
        Ok(Envelope::Event(raw)) => {
            let applied = apply_raw(conn, summary.account_id, &raw, now)?;
            (applied.outcome, applied.note)
        }
    };
    events::record_replay(conn, id, outcome.as_str(), note.as_deref())?;
    events::get(conn, id)
}

async fn publish(store: &Store, feed: &watch::Sender<i64>) {
    if let Ok(last) = store.run(changes::last_sequence).await {
        feed.send_if_modified(|held| std::mem::replace(held, last) != last);
    }
}
