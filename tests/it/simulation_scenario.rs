//! The simulation's scenario: people on three audiences and a seeded, random month of what
//! Mailchimp users do to them, applied to the fake Mailchimp (whose state is the truth) and
//! logged, so that a failure can name every operation that touched a contact.
//!
//! The generator keeps a small model of the audiences only to choose operations Mailchimp
//! would accept (no resubscribing a cleaned address, no re-adding one deleted for good, one
//! membership per person and audience). Two choices keep the truth well defined for Odoo,
//! which keeps one name per contact where Mailchimp keeps one per audience member: a person
//! has one name, and a profile edit renames them in every audience at once (never while one
//! of their memberships is archived, since an archived member cannot be edited); and a cleaned
//! member is never changed again, so the blacklist is exactly the addresses cleaned somewhere.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;

use chrono::{DateTime, Duration, TimeZone, Utc};
use mailchimp_sync::fake_mailchimp::{FakeMailchimp, NewMember, Source};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// The three audiences.
pub const LISTS: [&str; 3] = ["4f1c9a7e20", "b83d02e6f1", "c5e7a91d33"];

const FIRST_NAMES: [&str; 10] = [
    "Hana", "Rory", "Ondřej", "Amara", "Zoë", "Luis", "Mei", "Kwame", "Ingrid", "Tomás",
];
const LAST_NAMES: [&str; 8] = [
    "Kato", "Finch", "Dvořák", "Okafor", "García", "Nakamura", "Berg", "Silva",
];
const DOMAINS: [&str; 3] = ["example.org", "Example.com", "mail.example.net"];

/// Where the month starts; in the past, so no event time lies ahead of the service's clock.
pub fn month_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// One operation on one member, as logged for the failure report.
#[derive(Debug, Clone)]
pub struct Op {
    pub at: DateTime<Utc>,
    pub list: &'static str,
    pub what: String,
    pub source: Source,
    /// Normalized addresses the operation touches: the member's, and both for an email
    /// change.
    pub addresses: Vec<String>,
    /// The webhook events it caused, as indexes into the fake's event log.
    pub events: Range<usize>,
    /// The normalized address that left the audience, for a deletion or an email change.
    /// Its first event is the one that says so.
    pub leaves: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Status {
    Subscribed,
    Unsubscribed,
    Cleaned,
    Archived,
}

const STATUSES: [Status; 4] = [
    Status::Subscribed,
    Status::Unsubscribed,
    Status::Cleaned,
    Status::Archived,
];

struct Person {
    first: String,
    last: String,
    /// Raw addresses, in the case the person types them.
    addresses: Vec<String>,
    /// The lower-cased address of their membership in each audience, if any.
    memberships: [Option<String>; 3],
}

struct Membership {
    person: usize,
    status: Status,
}

/// A member: audience index and lower-cased address.
type Key = (usize, String);

/// A set with uniform random picks.
#[derive(Default)]
struct Pool {
    items: Vec<Key>,
    index: HashMap<Key, usize>,
}

impl Pool {
    fn insert(&mut self, key: Key) {
        if !self.index.contains_key(&key) {
            self.index.insert(key.clone(), self.items.len());
            self.items.push(key);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(at) = self.index.remove(key) {
            self.items.swap_remove(at);
            if let Some(moved) = self.items.get(at) {
                self.index.insert(moved.clone(), at);
            }
        }
    }
}

/// How many operations and people, and how many of the operations touch hundreds of members.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub ops: usize,
    pub persons: usize,
    /// The share of operations that are bulk actions.
    pub bulk_share: f64,
}

pub struct Scenario {
    fake: FakeMailchimp,
    pub rng: StdRng,
    sizes: Sizes,
    persons: Vec<Person>,
    members: HashMap<Key, Membership>,
    pools: HashMap<(usize, Status), Pool>,
    /// Addresses deleted for good from an audience, which Mailchimp refuses to take back.
    erased: HashSet<Key>,
    /// The members changed last: people act in bursts (a sign-up, then a preference, then
    /// an unsubscribe), which is what puts a member's webhooks within minutes of each other.
    recent: VecDeque<Key>,
    /// The longest pause between two operations, sized so the run spans about a month.
    long_pause: i64,
    pub ops: Vec<Op>,
    /// The index in `ops` of the month's first operation; those before it were loaded by a
    /// first fetch.
    pub month_begins: usize,
}

impl Scenario {
    pub fn new(fake: FakeMailchimp, seed: u64, sizes: Sizes) -> Scenario {
        let busy = 45 * sizes.ops as i64;
        let month = 30 * 24 * 3600;
        let long_pause = ((month - busy).max(0) * 20 / sizes.ops.max(1) as i64).max(90);
        Scenario {
            fake,
            rng: StdRng::seed_from_u64(seed),
            sizes,
            persons: Vec::new(),
            members: HashMap::new(),
            pools: HashMap::new(),
            erased: HashSet::new(),
            recent: VecDeque::new(),
            long_pause,
            ops: Vec::new(),
            month_begins: 0,
        }
    }

