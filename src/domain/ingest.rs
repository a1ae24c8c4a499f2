//! The webhook writer: one thread that takes every event waiting, applies them in arrival
//! order inside one write transaction, and answers each once that transaction committed.
//!
//! Committing many events at once is what makes a burst cheap (one disk sync for the whole
//! batch), and one writer per process keeps events for the same contact in order. The
//! handlers have already read each body ([`Delivery::read`]), so the writer only applies:
//! it looks up the rows the whole batch touches in a few queries ([`Known`]), applies the
//! events in arrival order, and inserts their `webhook_event` rows and change-feed entries
//! in a few multi-row statements. Should anything in that fail, the transaction is rolled
//! back and the batch written again with each event in its own savepoint, so an event that
//! cannot be applied is stored as `failed` without disturbing its neighbours.

use std::sync::Arc;

use axum::body::Bytes;
use chrono::{Datelike, NaiveDateTime};
use tokio::sync::{mpsc, oneshot, watch};

use crate::domain::apply::{self, Applied, Outcome};
use crate::error::{AppError, AppResult, Kind};
use crate::store::events::NewEvent;
use crate::store::known::Known;
use crate::store::{
    DbConnection, HeldConnection, IdPool, Store, StoreError, StoreResult, accounts, changes, events,
};
use crate::webhook::event::{self, Envelope, Event, RawEvent, Rejection};

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;

/// One webhook request, read by its handler, waiting to be stored. Reading (decoding,
/// checking the envelope, interpreting the event) happens on the handler's thread, so that
/// the single writer only applies and stores.
pub struct Delivery {
    pub account_id: i64,
    pub body: Bytes,
    pub received: NaiveDateTime,
    /// The envelope's type, audience and time, when the body has them.
    header: Option<Header>,
    plan: Plan,
}

struct Header {
    event_type: String,
    list_id: Option<String>,
    fired_at: NaiveDateTime,
}

/// What the writer has to do with a delivery.
enum Plan {
    /// Its outcome is known without the store: rejected, ignored, or failed before applying.
    Settled {
        applied: Applied,
        /// For a rejected body, the one-line reason to answer with.
        reason: Option<String>,
    },
    /// An event to apply.
    Apply {
        event: Box<Event>,
        fired_at: NaiveDateTime,
    },
}

impl Delivery {
    /// Reads a request of the account. `refusal` is why it is refused before it is read (a
    /// bad signature), if it is; its body is still kept.
    pub fn read(
        account_id: i64,
        webhook_active: bool,
        refusal: Option<String>,
        body: Bytes,
        received: NaiveDateTime,
    ) -> Delivery {
        let parsed = event::parse(&body);
        let header = match &parsed {
            Ok(Envelope::Event(raw)) => Some(Header {
                event_type: raw.event_type.clone(),
                list_id: raw.list_id.clone(),
                fired_at: raw.fired_at,
            }),
            _ => None,
        };
        let plan = plan(webhook_active, refusal, parsed, received);
        Delivery {
            account_id,
            body,
            received,
            header,
            plan,
        }
    }

    /// The row that stores the delivery with its outcome.
    fn row(&self, applied: &Applied) -> NewEvent {
        NewEvent {
            account_id: self.account_id,
            mailchimp_list_id: self.header.as_ref().and_then(|h| h.list_id.clone()),
            event_type: self.header.as_ref().map(|h| h.event_type.clone()),
            fired_at: self.header.as_ref().map(|h| h.fired_at),
            raw_body: self.body.to_vec(),
            outcome: applied.outcome.as_str(),
            error: applied.note.clone(),
            received_date: self.received,
        }
    }

    fn receipt(&self, applied: &Applied) -> Receipt {
        let reason = match &self.plan {
            Plan::Settled { reason, .. } => reason.clone(),
            Plan::Apply { .. } => None,
        };
        Receipt {
            outcome: applied.outcome,
            reason,
            event_type: self.header.as_ref().map(|h| h.event_type.clone()),
        }
    }
}

