//! The fake through its front door: reqwest against it on 127.0.0.1:0, and a small axum
//! receiver standing in for a webhook endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::{FakeMailchimp, NewMember, Source, signature_header, synthetic_last_changed};

const KEY: &str = "test-key-us1";
const LIST: &str = "4f1c9a7e20";

async fn serve(fake: &FakeMailchimp) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    fake.serve(listener).await.expect("serve");
}

async fn fake_with(generated: u64) -> FakeMailchimp {
    let fake = FakeMailchimp::new(KEY);
    fake.add_list(LIST, "Newsletter");
    fake.add_synthetic_members(LIST, generated);
    serve(&fake).await;
    fake
}

async fn call(fake: &FakeMailchimp, path_and_query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/3.0/{path_and_query}", fake.base_url()))
        .basic_auth("anyone", Some(KEY))
        .send()
        .await
        .expect("the fake answers")
}

async fn json_of(fake: &FakeMailchimp, path_and_query: &str) -> Value {
    let response = call(fake, path_and_query).await;
    assert_eq!(response.status(), StatusCode::OK, "{path_and_query}");
    response.json().await.expect("JSON")
}

fn emails(page: &Value) -> Vec<String> {
    let members = page["members"].as_array().expect("members");
    members
        .iter()
        .map(|m| m["email_address"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn count_defaults_to_ten_and_is_capped_at_a_thousand() {
    let fake = fake_with(2500).await;
    let page = json_of(&fake, &format!("lists/{LIST}/members")).await;
    assert_eq!(emails(&page).len(), 10);
    assert_eq!(page["total_items"], 2500);
    assert_eq!(page["list_id"], LIST);
    let page = json_of(&fake, &format!("lists/{LIST}/members?count=5000")).await;
    assert_eq!(emails(&page).len(), 1000);
    let last = json_of(
        &fake,
        &format!("lists/{LIST}/members?count=1000&offset=2000"),
    )
    .await;
    assert_eq!(emails(&last).len(), 500);
    assert_eq!(emails(&last)[0], "member2000@example.com");
}

#[tokio::test]
async fn since_last_changed_is_exclusive_in_either_utc_spelling() {
    let fake = fake_with(40).await;
    // Members 4 to 7 share one stamp; "since" that stamp starts after them.
    let stamp = synthetic_last_changed(4);
    for spelling in [
        stamp.format("%Y-%m-%dT%H:%M:%SZ"),
        stamp.format("%Y-%m-%dT%H:%M:%S%%2B00:00"),
    ] {
        let query = format!("lists/{LIST}/members?since_last_changed={spelling}&count=100");
        let page = json_of(&fake, &query).await;
        assert_eq!(emails(&page)[0], "member8@example.com");
        assert_eq!(page["total_items"], 32);
    }
    let before = stamp.format("%Y-%m-%dT%H:%M:%SZ");
    let page = json_of(
        &fake,
        &format!("lists/{LIST}/members?before_last_changed={before}"),
    )
    .await;
    assert_eq!(page["total_items"], 8, "before_last_changed is inclusive");
}

#[tokio::test]
async fn an_unencoded_plus_or_a_bad_status_is_a_400_problem() {
    let fake = fake_with(10).await;
    for query in [
        "since_last_changed=2026-03-02T09:15:01+00:00",
        "status=subscribd",
    ] {
        let response = call(&fake, &format!("lists/{LIST}/members?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let problem: Value = response.json().await.expect("problem+json");
        assert_eq!(problem["status"], 400);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

#[tokio::test]
async fn archived_members_appear_only_when_asked_for_and_deleted_ones_never() {
    let fake = fake_with(20).await;
    fake.archive(LIST, "member3@example.com", Source::Admin);
    fake.delete_permanently(LIST, "member5@example.com", Source::Admin);
    let plain = json_of(&fake, &format!("lists/{LIST}/members?count=100")).await;
    assert_eq!(plain["total_items"], 18);
    assert!(
        !emails(&plain)
            .iter()
            .any(|e| e == "member3@example.com" || e == "member5@example.com")
    );
    let archived = json_of(&fake, &format!("lists/{LIST}/members?status=archived")).await;
    assert_eq!(emails(&archived), ["member3@example.com"]);
    assert_eq!(archived["members"][0]["status"], "archived");
    let gone = call(
        &fake,
        &format!(
            "lists/{LIST}/members/{}",
            super::subscriber_hash("member5@example.com")
        ),
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_is_announced_and_may_be_undone_while_archiving_is_silent() {
    let fake = fake_with(0).await;
    for email in [
        "kept@example.com",
        "gone@example.com",
        "shelved@example.com",
    ] {
        fake.add_member(LIST, NewMember::new(email), Source::Api);
    }
    fake.clean(LIST, "kept@example.com", "abuse", Source::Admin);
    fake.delete_member(LIST, "gone@example.com", Source::Admin);
    fake.archive(LIST, "shelved@example.com", Source::Admin);

    let events = fake.webhook_events().split_off(3);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        ["cleaned", "unsubscribe"],
        "archiving announces nothing"
    );
    assert!(
        events[0].body.contains("data%5Breason%5D=abuse"),
        "{}",
        events[0].body
    );
    assert!(
        events[1].body.contains("data%5Baction%5D=delete"),
        "{}",
        events[1].body
    );
    assert!(fake.member(LIST, "gone@example.com").is_none());
    let statuses: Vec<(String, String)> = fake
        .members(LIST)
        .into_iter()
        .map(|m| (m.email_address, m.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("kept@example.com".to_owned(), "cleaned".to_owned()),
            ("shelved@example.com".to_owned(), "archived".to_owned())
        ]
    );
    fake.add_member(LIST, NewMember::new("gone@example.com"), Source::Admin);
    assert_eq!(fake.webhook_event_count(), 6, "the address came back");
}

#[tokio::test]
async fn fields_narrow_members_and_lists() {
    let fake = fake_with(3).await;
    let page = json_of(
        &fake,
        &format!("lists/{LIST}/members?fields=members.email_address,total_items"),
    )
    .await;
    assert_eq!(
        page,
        json!({
            "members": [
                {"email_address": "member0@example.com"},
                {"email_address": "member1@example.com"},
                {"email_address": "member2@example.com"},
            ],
            "total_items": 3,
        })
    );
    let lists = json_of(
        &fake,
        "lists?fields=lists.id,lists.name,lists.stats.member_count,total_items",
    )
    .await;
    assert_eq!(
        lists,
        json!({
            "lists": [{"id": LIST, "name": "Newsletter", "stats": {"member_count": 2}}],
            "total_items": 1,
        })
    );
}

#[tokio::test]
async fn members_look_like_mailchimp_members() {
    let fake = fake_with(0).await;
    fake.set_clock(Utc.with_ymd_and_hms(2026, 3, 2, 9, 15, 1).unwrap());
    let new = NewMember::new("Hana.Kato@Example.org")
        .name("Hana", "Kato")
        .merge_field("USERID", json!(100));
    let added = fake.add_member(LIST, new, Source::Admin);
    fake.set_status(LIST, "hana.kato@example.org", "blocklisted", Source::Admin);
    let page = json_of(&fake, &format!("lists/{LIST}/members")).await;
    let member = &page["members"][0];
    assert_eq!(
        member["id"], "4093a134c39dc1903b674ba8a65365a3",
        "MD5 of the lower-cased address"
    );
    assert_eq!(member["email_address"], "Hana.Kato@Example.org");
    assert_eq!(member["unique_email_id"], added.unique_email_id.as_str());
    assert_eq!(member["unique_email_id"].as_str().map(str::len), Some(10));
    assert_eq!(member["status"], "blocklisted");
    assert_eq!(member["full_name"], "Hana Kato");
    assert_eq!(
        member["merge_fields"],
        json!({"FNAME": "Hana", "LNAME": "Kato", "ADDRESS": "", "PHONE": "", "USERID": 100})
    );
    assert_eq!(member["timestamp_signup"], "");
    assert_eq!(member["last_changed"], "2026-03-02T09:15:01+00:00");
}

#[tokio::test]
async fn sorting_by_last_changed_puts_a_changed_member_last() {
    let fake = fake_with(30).await;
    fake.set_clock(Utc.with_ymd_and_hms(2026, 3, 2, 9, 15, 1).unwrap());
    fake.update_merge_fields(
        LIST,
        "member2@example.com",
        json!({"FNAME": "Ana"}),
        Source::User,
    );
    let asc = json_of(
        &fake,
        &format!("lists/{LIST}/members?sort_field=last_changed&sort_dir=ASC&count=100"),
    )
    .await;
    assert_eq!(
        emails(&asc).last().map(String::as_str),
        Some("member2@example.com")
    );
    let desc = json_of(
        &fake,
        &format!("lists/{LIST}/members?sort_field=last_changed&sort_dir=DESC&count=2"),
    )
    .await;
    assert_eq!(
        emails(&desc),
        ["member2@example.com", "member29@example.com"]
    );
    let plain = json_of(&fake, &format!("lists/{LIST}/members?count=3")).await;
    assert_eq!(
        emails(&plain)[2],
        "member2@example.com",
        "the default order keeps its place"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_a_401_problem() {
    let fake = fake_with(1).await;
    let url = format!("{}/3.0/lists", fake.base_url());
    let http = reqwest::Client::new();
    let wrong = http
        .get(&url)
        .basic_auth("x", Some("nope"))
        .send()
        .await
        .expect("answer");
    let missing = http.get(&url).send().await.expect("answer");
    let mut instances = Vec::new();
    for response in [wrong, missing] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
        let problem: Value = response.json().await.expect("JSON");
        assert_eq!(problem["title"], "API Key Invalid");
        assert_eq!(problem["status"], 401);
        assert!(problem["type"].is_string() && problem["detail"].is_string());
        instances.push(problem["instance"].as_str().unwrap_or_default().to_owned());
    }
    assert_ne!(instances[0], instances[1]);
    let bearer = http
        .get(&url)
        .bearer_auth(KEY)
        .send()
        .await
        .expect("answer");
    assert_eq!(bearer.status(), StatusCode::OK);
}

#[tokio::test]
async fn injected_failures_answer_in_order_then_stop() {
    let fake = fake_with(1).await;
    fake.faults().fail_next(2, 429);
    fake.faults().fail_next(1, 503);
    let statuses = [429, 429, 503, 200];
    for expected in statuses {
        let response = call(&fake, "lists").await;
        assert_eq!(response.status().as_u16(), expected);
        if expected == 429 {
            let problem: Value = response.json().await.expect("problem+json");
            assert_eq!(problem["title"], "Too Many Requests");
        }
    }
    let logged: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(logged, statuses);
    assert_eq!(fake.requests()[0].uri, "/3.0/lists");
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_get_429_and_are_counted() {
    let fake = fake_with(1).await;
    fake.faults().set_concurrency_limit(Some(2));
    fake.faults().set_delay(Duration::from_millis(300));
    let calls = (0..4).map(|_| {
        let fake = fake.clone();
        async move { call(&fake, "lists").await }
    });
    let statuses: Vec<u16> = futures_statuses(calls).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    // The two refused requests leave at once, so three or four were ever in flight together.
    assert!(
        fake.max_concurrency_seen() >= 3,
        "{}",
        fake.max_concurrency_seen()
    );
}

async fn futures_statuses(
    calls: impl Iterator<Item = impl Future<Output = reqwest::Response> + Send + 'static>,
) -> Vec<u16> {
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.expect("joined").status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn full_pages_time_out_with_an_html_504_while_asked() {
    let fake = fake_with(5).await;
    fake.faults().set_gateway_timeout_on_full_pages(true);
    let full = call(&fake, &format!("lists/{LIST}/members?count=1000")).await;
    assert_eq!(full.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(full.text().await.expect("body").starts_with("<html>"));
    let half = call(&fake, &format!("lists/{LIST}/members?count=500")).await;
    assert_eq!(half.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_cut_members_response_fails_while_reading_the_body() {
    let fake = fake_with(50).await;
    fake.faults().cut_members_response(2);
    let first = call(&fake, &format!("lists/{LIST}/members?count=50")).await;
    assert!(first.bytes().await.is_ok());
    let second = call(&fake, &format!("lists/{LIST}/members?count=50")).await;
    assert_eq!(second.status(), StatusCode::OK, "headers arrive");
    let error = second.bytes().await.expect_err("the body is cut");
    assert!(
        error.is_body() || error.is_decode() || error.is_request(),
        "{error:?}"
    );
    let third = call(&fake, &format!("lists/{LIST}/members?count=50")).await;
    assert!(third.bytes().await.is_ok());
}

/// What a stand-in webhook endpoint received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    user_agent: String,
    signature: String,
    body: String,
}

/// A receiver answering 200 on `/hook` (GET and POST) and 404 elsewhere; returns its base URL.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |method: &'static str, seen: Arc<Mutex<Vec<Received>>>| {
        move |headers: HeaderMap, body: Bytes| async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let received = Received {
                method: method.to_owned(),
                user_agent: header("user-agent"),
                signature: header("x-mailchimp-signature"),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            seen.lock().expect("lock").push(received);
            StatusCode::OK
        }
    };
    let app = Router::new().route(
        "/hook",
        get(record("GET", Arc::clone(&seen))).post(record("POST", Arc::clone(&seen))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

async fn create_webhook(fake: &FakeMailchimp, url: &str, api: bool) -> reqwest::Response {
    let body = json!({
        "url": url,
        "events": {
            "subscribe": true, "unsubscribe": true, "profile": true,
            "cleaned": true, "upemail": true, "campaign": false,
        },
        "sources": {"user": true, "admin": true, "api": api},
    });
    reqwest::Client::new()
        .post(format!("{}/3.0/lists/{LIST}/webhooks", fake.base_url()))
        .basic_auth("anyone", Some(KEY))
        .json(&body)
        .send()
        .await
        .expect("answer")
}

#[tokio::test]
async fn creating_a_webhook_checks_the_url_with_a_get_during_the_call() {
    let fake = fake_with(0).await;
    let (base, seen) = receiver().await;
    let created = create_webhook(&fake, &format!("{base}/hook?secret=s3"), false).await;
    assert_eq!(created.status(), StatusCode::OK);
    let created: Value = created.json().await.expect("JSON");
    assert_eq!(created["signing_enabled"], true);
    assert!(
        created["signing_secret"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let checks = seen.lock().expect("lock").clone();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].method, "GET");
    assert_eq!(checks[0].user_agent, "MailChimp.com WebHook Validator");
    let listed = json_of(&fake, &format!("lists/{LIST}/webhooks")).await;
    assert_eq!(listed["total_items"], 1);
    assert!(listed["webhooks"][0].get("signing_secret").is_none());

    let refused = create_webhook(&fake, &format!("{base}/missing"), false).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let problem: Value = refused.json().await.expect("problem+json");
    assert_eq!(problem["title"], "Invalid Resource");
    let expected =
        "We couldn't verify the URL is working. Please double check and try again. HTTP Code: 404";
    assert_eq!(problem["detail"], expected);
}

#[tokio::test]
async fn a_second_webhook_for_the_same_url_is_refused_whatever_its_query() {
    let fake = fake_with(0).await;
    let (base, _) = receiver().await;
    assert_eq!(
        create_webhook(&fake, &format!("{base}/hook?a=1"), false)
            .await
            .status(),
        200
    );
    let again = create_webhook(&fake, &format!("{base}/hook?a=2"), false).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let problem: Value = again.json().await.expect("problem+json");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("can't set up multiple WebHooks")
    );
}

#[tokio::test]
async fn deliveries_are_form_encoded_signed_and_filtered_by_source() {
    let fake = fake_with(0).await;
    let (base, seen) = receiver().await;
    let created: Value = create_webhook(&fake, &format!("{base}/hook"), false)
        .await
        .json()
        .await
        .expect("JSON");
    let secret = created["signing_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    fake.set_webhook_delivery(true);
    fake.set_clock(Utc.with_ymd_and_hms(2026, 3, 2, 9, 15, 1).unwrap());
    fake.add_member(
        LIST,
        NewMember::new("ann@example.com").name("Ann Marie", "Lee"),
        Source::Admin,
    );
    fake.set_status(LIST, "ann@example.com", "unsubscribed", Source::Api);
    fake.wait_for_webhook_deliveries().await;

    let posts: Vec<Received> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.method == "POST")
        .cloned()
        .collect();
    assert_eq!(posts.len(), 1, "the API-sourced change is not delivered");
    let post = &posts[0];
    assert!(
        post.body
            .starts_with("type=subscribe&fired_at=2026-03-02+09%3A15%3A01&data%5Bid%5D="),
        "{}",
        post.body
    );
    assert!(post.body.contains("&data%5Bemail%5D=ann%40example.com&"));
    assert!(post.body.contains("&data%5Bmerges%5D%5BFNAME%5D=Ann+Marie"));
    let timestamp: i64 = post
        .signature
        .split(',')
        .next()
        .and_then(|t| t.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert_eq!(
        post.signature,
        signature_header(&secret, timestamp, &post.body)
    );

    let events = fake.webhook_events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].deliveries[0].outcome,
        super::DeliveryOutcome::Answered(200)
    );
    assert!(events[1].deliveries.is_empty());
    let unsubscribe = "type=unsubscribe&fired_at=2026-03-02+09%3A15%3A01\
                       &data%5Baction%5D=unsub&data%5Breason%5D=manual&";
    assert!(
        events[1].body.starts_with(unsubscribe),
        "{}",
        events[1].body
    );
}

#[tokio::test]
async fn an_email_change_moves_the_id_and_is_announced_as_upemail_then_profile() {
    let fake = fake_with(10).await;
    fake.set_clock(Utc.with_ymd_and_hms(2026, 3, 2, 9, 15, 1).unwrap());
    let moved = fake.change_email(
        LIST,
        "member1@example.com",
        "New.One@example.com",
        Source::User,
    );
    let hash = super::subscriber_hash("new.one@example.com");
    let found = json_of(&fake, &format!("lists/{LIST}/members/{hash}")).await;
    assert_eq!(found["email_address"], "New.One@example.com");
    let old = call(
        &fake,
        &format!(
            "lists/{LIST}/members/{}",
            super::subscriber_hash("member1@example.com")
        ),
    )
    .await;
    assert_eq!(old.status(), StatusCode::NOT_FOUND);
    let mut events = fake.webhook_events();
    let profile = events.pop().expect("a profile event");
    let upemail = events.pop().expect("an upemail event");
    let expected = format!(
        "type=upemail&fired_at=2026-03-02+09%3A15%3A01&data%5Blist_id%5D={LIST}\
         &data%5Bnew_id%5D={}&data%5Bnew_email%5D=New.One%40example.com\
         &data%5Bold_email%5D=member1%40example.com",
        moved.unique_email_id
    );
    assert_eq!(upemail.body, expected);
    let profile_start = format!(
        "type=profile&fired_at=2026-03-02+09%3A15%3A01&data%5Bid%5D={}&data%5Blist_id%5D={LIST}\
         &data%5Bemail%5D=New.One%40example.com&",
        moved.unique_email_id
    );
    assert!(profile.body.starts_with(&profile_start), "{}", profile.body);
}

#[tokio::test]
async fn time_filters_read_only_the_wall_clock_and_ignore_fractions() {
    let fake = fake_with(40).await;
    let stamp = synthetic_last_changed(4).format("%Y-%m-%dT%H:%M:%S");
    let total = |page: Value| page["total_items"].as_u64();
    let members = format!("lists/{LIST}/members");
    let utc = json_of(&fake, &format!("{members}?since_last_changed={stamp}Z")).await;
    let offset = json_of(
        &fake,
        &format!("{members}?since_last_changed={stamp}-02:00"),
    )
    .await;
    assert_eq!(total(offset), total(utc), "the offset is ignored");
    let fraction = json_of(&fake, &format!("{members}?since_last_changed={stamp}.5Z")).await;
    assert_eq!(
        total(fraction),
        Some(40),
        "a fractional time filters nothing"
    );
}

#[tokio::test]
async fn exclude_fields_and_nested_fields_narrow_members() {
    let fake = fake_with(2).await;
    let query = "fields=members.merge_fields.FNAME,members.status";
    let page = json_of(&fake, &format!("lists/{LIST}/members?{query}")).await;
    assert_eq!(
        page["members"][1],
        json!({"status": "subscribed", "merge_fields": {"FNAME": "Rory"}})
    );
    let query = "exclude_fields=members.merge_fields,members._links,_links,list_id";
    let page = json_of(&fake, &format!("lists/{LIST}/members?{query}")).await;
    assert!(page.get("list_id").is_none() && page.get("total_items").is_some());
    assert!(page["members"][0].get("merge_fields").is_none());
    assert_eq!(page["members"][0]["email_address"], "member0@example.com");
}

#[tokio::test]
async fn an_unknown_list_is_a_404_problem() {
    let fake = fake_with(0).await;
    let response = call(&fake, "lists/nope/members").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let problem: Value = response.json().await.expect("problem+json");
    assert_eq!(problem["title"], "Resource Not Found");
}

#[tokio::test]
async fn webhooks_can_be_changed_and_removed() {
    let fake = fake_with(0).await;
    let (base, seen) = receiver().await;
    let created: Value = create_webhook(&fake, &format!("{base}/hook"), false)
        .await
        .json()
        .await
        .expect("JSON");
    let url = format!(
        "{}/3.0/lists/{LIST}/webhooks/{}",
        fake.base_url(),
        created["id"].as_str().expect("id")
    );
    let http = reqwest::Client::new();
    let patch = |body: Value| {
        http.patch(&url)
            .basic_auth("anyone", Some(KEY))
            .json(&body)
            .send()
    };

    let moved = patch(json!({"url": format!("{base}/missing")}))
        .await
        .expect("answer");
    assert_eq!(
        moved.status(),
        StatusCode::BAD_REQUEST,
        "a new URL is checked again"
    );
    let toggled = patch(json!({"sources": {"user": true, "admin": false, "api": false}}))
        .await
        .expect("answer");
    assert_eq!(toggled.status(), StatusCode::OK);
    let toggled: Value = toggled.json().await.expect("JSON");
    assert_eq!(
        toggled["sources"],
        json!({"user": true, "admin": false, "api": false})
    );
    assert_eq!(toggled["url"], format!("{base}/hook"));
    assert!(toggled.get("signing_secret").is_none());
    let checks = seen.lock().expect("lock").len();
    assert_eq!(
        checks, 1,
        "a change that keeps the URL does not check it again"
    );

    let deleted = http
        .delete(&url)
        .basic_auth("anyone", Some(KEY))
        .send()
        .await
        .expect("answer");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = http
        .get(&url)
        .basic_auth("anyone", Some(KEY))
        .send()
        .await
        .expect("answer");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}
