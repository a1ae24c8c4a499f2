//! The webhook writer: one thread that takes every event waiting, applies them in arrival
//! order inside one write transaction, and answers each once that transaction committed.
//!
//! Committing many events at once is what makes a burst cheap (one disk sync for the whole
//! batch), and one writer per process keeps events for the same contact in order. Each
//! event runs in its own savepoint, so an event that cannot be applied is stored as
//! `failed` without disturbing its neighbours.

use std::sync::Arc;

use axum::body::Bytes;
use chrono::{Datelike, NaiveDateTime};
use tokio::sync::{mpsc, oneshot, watch};

use crate::domain::apply::{self, Applied, Outcome};
use crate::error::{AppError, AppResult, Kind};
use crate::store::events::NewEvent;
use crate::store::{DbConnection, Store, StoreError, StoreResult, changes, events};
use crate::webhook::event::{self, Envelope, RawEvent, Rejection};

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;

/// One webhook request, checked and parsed, waiting to be stored.
pub struct Delivery {
    pub account_id: i64,
    pub webhook_active: bool,
    /// Why the request is refused before it is read (a bad signature), if it is.
    pub refusal: Option<String>,
    pub body: Bytes,
    pub received: NaiveDateTime,
}

/// What the writer did with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub outcome: Outcome,
    /// For a rejected body, the one-line reason to answer with.
    pub reason: Option<String>,
    /// The event's `type`, when the body had one.
    pub event_type: Option<String>,
}

struct Job {
    delivery: Delivery,
    reply: oneshot::Sender<StoreResult<Receipt>>,
}

/// The handle webhook handlers submit to; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    jobs: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts the writer thread. It stops once every handle is dropped and the queue is empty.
    pub fn start(
        store: Store,
        feed: Arc<watch::Sender<i64>>,
    ) -> (Ingestor, std::thread::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        let writer = std::thread::Builder::new()
            .name("webhook-writer".into())
            .spawn(move || write_loop(&store, &feed, queue))
            .expect("the webhook writer thread starts");
        (Ingestor { jobs }, writer)
    }

    /// Stores and applies the delivery; returns once it is committed.
    pub async fn submit(&self, delivery: Delivery) -> AppResult<Receipt> {
        let (reply, receipt) = oneshot::channel();
        let stopped = || AppError::new(Kind::Unavailable, "the service is shutting down");
        self.jobs
            .send(Job { delivery, reply })
            .await
            .map_err(|_| stopped())?;
        Ok(receipt.await.map_err(|_| stopped())??)
    }
}

fn write_loop(store: &Store, feed: &watch::Sender<i64>, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = write_batch(store, &batch);
        answer(batch, result, store, feed);
    }
}

fn write_batch(store: &Store, batch: &[Job]) -> StoreResult<Vec<Receipt>> {
    store.write_blocking(|conn| {
        batch
            .iter()
            .map(|job| store_isolated(conn, &job.delivery))
            .collect()
    })
}

fn answer(
    batch: Vec<Job>,
    result: StoreResult<Vec<Receipt>>,
    store: &Store,
    feed: &watch::Sender<i64>,
) {
    match result {
        Ok(receipts) => {
            let changed = receipts.iter().any(|r| r.outcome == Outcome::Applied);
            for (job, receipt) in batch.into_iter().zip(receipts) {
                let _ = job.reply.send(Ok(receipt));
            }
            if changed {
                publish_sequence(store, feed);
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, events = batch.len(), "webhook batch not stored");
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(StoreError::Unavailable(error.to_string().into())));
            }
        }
    }
}

/// Tells change watchers how far the feed now goes.
fn publish_sequence(store: &Store, feed: &watch::Sender<i64>) {
    let last = store
        .connection()
        .and_then(|mut conn| changes::last_sequence(&mut conn));
    if let Ok(last) = last {
        feed.send_if_modified(|held| std::mem::replace(held, last) != last);
    }
}

/// Stores one delivery in a savepoint of its own: whatever goes wrong with it, short of
/// the database going away, leaves its neighbours in the batch untouched, and the raw body
/// is still kept, as `failed`.
fn store_isolated(conn: &mut DbConnection, delivery: &Delivery) -> StoreResult<Receipt> {
    match diesel::Connection::transaction(conn, |conn| store_delivery(conn, delivery)) {
        Ok(receipt) => Ok(receipt),
        Err(error @ StoreError::Unavailable(_)) => Err(error),
        Err(error) => {
            tracing::error!(account_id = delivery.account_id, error = %error, "webhook event stored raw only");
            let note = "could not be stored as received; only the raw body was kept";
            let new = NewEvent {
                account_id: delivery.account_id,
                mailchimp_list_id: None,
                event_type: None,
                fired_at: None,
                raw_body: &delivery.body,
                outcome: Outcome::Failed.as_str(),
                error: Some(note),
                received_date: delivery.received,
            };
            events::insert(conn, &new)?;
            Ok(Receipt {
                outcome: Outcome::Failed,
                reason: None,
                event_type: None,
            })
        }
    }
}

