//! The parts of Mailchimp's JSON the service reads, typed leniently: Mailchimp sends `""`
//! where a date is missing, numbers or `""` in merge fields, and statuses newer than this
//! code. Anything unexpected is kept as received rather than refused, with two exceptions
//! made for the database's sake: NUL characters are dropped from text (PostgreSQL cannot
//! store them), and a member id that is not a short run of letters and digits is dropped
//! (it goes into an index).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The fields of a member the store keeps, for the `fields` query parameter.
pub const MEMBER_FIELDS: &str = "members.id,members.email_address,members.unique_email_id,\
members.status,members.unsubscribe_reason,members.merge_fields,members.tags,\
members.last_changed,total_items";

pub const LIST_FIELDS: &str = "lists.id,lists.name,lists.stats.member_count,total_items";

#[derive(Debug, Clone, Deserialize)]
pub struct ListsPage {
    #[serde(default)]
    pub lists: Vec<ApiList>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiList {
    pub id: String,
    #[serde(default, deserialize_with = "text")]
    pub name: String,
    #[serde(default)]
    pub stats: ListStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListStats {
    #[serde(default)]
    pub member_count: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MembersPage {
    #[serde(default)]
    pub members: Vec<ApiMember>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiMember {
    #[serde(deserialize_with = "text")]
    pub email_address: String,
    #[serde(default, deserialize_with = "member_id")]
    pub unique_email_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub status: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub unsubscribe_reason: Option<String>,
    #[serde(default)]
    pub merge_fields: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<ApiTag>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub last_changed: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiTag {
    #[serde(deserialize_with = "text")]
    pub name: String,
}

impl ApiMember {
    pub fn text_field(&self, tag: &str) -> String {
        match self.merge_fields.get(tag) {
            Some(Value::String(text)) => without_nul(text.clone()),
            _ => String::new(),
        }
    }
}

/// A webhook as created or updated through the API.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSpec {
    pub url: String,
    pub events: Map<String, Value>,
    pub sources: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiWebhook {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub events: Map<String, Value>,
    #[serde(default)]
    pub sources: Map<String, Value>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub signing_secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhooksPage {
    #[serde(default)]
    pub webhooks: Vec<ApiWebhook>,
}

/// Mailchimp's error body (`application/problem+json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
}

fn empty_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(Value::String(text)) if !text.is_empty() => Some(without_nul(text)),
        _ => None,
    })
}

fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    String::deserialize(deserializer).map(without_nul)
}

fn without_nul(text: String) -> String {
    match text.contains('\0') {
        true => text.replace('\0', ""),
        false => text,
    }
}

/// Mailchimp's member ids are ten hex digits; anything but 1 to 64 letters and digits is
/// taken as no id.
fn member_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let id = empty_as_none(deserializer)?;
    Ok(id.filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())))
}

/// ISO 8601 with an offset, turned into naive UTC; `""`, null or garbage become `None`.
fn lenient_time<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<NaiveDateTime>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|at| at.with_timezone(&Utc).naive_utc()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_page_reads_with_its_awkward_shapes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/api/members_page.json"
        );
        let text = std::fs::read_to_string(path).expect("the fixture page");
        let page: MembersPage = serde_json::from_str(&text).expect("the fixture parses");
        assert!(page.members.len() >= 5);
        let hana = &page.members[0];
        assert_eq!(hana.email_address, "Hana.Kato@Example.org");
        assert_eq!(hana.merge_fields["USERID"], serde_json::json!(100));
        assert_eq!(hana.merge_fields["ADDRESS"], serde_json::json!(""));
        assert_eq!(hana.tags[0].name, "Customer");
        assert!(hana.last_changed.is_some());
        let rory = &page.members[1];
        assert!(rory.merge_fields["ADDRESS"].is_object());
        assert_eq!(
            rory.unsubscribe_reason.as_deref(),
            Some("N/A (Unsubscribed by admin)")
        );
        let statuses: Vec<&str> = page.members.iter().map(|m| m.status.as_str()).collect();
        for status in ["unsubscribed", "cleaned", "transactional", "pending"] {
            assert!(statuses.contains(&status), "{status}");
        }
    }

    #[test]
    fn empty_and_invalid_times_are_none_not_errors() {
        let member: ApiMember = serde_json::from_value(serde_json::json!({
            "email_address": "a@b.c", "status": "brand-new-status", "last_changed": "",
            "unique_email_id": "", "merge_fields": {"FNAME": 3}
        }))
        .unwrap();
        assert_eq!(member.last_changed, None);
        assert_eq!(member.unique_email_id, None);
        assert_eq!(member.status, "brand-new-status");
        assert_eq!(member.text_field("FNAME"), "");
    }

    #[test]
    fn nul_characters_are_dropped_and_implausible_member_ids_are_none() {
        let member: ApiMember = serde_json::from_value(serde_json::json!({
            "email_address": "a\u{0}@b.c", "status": "sub\u{0}scribed",
            "unsubscribe_reason": "\u{0}why", "unique_email_id": "x".repeat(65),
            "merge_fields": {"FNAME": "\u{0}Hana\u{0}", "NOTE": "\u{0}"},
            "tags": [{"name": "VIP\u{0}"}]
        }))
        .unwrap();
        assert_eq!(member.email_address, "a@b.c");
        assert_eq!(member.status, "subscribed");
        assert_eq!(member.unsubscribe_reason.as_deref(), Some("why"));
        assert_eq!(member.text_field("FNAME"), "Hana");
        assert_eq!(member.tags[0].name, "VIP");
        assert_eq!(member.unique_email_id, None);
        let list: ApiList = serde_json::from_value(serde_json::json!({
            "id": "abc", "name": "News\u{0}letter"
        }))
        .unwrap();
        assert_eq!(list.name, "Newsletter");
        for (id, kept) in [("a1b2c3d4e5", true), ("a1-b2", false), ("", false)] {
            let member: ApiMember = serde_json::from_value(serde_json::json!({
                "email_address": "a@b.c", "status": "subscribed", "unique_email_id": id
            }))
            .unwrap();
            assert_eq!(member.unique_email_id.is_some(), kept, "{id:?}");
        }
    }
}
