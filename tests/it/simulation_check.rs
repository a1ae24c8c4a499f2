//! The simulation's checks: what the store should hold given the fake Mailchimp's state
//! (the mapping, written once, in [`truth`]), what it does hold, what the change feed says it
//! holds, and a report that names the seed and the first contact that differs, with every
//! operation and delivery that touched it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mailchimp_sync::fake_mailchimp::{FakeMailchimp, Member};
use mailchimp_sync::grpc::pb;

use crate::helpers::TestApp;
use crate::simulation_network::{Fate, Network};
use crate::simulation_scenario::{LISTS, Op, normalized};

/// One contact as Odoo sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactState {
    /// The address as received.
    pub email: String,
    pub name: String,
    pub first_name: String,
    pub last_name: String,
    pub blacklisted: bool,
    /// Mailchimp list id to `(status, opt_out)`.
    pub subscriptions: BTreeMap<String, (String, bool)>,
}

/// Contacts by normalized address, and the active blacklist.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct View {
    pub contacts: BTreeMap<String, ContactState>,
    pub blacklist: BTreeSet<String>,
}

/// What the store must hold when it mirrors the fake, as the rules of `domain::apply` and the
/// fetch's status mapping define it:
/// - one contact per normalized address, holding one subscription per audience the address
///   is a member of, archived members included; members deleted (for good or not) leave
///   nothing;
/// - a subscription keeps Mailchimp's status as it is, and is opted out unless `subscribed`
///   (`archived` and `cleaned` included);
/// - the name is `FNAME LNAME` (the scenario keeps a person's name equal on every audience);
/// - an address is blacklisted when it is cleaned on some audience (the scenario never
///   changes a cleaned member again, and the store never unblacklists by itself).
pub fn truth(fake: &FakeMailchimp) -> View {
    let mut view = View::default();
    for list in LISTS {
        for member in fake.members(list) {
            let key = normalized(&member.email_address);
            let cleaned = member.status == "cleaned";
            let contact = view
                .contacts
                .entry(key.clone())
                .or_insert_with(|| contact_of(&member));
            contact.subscriptions.insert(
                list.to_owned(),
                (member.status.clone(), member.status != "subscribed"),
            );
            if cleaned {
                view.blacklist.insert(key);
            }
        }
    }
    for (key, contact) in &mut view.contacts {
        contact.blacklisted = view.blacklist.contains(key);
    }
    view
}