    /// The audiences before the month: about half the people on each, added through the API
    /// (so without webhooks), for a first fetch to load.
    pub fn populate(&mut self) {
        self.fake.set_clock(month_start() - Duration::days(1));
        for person in 0..self.sizes.persons {
            self.new_person();
            for list in 0..LISTS.len() {
                if self.rng.random_bool(0.5) {
                    let status = if self.rng.random_bool(0.85) {
                        "subscribed"
                    } else {
                        "unsubscribed"
                    };
                    let address = self.persons[person].addresses[0].clone();
                    self.add(person, list, &address, status, Source::Api, "added");
                }
            }
        }
        self.fake.set_clock(month_start());
        self.month_begins = self.ops.len();
    }

    /// Plays `sizes.ops` operations.
    pub fn play(&mut self) {
        for _ in 0..self.sizes.ops {
            self.pause();
            if self.rng.random_bool(self.sizes.bulk_share) && self.bulk() {
                continue;
            }
            while !self.one_operation() {}
        }
    }

    /// Moves the clock on by at least a second, so that no two operations on one member
    /// share a second (their order could not be told apart by any receiver).
    fn pause(&mut self) {
        let seconds = if self.rng.random_bool(0.9) {
            self.rng.random_range(1..=90)
        } else {
            self.rng.random_range(1..=self.long_pause)
        };
        self.fake.advance_clock(Duration::seconds(seconds));
    }

    fn one_operation(&mut self) -> bool {
        match self.rng.random_range(0..100) {
            0..20 => self.sign_up(),
            20..34 => self.set_status(Status::Subscribed, Status::Unsubscribed),
            34..42 => self.set_status(Status::Unsubscribed, Status::Subscribed),
            42..54 => self.edit_profile(),
            54..64 => self.change_email(),
            64..70 => self.clean(),
            70..78 => self.archive(),
            78..88 => self.delete(false),
            _ => self.delete(true),
        }
    }

    /// Who acts: the person or an admin, and now and then another tool through the API,
    /// which the registered webhook does not hear.
    fn source(&mut self) -> Source {
        match self.rng.random_range(0..100) {
            0..60 => Source::User,
            60..92 => Source::Admin,
            _ => Source::Api,
        }
    }

    fn new_person(&mut self) -> usize {
        let first = FIRST_NAMES
            .choose(&mut self.rng)
            .expect("names")
            .to_string();
        let last = LAST_NAMES.choose(&mut self.rng).expect("names").to_string();
        self.persons.push(Person {
            first,
            last,
            addresses: Vec::new(),
            memberships: [None, None, None],
        });
        let person = self.persons.len() - 1;
        self.new_address(person);
        person
    }

    /// A fresh address for the person, in the case they type it: some capitalize their
    /// name, and some names are not ASCII.
    fn new_address(&mut self, person: usize) -> String {
        let (first, last) = (&self.persons[person].first, &self.persons[person].last);
        let number = self.persons[person].addresses.len();
        let domain = DOMAINS.choose(&mut self.rng).expect("domains");
        let local = format!("{first}.{last}.{person}.{number}");
        let local = if self.rng.random_bool(0.3) {
            local
        } else {
            local.to_lowercase()
        };
        let address = format!("{local}@{domain}");
        self.persons[person].addresses.push(address.clone());
        address
    }

    fn pool(&mut self, list: usize, status: Status) -> &mut Pool {
        self.pools.entry((list, status)).or_default()
    }

