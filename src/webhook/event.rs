//! Typed Mailchimp audience webhook events.
//!
//! Handling is split in two so the HTTP layer can answer precisely: [`parse`] decides
//! whether a body is a well-formed webhook at all (a [`Rejection`] is the sender's
//! fault), and [`interpret`] decides whether a well-formed event carries what is needed
//! to apply it (an [`EventError`] is worth recording, not retrying).

use std::cmp::Ordering;

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};

use crate::email::EmailIdentity;
use crate::webhook::form::{self, FormError};

/// What a webhook body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Mailchimp probes the URL with an empty body (or one without `type`) before
    /// sending events, and expects a success answer.
    UrlCheck,
    Event(RawEvent),
}

/// A webhook whose envelope is sound but whose `data` has not been interpreted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub event_type: String,
    /// Mailchimp sends it without an offset; it is UTC.
    pub fired_at: NaiveDateTime,
    /// `data[list_id]`; `None` when absent or empty.
    pub list_id: Option<String>,
    pub data: Map<String, Value>,
}

/// Why a body is not a webhook at all; the message is meant as an HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Form(#[from] FormError),
    #[error("field type is not a string")]
    TypeNotString,
    #[error("field fired_at is missing")]
    MissingFiredAt,
    #[error("field fired_at is not a timestamp like 2026-03-02 09:15:01")]
    InvalidFiredAt,
    #[error("field data is not an object")]
    DataNotObject,
}

/// Why a well-formed event cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event has no data[list_id]")]
    MissingListId,
    #[error("data[list_id] is not 1 to 64 ascii letters or digits")]
    InvalidListId,
    #[error("{field} is not 1 to 64 ascii letters or digits")]
    InvalidMemberId { field: &'static str },
    #[error("event has no email address in {field}")]
    MissingEmail { field: &'static str },
    #[error("{field} is not a usable email address")]
    InvalidEmail { field: &'static str },
}

/// An event ready to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Subscribe(MemberData),
    Unsubscribe {
        member: MemberData,
        /// Mailchimp's `action=delete`: the member was deleted, not just unsubscribed.
        delete: bool,
        reason: Option<String>,
        campaign_id: Option<String>,
    },
    Profile(MemberData),
    EmailChanged {
        list_id: String,
        new_id: Option<String>,
        old_email: EmailIdentity,
        old_email_raw: String,
        new_email: EmailIdentity,
        new_email_raw: String,
    },
    Cleaned {
        list_id: String,
        email: EmailIdentity,
        email_raw: String,
        reason: Option<String>,
        campaign_id: Option<String>,
    },
    Campaign {
        list_id: String,
        campaign_id: Option<String>,
        subject: Option<String>,
        status: Option<String>,
    },
    /// A type this service does not handle; the list id is passed on unchecked
    /// because nothing is applied from it.
    Unknown {
        event_type: String,
        list_id: Option<String>,
    },
}

/// The member carried by subscribe, unsubscribe and profile events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberData {
    pub list_id: String,
    /// Mailchimp's `unique_email_id`, stable across address changes.
    pub member_id: Option<String>,
    pub email: EmailIdentity,
    pub email_raw: String,
    pub first_name: String,
    pub last_name: String,
    /// `data[merges]` minus `EMAIL`, with `GROUPINGS` as an array in index order.
    pub merge_fields: Map<String, Value>,
    /// Chosen group names, from `GROUPINGS` or else from `INTERESTS`.
    pub interests: Vec<String>,
}