fn contact_of(member: &Member) -> ContactState {
    let text = |tag: &str| {
        let value = member.merge_fields.get(tag);
        value
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (first_name, last_name) = (text("FNAME"), text("LNAME"));
    let name = format!("{first_name} {last_name}");
    ContactState {
        email: member.email_address.clone(),
        name: name.split_whitespace().collect::<Vec<_>>().join(" "),
        first_name,
        last_name,
        blacklisted: false,
        subscriptions: BTreeMap::new(),
    }
}

/// What the store holds, read over gRPC.
pub async fn store(app: &TestApp) -> (View, BTreeMap<i64, FeedRow>) {
    let mut view = View::default();
    let mut by_id = BTreeMap::new();
    for contact in app.all_contacts().await {
        let subscriptions: BTreeMap<String, (String, bool)> = contact
            .subscriptions
            .iter()
            .map(|s| (s.mailchimp_list_id.clone(), (s.status.clone(), s.opt_out)))
            .collect();
        let row = FeedRow {
            email_normalized: contact.email_normalized.clone(),
            subscriptions: subscriptions.clone(),
        };
        by_id.insert(contact.id, row);
        let state = ContactState {
            email: contact.email,
            name: contact.name,
            first_name: contact.first_name,
            last_name: contact.last_name,
            blacklisted: contact.is_blacklisted,
            subscriptions,
        };
        view.contacts.insert(contact.email_normalized, state);
    }
    view.blacklist = blacklist(app).await;
    (view, by_id)
}

async fn blacklist(app: &TestApp) -> BTreeSet<String> {
    let mut entries = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListBlacklistRequest {
            page_size: 1000,
            page_token,
            include_inactive: false,
        };
        let page = app.blacklist().list_blacklist(request).await;
        let page = page.expect("the blacklist is listed").into_inner();
        entries.extend(
            page.entries
                .into_iter()
                .filter(|e| e.active)
                .map(|e| e.email),
        );
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// A contact row of the Odoo-shaped table the change feed is replayed into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    pub email_normalized: String,
    pub subscriptions: BTreeMap<String, (String, bool)>,
}

/// The change feed from sequence 0, replayed into an empty table as an Odoo module would:
/// contacts by id with their subscriptions, and the blacklist.
pub fn replay(changes: &[pb::Change]) -> (BTreeMap<i64, FeedRow>, BTreeSet<String>) {
    let mut rows: BTreeMap<i64, FeedRow> = BTreeMap::new();
    let mut blacklist = BTreeSet::new();
    for change in changes {
        let row = rows.entry(change.contact_id).or_insert_with(|| FeedRow {
            email_normalized: change.email_normalized.clone(),
            subscriptions: BTreeMap::new(),
        });
        row.email_normalized = change.email_normalized.clone();
        let list = change.mailchimp_list_id.clone();
        let state = (change.status.clone(), change.opt_out);
        match change.kind.as_str() {
            "subscribed" | "unsubscribed" | "status_changed" | "email_changed" => {
                row.subscriptions.insert(list, state);
            }
            "cleaned" => {
                row.subscriptions.insert(list, state);
                blacklist.insert(change.email_normalized.clone());
            }
            "profile_updated" => {
                if !change.status.is_empty() {
                    row.subscriptions.insert(list, state);
                }
            }
            "subscription_removed" => {
                row.subscriptions.remove(&list);
            }
            "contact_removed" => {
                rows.remove(&change.contact_id);
            }
            "blacklisted" => {
                blacklist.insert(change.email_normalized.clone());
            }
            "unblacklisted" => {
                blacklist.remove(&change.email_normalized);
            }
            other => panic!("change {} has an unknown kind {other}", change.sequence),
        }
    }
    (rows, blacklist)
}

/// Everything a failure report needs.
pub struct Report<'a> {
    pub seed: u64,
    pub ops: &'a [Op],
    pub network: &'a Network,
    pub events: &'a [mailchimp_sync::fake_mailchimp::WebhookEvent],
}

impl Report<'_> {
    /// Panics with the seed, the first address whose state differs and its history.
    pub fn assert_same(
        &self,
        stage: &str,
        expected: &View,
        actual: &View,
        only: Option<&BTreeSet<String>>,
    ) {
        let keys: BTreeSet<&String> = expected
            .contacts
            .keys()
            .chain(actual.contacts.keys())
            .collect();
        for key in keys {
            if only.is_some_and(|only| !only.contains(key)) {
                continue;
            }
            let (want, got) = (expected.contacts.get(key), actual.contacts.get(key));
            if want != got {
                self.fail(
                    stage,
                    key,
                    &format!("expected {want:#?}\nstore holds {got:#?}"),
                );
            }
        }
        if only.is_none() && expected.blacklist != actual.blacklist {
            let first = expected
                .blacklist
                .symmetric_difference(&actual.blacklist)
                .next();
            let key = first.expect("the blacklists differ somewhere");
            let listed = actual.blacklist.contains(key);
            self.fail(stage, key, &format!("blacklisted in the store: {listed}"));
        }
    }

    /// Panics unless the replayed feed equals the store.
    pub fn assert_feed(
        &self,
        stage: &str,
        store: &(View, BTreeMap<i64, FeedRow>),
        feed: &(BTreeMap<i64, FeedRow>, BTreeSet<String>),
    ) {
        let ids: BTreeSet<&i64> = store.1.keys().chain(feed.0.keys()).collect();
        for id in ids {
            let (want, got) = (store.1.get(id), feed.0.get(id));
            if want != got {
                let key = want.or(got).map(|row| row.email_normalized.clone());
                let detail =
                    format!("contact {id} in the store: {want:#?}\nreplayed feed: {got:#?}");
                self.fail(
                    &format!("{stage}, change feed"),
                    &key.unwrap_or_default(),
                    &detail,
                );
            }
        }
        if store.0.blacklist != feed.1 {
            let first = store.0.blacklist.symmetric_difference(&feed.1).next();
            let key = first.expect("the blacklists differ somewhere").clone();
            self.fail(&format!("{stage}, change feed blacklist"), &key, "");
        }
    }

    fn fail(&self, stage: &str, key: &str, detail: &str) -> ! {
        panic!(
            "simulation seed {} diverged {stage}: first differing contact {key}\n{detail}\n\
             history of {key}:\n{}\nreplay with SIM_SEED={} (see the README)",
            self.seed,
            self.history(key),
            self.seed
        );
    }

    /// Every operation that touched the address, or an address it shares an email change
    /// with, with what became of its webhooks.
    pub fn history(&self, key: &str) -> String {
        let mut linked = BTreeSet::from([key.to_owned()]);
        loop {
            let before = linked.len();
            for op in self.ops.iter().filter(|op| op.addresses.len() > 1) {
                if op.addresses.iter().any(|a| linked.contains(a)) {
                    linked.extend(op.addresses.iter().cloned());
                }
            }
            if linked.len() == before {
                break;
            }
        }
        let mut lines = Vec::new();
        for (index, op) in self.ops.iter().enumerate() {
            if !op.addresses.iter().any(|a| linked.contains(a)) {
                continue;
            }
            lines.push(format!(
                "  op {index} at {} on {}: {} ({:?}), addresses {:?}",
                op.at, op.list, op.what, op.source, op.addresses
            ));
            for event in op.events.clone() {
                let fate = match &self.network.fates[event] {
                    Fate::NotSent => "not sent (no webhook wants it)".to_owned(),
                    Fate::Dropped => "dropped".to_owned(),
                    Fate::Delivered(times) => format!("delivered at {times:?}"),
                };
                lines.push(format!(
                    "    {} event {event}: {fate}",
                    self.events[event].kind
                ));
            }
            if op.events.is_empty() {
                lines.push("    no webhook event".to_owned());
            }
        }
        lines.join("\n")
    }
}

