//! Audience members: what the fake keeps for one, how a generated member looks, and the JSON
//! Mailchimp serves for it, awkward shapes included (`""` for an empty address, number or
//! date, numbers as JSON numbers when set).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use md5::{Digest, Md5};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use super::fields::{Selection, write_entry};
use super::random_hex;

/// The statuses generated members take: member `i` has `SYNTHETIC_STATUSES[i % 10]`, so six
/// in ten are subscribed, as in a typical audience.
pub const SYNTHETIC_STATUSES: [&str; 10] = [
    "subscribed",
    "subscribed",
    "unsubscribed",
    "subscribed",
    "cleaned",
    "subscribed",
    "pending",
    "subscribed",
    "transactional",
    "subscribed",
];

/// Generated members share each `last_changed` second in groups of this size, so that an
/// exclusive `since_last_changed` boundary really does cut through a group.
const MEMBERS_PER_STAMP: u64 = 4;
/// Seconds between two consecutive `last_changed` stamps of generated members.
const STAMP_STEP_SECONDS: i64 = 60;

const FIRST_NAMES: [&str; 7] = ["Hana", "Rory", "Ondřej", "Amara", "Zoë", "Luis", "Mei"];
const LAST_NAMES: [&str; 5] = ["Kato", "Finch", "Dvořák", "Okafor", "García"];
const INTERESTS: [&str; 2] = ["9143cf3bd1", "3a2b1c0d9e"];

/// A tag on a member, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    pub id: u64,
    pub name: String,
}

/// One audience member as the fake holds it. `id` and `full_name` are derived, as in
/// Mailchimp, from the address and the `FNAME`/`LNAME` merge fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub email_address: String,
    pub unique_email_id: String,
    pub contact_id: String,
    pub web_id: u64,
    pub email_type: String,
    /// Any text: the six documented statuses, or a future one a test wants to see.
    pub status: String,
    pub unsubscribe_reason: Option<String>,
    pub merge_fields: Map<String, Value>,
    pub interests: BTreeMap<String, bool>,
    pub tags: Vec<Tag>,
    pub ip_signup: String,
    pub ip_opt: String,
    pub timestamp_signup: Option<DateTime<Utc>>,
    pub timestamp_opt: Option<DateTime<Utc>>,
    pub last_changed: DateTime<Utc>,
    pub source: String,
}

impl Member {
    /// The subscriber hash: the `id` of the API and the `{subscriber_hash}` path segment.
    pub fn id(&self) -> String {
        subscriber_hash(&self.email_address)
    }

    /// `FNAME LNAME`, or the address when both are empty, as Mailchimp fills it.
    pub fn full_name(&self) -> String {
        let text = |tag: &str| {
            self.merge_fields
                .get(tag)
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let name = format!("{} {}", text("FNAME"), text("LNAME"));
        match name.trim() {
            "" => self.email_address.clone(),
            trimmed => trimmed.to_owned(),
        }
    }

    /// The member as `GET /lists/{list_id}/members/{hash}` shows it.
    pub fn to_json(&self, list_id: &str) -> Value {
        let everything = Selection::default();
        let view = MemberView {
            member: self,
            list_id,
            selection: &everything,
        };
        serde_json::to_value(view).unwrap_or_default()
    }
}

/// A member written as the API shows it, as far as `selection` wants it.
pub(crate) struct MemberView<'a, 'q> {
    pub member: &'a Member,
    pub list_id: &'a str,
    pub selection: &'a Selection<'q>,
}

impl Serialize for MemberView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (member, wanted) = (self.member, self.selection);
        let mut map = serializer.serialize_map(None)?;
        write_entry(&mut map, wanted, "id", &member.id())?;
        write_entry(&mut map, wanted, "email_address", &member.email_address)?;
        write_entry(&mut map, wanted, "unique_email_id", &member.unique_email_id)?;
        write_entry(&mut map, wanted, "contact_id", &member.contact_id)?;
        write_entry(&mut map, wanted, "full_name", &member.full_name())?;
        write_entry(&mut map, wanted, "web_id", &member.web_id)?;
        write_entry(&mut map, wanted, "email_type", &member.email_type)?;
        write_entry(&mut map, wanted, "status", &member.status)?;
        if let Some(reason) = &member.unsubscribe_reason {
            write_entry(&mut map, wanted, "unsubscribe_reason", reason)?;
        }
        write_entry(&mut map, wanted, "merge_fields", &member.merge_fields)?;
        write_entry(&mut map, wanted, "interests", &member.interests)?;
        write_entry(&mut map, wanted, "ip_signup", &member.ip_signup)?;
        write_entry(
            &mut map,
            wanted,
            "timestamp_signup",
            &stamp_or_empty(member.timestamp_signup),
        )?;
        write_entry(&mut map, wanted, "ip_opt", &member.ip_opt)?;
        write_entry(
            &mut map,
            wanted,
            "timestamp_opt",
            &stamp_or_empty(member.timestamp_opt),
        )?;
        write_entry(
            &mut map,
            wanted,
            "last_changed",
            &stamp(member.last_changed),
        )?;
        write_entry(&mut map, wanted, "language", "")?;
        write_entry(&mut map, wanted, "vip", &false)?;
        write_entry(&mut map, wanted, "source", &member.source)?;
        write_entry(&mut map, wanted, "tags_count", &member.tags.len())?;
        write_entry(&mut map, wanted, "tags", &member.tags)?;
        write_entry(&mut map, wanted, "list_id", self.list_id)?;
        map.end()
    }
}

