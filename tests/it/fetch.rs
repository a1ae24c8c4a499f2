//! Fetch MailChimp Audience against the fake Mailchimp: what a run writes, how incremental
//! and full runs differ, and how the client behaves when Mailchimp misbehaves.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use mailchimp_sync::domain::fetch::{Mode, Settings, Target, Trigger};
use mailchimp_sync::fake_mailchimp::{DeliveryOutcome, FakeMailchimp, NewMember, Source};
use mailchimp_sync::grpc::pb;
use mailchimp_sync::mailchimp::Limits;
use mailchimp_sync::store::fetch_runs::{Claim, FetchRunRow};
use serde_json::json;

use crate::bodies;
use crate::helpers::{API_KEY, TestApp, expect_error};

const LIST: &str = "4f1c9a7e20";
const OTHER_LIST: &str = "b83d02e6f1";

/// Backoff short enough for tests; retries as in production unless a test says otherwise.
fn test_settings(retries: usize) -> Settings {
    Settings {
        limits: Limits {
            request_timeout: Duration::from_secs(10),
            retries,
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
        },
        ..Settings::default()
    }
}

struct Setup {
    app: TestApp,
    fake: FakeMailchimp,
    account_id: i64,
}

async fn setup() -> Setup {
    setup_with(test_settings(8)).await
}

