//! The gRPC control plane as Odoo modules and operators use it: accounts, contacts, the
//! change feed, health; and the HTTP health endpoints.

use std::time::Duration;

use mailchimp_sync::grpc::pb;
use mailchimp_sync::grpc::pb::get_contact_request::Lookup;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::bodies::{self, LIST_A, LIST_B};
use crate::helpers::{API_KEY, TestApp, expect_error};

const T1: &str = "2026-05-01 08:00:00";
const T2: &str = "2026-05-01 08:30:00";

/// How long a live change may take to arrive before the test gives up; a bound on
/// failure, never a wait on success.
const STREAM_BOUND: Duration = Duration::from_secs(10);

fn create_request(name: &str, api_key: &str) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        name: name.into(),
        api_key: api_key.into(),
        api_base_url: None,
    }
}

async fn create(app: &TestApp, name: &str, api_key: &str) -> Result<pb::Account, tonic::Status> {
    Ok(app
        .accounts()
        .create_account(create_request(name, api_key))
        .await?
        .into_inner())
}

/// Contacts with large merge fields: a page of many would outgrow the 4 MiB message a
/// default gRPC client accepts, so pages end early and still list every contact once.
#[tokio::test]
async fn list_contacts_pages_stay_within_a_default_clients_message_size() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    let notes = "n".repeat(50_000);
    let emails: Vec<String> = (0..100)
        .map(|i| format!("large{i:03}@example.com"))
        .collect();
    for email in &emails {
        let body = bodies::subscribe(LIST_A, email, T1).with("data[merges][NOTES]", &notes);
        let (status, text) = app.post_webhook(&url, body.encode()).await;
        assert_eq!(status, 200, "{text}");
    }
    let pages = pages_of_contacts(&app, 1000).await;
    assert!(
        pages.len() > 1,
        "the contacts did not need more than one page"
    );
    assert_eq!(pages.concat(), emails);
    app.shutdown().await;
}

/// Every page of `ListContacts` at this page size, as the addresses on each.
async fn pages_of_contacts(app: &TestApp, page_size: i32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListContactsRequest {
            page_size,
            page_token,
            ..Default::default()
        };
        let page = app
            .contacts()
            .list_contacts(request)
            .await
            .expect("a page a default client accepts")
            .into_inner();
        pages.push(
            page.contacts
                .into_iter()
                .map(|c| c.email_normalized)
                .collect(),
        );
        if page.next_page_token.is_empty() {
            return pages;
        }
        page_token = page.next_page_token;
    }
}

/// Subscribes each address to the audience through the webhook, in order.
async fn subscribe_all(app: &TestApp, url: &str, list_id: &str, emails: &[&str]) {
    for email in emails {
        let (status, text) = app
            .post_webhook(url, bodies::subscribe(list_id, email, T1).encode())
            .await;
        assert_eq!(status, 200, "{text}");
    }
}

fn assert_invalid_argument_naming(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "the message must name {field}: {status:?}"
    );
}