    /// A random member in one of `statuses`, on any audience; often one changed lately.
    fn pick(&mut self, statuses: &[Status]) -> Option<Key> {
        if self.rng.random_bool(0.3) {
            let lately: Vec<&Key> = self
                .recent
                .iter()
                .filter(|key| {
                    let member = self.members.get(*key);
                    member.is_some_and(|m| statuses.contains(&m.status))
                })
                .collect();
            if let Some(key) = lately.choose(&mut self.rng) {
                return Some((*key).clone());
            }
        }
        let mut pools = Vec::new();
        for list in 0..LISTS.len() {
            for status in statuses {
                let size = self
                    .pools
                    .get(&(list, *status))
                    .map_or(0, |p| p.items.len());
                pools.push(((list, *status), size));
            }
        }
        let total: usize = pools.iter().map(|(_, size)| size).sum();
        if total == 0 {
            return None;
        }
        let mut n = self.rng.random_range(0..total);
        for (pool, size) in pools {
            if n < size {
                return Some(self.pools[&pool].items[n].clone());
            }
            n -= size;
        }
        None
    }

    fn raw(&self, key: &Key) -> String {
        let person = &self.persons[self.members[key].person];
        let raw = person.addresses.iter().find(|a| a.to_lowercase() == key.1);
        raw.expect("a member's address is its person's").clone()
    }

    fn set_model(&mut self, key: &Key, status: Option<Status>, person: usize) {
        if let Some(old) = self.members.get(key).map(|m| m.status) {
            self.pool(key.0, old).remove(key);
        }
        match status {
            Some(status) => {
                self.members
                    .insert(key.clone(), Membership { person, status });
                self.pool(key.0, status).insert(key.clone());
                self.persons[person].memberships[key.0] = Some(key.1.clone());
                self.recent.push_back(key.clone());
                if self.recent.len() > 16 {
                    self.recent.pop_front();
                }
            }
            None => {
                self.members.remove(key);
                self.persons[person].memberships[key.0] = None;
            }
        }
    }

    /// Runs `change` on the fake and logs it with the events it caused.
    fn log(
        &mut self,
        list: usize,
        what: impl Into<String>,
        source: Source,
        addresses: &[&str],
        leaves: Option<&str>,
        change: impl FnOnce(&FakeMailchimp),
    ) {
        let first = self.fake.webhook_event_count();
        change(&self.fake);
        let events = first..self.fake.webhook_event_count();
        self.ops.push(Op {
            at: self.fake.now(),
            list: LISTS[list],
            what: what.into(),
            source,
            addresses: addresses.iter().map(|a| normalized(a)).collect(),
            events,
            leaves: leaves.map(normalized),
        });
    }

    fn add(
        &mut self,
        person: usize,
        list: usize,
        raw: &str,
        status: &str,
        source: Source,
        what: &str,
    ) {
        let (first, last) = {
            let p = &self.persons[person];
            (p.first.clone(), p.last.clone())
        };
        let member = NewMember::new(raw).name(&first, &last).status(status);
        self.log(list, what, source, &[raw], None, |fake| {
            fake.add_member(LISTS[list], member, source);
        });
        let model = match status {
            "subscribed" => Status::Subscribed,
            _ => Status::Unsubscribed,
        };
        self.set_model(&(list, raw.to_lowercase()), Some(model), person);
    }

    /// A sign-up: someone new, someone back after leaving, or an archived member returning.
    fn sign_up(&mut self) -> bool {
        let list = self.rng.random_range(0..LISTS.len());
        let person = if self.rng.random_bool(0.15) {
            self.new_person()
        } else {
            self.rng.random_range(0..self.persons.len())
        };
        let source = self.source();
        if let Some(held) = self.persons[person].memberships[list].clone() {
            let key = (list, held);
            if self.members[&key].status != Status::Archived {
                return false;
            }
            let raw = self.raw(&key);
            self.log(
                list,
                "sign-up of an archived member",
                source,
                &[raw.as_str()],
                None,
                |fake| {
                    fake.set_status(LISTS[list], &raw, "subscribed", source);
                },
            );
            self.set_model(&key, Some(Status::Subscribed), person);
            return true;
        }
        let free: Vec<String> = self.persons[person]
            .addresses
            .iter()
            .filter(|a| !self.erased.contains(&(list, a.to_lowercase())))
            .cloned()
            .collect();
        let raw = match free.choose(&mut self.rng) {
            Some(raw) if self.rng.random_bool(0.9) => raw.clone(),
            _ => self.new_address(person),
        };
        self.add(person, list, &raw, "subscribed", source, "sign-up");
        true
    }