async fn setup_with(settings: Settings) -> Setup {
    let fake = FakeMailchimp::new(API_KEY);
    fake.set_clock(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    fake.add_list(LIST, "Newsletter");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.serve(listener).await.unwrap();
    let app = TestApp::spawn_with(|config| config.fetch = settings).await;
    let request = pb::CreateAccountRequest {
        name: "Acme".into(),
        api_key: API_KEY.into(),
        api_base_url: Some(fake.base_url()),
    };
    let account = app
        .accounts()
        .create_account(request)
        .await
        .unwrap()
        .into_inner();
    Setup {
        app,
        fake,
        account_id: account.id,
    }
}

impl Setup {
    /// Claims and runs to the end every fetch of the account, as the CLI does.
    async fn fetch(&self, mode: Mode) -> Vec<FetchRunRow> {
        let fetcher = &self.app.state().fetcher;
        let claims = fetcher.claim(Target::Account(self.account_id), mode, Trigger::Cli, None);
        let mut done = Vec::new();
        for claim in claims.await.expect("claimed") {
            let Claim::Claimed(run) = claim else {
                panic!("nothing else runs: {claim:?}")
            };
            done.push(fetcher.run(run, |_| {}).await.expect("the run ends"));
        }
        done
    }

    async fn fetch_one(&self, mode: Mode) -> FetchRunRow {
        let mut runs = self.fetch(mode).await;
        assert_eq!(runs.len(), 1, "one audience, one run");
        runs.remove(0)
    }

    /// RefreshAudiences over gRPC.
    async fn refresh(&self) -> Vec<pb::Audience> {
        let request = pb::RefreshAudiencesRequest {
            account_id: self.account_id,
        };
        let response = self.app.audiences().refresh_audiences(request).await;
        response
            .expect("audiences refreshed")
            .into_inner()
            .audiences
    }

    async fn audiences(&self) -> Vec<pb::Audience> {
        let request = pb::ListAudiencesRequest {
            account_id: self.account_id,
        };
        self.app
            .audiences()
            .list_audiences(request)
            .await
            .unwrap()
            .into_inner()
            .audiences
    }

    fn members_requests(&self) -> Vec<String> {
        let requests = self.fake.requests();
        requests
            .into_iter()
            .filter(|r| r.uri.contains("/members"))
            .map(|r| r.uri)
            .collect()
    }

    fn add(&self, member: NewMember) {
        self.fake.add_member(LIST, member, Source::Admin);
    }
}

fn status_of(contact: &pb::Contact, list: &str) -> (String, bool) {
    let sub = contact
        .subscriptions
        .iter()
        .find(|s| s.mailchimp_list_id == list);
    let sub = sub.unwrap_or_else(|| panic!("{} has no subscription on {list}", contact.email));
    (sub.status.clone(), sub.opt_out)
}

#[tokio::test]
async fn a_fetch_fills_an_empty_store_with_every_status() {
    let s = setup().await;
    let address =
        json!({"addr1": "12 Harbour Row", "city": "Portsmouth", "zip": "PO1 2AB", "country": "GB"});
    s.add(
        NewMember::new("Hana.Kato@Example.org")
            .name("Hana", "Kato")
            .merge_field("USERID", json!(100)),
    );
    s.add(
        NewMember::new("rory@example.net")
            .name("Rory", "Finch")
            .status("unsubscribed")
            .merge_field("ADDRESS", address),
    );
    s.add(NewMember::new("bounce@example.com").status("cleaned"));
    s.add(NewMember::new("receipts@example.com").status("transactional"));
    s.add(
        NewMember::new("ondrej@example.cz")
            .name("Ondřej", "Dvořák")
            .status("pending"),
    );
    s.add(NewMember::new("future@example.com").status("blocklisted"));

    let run = s.fetch_one(Mode::Incremental).await;
    assert_eq!(run.state, "succeeded", "{:?}", run.error);
    assert_eq!((run.members_seen, run.members_written), (6, 6));

    let hana = s.app.get_contact("hana.kato@example.org").await.unwrap();
    assert_eq!(
        (hana.name.as_str(), hana.email.as_str()),
        ("Hana Kato", "Hana.Kato@Example.org")
    );
    assert_eq!(status_of(&hana, LIST), ("subscribed".into(), false));
    let fields = hana.merge_fields.expect("merge fields");
    assert!(fields.fields.contains_key("USERID"));
    let rory = s.app.get_contact("rory@example.net").await.unwrap();
    assert_eq!(status_of(&rory, LIST), ("unsubscribed".into(), true));
    let rory_fields = rory.merge_fields.expect("merge fields");
    assert!(matches!(
        rory_fields.fields["ADDRESS"].kind,
        Some(prost_types::value::Kind::StructValue(_))
    ));
    for (email, status) in [
        ("bounce@example.com", "cleaned"),
        ("receipts@example.com", "transactional"),
        ("ondrej@example.cz", "pending"),
        ("future@example.com", "blocklisted"),
    ] {
        let contact = s.app.get_contact(email).await.unwrap();
        assert_eq!(status_of(&contact, LIST), (status.into(), true), "{email}");
    }
    assert!(
        s.app
            .blacklist_entry("bounce@example.com")
            .await
            .unwrap()
            .active
    );
    assert!(s.app.blacklist_entry("receipts@example.com").await.is_err());
    let audiences = s.audiences().await;
    assert_eq!(audiences[0].name, "Newsletter");
    assert!(audiences[0].last_fetch_time.is_some());
    assert_eq!(s.app.all_changes().await.len(), 6);
}

#[tokio::test]
async fn an_incremental_run_asks_only_for_what_changed_since_the_watermark() {
    let s = setup().await;
    for i in 0..5 {
        s.add(NewMember::new(&format!("m{i}@example.com")));
    }
    s.fake.advance_clock(chrono::Duration::hours(1));
    s.add(NewMember::new("newest@example.com"));
    assert_eq!(s.fetch_one(Mode::Incremental).await.members_seen, 6);

    s.fake.advance_clock(chrono::Duration::hours(1));
    s.fake
        .set_status(LIST, "m3@example.com", "unsubscribed", Source::Admin);
    s.fake.clear_requests();
    let run = s.fetch_one(Mode::Incremental).await;

    assert_eq!(run.state, "succeeded");
    // The watermark is the newest change seen (09:00); the overlap re-reads that member.
    assert_eq!(run.members_seen, 2, "the changed member and the overlap");
    let requests = s.members_requests();
    let expected = "since_last_changed=2026-03-01T08%3A55%3A00Z";
    assert!(
        requests.iter().all(|uri| uri.contains(expected)),
        "{requests:?}"
    );
    let m3 = s.app.get_contact("m3@example.com").await.unwrap();
    assert_eq!(status_of(&m3, LIST), ("unsubscribed".into(), true));
    let m2 = s.app.get_contact("m2@example.com").await.unwrap();
    assert_eq!(status_of(&m2, LIST), ("subscribed".into(), false));
}

#[tokio::test]
async fn archived_members_come_from_a_second_pass() {
    let s = setup().await;
    s.add(NewMember::new("kept@example.com"));
    s.add(NewMember::new("shelved@example.com"));
    s.fake.archive(LIST, "shelved@example.com", Source::Admin);

    let run = s.fetch_one(Mode::Incremental).await;

    assert_eq!(run.members_seen, 2);
    assert!(
        s.members_requests()
            .iter()
            .any(|uri| uri.contains("status=archived"))
    );
    let shelved = s.app.get_contact("shelved@example.com").await.unwrap();
    assert_eq!(status_of(&shelved, LIST), ("archived".into(), true));
}

#[tokio::test]
async fn a_full_run_removes_members_mailchimp_deleted_for_good() {
    let s = setup().await;
    for email in ["a@example.com", "b@example.com", "gone@example.com"] {
        s.add(NewMember::new(email));
    }
    s.fetch_one(Mode::Full).await;
    s.fake
        .delete_permanently(LIST, "gone@example.com", Source::Admin);

    let incremental = s.fetch_one(Mode::Incremental).await;
    assert_eq!(incremental.state, "succeeded");
    assert!(
        s.app.get_contact("gone@example.com").await.is_ok(),
        "only a full run can tell"
    );

    let full = s.fetch_one(Mode::Full).await;
    assert_eq!(full.state, "succeeded");
    let missing = expect_error(s.app.get_contact("gone@example.com").await);
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(s.app.get_contact("a@example.com").await.is_ok());
    assert!(s.app.get_contact("b@example.com").await.is_ok());
    let kinds: Vec<String> = s
        .app
        .all_changes()
        .await
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds.last().map(String::as_str), Some("contact_removed"));
}

