//! A fake of the Mailchimp Marketing API v3, for tests and benchmarks: the audience, member
//! and webhook endpoints a sync client uses, behaving like Mailchimp where a client depends
//! on it, with fault injection and a clock a test controls.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mailchimp_sync::fake_mailchimp::{FakeMailchimp, NewMember, Source};
//!
//! let fake = FakeMailchimp::new("test-key-us1");
//! fake.add_list("4f1c9a7e20", "Newsletter");
//! fake.add_synthetic_members("4f1c9a7e20", 100_000);
//! let hana = NewMember::new("Hana@Example.org").name("Hana", "Kato");
//! fake.add_member("4f1c9a7e20", hana, Source::Admin);
//! fake.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
//! let root = format!("{}/3.0", fake.base_url());
//! # Ok(()) }
//! ```
//!
//! What it does as Mailchimp does:
//! - HTTP Basic with any user name and the key as password, or `Bearer <key>`; errors are
//!   `application/problem+json` with a fresh `instance`.
//! - `GET /3.0/lists` and `GET /3.0/lists/{id}/members`: `count` defaults to 10 and is
//!   capped at 1000 without complaint; `fields`/`exclude_fields` narrow the answer.
//! - Archived members are left out of a members listing unless `status=archived`; members
//!   deleted for good are gone from every listing.
//! - `since_last_changed` is exclusive, `before_last_changed` inclusive. Mailchimp reads only
//!   the wall-clock part of these times (the offset is ignored) and ignores a value with
//!   fractional seconds altogether; the fake does the same, so only whole-second UTC times
//!   mean what they say. An unencoded `+` in a query string is read as a space, which makes
//!   the time unreadable: 400.
//! - Webhook creation GETs the URL during the call and fails unless it answers 2xx; a second
//!   webhook with the same URL (query string aside) is refused; the signing secret is shown
//!   once.
//! - At most 10 requests in flight; more answer 429 (see [`Faults`]).
//!
//! Where Mailchimp's behaviour is unknown the fake picks one and says so: `sort_dir`
//! defaults to `ASC`; only `sort_field=last_changed` is supported; missing webhook toggles
//! are off; deleting a member (for good or not) announces `unsubscribe` with
//! `action=delete`, while archiving announces nothing, because an archived member is still
//! on the audience (a webhook saying it left would contradict the next fetch); an email
//! change announces `upemail` and then `profile` with the new address, both fired in the same
//! second; a cleaned member is announced with `reason=hard` unless the clean says otherwise.
//!
//! Large audiences cost no memory: generated members (see [`synthetic_email`]) are computed
//! when served and only changed ones are stored.

mod audience;
mod events;
mod faults;
mod fields;
mod member;
mod problem;
mod server;
#[cfg(test)]
mod tests;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use audience::Audience;
use events::{Change, Outbox, event_for};

pub use events::{DeliveryOutcome, Source, WebhookDelivery, WebhookEvent, signature_header};
pub use faults::{Faults, MAILCHIMP_CONCURRENCY_LIMIT};
pub use member::{
    Member, NewMember, SYNTHETIC_STATUSES, Tag, subscriber_hash, synthetic_email,
    synthetic_last_changed, synthetic_status,
};
pub use webhooks::{Webhook, WebhookEvents, WebhookSources};

/// A handle on one fake Mailchimp account. Clones share it.
///
/// The methods that change members stamp `last_changed` with the fake's clock and record
/// the webhook event Mailchimp would send. They panic on an unknown list or member, or on
/// what Mailchimp would refuse (adding an address twice): such a call is a mistake in the
/// test that makes it.
#[derive(Clone)]
pub struct FakeMailchimp {
    shared: Arc<Shared>,
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query string, as received.
    pub uri: String,
    pub status: u16,
}

pub(crate) struct Shared {
    api_key: String,
    lists: Mutex<Vec<List>>,
    clock: Mutex<Option<DateTime<Utc>>>,
    faults: Faults,
    traffic: faults::Traffic,
    requests: Mutex<Vec<LoggedRequest>>,
    events: Mutex<Vec<WebhookEvent>>,
    deliver_webhooks: AtomicBool,
    outbox: Outbox,
    http: reqwest::Client,
    addr: OnceLock<SocketAddr>,
}

