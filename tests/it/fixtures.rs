//! Every case of the webhook fixtures (`tests/fixtures/webhooks/cases.json`), run as
//! their README says: a fresh store with one account per case, the events posted in order
//! with their answers and stored outcomes checked, then the expected state read back over
//! gRPC. One test per case; a guard test keeps the list below equal to the file's cases.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use mailchimp_sync::grpc::pb;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::helpers::TestApp;

#[derive(Debug, Deserialize)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    events: Vec<FixtureEvent>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureEvent {
    body: String,
    status: u16,
    outcome: Option<String>,
}

/// What a case must lead to. Unknown keys fail loudly: a check the suite does not make
/// must not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    contacts: Vec<Map<String, Value>>,
    #[serde(default)]
    absent: Vec<String>,
    contact_count: Option<usize>,
    #[serde(default)]
    changes_for: BTreeMap<String, usize>,
    #[serde(default)]
    blacklisted: Vec<String>,
}

static CASES: LazyLock<Vec<Case>> = LazyLock::new(load_cases);

fn cases_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks/cases.json")
}

fn load_cases() -> Vec<Case> {
    let path = cases_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the webhook fixtures are missing at {}: {e}",
            path.display()
        )
    });
    let file: CaseFile = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a valid case file: {e}", path.display()));
    file.cases
}

/// The body of the case's event at `index`, as Mailchimp would send it.
pub fn event_body(case: &str, index: usize) -> &'static str {
    &case_named(case).events[index].body
}

/// The normalized address of the first contact the case expects.
pub fn expected_email(case: &str) -> &'static str {
    let contact = case_named(case)
        .expect
        .contacts
        .first()
        .expect("the case expects a contact");
    contact["email_normalized"].as_str().expect("an address")
}

fn case_named(name: &str) -> &'static Case {
    let found = CASES.iter().find(|case| case.name == name);
    found.unwrap_or_else(|| panic!("no case named {name} in {}", cases_path().display()))
}

macro_rules! fixture_cases {
    ($($name:ident),* $(,)?) => {
        const LISTED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[tokio::test]
            async fn $name() {
                run_case(case_named(stringify!($name))).await;
            }
        )*
    };
}

fixture_cases! {
    subscribe_creates_contact,
    subscribe_with_address_groupings_interests,
    plus_addressed_email,
    unicode_names,
    unsubscribe_opts_out_one_list_only,
    unsubscribe_without_action,
    delete_removes_list_then_contact,
    delete_from_last_list_removes_contact,
    profile_updates_name,
    upemail_moves_contact,
    cleaned_blacklists_and_opts_out,
    case_insensitive_match,
    duplicate_delivery_is_harmless,
    out_of_order_older_event_is_stale,
    campaign_is_recorded_only,
    unknown_type_is_ignored,
    empty_post_is_the_url_check,
    missing_email_is_recorded_not_applied,
    garbage_body_is_rejected,
}

#[test]
fn every_fixture_case_has_a_test() {
    let mut in_file: Vec<&str> = CASES.iter().map(|case| case.name.as_str()).collect();
    let mut listed = LISTED.to_vec();
    in_file.sort_unstable();
    listed.sort_unstable();
    assert_eq!(
        listed, in_file,
        "the tests listed here and the cases in the file differ"
    );
}

async fn run_case(case: &Case) {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    for (index, event) in case.events.iter().enumerate() {
        let (status, text) = app.post_webhook(&url, event.body.clone()).await;
        let what = format!("{}: event {index} answered {status} {text:?}", case.name);
        assert_eq!(status, event.status, "{what}");
        if status == 400 {
            assert_one_line_reason(&text, &what);
        }
        if let Some(outcome) = &event.outcome {
            let stored = app.latest_event(account_id).await;
            assert_eq!(&stored.outcome, outcome, "{what}; stored as {stored:?}");
        }
    }
    check_expect(&app, &case.name, &case.expect).await;
    app.shutdown().await;
}

fn assert_one_line_reason(text: &str, what: &str) {
    let reason = text.trim_end();
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "{what}: not a one-line reason"
    );
}

async fn check_expect(app: &TestApp, case: &str, expect: &Expect) {
    for expected in &expect.contacts {
        check_contact(app, case, expected).await;
    }
    for email in &expect.absent {
        let status = app.get_contact(email).await.map(|c| c.email_normalized);
        let code = status.map_err(|status| status.code());
        assert_eq!(
            code,
            Err(tonic::Code::NotFound),
            "{case}: {email} must be absent"
        );
    }
    if let Some(count) = expect.contact_count {
        let contacts = app.all_contacts().await;
        assert_eq!(
            contacts.len(),
            count,
            "{case}: contact count; contacts: {contacts:?}"
        );
    }
    for (email, count) in &expect.changes_for {
        assert_eq!(
            app.changes_for(email).await,
            *count,
            "{case}: changes for {email}"
        );
    }
    for email in &expect.blacklisted {
        let entry = app.blacklist_entry(email).await;
        let active = entry
            .map(|entry| entry.active)
            .map_err(|status| status.code());
        assert_eq!(active, Ok(true), "{case}: {email} must be blacklisted");
    }
}