/// Decides what can be decided without the store.
fn plan(
    webhook_active: bool,
    refusal: Option<String>,
    parsed: Result<Envelope, Rejection>,
    received: NaiveDateTime,
) -> Plan {
    let settled = |outcome, note: &str, reason: Option<String>| Plan::Settled {
        applied: Applied {
            outcome,
            note: Some(note.to_owned()),
        },
        reason,
    };
    if let Some(refusal) = refusal {
        return settled(Outcome::Rejected, &refusal, Some(refusal.clone()));
    }
    let raw = match parsed {
        Err(rejection) => {
            let reason = rejection.to_string();
            return settled(Outcome::Rejected, &reason, Some(reason.clone()));
        }
        Ok(Envelope::UrlCheck) => {
            let note = "no event type: taken as Mailchimp's URL check";
            return settled(Outcome::Ignored, note, None);
        }
        Ok(Envelope::Event(raw)) => raw,
    };
    if !webhook_active {
        return settled(Outcome::Ignored, "the account's webhook is inactive", None);
    }
    match prepare(&raw, received) {
        Ok(event) => Plan::Apply {
            event: Box::new(event),
            fired_at: raw.fired_at,
        },
        Err(applied) => Plan::Settled {
            applied,
            reason: None,
        },
    }
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

/// What the writer's queue carries.
enum Message {
    Store(Job),
    /// Store what is queued, then stop, even though handles remain (a connection that never
    /// finished its request holds one).
    Stop,
}

/// The handle webhook handlers submit to; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    jobs: mpsc::Sender<Message>,
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
            .send(Message::Store(Job { delivery, reply }))
            .await
            .map_err(|_| stopped())?;
        Ok(receipt.await.map_err(|_| stopped())??)
    }

    /// Has the writer store every delivery submitted so far and stop; later submissions
    /// fail as unavailable. The writer stops on its own, too, once every handle is gone.
    pub async fn stop(&self) {
        let _ = self.jobs.send(Message::Stop).await;
    }
}

fn write_loop(store: &Store, feed: &watch::Sender<i64>, mut queue: mpsc::Receiver<Message>) {
    // The writer keeps its connection from one batch to the next.
    let mut held = None;
    while let Some(first) = queue.blocking_recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Store(job) => batch.push(job),
                // Nothing new gets in once the queue is closed; what it holds is stored.
                Message::Stop => queue.close(),
            }
            next = match batch.len() < MAX_BATCH {
                true => queue.try_recv().ok(),
                false => None,
            };
        }
        if !batch.is_empty() {
            let result = write_batch(store, &mut held, &batch);
            answer(batch, result, feed);
        }
    }
}

/// What a committed batch did.
struct Written {
    /// One a delivery, in order: its receipt, or why it alone could not be stored.
    receipts: Vec<StoreResult<Receipt>>,
    /// The change feed's last sequence, when the batch added to it.
    last_sequence: Option<i64>,
}

/// Writes the batch together; if any event of it cannot be written that way, writes it
/// again event by event, each isolated from the others. `held` is the writer's connection,
/// kept between batches: when the database is found unavailable on it (it may have been
/// cut while idle), the batch is tried once more on a connection the pool has checked.
fn write_batch(
    store: &Store,
    held: &mut Option<HeldConnection>,
    batch: &[Job],
) -> StoreResult<Written> {
    let together = |conn: &mut DbConnection| write_together(conn, store.ids(), batch);
    let was_held = held.is_some();
    let mut result = store.write_held(held, together);
    if was_held && matches!(result, Err(StoreError::Unavailable(_))) {
        result = store.write_held(held, together);
    }
    match result {
        Err(StoreError::Unavailable(error)) => Err(StoreError::Unavailable(error)),
        Err(error) => {
            tracing::debug!(error = %error, events = batch.len(), "webhook batch written event by event");
            store.write_held(held, |conn| write_isolated(conn, batch))
        }
        written => written,
    }
}