/// What a test supplies to add a member; everything else is filled in as Mailchimp would.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMember {
    pub email: String,
    pub status: String,
    pub merge_fields: Map<String, Value>,
    pub interests: BTreeMap<String, bool>,
    pub tags: Vec<Tag>,
}

impl NewMember {
    /// A subscribed member with the default merge fields of a new audience, all empty.
    pub fn new(email: &str) -> NewMember {
        let merge_fields = ["FNAME", "LNAME", "ADDRESS", "PHONE"]
            .into_iter()
            .map(|tag| (tag.to_owned(), json!("")))
            .collect();
        NewMember {
            email: email.to_owned(),
            status: "subscribed".to_owned(),
            merge_fields,
            interests: BTreeMap::new(),
            tags: Vec::new(),
        }
    }

    pub fn name(self, first: &str, last: &str) -> NewMember {
        self.merge_field("FNAME", json!(first))
            .merge_field("LNAME", json!(last))
    }

    pub fn status(mut self, status: &str) -> NewMember {
        self.status = status.to_owned();
        self
    }

    /// Sets one merge field: a string, a number, `""`, or an ADDRESS object.
    pub fn merge_field(mut self, tag: &str, value: Value) -> NewMember {
        self.merge_fields.insert(tag.to_owned(), value);
        self
    }

    pub(crate) fn into_member(self, now: DateTime<Utc>) -> Member {
        let unsubscribe_reason = unsubscribe_reason_for(&self.status);
        Member {
            email_address: self.email,
            unique_email_id: random_hex(10),
            contact_id: random_hex(32),
            web_id: rand::random_range(100_000_000..900_000_000),
            email_type: "html".to_owned(),
            status: self.status,
            unsubscribe_reason,
            merge_fields: self.merge_fields,
            interests: self.interests,
            tags: self.tags,
            ip_signup: String::new(),
            ip_opt: String::new(),
            timestamp_signup: None,
            timestamp_opt: Some(now),
            last_changed: now,
            source: "API - Generic".to_owned(),
        }
    }
}

/// The text Mailchimp keeps on an unsubscribed member changed by an admin or the API.
pub(crate) fn unsubscribe_reason_for(status: &str) -> Option<String> {
    (status == "unsubscribed").then(|| "N/A (Unsubscribed by admin)".to_owned())
}

/// Lower-case hex MD5 of the lower-cased address.
pub fn subscriber_hash(email: &str) -> String {
    format!("{:x}", Md5::digest(email.to_lowercase().as_bytes()))
}

/// `YYYY-MM-DDTHH:MM:SS+00:00`, the only form Mailchimp writes times in.
pub(crate) fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

fn stamp_or_empty(at: Option<DateTime<Utc>>) -> String {
    at.map(stamp).unwrap_or_default()
}

/// The address of generated member `i`.
pub fn synthetic_email(i: u64) -> String {
    format!("member{i}@example.com")
}