#[tokio::test]
async fn a_webhook_newer_than_the_fetched_state_survives_the_fetch() {
    let s = setup().await;
    s.add(NewMember::new("late@example.com"));
    let url = s.app.generate_webhook_url(s.account_id).await;
    // Fired after the member's last_changed in Mailchimp's listing (2026-03-01 08:00).
    let body = bodies::unsubscribe(LIST, "late@example.com", "2026-03-02 10:00:00").encode();
    assert_eq!(s.app.post_webhook(&url, body).await.0, 200);

    let run = s.fetch_one(Mode::Full).await;

    assert_eq!(run.state, "succeeded");
    let late = s.app.get_contact("late@example.com").await.unwrap();
    assert_eq!(status_of(&late, LIST), ("unsubscribed".into(), true));
}

#[tokio::test]
async fn a_nul_character_in_a_fetched_name_is_dropped_not_fatal_to_the_run() {
    let s = setup().await;
    s.add(NewMember::new("nul@example.com").name("\u{0}Ha\u{0}na", "Kato"));
    s.add(NewMember::new("next@example.com").name("Rory", "Dunn"));

    let run = s.fetch_one(Mode::Full).await;

    assert_eq!((run.state.as_str(), run.members_written), ("succeeded", 2));
    let contact = s.app.get_contact("nul@example.com").await.unwrap();
    assert_eq!(contact.name, "Hana Kato");
    assert!(s.app.get_contact("next@example.com").await.is_ok());
}