/// One audience.
pub(crate) struct List {
    id: String,
    web_id: u64,
    name: String,
    date_created: DateTime<Utc>,
    audience: Audience,
    webhooks: Vec<Webhook>,
}

impl Shared {
    /// Runs `f` on the list, if there is one, under the lists lock.
    fn with_list<R>(&self, list_id: &str, f: impl FnOnce(&mut List) -> R) -> Option<R> {
        lock(&self.lists)
            .iter_mut()
            .find(|list| list.id == list_id)
            .map(f)
    }
}

impl FakeMailchimp {
    /// An account with no audiences that accepts `api_key`.
    pub fn new(api_key: &str) -> FakeMailchimp {
        let http = reqwest::Client::builder()
            .timeout(webhooks::URL_CHECK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        let shared = Shared {
            api_key: api_key.to_owned(),
            lists: Mutex::new(Vec::new()),
            clock: Mutex::new(None),
            faults: Faults::default(),
            traffic: faults::Traffic::default(),
            requests: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            deliver_webhooks: AtomicBool::new(false),
            outbox: Outbox::new(),
            http,
            addr: OnceLock::new(),
        };
        FakeMailchimp {
            shared: Arc::new(shared),
        }
    }

    /// Serves the API on `listener` in a background task and starts the webhook sender.
    /// Call it once.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        if self.shared.addr.set(addr).is_err() {
            return Err(std::io::Error::other("this fake is already serving"));
        }
        events::start_sender(&self.shared);
        let app = server::router(Arc::clone(&self.shared));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake mailchimp stopped");
            }
        });
        Ok(addr)
    }

    /// `http://127.0.0.1:PORT`, without `/3.0`. Panics before [`serve`](Self::serve).
    pub fn base_url(&self) -> String {
        let addr = self
            .shared
            .addr
            .get()
            .expect("base_url needs serve() first");
        format!("http://{addr}")
    }

    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// Adds an empty audience, created now by the fake's clock.
    pub fn add_list(&self, id: &str, name: &str) {
        let list = List {
            id: id.to_owned(),
            web_id: rand::random_range(100_000..1_000_000),
            name: name.to_owned(),
            date_created: self.now(),
            audience: Audience::new(id),
            webhooks: Vec::new(),
        };
        let mut lists = lock(&self.shared.lists);
        assert!(
            lists.iter().all(|other| other.id != id),
            "list {id} exists already"
        );
        lists.push(list);
    }

    pub fn remove_list(&self, id: &str) {
        lock(&self.shared.lists).retain(|list| list.id != id);
    }

    /// Adds `n` generated members after the generated ones already there: `member{i}@example.com`,
    /// statuses from [`SYNTHETIC_STATUSES`], `last_changed` from [`synthetic_last_changed`].
    /// They come before added members in the default order.
    pub fn add_synthetic_members(&self, list_id: &str, n: u64) {
        self.list(list_id, |list| list.audience.add_generated(n));
    }

    /// Adds a member; a `subscribed` one is announced with a `subscribe` event.
    pub fn add_member(&self, list_id: &str, new: NewMember, source: Source) -> Member {
        let now = self.now();
        let member = new.into_member(now);
        let event = self.list(list_id, |list| {
            list.audience
                .insert(member.clone())
                .unwrap_or_else(|error| panic!("{error}"));
            (member.status == "subscribed").then(|| {
                event_for(
                    &Change::Subscribed,
                    &member,
                    list_id,
                    source,
                    now,
                    &list.webhooks,
                )
            })
        });
        self.record(event);
        member
    }

    /// The member with this address, archived ones included.
    pub fn member(&self, list_id: &str, email: &str) -> Option<Member> {
        let found = self.shared.with_list(list_id, |list| {
            list.audience
                .find(email)
                .and_then(|pos| list.audience.get(pos))
        });
        found.flatten()
    }

    /// Sets any status, a future one included (`"blocklisted"`). Becoming `subscribed`,
    /// `unsubscribed` or `cleaned` is announced; becoming `archived` is not.
    pub fn set_status(&self, list_id: &str, email: &str, status: &str, source: Source) -> Member {
        self.change(list_id, email, source, |member, now| {
            let before = std::mem::replace(&mut member.status, status.to_owned());
            member.unsubscribe_reason = member::unsubscribe_reason_for(status);
            if before == status {
                return None;
            }
            match status {
                "subscribed" => {
                    member.timestamp_opt = Some(now);
                    Some(Change::Subscribed)
                }
                "unsubscribed" => Some(Change::Unsubscribed),
                "cleaned" => Some(Change::Cleaned { reason: "hard" }),
                _ => None,
            }
        })
    }

    /// Merges `fields` (a JSON object of merge tag to value) into the member's merge fields;
    /// `FNAME` and `LNAME` are the name. Announced as `profile`.
    pub fn update_merge_fields(
        &self,
        list_id: &str,
        email: &str,
        fields: Value,
        source: Source,
    ) -> Member {
        let Value::Object(fields) = fields else {
            panic!("merge fields are a JSON object");
        };
        self.change(list_id, email, source, |member, _| {
            member.merge_fields.extend(fields);
            Some(Change::Profile)
        })
    }

    /// Changes the address: the member's `id` follows and it gets a new `unique_email_id`.
    /// Announced as `upemail`, then as `profile` with the new address.
    pub fn change_email(
        &self,
        list_id: &str,
        email: &str,
        new_email: &str,
        source: Source,
    ) -> Member {
        let member = self.change(list_id, email, source, |member, _| {
            let old_email = std::mem::replace(&mut member.email_address, new_email.to_owned());
            member.unique_email_id = random_hex(10);
            Some(Change::EmailChanged { old_email })
        });
        let now = self.now();
        let profile = self.list(list_id, |list| {
            event_for(
                &Change::Profile,
                &member,
                list_id,
                source,
                now,
                &list.webhooks,
            )
        });
        self.record(Some(profile));
        member
    }

    /// Cleans the member for a hard bounce (`reason` `"hard"`) or a spam complaint
    /// (`"abuse"`). Announced as `cleaned` with that reason.
    pub fn clean(
        &self,
        list_id: &str,
        email: &str,
        reason: &'static str,
        source: Source,
    ) -> Member {
        self.change(list_id, email, source, |member, _| {
            member.status = "cleaned".to_owned();
            member.unsubscribe_reason = None;
            Some(Change::Cleaned { reason })
        })
    }

    /// Archives the member: it leaves the plain listing and shows with `status=archived`.
    /// Not announced.
    pub fn archive(&self, list_id: &str, email: &str, source: Source) -> Member {
        self.set_status(list_id, email, "archived", source)
    }

    /// Deletes the member: it vanishes from every listing, but the address may be added
    /// again. Announced as `unsubscribe` with `action=delete`.
    pub fn delete_member(&self, list_id: &str, email: &str, source: Source) {
        self.remove(list_id, email, source, false);
    }

    /// Deletes the member for good: it vanishes, and its address cannot be added again.
    /// Announced as `unsubscribe` with `action=delete`.
    pub fn delete_permanently(&self, list_id: &str, email: &str, source: Source) {
        self.remove(list_id, email, source, true);
    }

    fn remove(&self, list_id: &str, email: &str, source: Source, for_good: bool) {
        let now = self.now();
        let event = self.list(list_id, |list| {
            let pos = list
                .audience
                .find(email)
                .unwrap_or_else(|| panic!("no member {email}"));
            let member = list
                .audience
                .get(pos)
                .expect("a member that was found exists");
            if for_good {
                list.audience.erase(pos);
            } else {
                list.audience.remove(pos);
            }
            Some(event_for(
                &Change::Deleted,
                &member,
                list_id,
                source,
                now,
                &list.webhooks,
            ))
        });
        self.record(event);
    }

    /// Every member of the list, archived ones included; generated members are computed,
    /// so this costs memory in proportion to the audience.
    pub fn members(&self, list_id: &str) -> Vec<Member> {
        self.list(list_id, |list| list.audience.all())
    }

    /// The list's webhooks, signing secrets included.
    pub fn webhooks(&self, list_id: &str) -> Vec<Webhook> {
        self.list(list_id, |list| list.webhooks.clone())
    }

    /// Turns a webhook into one from before signing existed: its deliveries go unsigned.
    pub fn make_webhook_unsigned(&self, list_id: &str, webhook_id: &str) {
        self.list(list_id, |list| {
            let hook = list.webhooks.iter_mut().find(|hook| hook.id == webhook_id);
            hook.unwrap_or_else(|| panic!("no webhook {webhook_id}"))
                .signing_secret = None;
        });
    }

    /// While on, each announced change is POSTed to the webhooks that want it, in order,
    /// one at a time, by a background task (started by [`serve`](Self::serve)).
    pub fn set_webhook_delivery(&self, on: bool) {
        self.shared.deliver_webhooks.store(on, Ordering::SeqCst);
    }

    /// Every change announced so far, oldest first, with its deliveries' outcomes.
    pub fn webhook_events(&self) -> Vec<WebhookEvent> {
        lock(&self.shared.events).clone()
    }

    /// How many changes were announced so far.
    pub fn webhook_event_count(&self) -> usize {
        lock(&self.shared.events).len()
    }

    /// POSTs delivery number `delivery` of `event` (one of [`webhook_events`]) now, signed
    /// with the current time, as a retry from Mailchimp would be: a test delivers late,
    /// twice, or not at all. The outcome is returned, not recorded on the event.
    ///
    /// [`webhook_events`]: Self::webhook_events
    pub async fn deliver(&self, event: &WebhookEvent, delivery: usize) -> DeliveryOutcome {
        events::deliver_again(&self.shared.http, event, delivery).await
    }

    /// Resolves once every queued webhook delivery has been answered or has failed. The
    /// sender runs only once the fake serves, so waiting before then waits for ever.
    pub async fn wait_for_webhook_deliveries(&self) {
        self.shared.outbox.drained().await;
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The most requests that were in flight at once, over-limit ones included.
    pub fn max_concurrency_seen(&self) -> usize {
        self.shared.traffic.max_seen()
    }

    pub fn reset_max_concurrency(&self) {
        self.shared.traffic.reset_max();
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The fake's time: the real UTC time in whole seconds, until a test sets it.
    pub fn now(&self) -> DateTime<Utc> {
        lock(&self.shared.clock).unwrap_or_else(|| Utc::now().trunc_subsecs(0))
    }

    /// Stops the clock at `at` (in whole seconds, as Mailchimp keeps times).
    pub fn set_clock(&self, at: DateTime<Utc>) {
        *lock(&self.shared.clock) = Some(at.trunc_subsecs(0));
    }

    /// Moves the clock on, stopping it first if it was following the real time.
    pub fn advance_clock(&self, by: chrono::Duration) {
        let at = self.now() + by;
        self.set_clock(at);
    }

    /// Runs `f` on a list that must exist.
    fn list<R>(&self, list_id: &str, f: impl FnOnce(&mut List) -> R) -> R {
        let result = self.shared.with_list(list_id, f);
        result.unwrap_or_else(|| panic!("no list {list_id}"))
    }

    /// Changes one member with `edit`, stamps it, stores it and records what `edit` says
    /// Mailchimp announces.
    fn change(
        &self,
        list_id: &str,
        email: &str,
        source: Source,
        edit: impl FnOnce(&mut Member, DateTime<Utc>) -> Option<Change>,
    ) -> Member {
        let now = self.now();
        let (member, event) = self.list(list_id, |list| {
            let pos = list
                .audience
                .find(email)
                .unwrap_or_else(|| panic!("no member {email}"));
            let mut member = list
                .audience
                .get(pos)
                .expect("a member that was found exists");
            let change = edit(&mut member, now);
            member.last_changed = now;
            list.audience
                .replace(pos, member.clone())
                .unwrap_or_else(|error| panic!("{error}"));
            let event = change
                .map(|change| event_for(&change, &member, list_id, source, now, &list.webhooks));
            (member, event)
        });
        self.record(event);
        member
    }

    /// Keeps the event, and queues its deliveries when delivery is on.
    fn record(&self, event: Option<WebhookEvent>) {
        let Some(mut event) = event else {
            return;
        };
        let mut events = lock(&self.shared.events);
        if self.shared.deliver_webhooks.load(Ordering::SeqCst) {
            self.shared.outbox.queue(events.len(), &mut event);
        }
        events.push(event);
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: a failed test must not take every
/// later request down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `n` random lower-case hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random_range(0..16), 16).unwrap_or('0'))
        .collect()
}