impl MemberData {
    /// First and last name joined by single spaces; empty when both are.
    pub fn full_name(&self) -> String {
        let joined = format!("{} {}", self.first_name, self.last_name);
        joined.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Decodes a webhook body and checks its envelope (`type`, `fired_at`, `data`).
pub fn parse(body: &[u8]) -> Result<Envelope, Rejection> {
    let mut fields = form::decode(body)?;
    let Some(event_type) = fields.remove("type") else {
        return Ok(Envelope::UrlCheck);
    };
    let Value::String(event_type) = event_type else {
        return Err(Rejection::TypeNotString);
    };
    let fired_at = fired_at(fields.get("fired_at"))?;
    let data = data_object(fields.remove("data"))?;
    let list_id = text(&data, "list_id").map(str::to_owned);
    Ok(Envelope::Event(RawEvent {
        event_type,
        fired_at,
        list_id,
        data,
    }))
}

/// Turns a parsed event into the typed event of its `type`.
pub fn interpret(raw: &RawEvent) -> Result<Event, EventError> {
    match raw.event_type.as_str() {
        "subscribe" => Ok(Event::Subscribe(member(raw)?)),
        "unsubscribe" => unsubscribe(raw),
        "profile" => Ok(Event::Profile(member(raw)?)),
        "upemail" => email_changed(raw),
        "cleaned" => cleaned(raw),
        "campaign" => campaign(raw),
        _ => Ok(Event::Unknown {
            event_type: raw.event_type.clone(),
            list_id: raw.list_id.clone(),
        }),
    }
}

fn data_object(value: Option<Value>) -> Result<Map<String, Value>, Rejection> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(data)) => Ok(data),
        Some(_) => Err(Rejection::DataNotObject),
    }
}

fn fired_at(value: Option<&Value>) -> Result<NaiveDateTime, Rejection> {
    let value = value.ok_or(Rejection::MissingFiredAt)?;
    let text = value.as_str().ok_or(Rejection::InvalidFiredAt)?;
    timestamp(text).ok_or(Rejection::InvalidFiredAt)
}

/// The shape is checked by hand because chrono's format parser tolerates variants
/// (unpadded fields, signed or longer years) that would hide a malformed body.
fn timestamp(text: &str) -> Option<NaiveDateTime> {
    if !has_timestamp_shape(text) {
        return None;
    }
    let number = |from: usize, to: usize| text[from..to].parse::<u32>().ok();
    let year = i32::try_from(number(0, 4)?).ok()?;
    let day = NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?;
    day.and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)
}

/// `YYYY-MM-DD HH:MM:SS`, with `T` also accepted between date and time.
fn has_timestamp_shape(text: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-dd_dd:dd:dd";
    text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE).all(|(c, &s)| match s {
            b'd' => c.is_ascii_digit(),
            b'_' => c == b' ' || c == b'T',
            _ => c == s,
        })
}

fn unsubscribe(raw: &RawEvent) -> Result<Event, EventError> {
    Ok(Event::Unsubscribe {
        member: member(raw)?,
        delete: text(&raw.data, "action") == Some("delete"),
        reason: owned(&raw.data, "reason"),
        campaign_id: owned(&raw.data, "campaign_id"),
    })
}

fn email_changed(raw: &RawEvent) -> Result<Event, EventError> {
    let list_id = list_id(raw)?;
    let (old_email, old_email_raw) = email_at(&raw.data, "old_email", "data[old_email]")?;
    let (new_email, new_email_raw) = email_at(&raw.data, "new_email", "data[new_email]")?;
    Ok(Event::EmailChanged {
        list_id,
        new_id: member_id(raw, "new_id", "data[new_id]")?,
        old_email,
        old_email_raw,
        new_email,
        new_email_raw,
    })
}

fn cleaned(raw: &RawEvent) -> Result<Event, EventError> {
    let list_id = list_id(raw)?;
    let (email, email_raw) = email_at(&raw.data, "email", "data[email]")?;
    Ok(Event::Cleaned {
        list_id,
        email,
        email_raw,
        reason: owned(&raw.data, "reason"),
        campaign_id: owned(&raw.data, "campaign_id"),
    })
}

fn campaign(raw: &RawEvent) -> Result<Event, EventError> {
    Ok(Event::Campaign {
        list_id: list_id(raw)?,
        campaign_id: owned(&raw.data, "id"),
        subject: owned(&raw.data, "subject"),
        status: owned(&raw.data, "status"),
    })
}

fn member(raw: &RawEvent) -> Result<MemberData, EventError> {
    let list_id = list_id(raw)?;
    let no_merges = Map::new();
    let merges = raw
        .data
        .get("merges")
        .and_then(Value::as_object)
        .unwrap_or(&no_merges);
    let (email, email_raw) = member_email(&raw.data, merges)?;
    Ok(MemberData {
        list_id,
        member_id: member_id(raw, "id", "data[id]")?,
        email,
        email_raw,
        first_name: text(merges, "FNAME").unwrap_or_default().to_owned(),
        last_name: text(merges, "LNAME").unwrap_or_default().to_owned(),
        merge_fields: merge_fields(merges),
        interests: interests(merges),
    })
}