#[tokio::test]
async fn a_dropped_connection_fails_the_run_and_leaves_the_watermark() {
    let s = setup_with(test_settings(0)).await;
    s.fake.add_synthetic_members(LIST, 1500);
    s.fake.faults().cut_members_response(2);

    let broken = s.fetch_one(Mode::Incremental).await;

    assert_eq!(broken.state, "failed");
    assert!(
        broken
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot reach Mailchimp")
    );
    assert_eq!(broken.members_seen, 1000, "the first page was written");
    assert!(
        s.audiences().await[0].last_fetch_time.is_none(),
        "the watermark did not move"
    );

    let next = s.fetch_one(Mode::Incremental).await;
    assert_eq!(next.state, "succeeded", "{:?}", next.error);
    assert!(next.members_seen >= 1500);
    assert!(s.audiences().await[0].last_fetch_time.is_some());
    assert!(
        s.members_requests()
            .iter()
            .all(|uri| !uri.contains("since_last_changed"))
    );
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_within_the_concurrency_cap() {
    let s = setup_with(test_settings(30)).await;
    for i in 0..6 {
        let id = format!("a{i:09}");
        s.fake.add_list(&id, &format!("Audience {i}"));
        s.fake.add_synthetic_members(&id, 300);
    }
    // Mailchimp answers 429 to whatever exceeds two requests in flight, as when other
    // tools share the account, on top of a burst of refusals.
    s.fake.faults().set_concurrency_limit(Some(2));
    s.fake.faults().fail_next(5, 429);
    s.fake.reset_max_concurrency();

    let fetcher = s.app.state().fetcher.clone();
    let claims = fetcher
        .claim(
            Target::Account(s.account_id),
            Mode::Full,
            Trigger::Cli,
            None,
        )
        .await
        .unwrap();
    let runs = claims.into_iter().map(|claim| {
        let Claim::Claimed(run) = claim else {
            panic!("claimed")
        };
        let fetcher = fetcher.clone();
        tokio::spawn(async move { fetcher.run(run, |_| {}).await.unwrap() })
    });
    let mut done = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        done.push(run.await.unwrap());
    }

    assert_eq!(done.len(), 7);
    assert!(done.iter().all(|run| run.state == "succeeded"), "{done:?}");
    let throttled = s.fake.requests().iter().filter(|r| r.status == 429).count();
    assert!(throttled >= 5, "the storm happened: {throttled}");
    assert!(
        s.fake.max_concurrency_seen() <= 4,
        "cap: {}",
        s.fake.max_concurrency_seen()
    );
}

#[tokio::test]
async fn a_504_on_full_pages_falls_back_to_pages_of_500() {
    let s = setup().await;
    s.fake.add_synthetic_members(LIST, 1200);
    s.fake.faults().set_gateway_timeout_on_full_pages(true);

    let run = s.fetch_one(Mode::Full).await;

    assert_eq!(run.state, "succeeded", "{:?}", run.error);
    assert_eq!(run.members_seen, 1200);
    let requests = s.members_requests();
    assert!(requests.iter().any(|uri| uri.contains("count=500")));
    assert_eq!(
        requests
            .iter()
            .filter(|uri| uri.contains("count=1000"))
            .count(),
        1
    );
}

#[tokio::test]
async fn two_replicas_fetch_each_audience_once_per_schedule_slot() {
    let s = setup().await;
    s.fake.add_list(OTHER_LIST, "Customers");
    s.add(NewMember::new("a@example.com"));
    s.fake
        .add_member(OTHER_LIST, NewMember::new("b@example.com"), Source::Admin);
    let replica = s
        .app
        .spawn_replica(|config| config.fetch = test_settings(8))
        .await;
    let slot = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .unwrap()
        .and_hms_opt(2, 0, 0)
        .unwrap();

    let (first, second) = (
        s.app.state().fetcher.clone(),
        replica.state().fetcher.clone(),
    );
    tokio::join!(first.run_schedule(slot), second.run_schedule(slot));
    // A replica whose clock fired late finds the slot taken even after the runs ended.
    first.run_schedule(slot).await;

    let request = pb::ListFetchRunsRequest::default();
    let runs = s
        .app
        .fetches()
        .list_fetch_runs(request)
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 2, "one run per audience: {runs:?}");
    assert!(
        runs.iter()
            .all(|run| run.state == "succeeded" && run.trigger == "schedule")
    );
    let plain_listings = s
        .members_requests()
        .into_iter()
        .filter(|uri| !uri.contains("status=archived"))
        .count();
    assert_eq!(plain_listings, 2, "each audience listed once");
    replica.shutdown().await;
}