    fn set_status(&mut self, from: Status, to: Status) -> bool {
        let Some(key) = self.pick(&[from]) else {
            return false;
        };
        let source = self.source();
        let raw = self.raw(&key);
        let (text, what) = match to {
            Status::Subscribed => ("subscribed", "resubscribe"),
            _ => ("unsubscribed", "unsubscribe"),
        };
        self.log(key.0, what, source, &[raw.as_str()], None, |fake| {
            fake.set_status(LISTS[key.0], &raw, text, source);
        });
        let person = self.members[&key].person;
        self.set_model(&key, Some(to), person);
        true
    }

    /// A new name, in every audience the person is on.
    fn edit_profile(&mut self) -> bool {
        let Some(key) = self.pick(&[Status::Subscribed, Status::Unsubscribed, Status::Cleaned])
        else {
            return false;
        };
        let person = self.members[&key].person;
        let keys: Vec<Key> = (0..LISTS.len())
            .filter_map(|list| {
                let held = self.persons[person].memberships[list].clone()?;
                Some((list, held))
            })
            .collect();
        if keys
            .iter()
            .any(|k| self.members[k].status == Status::Archived)
        {
            return false;
        }
        let first = FIRST_NAMES
            .choose(&mut self.rng)
            .expect("names")
            .to_string();
        let last = LAST_NAMES.choose(&mut self.rng).expect("names").to_string();
        self.persons[person].first = first.clone();
        self.persons[person].last = last.clone();
        let source = self.source();
        for key in keys {
            let raw = self.raw(&key);
            let fields = json!({"FNAME": first, "LNAME": last});
            self.log(
                key.0,
                "profile edit",
                source,
                &[raw.as_str()],
                None,
                |fake| {
                    fake.update_merge_fields(LISTS[key.0], &raw, fields, source);
                },
            );
        }
        true
    }

    /// A new address: one the person already uses on another audience, or a fresh one.
    fn change_email(&mut self) -> bool {
        let Some(key) = self.pick(&[Status::Subscribed, Status::Unsubscribed]) else {
            return false;
        };
        let person = self.members[&key].person;
        let list = key.0;
        let others: Vec<String> = self.persons[person]
            .addresses
            .iter()
            .filter(|a| {
                a.to_lowercase() != key.1 && !self.erased.contains(&(list, a.to_lowercase()))
            })
            .cloned()
            .collect();
        let to = match others.choose(&mut self.rng) {
            Some(other) if self.rng.random_bool(0.5) => other.clone(),
            _ => self.new_address(person),
        };
        let from = self.raw(&key);
        let source = self.source();
        let what = format!("email change to {to}");
        self.log(
            list,
            what,
            source,
            &[from.as_str(), to.as_str()],
            Some(from.as_str()),
            |fake| {
                fake.change_email(LISTS[list], &from, &to, source);
            },
        );
        let status = self.members[&key].status;
        self.set_model(&key, None, person);
        self.set_model(&(list, to.to_lowercase()), Some(status), person);
        true
    }

    fn clean(&mut self) -> bool {
        let Some(key) = self.pick(&[Status::Subscribed]) else {
            return false;
        };
        let reason = if self.rng.random_bool(0.7) {
            "hard"
        } else {
            "abuse"
        };
        let raw = self.raw(&key);
        let what = format!("clean ({reason})");
        self.log(key.0, what, Source::Admin, &[raw.as_str()], None, |fake| {
            fake.clean(LISTS[key.0], &raw, reason, Source::Admin);
        });
        let person = self.members[&key].person;
        self.set_model(&key, Some(Status::Cleaned), person);
        true
    }

    fn archive(&mut self) -> bool {
        let Some(key) = self.pick(&[Status::Subscribed, Status::Unsubscribed]) else {
            return false;
        };
        let source = self.source();
        self.archive_member(&key, source, "archive");
        true
    }