/// Decides the outcome of one delivery and stores it with its raw body, all inside the
/// batch's transaction.
fn store_delivery(conn: &mut DbConnection, delivery: &Delivery) -> StoreResult<Receipt> {
    let parsed = event::parse(&delivery.body);
    let raw = match &parsed {
        Ok(Envelope::Event(raw)) => Some(raw),
        _ => None,
    };
    let (applied, reason) = decide(conn, delivery, &parsed)?;
    let new = NewEvent {
        account_id: delivery.account_id,
        mailchimp_list_id: raw.and_then(|raw| raw.list_id.as_deref()),
        event_type: raw.map(|raw| raw.event_type.as_str()),
        fired_at: raw.map(|raw| raw.fired_at),
        raw_body: &delivery.body,
        outcome: applied.outcome.as_str(),
        error: applied.note.as_deref(),
        received_date: delivery.received,
    };
    events::insert(conn, &new)?;
    let event_type = raw.map(|raw| raw.event_type.clone());
    Ok(Receipt {
        outcome: applied.outcome,
        reason,
        event_type,
    })
}

fn decide(
    conn: &mut DbConnection,
    delivery: &Delivery,
    parsed: &Result<Envelope, Rejection>,
) -> StoreResult<(Applied, Option<String>)> {
    if let Some(refusal) = &delivery.refusal {
        let applied = Applied {
            outcome: Outcome::Rejected,
            note: Some(refusal.clone()),
        };
        return Ok((applied, Some(refusal.clone())));
    }
    let raw = match parsed {
        Err(rejection) => {
            let reason = rejection.to_string();
            let applied = Applied {
                outcome: Outcome::Rejected,
                note: Some(reason.clone()),
            };
            return Ok((applied, Some(reason)));
        }
        Ok(Envelope::UrlCheck) => {
            let note = "no event type: taken as Mailchimp's URL check";
            return Ok((
                Applied {
                    outcome: Outcome::Ignored,
                    note: Some(note.into()),
                },
                None,
            ));
        }
        Ok(Envelope::Event(raw)) => raw,
    };
    if !delivery.webhook_active {
        let note = "the account's webhook is inactive";
        return Ok((
            Applied {
                outcome: Outcome::Ignored,
                note: Some(note.into()),
            },
            None,
        ));
    }
    Ok((
        apply_raw(conn, delivery.account_id, raw, delivery.received)?,
        None,
    ))
}

/// An event time no real delivery has. A future one would otherwise win over every later
/// change of the member, so that an unsubscribe could never apply again.
fn implausible_time(fired_at: NaiveDateTime, received: NaiveDateTime) -> Option<&'static str> {
    if fired_at > received + chrono::Duration::hours(1) {
        return Some("fired_at lies more than an hour after the time it was received");
    }
    if fired_at.year() < 2001 {
        return Some("fired_at lies before Mailchimp existed");
    }
    None
}

/// Interprets and applies a parsed event in a savepoint. An event that cannot be applied is
/// `failed` with the reason; only an unreachable database aborts the batch.
pub fn apply_raw(
    conn: &mut DbConnection,
    account_id: i64,
    raw: &RawEvent,
    now: NaiveDateTime,
) -> StoreResult<Applied> {
    if let Some(problem) = implausible_time(raw.fired_at, now) {
        return Ok(Applied {
            outcome: Outcome::Failed,
            note: Some(problem.to_owned()),
        });
    }
    let event = match event::interpret(raw) {
        Ok(event) => event,
        Err(error) => {
            return Ok(Applied {
                outcome: Outcome::Failed,
                note: Some(error.to_string()),
            });
        }
    };
    let result = diesel::Connection::transaction(conn, |conn| {
        apply::apply(conn, account_id, raw.fired_at, &event, now)
    });
    match result {
        Ok(applied) => Ok(applied),
        Err(error @ StoreError::Unavailable(_)) => Err(error),
        Err(error) => {
            tracing::error!(error = %error, "webhook event could not be applied");
            let note = format!("could not be applied: {error}");
            Ok(Applied {
                outcome: Outcome::Failed,
                note: Some(note),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn event_times_far_ahead_or_before_mailchimp_are_implausible() {
        let received = at("2026-03-02 10:00:00");
        assert_eq!(implausible_time(at("2026-03-02 10:59:59"), received), None);
        assert_eq!(implausible_time(at("2019-01-01 00:00:00"), received), None);
        assert!(implausible_time(at("2026-03-02 11:00:01"), received).is_some());
        assert!(implausible_time(at("9999-12-31 23:59:59"), received).is_some());
        assert!(implausible_time(at("0000-01-01 00:00:00"), received).is_some());
    }
}