/// The status of generated member `i` (see [`SYNTHETIC_STATUSES`]).
pub fn synthetic_status(i: u64) -> &'static str {
    SYNTHETIC_STATUSES[(i % SYNTHETIC_STATUSES.len() as u64) as usize]
}

/// The `last_changed` of generated member `i`: from 2020-01-01T00:00:00Z, four members per
/// second-stamp, a minute between stamps. It never decreases with `i`.
pub fn synthetic_last_changed(i: u64) -> DateTime<Utc> {
    let stamps = i64::try_from(i / MEMBERS_PER_STAMP).unwrap_or(i64::MAX / STAMP_STEP_SECONDS);
    synthetic_epoch() + Duration::seconds(stamps * STAMP_STEP_SECONDS)
}

fn synthetic_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed date")
}

/// The index of a generated member's address, if `email` is one (`member{i}@example.com`
/// written canonically, in any case).
pub(crate) fn synthetic_index(email: &str) -> Option<u64> {
    let lower = email.to_ascii_lowercase();
    let digits = lower.strip_prefix("member")?.strip_suffix("@example.com")?;
    let index: u64 = digits.parse().ok()?;
    (index.to_string() == digits).then_some(index)
}

/// Generated member `i` of `list_id`: the same every time it is asked for.
pub(crate) fn synthetic_member(list_id: &str, i: u64) -> Member {
    let status = synthetic_status(i);
    let last_changed = synthetic_last_changed(i);
    let seed = format!("{:x}", Md5::digest(format!("{list_id}/{i}").as_bytes()));
    Member {
        email_address: synthetic_email(i),
        unique_email_id: seed[..10].to_owned(),
        contact_id: format!("{:x}", Md5::digest(seed.as_bytes())),
        web_id: 100_000_000 + i,
        email_type: if i % 13 == 12 { "text" } else { "html" }.to_owned(),
        status: status.to_owned(),
        unsubscribe_reason: unsubscribe_reason_for(status),
        merge_fields: synthetic_merge_fields(i),
        interests: INTERESTS
            .iter()
            .enumerate()
            .map(|(k, id)| (id.to_string(), (i + k as u64) % 2 == 1))
            .collect(),
        tags: synthetic_tags(i),
        ip_signup: String::new(),
        ip_opt: "198.51.100.7".to_owned(),
        timestamp_signup: (i % 2 == 1).then(|| last_changed - Duration::days(30)),
        timestamp_opt: Some(last_changed - Duration::hours(1)),
        last_changed,
        source: "Admin Add".to_owned(),
    }
}

/// Every shape real audiences have: ADDRESS as `""` or an object, PHONE set or `""`, a number
/// field as a number or `""`, a fractional number.
fn synthetic_merge_fields(i: u64) -> Map<String, Value> {
    let pick =
        |names: &[&'static str], salt: u64| names[((i + salt) % names.len() as u64) as usize];
    let address = if i % 3 == 1 {
        json!({"addr1": format!("{i} Harbour Row"), "addr2": "", "city": "Portsmouth",
               "state": "", "zip": "PO1 2AB", "country": "GB"})
    } else {
        json!("")
    };
    let mut fields = Map::new();
    fields.insert("FNAME".to_owned(), json!(pick(&FIRST_NAMES, 0)));
    fields.insert(
        "LNAME".to_owned(),
        json!(if i % 11 == 10 {
            ""
        } else {
            pick(&LAST_NAMES, 3)
        }),
    );
    fields.insert("ADDRESS".to_owned(), address);
    fields.insert(
        "PHONE".to_owned(),
        if i % 2 == 1 {
            json!(format!("+44 23 9000 {:04}", i % 10_000))
        } else {
            json!("")
        },
    );
    fields.insert(
        "USERID".to_owned(),
        if i % 4 == 3 { json!("") } else { json!(i) },
    );
    fields.insert(
        "LTV".to_owned(),
        if i % 5 == 1 {
            json!((i % 1000) as f64 + 0.5)
        } else {
            json!("")
        },
    );
    fields
}

fn synthetic_tags(i: u64) -> Vec<Tag> {
    if i % 3 == 1 {
        vec![Tag {
            id: 4021,
            name: "Customer".to_owned(),
        }]
    } else {
        Vec::new()
    }
}
