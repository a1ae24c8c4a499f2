//! Webhook bodies as Mailchimp sends them: form-encoded, brackets percent-encoded, spaces as
//! `+`, the fields in Mailchimp's order. Every body is distinct and `fired_at` increases by a
//! second from one body to the next. People, addresses and ids are invented; the domains are
//! the reserved `example.*` ones.

use chrono::{Duration, NaiveDateTime};

/// The three audiences the events are spread over.
pub const LISTS: [&str; 3] = ["b3a1c9e4f0", "7d2e8b1a66", "c40f5d9e2b"];

const FIRST_NAMES: [&str; 12] = [
    "Hana", "Li", "Maureen", "José", "Zoë", "Łukasz", "Amara", "Sven", "Priya", "Kofi", "Inès",
    "Mateo",
];
const LAST_NAMES: [&str; 12] = [
    "Kato",
    "Wei",
    "Reyes",
    "García",
    "Müller",
    "Nowak",
    "Okafor",
    "Lindqvist",
    "Sharma",
    "Mensah",
    "O'Brien",
    "Rossi",
];
const DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

/// What one body does, for the counts printed with the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Subscribe,
    Profile,
    Unsubscribe,
    EmailChange,
    Cleaned,
}

impl Kind {
    /// Out of every 20 events: 10 subscribes, 4 profile updates, 3 unsubscribes, 2 email
    /// changes and 1 clean, interleaved.
    const MIX: [Kind; 20] = {
        use Kind::*;
        [
            Subscribe,
            Profile,
            Subscribe,
            Unsubscribe,
            Subscribe,
            EmailChange,
            Subscribe,
            Profile,
            Subscribe,
            Cleaned,
            Subscribe,
            Profile,
            Subscribe,
            Unsubscribe,
            Subscribe,
            EmailChange,
            Subscribe,
            Profile,
            Subscribe,
            Unsubscribe,
        ]
    };

    pub fn name(self) -> &'static str {
        match self {
            Kind::Subscribe => "subscribe",
            Kind::Profile => "profile",
            Kind::Unsubscribe => "unsubscribe",
            Kind::EmailChange => "upemail",
            Kind::Cleaned => "cleaned",
        }
    }
}

/// One audience member as the generator knows it.
#[derive(Debug, Clone)]
struct Person {
    number: u64,
    list: &'static str,
    first: &'static str,
    /// Index into [`LAST_NAMES`]; a profile update moves it on.
    last: usize,
    email: String,
    status: &'static str,
    /// The index of the person's last event, so that the next one comes well after it.
    last_event: usize,
}

impl Person {
    /// Mailchimp's 10-hex-digit member id, stable for the person.
    fn member_id(&self) -> String {
        let mixed = self.number.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
        format!("{:010x}", mixed & 0xff_ffff_ffff)
    }

    fn web_id(&self) -> String {
        (100_000_000 + self.number * 7919 % 900_000_000).to_string()
    }
}

/// The state a person must be in once every event was applied.
#[derive(Debug, Clone)]
pub struct Expected {
    pub email: String,
    pub list_id: &'static str,
    pub status: &'static str,
}

/// Bodies in the order to send them, with what they were.
#[derive(Debug, Default)]
pub struct Batch {
    pub bodies: Vec<String>,
    pub kinds: Vec<Kind>,
}

impl Batch {
    fn push(&mut self, kind: Kind, body: String) {
        self.kinds.push(kind);
        self.bodies.push(body);
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.kinds.iter().filter(|held| **held == kind).count()
    }
}

/// Makes bodies about invented people, with one clock across every batch it makes.
pub struct Generator {
    next_event: usize,
    start: NaiveDateTime,
    people: Vec<Person>,
}

impl Generator {
    /// Events are stamped from `start` on, one second apart.
    pub fn new(start: NaiveDateTime) -> Generator {
        Generator {
            next_event: 0,
            start,
            people: Vec::new(),
        }
    }

    /// `n` events of the mix. An event about an existing person comes at least `lag` events
    /// after that person's previous one, so that with fewer than `lag` requests in flight the
    /// earlier event is answered first.
    pub fn mixed(&mut self, n: usize, lag: usize) -> Batch {
        let mut batch = Batch::default();
        // People who can still change, oldest event first.
        let mut active = std::collections::VecDeque::new();
        for _ in 0..n {
            let index = self.next_event;
            let wanted = Kind::MIX[index % Kind::MIX.len()];
            let ready = active
                .front()
                .is_some_and(|&p: &usize| self.people[p].last_event + lag <= index);
            let kind = if ready { wanted } else { Kind::Subscribe };
            let person = match kind {
                Kind::Subscribe => self.new_person(LISTS[index % LISTS.len()]),
                _ => active.pop_front().expect("checked above"),
            };
            let body = self.event(kind, person);
            batch.push(kind, body);
            if matches!(kind, Kind::Subscribe | Kind::Profile | Kind::EmailChange) {
                active.push_back(person);
            }
        }
        batch
    }