/// Applies the batch with the rows it touches looked up once, and stores its events and
/// change-feed entries in a few statements. Any error fails the whole batch.
fn write_together(
    conn: &mut DbConnection,
    ids: &Arc<IdPool>,
    batch: &[Job],
) -> StoreResult<Written> {
    let mut known = known_for(conn, batch)?;
    known.defer_writes(ids);
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        let delivery = &job.delivery;
        let applied = match &delivery.plan {
            Plan::Settled { applied, .. } => applied.clone(),
            Plan::Apply { event, fired_at } => apply::apply(
                conn,
                &mut known,
                delivery.account_id,
                *fired_at,
                event,
                delivery.received,
            )?,
        };
        outcomes.push(applied);
    }
    let rows: Vec<NewEvent> = batch
        .iter()
        .zip(&outcomes)
        .map(|(job, applied)| job.delivery.row(applied))
        .collect();
    events::insert_many(conn, &rows)?;
    let last_sequence = known.flush(conn)?;
    let receipts = batch
        .iter()
        .zip(&outcomes)
        .map(|(job, applied)| Ok(job.delivery.receipt(applied)))
        .collect();
    Ok(Written {
        receipts,
        last_sequence,
    })
}

/// The audiences and contacts the batch's events name, looked up in a few queries.
fn known_for(conn: &mut DbConnection, batch: &[Job]) -> StoreResult<Known> {
    let mut named = Vec::new();
    for job in batch {
        let Plan::Apply { event, .. } = &job.delivery.plan else {
            continue;
        };
        let Some((list_id, addresses)) = names(event) else {
            continue;
        };
        let account_id = job.delivery.account_id;
        named.extend(
            addresses
                .into_iter()
                .flatten()
                .map(|email| (account_id, list_id, email)),
        );
    }
    Known::load(conn, &named)
}

/// The audience and the normalized addresses an event is about.
fn names(event: &Event) -> Option<(&str, [Option<&str>; 2])> {
    match event {
        Event::Subscribe(member) | Event::Profile(member) | Event::Unsubscribe { member, .. } => {
            Some((&member.list_id, [Some(&member.email.normalized), None]))
        }
        Event::EmailChanged {
            list_id,
            old_email,
            new_email,
            ..
        } => Some((
            list_id,
            [Some(&old_email.normalized), Some(&new_email.normalized)],
        )),
        Event::Cleaned { list_id, email, .. } => Some((list_id, [Some(&email.normalized), None])),
        Event::Campaign { .. } | Event::Unknown { .. } => None,
    }
}

/// Writes each delivery in a savepoint of its own, as [`store_isolated`] describes.
fn write_isolated(conn: &mut DbConnection, batch: &[Job]) -> StoreResult<Written> {
    let mut known = Known::new();
    let receipts = batch
        .iter()
        .map(|job| store_isolated(conn, &mut known, &job.delivery))
        .collect::<StoreResult<Vec<_>>>()?;
    let changed = receipts
        .iter()
        .any(|r| r.as_ref().is_ok_and(|r| r.outcome == Outcome::Applied));
    let last_sequence = match changed {
        true => Some(changes::last_sequence(conn)?),
        false => None,
    };
    Ok(Written {
        receipts,
        last_sequence,
    })
}