    fn archive_member(&mut self, key: &Key, source: Source, what: &str) {
        let raw = self.raw(key);
        self.log(key.0, what, source, &[raw.as_str()], None, |fake| {
            fake.archive(LISTS[key.0], &raw, source);
        });
        let person = self.members[key].person;
        self.set_model(key, Some(Status::Archived), person);
    }

    fn delete(&mut self, for_good: bool) -> bool {
        let statuses: &[Status] = if for_good {
            &[Status::Subscribed, Status::Unsubscribed, Status::Archived]
        } else {
            &[Status::Subscribed, Status::Unsubscribed]
        };
        let Some(key) = self.pick(statuses) else {
            return false;
        };
        let source = self.source();
        let what = if for_good {
            "permanent delete"
        } else {
            "delete"
        };
        self.delete_member(&key, for_good, source, what);
        true
    }

    fn delete_member(&mut self, key: &Key, for_good: bool, source: Source, what: &str) {
        let raw = self.raw(key);
        self.log(
            key.0,
            what,
            source,
            &[raw.as_str()],
            Some(raw.as_str()),
            |fake| {
                let list = LISTS[key.0];
                if for_good {
                    fake.delete_permanently(list, &raw, source);
                } else {
                    fake.delete_member(list, &raw, source);
                }
            },
        );
        if for_good {
            self.erased.insert(key.clone());
        }
        let person = self.members[key].person;
        self.set_model(key, None, person);
    }

    /// An admin acting on hundreds of members of one audience at once, in one second.
    fn bulk(&mut self) -> bool {
        let list = self.rng.random_range(0..LISTS.len());
        let action = self.rng.random_range(0..4);
        let statuses: &[Status] = match action {
            0 | 1 => &[Status::Subscribed],
            2 => &[Status::Subscribed, Status::Unsubscribed],
            _ => &[Status::Subscribed, Status::Unsubscribed, Status::Archived],
        };
        let mut eligible: Vec<Key> = statuses
            .iter()
            .flat_map(|s| {
                self.pools
                    .get(&(list, *s))
                    .map(|p| p.items.clone())
                    .unwrap_or_default()
            })
            .collect();
        if eligible.len() < 20 {
            return false;
        }
        eligible.sort();
        eligible.shuffle(&mut self.rng);
        let size = self.rng.random_range(100..=300).min(eligible.len());
        for key in &eligible[..size] {
            match action {
                0 | 1 => {
                    let raw = self.raw(key);
                    self.log(
                        list,
                        "bulk unsubscribe",
                        Source::Admin,
                        &[raw.as_str()],
                        None,
                        |fake| {
                            fake.set_status(LISTS[list], &raw, "unsubscribed", Source::Admin);
                        },
                    );
                    let person = self.members[key].person;
                    self.set_model(key, Some(Status::Unsubscribed), person);
                }
                2 => self.archive_member(key, Source::Admin, "bulk archive"),
                _ => self.delete_member(key, true, Source::Admin, "bulk permanent delete"),
            }
        }
        true
    }

    /// Checks the model against the fake, so that the generator itself is not what is
    /// wrong when the store disagrees with the fake.
    pub fn assert_model_matches_fake(&self) {
        for (list, id) in LISTS.iter().enumerate() {
            let members = self.fake.members(id);
            let held = self.members.keys().filter(|(l, _)| *l == list).count();
            assert_eq!(
                members.len(),
                held,
                "the model's audience {id} has a wrong size"
            );
            for member in members {
                let key = (list, member.email_address.to_lowercase());
                let model = self.members.get(&key).expect("the model knows each member");
                let status = STATUSES
                    .iter()
                    .find(|s| status_text(**s) == member.status)
                    .expect("a modelled status");
                assert_eq!(model.status, *status, "{}", member.email_address);
            }
        }
    }
}

fn status_text(status: Status) -> &'static str {
    match status {
        Status::Subscribed => "subscribed",
        Status::Unsubscribed => "unsubscribed",
        Status::Cleaned => "cleaned",
        Status::Archived => "archived",
    }
}

/// Odoo's normalized form of an address the scenario made.
pub fn normalized(raw: &str) -> String {
    mailchimp_sync::email::normalize(raw).expect("the scenario makes valid addresses")
}