    /// `n` new subscribers on one audience, then their `n` unsubscribes, in the same order.
    pub fn subscribe_then_unsubscribe(&mut self, n: usize) -> (Batch, Batch) {
        let list = LISTS[0];
        let mut subscribes = Batch::default();
        let people: Vec<usize> = (0..n).map(|_| self.new_person(list)).collect();
        for &person in &people {
            let body = self.event(Kind::Subscribe, person);
            subscribes.push(Kind::Subscribe, body);
        }
        let mut unsubscribes = Batch::default();
        for &person in &people {
            let body = self.event(Kind::Unsubscribe, person);
            unsubscribes.push(Kind::Unsubscribe, body);
        }
        (subscribes, unsubscribes)
    }

    /// Every `step`-th person made so far, with the state their events leave them in.
    pub fn sample(&self, step: usize) -> Vec<Expected> {
        let people = self.people.iter().step_by(step.max(1));
        people
            .map(|person| Expected {
                email: person.email.clone(),
                list_id: person.list,
                status: person.status,
            })
            .collect()
    }

    fn new_person(&mut self, list: &'static str) -> usize {
        let number = self.people.len() as u64;
        let first = FIRST_NAMES[(number % 12) as usize];
        let last = (number / 12 % 12) as usize;
        let email = address(first, LAST_NAMES[last], number, "");
        self.people.push(Person {
            number,
            list,
            first,
            last,
            email,
            status: "subscribed",
            last_event: 0,
        });
        self.people.len() - 1
    }

    /// The body of one event about the person; the person's state follows the event.
    fn event(&mut self, kind: Kind, index: usize) -> String {
        let fired_at = self.start + Duration::seconds(self.next_event as i64);
        let fired_at = fired_at.format("%Y-%m-%d %H:%M:%S").to_string();
        let person = &mut self.people[index];
        person.last_event = self.next_event;
        self.next_event += 1;
        let mut form = Form::new(kind.name(), &fired_at);
        match kind {
            Kind::Subscribe => {
                member_fields(&mut form, person, &[]);
                form.field("data[ip_opt]", "198.51.100.7")
                    .field("data[ip_signup]", "198.51.100.7");
            }
            Kind::Profile => {
                // A new last name, as when a subscriber corrects it.
                person.last = (person.last + 1) % LAST_NAMES.len();
                member_fields(&mut form, person, &[]);
                form.field("data[ip_opt]", "198.51.100.7");
            }
            Kind::Unsubscribe => {
                person.status = "unsubscribed";
                let before = [("data[action]", "unsub"), ("data[reason]", "manual")];
                member_fields(&mut form, person, &before);
                form.field("data[ip_opt]", "198.51.100.7")
                    .field("data[campaign_id]", "9e8d7c6b5a");
            }
            Kind::EmailChange => {
                let last = LAST_NAMES[person.last];
                let suffix = format!(".{}", self.next_event);
                let new_email = address(person.first, last, person.number, &suffix);
                let old_email = std::mem::replace(&mut person.email, new_email);
                form.field("data[list_id]", person.list)
                    .field("data[new_id]", &person.member_id())
                    .field("data[new_email]", &person.email)
                    .field("data[old_email]", &old_email);
            }
            Kind::Cleaned => {
                person.status = "cleaned";
                form.field("data[list_id]", person.list)
                    .field("data[campaign_id]", "9e8d7c6b5a")
                    .field("data[reason]", "hard")
                    .field("data[email]", &person.email);
            }
        }
        form.finish()
    }
}

/// The member fields of subscribe, unsubscribe and profile events, `extra` first.
fn member_fields(form: &mut Form, person: &Person, extra: &[(&str, &str)]) {
    for (key, value) in extra {
        form.field(key, value);
    }
    form.field("data[id]", &person.member_id())
        .field("data[list_id]", person.list)
        .field("data[email]", &person.email)
        .field("data[email_type]", "html")
        .field("data[web_id]", &person.web_id())
        .field("data[merges][EMAIL]", &person.email)
        .field("data[merges][FNAME]", person.first)
        .field("data[merges][LNAME]", LAST_NAMES[person.last])
        .field("data[merges][ADDRESS]", "")
        .field("data[merges][PHONE]", "")
        .field("data[merges][BIRTHDAY]", "");
}

/// `First.Last.N@example.*`, capitalized as people type it; the local part keeps only the
/// ASCII letters of the names (`Inès O'Brien` gives `Ins.OBrien.N`).
fn address(first: &str, last: &str, number: u64, suffix: &str) -> String {
    let plain = |name: &str| -> String { name.chars().filter(char::is_ascii_alphabetic).collect() };
    let domain = DOMAINS[(number % 3) as usize];
    format!("{}.{}.{number}{suffix}@{domain}", plain(first), plain(last))
}

/// A form body under construction; `form_urlencoded` encodes as Mailchimp does.
struct Form(form_urlencoded::Serializer<'static, String>);

impl Form {
    fn new(event_type: &str, fired_at: &str) -> Form {
        let mut form = Form(form_urlencoded::Serializer::new(String::new()));
        form.field("type", event_type).field("fired_at", fired_at);
        form
    }

    fn field(&mut self, key: &str, value: &str) -> &mut Form {
        self.0.append_pair(key, value);
        self
    }

    fn finish(mut self) -> String {
        self.0.finish()
    }
}