#[tokio::test]
async fn create_account_rejects_an_empty_name_naming_the_field() {
    let app = TestApp::spawn().await;
    for name in ["", "   "] {
        let status = expect_error(create(&app, name, API_KEY).await);
        assert_invalid_argument_naming(&status, "name");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn create_account_rejects_a_malformed_api_key_naming_the_field() {
    let app = TestApp::spawn().await;
    let bad_keys = [
        "",
        "no-data-centre",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef-",
        "0123456789abcdef-US6",
    ];
    for key in bad_keys {
        let status = expect_error(create(&app, "Acme", key).await);
        assert_invalid_argument_naming(&status, "api_key");
        assert!(
            key.is_empty() || !status.message().contains(key),
            "the key is echoed: {status:?}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn accounts_never_carry_the_api_key_only_its_last_four_characters() {
    let app = TestApp::spawn().await;
    let (secret, _) = API_KEY.rsplit_once('-').expect("a key with a data centre");
    let created = create(&app, "Acme", API_KEY).await.expect("created");
    let fetched = app
        .accounts()
        .get_account(pb::GetAccountRequest { id: created.id })
        .await;
    let listed = app
        .accounts()
        .list_accounts(pb::ListAccountsRequest {})
        .await;
    let answers = format!(
        "{created:?} {:?} {:?}",
        fetched.expect("found"),
        listed.expect("listed")
    );
    assert!(
        !answers.contains(API_KEY) && !answers.contains(secret),
        "the key leaks: {answers}"
    );
    let hint = &created.api_key_hint;
    assert!(
        hint.ends_with(&API_KEY[API_KEY.len() - 4..]),
        "hint {hint:?}"
    );
    let secret: Vec<char> = secret.chars().collect();
    let five_in_a_row = secret.windows(5).map(|w| w.iter().collect::<String>());
    let shown: Vec<String> = five_in_a_row
        .filter(|part| hint.contains(part.as_str()))
        .collect();
    assert!(
        shown.is_empty(),
        "hint {hint:?} shows more than four characters of the secret"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_data_centre_comes_from_the_api_key_suffix() {
    let app = TestApp::spawn().await;
    let us6 = create(&app, "Six", API_KEY).await.expect("created");
    let us21 = create(&app, "Twenty-one", "fedcba9876543210fedcba9876543210-us21").await;
    assert_eq!(us6.data_center, "us6");
    assert_eq!(us21.expect("created").data_center, "us21");
    app.shutdown().await;
}

#[tokio::test]
async fn get_account_of_an_unknown_id_is_not_found() {
    let app = TestApp::spawn().await;
    let status = expect_error(
        app.accounts()
            .get_account(pb::GetAccountRequest { id: 4242 })
            .await,
    );
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn update_account_changes_only_the_fields_given() {
    let app = TestApp::spawn().await;
    let created = create(&app, "Acme", API_KEY).await.expect("created");
    let rename = pb::UpdateAccountRequest {
        id: created.id,
        name: Some("Acme Europe".into()),
        ..Default::default()
    };
    let renamed = app
        .accounts()
        .update_account(rename)
        .await
        .expect("updated")
        .into_inner();
    assert_eq!(
        (renamed.name.as_str(), renamed.data_center.as_str()),
        ("Acme Europe", "us6")
    );
    assert_eq!(renamed.api_key_hint, created.api_key_hint);
    assert!(renamed.webhook_active);
    let rekey = pb::UpdateAccountRequest {
        id: created.id,
        api_key: Some("fedcba9876543210fedcba9876543210-us19".into()),
        ..Default::default()
    };
    let rekeyed = app
        .accounts()
        .update_account(rekey)
        .await
        .expect("updated")
        .into_inner();
    assert_eq!(
        (rekeyed.name.as_str(), rekeyed.data_center.as_str()),
        ("Acme Europe", "us19")
    );
    let fetched = app
        .accounts()
        .get_account(pb::GetAccountRequest { id: created.id })
        .await;
    assert_eq!(fetched.expect("found").into_inner().data_center, "us19");
    let unknown = pb::UpdateAccountRequest {
        id: 4242,
        name: Some("X".into()),
        ..Default::default()
    };
    let status = expect_error(app.accounts().update_account(unknown).await);
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn delete_account_removes_it() {
    let app = TestApp::spawn().await;
    let created = create(&app, "Acme", API_KEY).await.expect("created");
    let delete = pb::DeleteAccountRequest { id: created.id };
    app.accounts()
        .delete_account(delete)
        .await
        .expect("deleted");
    let get = app
        .accounts()
        .get_account(pb::GetAccountRequest { id: created.id })
        .await;
    assert_eq!(expect_error(get).code(), tonic::Code::NotFound);
    let again = app
        .accounts()
        .delete_account(pb::DeleteAccountRequest { id: created.id })
        .await;
    assert_eq!(expect_error(again).code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn list_accounts_shows_every_account() {
    let app = TestApp::spawn().await;
    let first = create(&app, "First", API_KEY).await.expect("created");
    let second = create(&app, "Second", API_KEY).await.expect("created");
    let listed = app
        .accounts()
        .list_accounts(pb::ListAccountsRequest {})
        .await;
    let listed = listed.expect("listed").into_inner().accounts;
    let ids: Vec<_> = listed.iter().map(|a| (a.id, a.name.as_str())).collect();
    assert_eq!(ids, [(first.id, "First"), (second.id, "Second")]);
    app.shutdown().await;
}

#[tokio::test]
async fn generate_webhook_url_refuses_an_http_public_url_unless_allowed() {
    let app = TestApp::spawn_with(|config| config.allow_insecure_webhook_url = false).await;
    let account = create(&app, "Acme", API_KEY).await.expect("created");
    let request = pb::GenerateWebhookUrlRequest {
        account_id: account.id,
    };
    let status = expect_error(app.accounts().generate_webhook_url(request).await);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), "webhooks require an HTTPS URL");
    app.shutdown().await;
}

#[tokio::test]
async fn generate_webhook_url_of_an_unknown_account_is_not_found() {
    let app = TestApp::spawn().await;
    let request = pb::GenerateWebhookUrlRequest { account_id: 4242 };
    let status = expect_error(app.accounts().generate_webhook_url(request).await);
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn the_account_shows_its_generated_webhook_url() {
    let app = TestApp::spawn().await;
    let created = create(&app, "Acme", API_KEY).await.expect("created");
    assert_eq!(created.webhook_url, "");
    let url = app.generate_webhook_url(created.id).await;
    let prefix = format!(
        "http://127.0.0.1:{}/webhooks/mailchimp/",
        app.http_addr.port()
    );
    assert!(url.starts_with(&prefix), "{url}");
    let fetched = app
        .accounts()
        .get_account(pb::GetAccountRequest { id: created.id })
        .await;
    assert_eq!(fetched.expect("found").into_inner().webhook_url, url);
    app.shutdown().await;
}

#[tokio::test]
async fn get_contact_finds_by_id_and_by_any_address_form() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    subscribe_all(&app, &url, LIST_A, &["mixed@example.com"]).await;
    let by_form = app
        .get_contact("\"Mixed Case\" <MiXeD@Example.COM>")
        .await
        .expect("found");
    assert_eq!(by_form.email_normalized, "mixed@example.com");
    let request = pb::GetContactRequest {
        lookup: Some(Lookup::Id(by_form.id)),
    };
    let by_id = app
        .contacts()
        .get_contact(request)
        .await
        .expect("found")
        .into_inner();
    assert_eq!(by_id, by_form);
    let unknown = pb::GetContactRequest {
        lookup: Some(Lookup::Id(by_form.id + 1000)),
    };
    let status = expect_error(app.contacts().get_contact(unknown).await);
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn get_contact_with_an_invalid_address_is_invalid_argument() {
    let app = TestApp::spawn().await;
    for email in ["not-an-address", "", "@example.com", "a@"] {
        let status = expect_error(app.get_contact(email).await);
        assert_invalid_argument_naming(&status, "email");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn list_contacts_pages_through_every_contact_once() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    let emails = [
        "p1@example.com",
        "p2@example.com",
        "p3@example.com",
        "p4@example.com",
        "p5@example.com",
    ];
    subscribe_all(&app, &url, LIST_A, &emails).await;
    let pages = pages_of_contacts(&app, 2).await;
    let page_sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(page_sizes, [2, 2, 1]);
    assert_eq!(pages.concat(), emails);
    app.shutdown().await;
}

#[tokio::test]
async fn list_contacts_filters_by_audience_and_status() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    subscribe_all(&app, &url, LIST_A, &["a1@example.com", "both@example.com"]).await;
    subscribe_all(&app, &url, LIST_B, &["b1@example.com", "both@example.com"]).await;
    let unsubscribe = bodies::unsubscribe(LIST_B, "both@example.com", T2).encode();
    assert_eq!(app.post_webhook(&url, unsubscribe).await.0, 200);
    let audiences = app
        .audiences()
        .list_audiences(pb::ListAudiencesRequest { account_id })
        .await;
    let audiences = audiences.expect("listed").into_inner().audiences;
    let audience_b = audiences
        .iter()
        .find(|a| a.mailchimp_list_id == LIST_B)
        .expect("B")
        .id;
    let list = |audience_id: Option<i64>, status: &str| {
        let request = pb::ListContactsRequest {
            audience_id,
            status: status.into(),
            ..Default::default()
        };
        let mut client = app.contacts();
        async move {
            let page = client
                .list_contacts(request)
                .await
                .expect("listed")
                .into_inner();
            page.contacts
                .into_iter()
                .map(|c| c.email_normalized)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(Some(audience_b), "").await,
        ["both@example.com", "b1@example.com"]
    );
    assert_eq!(
        list(Some(audience_b), "subscribed").await,
        ["b1@example.com"]
    );
    assert_eq!(list(None, "unsubscribed").await, ["both@example.com"]);
    assert_eq!(
        list(None, "subscribed").await,
        ["a1@example.com", "both@example.com", "b1@example.com"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn list_contacts_with_a_forged_page_token_is_invalid_argument() {
    let app = TestApp::spawn().await;
    for page_token in ["not a token", "%%%", "YWJj"] {
        let request = pb::ListContactsRequest {
            page_token: page_token.into(),
            ..Default::default()
        };
        let status = expect_error(app.contacts().list_contacts(request).await);
        assert_invalid_argument_naming(&status, "page_token");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn list_changes_is_in_sequence_order_and_resumes_after_a_sequence() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    let emails = [
        "c1@example.com",
        "c2@example.com",
        "c3@example.com",
        "c4@example.com",
    ];
    subscribe_all(&app, &url, LIST_A, &emails).await;
    let changes = app.all_changes().await;
    let order: Vec<_> = changes
        .iter()
        .map(|c| c.email_normalized.as_str())
        .collect();
    assert_eq!(order, emails);
    assert!(
        changes.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .all(|c| c.kind == "subscribed" && c.mailchimp_list_id == LIST_A)
    );
    let request = pb::ListChangesRequest {
        after_sequence: changes[1].sequence,
        limit: 0,
    };
    let rest = app
        .contacts()
        .list_changes(request)
        .await
        .expect("listed")
        .into_inner()
        .changes;
    assert_eq!(rest, changes[2..]);
    let request = pb::ListChangesRequest {
        after_sequence: changes[0].sequence,
        limit: 1,
    };
    let one = app
        .contacts()
        .list_changes(request)
        .await
        .expect("listed")
        .into_inner()
        .changes;
    assert_eq!(one, changes[1..2]);
    app.shutdown().await;
}

#[tokio::test]
async fn watch_changes_sends_the_backlog_then_live_changes() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    subscribe_all(
        &app,
        &url,
        LIST_A,
        &["w1@example.com", "w2@example.com", "w3@example.com"],
    )
    .await;
    let backlog = app.all_changes().await;
    assert_eq!(backlog.len(), 3);
    let request = pb::WatchChangesRequest { after_sequence: 0 };
    let mut stream = app
        .contacts()
        .watch_changes(request)
        .await
        .expect("watching")
        .into_inner();
    let mut next = async || {
        let message = tokio::time::timeout(STREAM_BOUND, stream.message()).await;
        message
            .expect("a change within the bound")
            .expect("the stream stays healthy")
    };
    for old in &backlog {
        assert_eq!(next().await.as_ref(), Some(old));
    }
    subscribe_all(&app, &url, LIST_B, &["w1@example.com"]).await;
    let live = next().await.expect("the stream stays open");
    assert!(live.sequence > backlog[2].sequence, "{live:?}");
    assert_eq!(
        (
            live.email_normalized.as_str(),
            live.mailchimp_list_id.as_str()
        ),
        ("w1@example.com", LIST_B)
    );
    drop(stream);
    app.shutdown().await;
}

/// A watcher may stay connected for days; stopping the service must not wait for it.
#[tokio::test]
async fn shutdown_completes_while_a_watcher_is_connected() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    subscribe_all(&app, &url, LIST_A, &["watcher@example.com"]).await;
    let request = pb::WatchChangesRequest { after_sequence: 0 };
    let mut stream = app
        .contacts()
        .watch_changes(request)
        .await
        .expect("watching")
        .into_inner();
    let first = tokio::time::timeout(STREAM_BOUND, stream.message()).await;
    assert!(first.expect("within the bound").expect("healthy").is_some());
    app.shutdown().await;
    drop(stream);
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let app = TestApp::spawn().await;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = app
        .health()
        .check(request)
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
    app.shutdown().await;
}

#[tokio::test]
async fn http_health_and_readiness_answer_200() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get(&app.http_url("/healthz")).await.0, 200);
    assert_eq!(app.get(&app.http_url("/readyz")).await.0, 200);
    app.shutdown().await;
}