#[tokio::test]
async fn trigger_fetch_returns_the_active_run_instead_of_starting_another() {
    let s = setup().await;
    s.add(NewMember::new("a@example.com"));
    let audiences = s.refresh().await;
    let audience_id = audiences[0].id;
    s.fake.faults().set_delay(Duration::from_secs(2));
    let trigger = || pb::TriggerFetchRequest {
        target: Some(pb::trigger_fetch_request::Target::AudienceId(audience_id)),
        mode: pb::FetchMode::Full as i32,
    };

    let first = s
        .app
        .fetches()
        .trigger_fetch(trigger())
        .await
        .unwrap()
        .into_inner()
        .runs;
    let second = s
        .app
        .fetches()
        .trigger_fetch(trigger())
        .await
        .unwrap()
        .into_inner()
        .runs;

    assert_eq!(first.len(), 1);
    assert_eq!(first[0].state, "running");
    assert_eq!(
        (first[0].mode.as_str(), first[0].trigger.as_str()),
        ("full", "grpc")
    );
    assert_eq!(second[0].id, first[0].id, "the active run, not a new one");
    let got = s
        .app
        .fetches()
        .get_fetch_run(pb::GetFetchRunRequest { id: first[0].id })
        .await;
    assert_eq!(got.unwrap().into_inner().mailchimp_list_id, LIST);
    s.app.shutdown().await;
}