/// The normalized addresses whose every operation in the month was announced and arrived at
/// least once, and so were those of the addresses they took a membership from by an email
/// change; operations before the month were loaded by the first fetch.
pub fn fully_delivered(ops: &[Op], month_begins: usize, network: &Network) -> BTreeSet<String> {
    let mut heard: HashMap<&str, bool> = ops[..month_begins]
        .iter()
        .flat_map(|op| op.addresses.iter())
        .map(|address| (address.as_str(), true))
        .collect();
    for op in &ops[month_begins..] {
        let arrived = !op.events.is_empty()
            && op
                .events
                .clone()
                .all(|event| matches!(network.fates[event], Fate::Delivered(_)));
        let all = op
            .addresses
            .iter()
            .all(|address| *heard.get(address.as_str()).unwrap_or(&true));
        for address in &op.addresses {
            heard.insert(address.as_str(), all && arrived);
        }
    }
    heard
        .into_iter()
        .filter(|(_, arrived)| *arrived)
        .map(|(address, _)| address.to_owned())
        .collect()
}

/// The subscriptions an incremental fetch cannot remove: the address left the audience
/// (deleted, deleted for good, or moved to another address), the webhook saying so never
/// arrived, and it is not back on that audience. Nothing in an incremental listing shows a
/// member that is gone; only a full fetch finds these.
pub fn unannounced_departures(
    ops: &[Op],
    network: &Network,
    truth: &View,
) -> BTreeSet<(String, String)> {
    // Only the last departure counts: an announced one removes whatever came before.
    let mut last = BTreeMap::new();
    for op in ops {
        let Some(left) = &op.leaves else { continue };
        let announced = op
            .events
            .clone()
            .next()
            .is_some_and(|event| matches!(network.fates[event], Fate::Delivered(_)));
        last.insert((left.clone(), op.list.to_owned()), announced);
    }
    last.into_iter()
        .filter(|((address, list), announced)| {
            let back = truth
                .contacts
                .get(address)
                .is_some_and(|c| c.subscriptions.contains_key(list));
            !announced && !back
        })
        .map(|(departure, _)| departure)
        .collect()
}

/// The store's view without the subscriptions in `departed`, and without contacts left with
/// none.
pub fn without(view: &View, departed: &BTreeSet<(String, String)>) -> View {
    let mut contacts = view.contacts.clone();
    for (address, list) in departed {
        if let Some(contact) = contacts.get_mut(address) {
            contact.subscriptions.remove(list);
            if contact.subscriptions.is_empty() {
                contacts.remove(address);
            }
        }
    }
    View {
        contacts,
        blacklist: view.blacklist.clone(),
    }
}