/// The list id ends up in database keys and API paths, so its shape is enforced.
fn list_id(raw: &RawEvent) -> Result<String, EventError> {
    let id = raw.list_id.as_deref().ok_or(EventError::MissingListId)?;
    let valid = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid
        .then(|| id.to_owned())
        .ok_or(EventError::InvalidListId)
}

/// A member id is kept in an index and compared with the API's, so its shape is enforced
/// too (Mailchimp's are ten hex digits); absent or empty is `None`.
fn member_id(raw: &RawEvent, key: &str, field: &'static str) -> Result<Option<String>, EventError> {
    let Some(id) = text(&raw.data, key) else {
        return Ok(None);
    };
    let valid = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid
        .then(|| Some(id.to_owned()))
        .ok_or(EventError::InvalidMemberId { field })
}

/// `data[email]` is authoritative; the merge field is only a fallback for senders
/// that leave it out.
fn member_email(
    data: &Map<String, Value>,
    merges: &Map<String, Value>,
) -> Result<(EmailIdentity, String), EventError> {
    match (text(data, "email"), text(merges, "EMAIL")) {
        (Some(raw), _) => checked_email(raw, "data[email]"),
        (None, Some(raw)) => checked_email(raw, "data[merges][EMAIL]"),
        (None, None) => Err(EventError::MissingEmail {
            field: "data[email]",
        }),
    }
}