#[tokio::test]
async fn refresh_audiences_names_an_audience_first_seen_through_a_webhook() {
    let s = setup().await;
    let url = s.app.generate_webhook_url(s.account_id).await;
    let body = bodies::subscribe(LIST, "a@example.com", "2026-03-02 10:00:00").encode();
    assert_eq!(s.app.post_webhook(&url, body).await.0, 200);
    assert_eq!(s.audiences().await[0].name, "");
    s.fake.add_list(OTHER_LIST, "Customers");

    let request = pb::RefreshAudiencesRequest {
        account_id: s.account_id,
    };
    let refreshed = s
        .app
        .audiences()
        .refresh_audiences(request)
        .await
        .unwrap()
        .into_inner();

    let names: Vec<(String, String)> = refreshed
        .audiences
        .into_iter()
        .map(|a| (a.mailchimp_list_id, a.name))
        .collect();
    assert_eq!(
        names,
        vec![
            (LIST.to_owned(), "Newsletter".to_owned()),
            (OTHER_LIST.to_owned(), "Customers".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_refused_api_key_is_a_failed_precondition_with_mailchimps_words() {
    let s = setup().await;
    let request = pb::CreateAccountRequest {
        name: "Wrong key".into(),
        api_key: "ffffffffffffffffffffffffffffffff-us6".into(),
        api_base_url: Some(s.fake.base_url()),
    };
    let account = s
        .app
        .accounts()
        .create_account(request)
        .await
        .unwrap()
        .into_inner();

    let request = pb::RefreshAudiencesRequest {
        account_id: account.id,
    };
    let status = expect_error(s.app.audiences().refresh_audiences(request).await);

    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("401"), "{}", status.message());
    assert!(
        !status.message().contains("ffffffff"),
        "the key stays secret"
    );
}

#[tokio::test]
async fn register_webhook_creates_then_updates_with_the_api_source_off() {
    let s = setup().await;
    let url = s.app.generate_webhook_url(s.account_id).await;
    let audiences = s.refresh().await;
    let audience_id = audiences[0].id;

    let register = || pb::RegisterWebhookRequest { audience_id };
    let created = s
        .app
        .audiences()
        .register_webhook(register())
        .await
        .unwrap()
        .into_inner();
    let updated = s
        .app
        .audiences()
        .register_webhook(register())
        .await
        .unwrap()
        .into_inner();

    assert!(created.created && !updated.created);
    assert_eq!(created.webhook_id, updated.webhook_id);
    assert_eq!(created.url, url);
    assert_eq!(created.sources.get("api"), Some(&false));
    assert_eq!(created.sources.get("user"), Some(&true));
    assert_eq!(created.sources.get("admin"), Some(&true));
    for event in ["subscribe", "unsubscribe", "profile", "cleaned", "upemail"] {
        assert_eq!(created.events.get(event), Some(&true), "{event}");
    }
    assert!(created.signing_secret_kept);
    assert_eq!(s.fake.webhooks(LIST).len(), 1);
    let account = s
        .app
        .accounts()
        .get_account(pb::GetAccountRequest { id: s.account_id })
        .await;
    assert!(account.unwrap().into_inner().has_signing_secret);
    assert!(s.audiences().await[0].webhook_registered);
}

#[tokio::test]
async fn signed_deliveries_from_mailchimp_apply_and_unsigned_ones_are_refused() {
    let s = setup().await;
    let url = s.app.generate_webhook_url(s.account_id).await;
    let audiences = s.refresh().await;
    let request = pb::RegisterWebhookRequest {
        audience_id: audiences[0].id,
    };
    s.app.audiences().register_webhook(request).await.unwrap();
    s.fake.set_clock(Utc::now());
    s.fake.set_webhook_delivery(true);

    s.fake.add_member(
        LIST,
        NewMember::new("signed@example.com").name("Sig", "Ned"),
        Source::User,
    );
    s.fake.wait_for_webhook_deliveries().await;

    let contact = s.app.get_contact("signed@example.com").await.unwrap();
    assert_eq!(contact.name, "Sig Ned");
    let body = bodies::subscribe(LIST, "forged@example.com", "2026-03-02 10:00:00").encode();
    let (status, reason) = s.app.post_webhook(&url, body).await;
    assert_eq!(status, 401);
    assert!(reason.contains("X-Mailchimp-Signature"), "{reason}");
    let forged = s.app.latest_event(s.account_id).await;
    assert_eq!(forged.outcome, "rejected");
    assert!(s.app.get_contact("forged@example.com").await.is_err());

    let request = pb::ReplayWebhookEventRequest { id: forged.id };
    let status = expect_error(s.app.events().replay_webhook_event(request).await);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(s.app.get_contact("forged@example.com").await.is_err());
    assert_eq!(s.app.latest_event(s.account_id).await.outcome, "rejected");
}

#[tokio::test]
async fn each_audience_signs_with_its_own_secret_and_every_one_is_accepted() {
    let s = setup().await;
    s.fake.add_list(OTHER_LIST, "Customers");
    s.app.generate_webhook_url(s.account_id).await;
    for audience in s.refresh().await {
        let request = pb::RegisterWebhookRequest {
            audience_id: audience.id,
        };
        s.app.audiences().register_webhook(request).await.unwrap();
    }
    let secret = |list| s.fake.webhooks(list)[0].signing_secret.clone();
    assert_ne!(secret(LIST), secret(OTHER_LIST));
    s.fake.set_clock(Utc::now());
    s.fake.set_webhook_delivery(true);

    s.fake
        .add_member(LIST, NewMember::new("first@example.com"), Source::User);
    s.fake.add_member(
        OTHER_LIST,
        NewMember::new("second@example.com"),
        Source::User,
    );
    s.fake.wait_for_webhook_deliveries().await;

    for event in s.fake.webhook_events() {
        assert_eq!(event.deliveries[0].outcome, DeliveryOutcome::Answered(200));
    }
    assert!(s.app.get_contact("first@example.com").await.is_ok());
    assert!(s.app.get_contact("second@example.com").await.is_ok());
}