fn answer(batch: Vec<Job>, result: StoreResult<Written>, feed: &watch::Sender<i64>) {
    match result {
        Ok(written) => {
            for (job, receipt) in batch.into_iter().zip(written.receipts) {
                let _ = job.reply.send(receipt);
            }
            // Tells change watchers how far the feed now goes.
            if let Some(last) = written.last_sequence {
                feed.send_if_modified(|held| std::mem::replace(held, last) != last);
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

/// Stores one delivery in a savepoint of its own: whatever goes wrong with it, short of
/// the database going away, leaves its neighbours in the batch untouched, and the raw body
/// is still kept, as `failed`. Only when not even that can be stored (its account was
/// deleted since the request was read) is the delivery answered with an error of its own,
/// `NotFound` for a deleted account; the outer error is for the whole batch.
fn store_isolated(
    conn: &mut DbConnection,
    known: &mut Known,
    delivery: &Delivery,
) -> StoreResult<StoreResult<Receipt>> {
    let stored = diesel::Connection::transaction(conn, |conn| {
        let applied = match &delivery.plan {
            Plan::Settled { applied, .. } => applied.clone(),
            Plan::Apply { event, fired_at } => apply_isolated(
                conn,
                known,
                delivery.account_id,
                *fired_at,
                event,
                delivery.received,
            )?,
        };
        events::insert(conn, &delivery.row(&applied))?;
        Ok(delivery.receipt(&applied))
    });
    let error = match stored {
        Ok(receipt) => return Ok(Ok(receipt)),
        Err(error @ StoreError::Unavailable(_)) => return Err(error),
        Err(error) => error,
    };
    known.forget_all();
    tracing::error!(account_id = delivery.account_id, error = %error, "webhook event stored raw only");
    let note = "could not be stored as received; only the raw body was kept";
    let new = NewEvent {
        account_id: delivery.account_id,
        mailchimp_list_id: None,
        event_type: None,
        fired_at: None,
        raw_body: delivery.body.to_vec(),
        outcome: Outcome::Failed.as_str(),
        error: Some(note.to_owned()),
        received_date: delivery.received,
    };
    match diesel::Connection::transaction(conn, |conn| events::insert(conn, &new)) {
        Ok(()) => Ok(Ok(Receipt {
            outcome: Outcome::Failed,
            reason: None,
            event_type: None,
        })),
        Err(error @ StoreError::Unavailable(_)) => Err(error),
        Err(error) => {
            let gone = matches!(
                accounts::get(conn, delivery.account_id),
                Err(StoreError::NotFound)
            );
            tracing::warn!(account_id = delivery.account_id, gone, error = %error, "webhook event not stored");
            Ok(Err(if gone { StoreError::NotFound } else { error }))
        }
    }
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

/// The event to apply, or, for one that cannot be applied, its `failed` outcome and why.
fn prepare(raw: &RawEvent, now: NaiveDateTime) -> Result<Event, Applied> {
    let failed = |note: String| Applied {
        outcome: Outcome::Failed,
        note: Some(note),
    };
    if let Some(problem) = implausible_time(raw.fired_at, now) {
        return Err(failed(problem.to_owned()));
    }
    event::interpret(raw).map_err(|error| failed(error.to_string()))
}

/// Interprets and applies a parsed event in a savepoint. An event that cannot be applied is
/// `failed` with the reason; only an unreachable database aborts the batch.
pub fn apply_raw(
    conn: &mut DbConnection,
    account_id: i64,
    raw: &RawEvent,
    now: NaiveDateTime,
) -> StoreResult<Applied> {
    match prepare(raw, now) {
        Ok(event) => apply_isolated(
            conn,
            &mut Known::new(),
            account_id,
            raw.fired_at,
            &event,
            now,
        ),
        Err(applied) => Ok(applied),
    }
}

/// Applies the event in a savepoint; an error other than an unreachable database rolls it
/// back and makes it `failed`.
fn apply_isolated(
    conn: &mut DbConnection,
    known: &mut Known,
    account_id: i64,
    fired_at: NaiveDateTime,
    event: &Event,
    now: NaiveDateTime,
) -> StoreResult<Applied> {
    let result = diesel::Connection::transaction(conn, |conn| {
        apply::apply(conn, known, account_id, fired_at, event, now)
    });
    match result {
        Ok(applied) => Ok(applied),
        Err(error @ StoreError::Unavailable(_)) => Err(error),
        Err(error) => {
            known.forget_all();
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
    use crate::store::accounts::{self, NewAccount};
    use crate::store::{blacklist, contacts, lists, subscriptions};

    fn fresh_store() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("batch.db").display());
        let store = Store::open(&url, 2).expect("the store opens");
        store.migrate().expect("migrated");
        let account = new_account(&store, "Batch");
        (dir, store, account)
    }

    fn new_account(store: &Store, name: &str) -> i64 {
        let now = at("2026-03-02 10:00:00");
        let new = NewAccount {
            name,
            api_key: "0123456789abcdef0123456789abcdef-us6",
            data_center: "us6",
            api_base_url: None,
            create_date: now,
            write_date: now,
        };
        let mut conn = store.connection().expect("a connection");
        accounts::insert(&mut conn, &new).expect("an account").id
    }

    fn body(pairs: &[(&str, &str)]) -> Bytes {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(pairs);
        Bytes::from(form.finish())
    }

    fn member(kind: &str, list: &str, email: &str, fired_at: &str, id: &str) -> Bytes {
        body(&[
            ("type", kind),
            ("fired_at", fired_at),
            ("data[id]", id),
            ("data[list_id]", list),
            ("data[email]", email),
            ("data[merges][FNAME]", "Robin"),
            ("data[merges][LNAME]", fired_at),
        ])
    }

    /// One batch touching the same people many times over: new and known contacts, a
    /// delete and a return, an address change, a move found by member id, a clean, and
    /// deliveries settled without the store.
    fn burst() -> Vec<Bytes> {
        let (l1, l2) = ("aa11bb22cc", "dd33ee44ff");
        let subscribe_d = |at| member("subscribe", l2, "d@example.org", at, "idd");
        vec![
            member(
                "subscribe",
                l1,
                "a@example.org",
                "2026-03-02 09:00:01",
                "ida",
            ),
            member(
                "subscribe",
                l1,
                "b@example.org",
                "2026-03-02 09:00:02",
                "idb",
            ),
            member("profile", l1, "A@example.org", "2026-03-02 09:00:03", "ida"),
            body(&[
                ("type", "upemail"),
                ("fired_at", "2026-03-02 09:00:04"),
                ("data[list_id]", l1),
                ("data[old_email]", "b@example.org"),
                ("data[new_email]", "c@example.org"),
            ]),
            subscribe_d("2026-03-02 09:00:05"),
            body(&[
                ("type", "unsubscribe"),
                ("fired_at", "2026-03-02 09:00:06"),
                ("data[action]", "delete"),
                ("data[list_id]", l2),
                ("data[email]", "d@example.org"),
            ]),
            subscribe_d("2026-03-02 09:00:05"),
            subscribe_d("2026-03-02 09:00:07"),
            body(&[
                ("type", "cleaned"),
                ("fired_at", "2026-03-02 09:00:08"),
                ("data[list_id]", l1),
                ("data[reason]", "hard"),
                ("data[email]", "a@example.org"),
            ]),
            member(
                "subscribe",
                l2,
                "a@example.org",
                "2026-03-02 09:00:09",
                "ida2",
            ),
            member("profile", l1, "f@example.org", "2026-03-02 09:00:10", "idb"),
            member(
                "unsubscribe",
                l1,
                "f@example.org",
                "2026-03-02 09:00:11",
                "idb",
            ),
            member(
                "subscribe",
                l1,
                "e@example.org",
                "9999-01-01 00:00:00",
                "ide",
            ),
            body(&[("data[list_id]", l1)]),
            b"type=subscribe&fired_at=nonsense".as_slice().into(),
        ]
    }

    fn jobs(account_id: i64, bodies: Vec<Bytes>) -> Vec<Job> {
        let received = at("2026-03-02 10:00:00");
        bodies
            .into_iter()
            .map(|body| Job {
                delivery: Delivery::read(account_id, true, None, body, received),
                reply: oneshot::channel().0,
            })
            .collect()
    }

    /// Everything the batch can have written, in a comparable form.
    fn dump(store: &Store, account_id: i64) -> Vec<String> {
        let mut conn = store.connection().expect("a connection");
        let conn = &mut *conn;
        let filter = contacts::ContactFilter::default();
        let contacts = contacts::page(conn, &filter, 0, 1000).expect("contacts");
        let ids: Vec<i64> = contacts.iter().map(|c| c.id).collect();
        let mut rows: Vec<String> = contacts.iter().map(|c| format!("{c:?}")).collect();
        let subs = subscriptions::of_contacts(conn, &ids).expect("subscriptions");
        rows.extend(subs.iter().map(|s| format!("{s:?}")));
        let lists = lists::for_account(conn, account_id).expect("lists");
        let list_ids: Vec<i64> = lists.iter().map(|l| l.id).collect();
        let emails =
            ["a", "b", "c", "d", "e", "f", "to", "from"].map(|p| format!("{p}@example.org"));
        let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
        let places: Vec<(i64, &str)> = list_ids
            .iter()
            .flat_map(|&list| emails.iter().map(move |&email| (list, email)))
            .collect();
        let tombstones = subscriptions::tombstones_at(conn, &places);
        rows.push(format!("{:?}", tombstones.expect("tombstones")));
        let changes = changes::after(conn, 0, 1000).expect("changes");
        rows.extend(changes.iter().map(|c| format!("{c:?}")));
        let filter = events::EventFilter::default();
        let stored = events::page(conn, &filter, 0, 1000).expect("events");
        rows.extend(stored.iter().map(|e| format!("{e:?}")));
        let listed = blacklist::page(conn, 0, 1000, true).expect("blacklist");
        rows.extend(listed.iter().map(|b| format!("{b:?}")));
        rows
    }

    /// Writes the bodies as one batch, together and (in another store) event by event, and
    /// checks that both stored the same; returns the outcomes. Written together, the batch
    /// may only fail on a unique key (rows trading addresses), and then falls back.
    fn together_equals_isolated(bodies: &[Bytes]) -> Vec<Outcome> {
        let (_dir, together, account_id) = fresh_store();
        let batch = jobs(account_id, bodies.to_vec());
        let written =
            match together.write_blocking(|conn| write_together(conn, together.ids(), &batch)) {
                Ok(written) => written,
                Err(StoreError::Conflict(_)) => {
                    write_batch(&together, &mut None, &batch).expect("written")
                }
                Err(error) => panic!("the batch is written together, or conflicts: {error:?}"),
            };
        let (_dir2, isolated, account_id2) = fresh_store();
        let batch2 = jobs(account_id2, bodies.to_vec());
        let expected = isolated
            .write_blocking(|conn| write_isolated(conn, &batch2))
            .expect("the batch is written event by event");

        let (written, expected) = (receipts(written), receipts(expected));
        assert_eq!(written.receipts, expected.receipts);
        assert_eq!(written.last_sequence, expected.last_sequence);
        let (got, want) = (dump(&together, account_id), dump(&isolated, account_id2));
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(got, want);
        }
        assert_eq!(got.len(), want.len());
        written.receipts.iter().map(|r| r.outcome).collect()
    }

    /// What each delivery of a written batch was answered: in these tests, always a receipt.
    struct Receipts {
        receipts: Vec<Receipt>,
        last_sequence: Option<i64>,
    }

    fn receipts(written: Written) -> Receipts {
        Receipts {
            receipts: written
                .receipts
                .into_iter()
                .map(|r| r.expect("every delivery of the batch has its receipt"))
                .collect(),
            last_sequence: written.last_sequence,
        }
    }

    /// An account deleted between a request's arrival and its batch: its deliveries cannot
    /// be stored at all and are answered `NotFound`, each on its own; the other account's
    /// deliveries of the same batch are stored and applied.
    #[test]
    fn deliveries_of_an_account_deleted_meanwhile_fail_alone() {
        let (_dir, store, kept) = fresh_store();
        let gone = new_account(&store, "Gone");
        let mut conn = store.connection().expect("a connection");
        let list = "aa11bb22cc";
        let subscribe = |n: usize| {
            let email = format!("p{n}@example.org");
            member(
                "subscribe",
                list,
                &email,
                "2026-03-02 09:00:01",
                &format!("id{n}"),
            )
        };
        let mut batch = Vec::new();
        for n in 0..4 {
            let account = if n % 2 == 0 { kept } else { gone };
            batch.extend(jobs(account, vec![subscribe(n)]));
        }
        accounts::delete(&mut conn, gone).expect("deleted");
        drop(conn);

        let written = write_batch(&store, &mut None, &batch).expect("the batch is written");
        for (n, receipt) in written.receipts.iter().enumerate() {
            match (n % 2 == 0, receipt) {
                (true, Ok(receipt)) => assert_eq!(receipt.outcome, Outcome::Applied),
                (false, Err(StoreError::NotFound)) => {}
                (kept, other) => panic!("delivery {n} (kept: {kept}): {other:?}"),
            }
        }
        let mut conn = store.connection().expect("a connection");
        let stored = events::page(&mut conn, &events::EventFilter::default(), 0, 100);
        let stored = stored.expect("events");
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert!(stored.iter().all(|event| event.account_id == kept));
        let filter = contacts::ContactFilter::default();
        assert_eq!(
            contacts::page(&mut conn, &filter, 0, 100)
                .expect("contacts")
                .len(),
            2
        );
    }

    #[test]
    fn a_batch_written_together_stores_what_event_by_event_stores() {
        let outcomes = together_equals_isolated(&burst());
        assert!(outcomes.contains(&Outcome::Stale), "{outcomes:?}");
        assert!(outcomes.contains(&Outcome::Failed), "{outcomes:?}");
    }

    /// An email change to an address that another audience already holds moves the
    /// subscription to that contact and stamps it with the change's time, so that a profile
    /// fired before the change and arriving in the same batch is stale.
    #[test]
    fn a_merged_subscription_keeps_the_email_change_time_within_a_batch() {
        fn bodies() -> Vec<Bytes> {
            let (l1, l2) = ("aa11bb22cc", "dd33ee44ff");
            vec![
                member(
                    "subscribe",
                    l1,
                    "to@example.org",
                    "2026-03-02 09:00:01",
                    "idt",
                ),
                member(
                    "subscribe",
                    l2,
                    "from@example.org",
                    "2026-03-02 09:00:02",
                    "idf",
                ),
                member(
                    "unsubscribe",
                    l2,
                    "from@example.org",
                    "2026-03-02 09:00:03",
                    "idf",
                ),
                body(&[
                    ("type", "upemail"),
                    ("fired_at", "2026-03-02 09:00:05"),
                    ("data[list_id]", l2),
                    ("data[old_email]", "from@example.org"),
                    ("data[new_email]", "to@example.org"),
                ]),
                member(
                    "profile",
                    l2,
                    "from@example.org",
                    "2026-03-02 09:00:04",
                    "idf",
                ),
            ]
        }
        let outcomes = together_equals_isolated(&bodies());
        assert_eq!(outcomes[3], Outcome::Applied);
        assert_eq!(outcomes[4], Outcome::Stale);
    }

    /// One event of a small world: two audiences, four addresses, four member ids, and
    /// times within a minute, so that events meet the same rows, overtake each other and
    /// repeat.
    fn small_world_event() -> impl proptest::strategy::Strategy<Value = Bytes> {
        use proptest::prelude::*;
        let lists = ["aa11bb22cc", "dd33ee44ff"];
        let address = |n: usize| format!("{}@example.org", ["a", "b", "c", "d"][n]);
        (
            0..6usize,
            0..2usize,
            0..4usize,
            0..4usize,
            0..60usize,
            0..4usize,
        )
            .prop_map(move |(kind, list, from, to, second, id)| {
                let (list, at) = (lists[list], format!("2026-03-02 09:00:{second:02}"));
                let id = format!("id{id}");
                let (from, to) = (address(from), address(to));
                match kind {
                    0 => member("subscribe", list, &from, &at, &id),
                    1 => member("unsubscribe", list, &from, &at, &id),
                    2 => member("profile", list, &from, &at, &id),
                    3 => body(&[
                        ("type", "unsubscribe"),
                        ("fired_at", &at),
                        ("data[action]", "delete"),
                        ("data[list_id]", list),
                        ("data[email]", &from),
                    ]),
                    4 => body(&[
                        ("type", "upemail"),
                        ("fired_at", &at),
                        ("data[list_id]", list),
                        ("data[new_id]", &id),
                        ("data[old_email]", &from),
                        ("data[new_email]", &to),
                    ]),
                    _ => body(&[
                        ("type", "cleaned"),
                        ("fired_at", &at),
                        ("data[list_id]", list),
                        ("data[reason]", ["hard", "abuse"][second % 2]),
                        ("data[email]", &from),
                    ]),
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever the events of a batch, writing them together stores exactly what writing
        /// them one by one stores.
        #[test]
        fn any_batch_written_together_stores_what_event_by_event_stores(
            bodies in proptest::collection::vec(small_world_event(), 1..40)
        ) {
            together_equals_isolated(&bodies);
        }
    }

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