fn email_at(
    data: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<(EmailIdentity, String), EventError> {
    let raw = text(data, key).ok_or(EventError::MissingEmail { field })?;
    checked_email(raw, field)
}

fn checked_email(raw: &str, field: &'static str) -> Result<(EmailIdentity, String), EventError> {
    let identity = EmailIdentity::parse(raw).ok_or(EventError::InvalidEmail { field })?;
    Ok((identity, raw.to_owned()))
}

/// `EMAIL` is dropped because the address is carried as an identity already.
fn merge_fields(merges: &Map<String, Value>) -> Map<String, Value> {
    let mut fields = merges.clone();
    fields.remove("EMAIL");
    if let Some(groupings) = fields.get_mut("GROUPINGS") {
        *groupings = Value::Array(in_index_order(groupings));
    }
    fields
}

/// Group names from `GROUPINGS`, or from `INTERESTS` when there are no groupings.
fn interests(merges: &Map<String, Value>) -> Vec<String> {
    match merges.get("GROUPINGS") {
        Some(groupings) => in_index_order(groupings)
            .iter()
            .filter_map(|grouping| grouping.get("groups")?.as_str())
            .flat_map(split_groups)
            .collect(),
        None => text(merges, "INTERESTS")
            .map(split_groups)
            .unwrap_or_default(),
    }
}

/// The values of an index-keyed object as a list; a scalar stands for no entries.
fn in_index_order(value: &Value) -> Vec<Value> {
    let Some(entries) = value.as_object() else {
        return Vec::new();
    };
    let mut entries: Vec<_> = entries.iter().collect();
    entries.sort_by(|(a, _), (b, _)| index_order(a, b));
    entries
        .into_iter()
        .map(|(_, value)| value.clone())
        .collect()
}

/// Numeric keys first, by value, then the rest by key. Digits are compared as strings
/// (shorter is smaller once leading zeros go) so indexes of any length order correctly.
fn index_order(a: &str, b: &str) -> Ordering {
    let by_value = match (digits(a), digits(b)) {
        (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    by_value.then_with(|| a.cmp(b))
}

fn digits(key: &str) -> Option<&str> {
    let numeric = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit());
    numeric.then(|| key.trim_start_matches('0'))
}

/// Mailchimp joins group names with commas and escapes commas inside a name as `\,`.
fn split_groups(list: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next_if_eq(&',').is_some() => current.push(','),
            ',' => names.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    names.push(current);
    names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A string field, with an empty value treated as absent: Mailchimp sends empty
/// values for fields it has nothing to say about.
fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

fn owned(map: &Map<String, Value>, key: &str) -> Option<String> {
    text(map, key).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email;
    use serde_json::json;

    const ENVELOPE: &str =
        "type={type}&fired_at=2026-03-02+09%3A15%3A01&data%5Blist_id%5D=4f1c9a7e20";

    /// A body of the given type whose extra pairs are written as `key=value` lines,
    /// already form-encoded, so tests read like the wire format.
    fn body(event_type: &str, pairs: &[&str]) -> Vec<u8> {
        let mut body = ENVELOPE.replace("{type}", event_type);
        for pair in pairs {
            body.push('&');
            body.push_str(pair);
        }
        body.into_bytes()
    }

    fn raw(body: &[u8]) -> RawEvent {
        match parse(body).unwrap() {
            Envelope::Event(raw) => raw,
            Envelope::UrlCheck => panic!("expected an event"),
        }
    }

    fn event(event_type: &str, pairs: &[&str]) -> Event {
        interpret(&raw(&body(event_type, pairs))).unwrap()
    }

    fn identity(address: &str) -> EmailIdentity {
        EmailIdentity::parse(address).unwrap()
    }

    #[test]
    fn a_member_id_that_is_no_mailchimp_id_fails_the_event_and_names_the_field() {
        let email = "data%5Bemail%5D=jo%40example.com";
        let long = format!("data%5Bid%5D={}", "a".repeat(65));
        let spaced = "data%5Bid%5D=a1+b2".to_owned();
        for id in [long, spaced] {
            let error = interpret(&raw(&body("subscribe", &[&id, email]))).unwrap_err();
            let field = "data[id]";
            assert_eq!(error, EventError::InvalidMemberId { field }, "{id}");
        }
        let new_id = format!("data%5Bnew_id%5D={}", "b".repeat(20_000));
        let change = [
            new_id.as_str(),
            "data%5Bold_email%5D=a%40example.com",
            "data%5Bnew_email%5D=b%40example.com",
        ];
        let error = interpret(&raw(&body("upemail", &change))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "data[new_id] is not 1 to 64 ascii letters or digits"
        );

        let longest = format!("data%5Bid%5D={}", "c".repeat(64));
        let Event::Subscribe(member) = event("subscribe", &[&longest, email]) else {
            panic!("a subscribe");
        };
        assert_eq!(member.member_id, Some("c".repeat(64)));
        let Event::Subscribe(member) = event("subscribe", &["data%5Bid%5D=", email]) else {
            panic!("a subscribe");
        };
        assert_eq!(member.member_id, None, "empty is absent");
    }

    const SUBSCRIBER: &[&str] = &[
        "data%5Bid%5D=a1b2c3d4e5",
        "data%5Bemail%5D=jo%2Bnews%40example.com",
        "data%5Bemail_type%5D=html",
        "data%5Bmerges%5D%5BEMAIL%5D=jo%2Bnews%40example.com",
        "data%5Bmerges%5D%5BFNAME%5D=Jo",
        "data%5Bmerges%5D%5BLNAME%5D=Bloggs",
        "data%5Bmerges%5D%5BADDRESS%5D=",
        "data%5Bmerges%5D%5BADDRESS%5D%5Baddr1%5D=12+Harbour+Row",
        "data%5Bmerges%5D%5BADDRESS%5D%5Baddr2%5D=",
        "data%5Bmerges%5D%5BADDRESS%5D%5Bcity%5D=Portsmouth",
        "data%5Bmerges%5D%5BADDRESS%5D%5Bstate%5D=",
        "data%5Bmerges%5D%5BADDRESS%5D%5Bzip%5D=PO1+2AB",
        "data%5Bmerges%5D%5BADDRESS%5D%5Bcountry%5D=GB",
        "data%5Bmerges%5D%5BPHONE%5D=",
        "data%5Bmerges%5D%5BPHONE%5D=%2B44+23+9000+0000",
        "data%5Bmerges%5D%5BBIRTHDAY%5D=03%2F12",
        "data%5Bmerges%5D%5BINTERESTS%5D=Sailing%2C+Cooking%5C%2C+Baking%2C+Chess",
        "data[merges][GROUPINGS][10][name]=Late",
        "data[merges][GROUPINGS][10][groups]=Tenth",
        "data[merges][GROUPINGS][0][id]=101",
        "data[merges][GROUPINGS][0][name]=Hobbies",
        "data[merges][GROUPINGS][0][groups]=Sailing%2C+Cooking%5C%2C+Baking",
        "data[merges][GROUPINGS][2][id]=102",
        "data[merges][GROUPINGS][2][name]=Region",
        "data[merges][GROUPINGS][2][groups]=South",
        "data[merges][GROUPINGS][x][groups]=Extra",
    ];

    fn subscribed() -> MemberData {
        match event("subscribe", SUBSCRIBER) {
            Event::Subscribe(member) => member,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subscribe_carries_the_member() {
        let member = subscribed();
        assert_eq!(member.list_id, "4f1c9a7e20");
        assert_eq!(member.member_id.as_deref(), Some("a1b2c3d4e5"));
        assert_eq!(member.email, identity("jo+news@example.com"));
        assert_eq!(member.email_raw, "jo+news@example.com");
        assert_eq!(member.full_name(), "Jo Bloggs");
    }

    #[test]
    fn subscribe_keeps_merge_fields() {
        let fields = Value::Object(subscribed().merge_fields);
        let address = json!({
            "addr1": "12 Harbour Row", "addr2": "", "city": "Portsmouth",
            "state": "", "zip": "PO1 2AB", "country": "GB"
        });
        assert_eq!(fields["ADDRESS"], address);
        assert_eq!(fields["PHONE"], "+44 23 9000 0000");
        assert_eq!(fields["BIRTHDAY"], "03/12");
        assert_eq!(fields["INTERESTS"], "Sailing, Cooking\\, Baking, Chess");
        assert!(fields.get("EMAIL").is_none());
    }

    #[test]
    fn groupings_become_an_ordered_array() {
        let fields = subscribed().merge_fields;
        let names: Vec<_> = fields["GROUPINGS"]
            .as_array()
            .unwrap()
            .iter()
            .map(|grouping| grouping.get("name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, [Some("Hobbies"), Some("Region"), Some("Late"), None]);
    }

    #[test]
    fn groupings_give_the_interests() {
        let expected = ["Sailing", "Cooking, Baking", "South", "Tenth", "Extra"];
        assert_eq!(subscribed().interests, expected);
    }

    #[test]
    fn interests_fall_back_to_the_merge_field() {
        let pairs = [
            "data[email]=a@b.c",
            "data[merges][INTERESTS]=Sailing%2C+Cooking%5C%2C+Baking%2C+Chess%2C+",
        ];
        let Event::Profile(member) = event("profile", &pairs) else {
            panic!("expected a profile event");
        };
        assert_eq!(member.interests, ["Sailing", "Cooking, Baking", "Chess"]);
    }

    #[test]
    fn unicode_names_are_decoded() {
        let pairs = [
            "data[email]=zoe@example.org",
            "data[merges][FNAME]=Zo%C3%AB",
            "data[merges][LNAME]=%C3%85ngstr%C3%B6m",
        ];
        let Event::Profile(member) = event("profile", &pairs) else {
            panic!("expected a profile event");
        };
        assert_eq!(member.first_name, "Zoë");
        assert_eq!(member.full_name(), "Zoë Ångström");
    }

    #[test]
    fn full_name_collapses_blanks() {
        let mut member = subscribed();
        member.first_name = "  Jo ".into();
        member.last_name = String::new();
        assert_eq!(member.full_name(), "Jo");
        member.first_name = String::new();
        assert_eq!(member.full_name(), "");
    }

    #[test]
    fn email_falls_back_to_the_merge_field() {
        let Event::Profile(member) = event("profile", &["data[merges][EMAIL]=A@B.c"]) else {
            panic!("expected a profile event");
        };
        assert_eq!(member.email.normalized, "a@b.c");
        assert_eq!(member.email_raw, "A@B.c");
    }

    fn unsubscribe_delete(action: Option<&str>) -> bool {
        let action = action.map(|action| format!("data[action]={action}"));
        let mut pairs = vec!["data[email]=a@b.c", "data[reason]=manual"];
        pairs.extend(action.as_deref());
        match event("unsubscribe", &pairs) {
            Event::Unsubscribe { delete, reason, .. } => {
                assert_eq!(reason.as_deref(), Some("manual"));
                delete
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unsubscribe_action_decides_delete() {
        assert!(unsubscribe_delete(Some("delete")));
        assert!(!unsubscribe_delete(Some("unsub")));
        assert!(!unsubscribe_delete(Some("archive")));
        assert!(!unsubscribe_delete(None));
    }

    #[test]
    fn unsubscribe_keeps_the_campaign() {
        let pairs = ["data[email]=a@b.c", "data[campaign_id]=cb398d21d2"];
        let Event::Unsubscribe { campaign_id, .. } = event("unsubscribe", &pairs) else {
            panic!("expected an unsubscribe event");
        };
        assert_eq!(campaign_id.as_deref(), Some("cb398d21d2"));
    }

    #[test]
    fn upemail_needs_only_the_addresses() {
        let pairs = [
            "data[new_id]=51aa6610c9",
            "data[new_email]=New%40Example.com",
            "data[old_email]=old%40example.com",
        ];
        let expected = Event::EmailChanged {
            list_id: "4f1c9a7e20".into(),
            new_id: Some("51aa6610c9".into()),
            old_email: identity("old@example.com"),
            old_email_raw: "old@example.com".into(),
            new_email: identity("new@example.com"),
            new_email_raw: "New@Example.com".into(),
        };
        assert_eq!(event("upemail", &pairs), expected);
    }

    #[test]
    fn upemail_without_new_email_is_an_error() {
        let raw = raw(&body("upemail", &["data[old_email]=old%40example.com"]));
        assert_eq!(
            interpret(&raw),
            Err(EventError::MissingEmail {
                field: "data[new_email]"
            })
        );
    }

    #[test]
    fn cleaned_needs_no_member_id() {
        let pairs = [
            "data[campaign_id]=4fjk2ma9xd",
            "data[reason]=hard",
            "data[email]=gone%40example.com",
        ];
        let expected = Event::Cleaned {
            list_id: "4f1c9a7e20".into(),
            email: identity("gone@example.com"),
            email_raw: "gone@example.com".into(),
            reason: Some("hard".into()),
            campaign_id: Some("4fjk2ma9xd".into()),
        };
        assert_eq!(event("cleaned", &pairs), expected);
    }

    #[test]
    fn campaign_reports_its_status() {
        let pairs = [
            "data[id]=5aa2102003",
            "data[subject]=Spring+News",
            "data[status]=sent",
            "data[reason]=",
        ];
        let expected = Event::Campaign {
            list_id: "4f1c9a7e20".into(),
            campaign_id: Some("5aa2102003".into()),
            subject: Some("Spring News".into()),
            status: Some("sent".into()),
        };
        assert_eq!(event("campaign", &pairs), expected);
    }

    #[test]
    fn unknown_type_is_passed_through() {
        let expected = Event::Unknown {
            event_type: "sms_subscribe".into(),
            list_id: Some("4f1c9a7e20".into()),
        };
        assert_eq!(event("sms_subscribe", &[]), expected);
    }

    #[test]
    fn missing_email_is_an_event_error() {
        let raw = raw(&body("subscribe", &["data[merges][FNAME]=Jo"]));
        let error = interpret(&raw).unwrap_err();
        assert_eq!(
            error.to_string(),
            "event has no email address in data[email]"
        );
    }

    #[test]
    fn invalid_email_is_an_event_error() {
        let raw = raw(&body("subscribe", &["data[email]=not+an+address"]));
        assert_eq!(
            interpret(&raw),
            Err(EventError::InvalidEmail {
                field: "data[email]"
            })
        );
    }

    #[test]
    fn list_id_is_required_and_checked() {
        let missing = raw(b"type=subscribe&fired_at=2026-03-02+09:15:01&data[email]=a@b.c");
        assert_eq!(interpret(&missing), Err(EventError::MissingListId));
        for bad in ["4f1c-9a7e", "x".repeat(65).as_str(), "%C3%A9"] {
            let text = format!("type=cleaned&fired_at=2026-03-02T09:15:01&data[list_id]={bad}");
            let raw = raw(text.as_bytes());
            assert_eq!(interpret(&raw), Err(EventError::InvalidListId), "{bad}");
        }
    }

    #[test]
    fn fired_at_is_naive_utc() {
        let expected = NaiveDate::from_ymd_opt(2026, 3, 2)
            .and_then(|day| day.and_hms_opt(9, 15, 1))
            .unwrap();
        assert_eq!(raw(&body("profile", &[])).fired_at, expected);
        assert_eq!(
            raw(b"type=x&fired_at=2026-03-02T09:15:01").fired_at,
            expected
        );
    }

    #[test]
    fn malformed_fired_at_is_rejected() {
        for value in [
            "yesterday",
            "2026-3-2+9:15:1",
            "2026-02-30+09:15:01",
            "%2B2026-03-02",
        ] {
            let text = format!("type=subscribe&fired_at={value}");
            assert_eq!(
                parse(text.as_bytes()),
                Err(Rejection::InvalidFiredAt),
                "{value}"
            );
        }
        assert_eq!(
            parse(b"type=subscribe&fired_at[a]=1"),
            Err(Rejection::InvalidFiredAt)
        );
        assert_eq!(parse(b"type=subscribe"), Err(Rejection::MissingFiredAt));
    }

    #[test]
    fn envelope_shape_is_checked() {
        let at = "fired_at=2026-03-02+09:15:01";
        let type_object = format!("type[a]=subscribe&{at}");
        assert_eq!(parse(type_object.as_bytes()), Err(Rejection::TypeNotString));
        let data_scalar = format!("type=subscribe&{at}&data=x");
        assert_eq!(parse(data_scalar.as_bytes()), Err(Rejection::DataNotObject));
    }

    #[test]
    fn form_errors_are_rejections() {
        let error = parse(b"type=subscribe&data%5Blist_id%5D=%FF%FE").unwrap_err();
        assert_eq!(
            error.to_string(),
            "body is not valid UTF-8 in field data[list_id]"
        );
    }

    #[test]
    fn url_check_has_no_type() {
        assert_eq!(parse(b""), Ok(Envelope::UrlCheck));
        assert_eq!(parse(b"fired_at=garbage&data=x"), Ok(Envelope::UrlCheck));
    }

    #[test]
    fn hash_follows_the_email_module() {
        let member = subscribed();
        assert_eq!(
            member.email.subscriber_hash,
            email::subscriber_hash("jo+news@example.com")
        );
    }

    /// Marsaglia's xorshift64: deterministic, dependency-free noise for fuzz-like tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    /// Fragments that are likely to form interesting keys and values when strung together.
    const SOUP: &str = "data [ ] %5B %5D = & &data[merges][ &data[merges][GROUPINGS][ merges \
                        GROUPINGS INTERESTS groups 0 99999999999999999999 type subscribe \
                        unsubscribe profile upemail cleaned campaign sms_subscribe fired_at \
                        2026-03-02+09%3A15%3A01 email EMAIL new_email old_email list_id \
                        a%40b.c abc %FF % + %2C %5C \\ , action delete %C3%A9 < > \" ( ) @";

    const TYPES: [&str; 7] = [
        "subscribe",
        "unsubscribe",
        "profile",
        "upemail",
        "cleaned",
        "campaign",
        "sms_subscribe",
    ];

    fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
        let len = rng.below(64);
        (0..len).map(|_| rng.next() as u8).collect()
    }

    /// A plausible envelope most of the time, so the soup reaches `interpret` too.
    fn envelope(rng: &mut XorShift) -> String {
        if rng.below(4) == 0 {
            return String::new();
        }
        let event_type = TYPES[rng.below(TYPES.len())];
        format!(
            "type={event_type}&fired_at=2026-03-02+09:15:01&data[list_id]=abc\
             &data[email]=a%40b.c&data[old_email]=a%40b.c&data[new_email]=c%40d.e&"
        )
    }

    fn bracket_soup(rng: &mut XorShift) -> Vec<u8> {
        let fragments: Vec<&str> = SOUP.split_whitespace().collect();
        let mut body = envelope(rng);
        for _ in 0..rng.below(48) {
            body.push_str(fragments[rng.below(fragments.len())]);
        }
        body.into_bytes()
    }

    fn exercise(body: &[u8]) {
        match parse(body) {
            Ok(Envelope::Event(raw)) => {
                if let Err(error) = interpret(&raw) {
                    assert!(!error.to_string().contains('\n'));
                }
            }
            Ok(Envelope::UrlCheck) => {}
            Err(rejection) => assert!(!rejection.to_string().contains('\n')),
        }
    }

    #[test]
    fn random_input_never_panics() {
        for seed in [1, 0x9E37_79B9_7F4A_7C15, 0xDEAD_BEEF] {
            let mut rng = XorShift(seed);
            for _ in 0..3_000 {
                exercise(&random_bytes(&mut rng));
                exercise(&bracket_soup(&mut rng));
            }
        }
    }
}