/// Every field the fixture gives must match; `subscriptions` must hold exactly the lists
/// given; `merge_fields` is a subset match.
async fn check_contact(app: &TestApp, case: &str, expected: &Map<String, Value>) {
    let email = expected["email_normalized"]
        .as_str()
        .expect("contacts name email_normalized");
    let contact = app.get_contact(email).await;
    let contact = contact.unwrap_or_else(|status| panic!("{case}: GetContact({email}): {status}"));
    let actual = contact_json(&contact);
    for (field, want) in expected {
        let got = actual.get(field);
        let got = got.unwrap_or_else(|| panic!("{case}: the suite cannot check field {field}"));
        let context = format!("{case}: {email}.{field}; contact: {actual:#}");
        match field.as_str() {
            "subscriptions" => check_subscriptions(want, got, &context),
            "merge_fields" => assert!(is_subset(want, got), "{context}; expected {want}"),
            _ => assert_eq!(got, want, "{context}"),
        }
    }
}

fn check_subscriptions(want: &Value, got: &Value, context: &str) {
    let (want, got) = (
        want.as_array().expect("a list"),
        got.as_array().expect("a list"),
    );
    let list_ids = |subs: &[Value]| {
        let mut ids: Vec<String> = subs
            .iter()
            .map(|s| s["mailchimp_list_id"].to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        list_ids(got),
        list_ids(want),
        "{context}: not the same audiences"
    );
    for expected in want {
        let id = &expected["mailchimp_list_id"];
        let actual = got
            .iter()
            .find(|sub| &sub["mailchimp_list_id"] == id)
            .expect("matched");
        for (field, value) in expected.as_object().expect("an object") {
            let held = actual.get(field);
            let held =
                held.unwrap_or_else(|| panic!("the suite cannot check subscription {field}"));
            assert_eq!(held, value, "{context}: subscription {id} field {field}");
        }
    }
}

/// Objects match when every key wanted is there and matches; anything else must be equal.
fn is_subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(want), Value::Object(got)) => want
            .iter()
            .all(|(key, value)| got.get(key).is_some_and(|held| is_subset(value, held))),
        _ => want == got,
    }
}

/// The contact as the fixtures spell it.
fn contact_json(contact: &pb::Contact) -> Value {
    let subscriptions: Vec<Value> = contact
        .subscriptions
        .iter()
        .map(subscription_json)
        .collect();
    json!({
        "id": contact.id,
        "name": contact.name,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "email": contact.email,
        "email_normalized": contact.email_normalized,
        "is_blacklisted": contact.is_blacklisted,
        "merge_fields": struct_json(contact.merge_fields.as_ref()),
        "interests": contact.interests,
        "tags": contact.tags,
        "subscriptions": subscriptions,
    })
}

fn subscription_json(sub: &pb::Subscription) -> Value {
    json!({
        "audience_id": sub.audience_id,
        "mailchimp_list_id": sub.mailchimp_list_id,
        "status": sub.status,
        "opt_out": sub.opt_out,
        "opt_out_reason": sub.opt_out_reason,
        "unique_email_id": sub.unique_email_id,
        "subscriber_hash": sub.subscriber_hash,
    })
}

fn struct_json(fields: Option<&prost_types::Struct>) -> Value {
    let fields = fields.map(|s| s.fields.iter().map(|(k, v)| (k.clone(), value_json(v))));
    Value::Object(fields.into_iter().flatten().collect())
}

fn value_json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(number)) => json!(number),
        Some(Kind::StringValue(text)) => json!(text),
        Some(Kind::BoolValue(flag)) => json!(flag),
        Some(Kind::StructValue(object)) => struct_json(Some(object)),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(value_json).collect()),
    }
}

/// The fixtures are kept in the repository so that a clone alone runs the suite; where the
/// project's shared folder sits beside the repository, the copies must still match it.
#[test]
fn the_fixture_copies_match_the_shared_originals() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/fixtures");
    if !shared.is_dir() {
        eprintln!("no shared folder beside the repository; nothing to compare");
        return;
    }
    for file in ["webhooks/cases.json", "api/members_page.json"] {
        let original = std::fs::read(shared.join(file)).expect("the shared original");
        let copy = std::fs::read(root.join("tests/fixtures").join(file)).expect("the copy");
        assert!(
            original == copy,
            "tests/fixtures/{file} differs from the shared original"
        );
    }
}
