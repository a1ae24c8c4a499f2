//! What the logs may hold: a whole scenario run through the real binary with every log at
//! `debug` (ours and the libraries'), in JSON so each line's level can be read. No secret
//! it used may appear at any level, nor any address at `info` or above.

use chrono::{TimeZone, Utc};
use mailchimp_sync::fake_mailchimp::{FakeMailchimp, NewMember, Source};
use mailchimp_sync::grpc::pb;
use mailchimp_sync::grpc::pb::account_service_client::AccountServiceClient;
use mailchimp_sync::grpc::pb::audience_service_client::AudienceServiceClient;
use mailchimp_sync::grpc::pb::contact_service_client::ContactServiceClient;
use mailchimp_sync::webhook::signature;
use serde_json::Value;
use tonic::transport::Channel;

use crate::bodies;
use crate::helpers::{TestDb, with_token};
use crate::process::{Options, ServeProcess};
use crate::security::Bearer;

const API_KEY: &str = "9c1f5e7a3b2d4c6e8f0a1b3c5d7e9f21-us6";
const WRONG_API_KEY: &str = "00ff00ff00ff00ff00ff00ff00ff00ff-us6";
const GRPC_TOKEN: &str = "log-test-grpc-token-41c7e2";
const WRONG_GRPC_TOKEN: &str = "log-test-wrong-token-88a1";
const SIGNING_SECRET: &str = "whsec-log-test-6b0e93d1f7";
const LIST: &str = "4f1c9a7e20";

/// Addresses the scenario makes the service handle, by webhook and by fetch.
const SIGNED: &str = "signed.person@example.org";
const UNSIGNED: &str = "unsigned.person@example.org";
const FETCHED: &str = "fetched.person@example.net";

async fn fake_mailchimp() -> FakeMailchimp {
    let fake = FakeMailchimp::new(API_KEY);
    fake.set_clock(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    fake.add_list(LIST, "Newsletter");
    fake.add_member(LIST, NewMember::new(FETCHED), Source::Admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.serve(listener).await.unwrap();
    fake
}

fn create(name: &str, api_key: &str, fake: &FakeMailchimp) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        name: name.into(),
        api_key: api_key.into(),
        api_base_url: Some(fake.base_url()),
    }
}

/// Everything the test did over gRPC and HTTP; returns the answers' text, which must be
/// as clean as the logs, and the webhook token.
async fn scenario(serve: &ServeProcess, fake: &FakeMailchimp) -> (String, String, i64) {
    let channel = Channel::from_shared(format!("http://{}", serve.grpc_addr))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connected");
    let mut accounts = AccountServiceClient::with_interceptor(channel.clone(), Bearer(GRPC_TOKEN));
    let mut intruder =
        AccountServiceClient::with_interceptor(channel.clone(), Bearer(WRONG_GRPC_TOKEN));
    let mut answers = String::new();

    let refused = intruder
        .create_account(create("Intruder", API_KEY, fake))
        .await;
    answers += &format!("{refused:?}\n");
    let account = accounts.create_account(create("Acme", API_KEY, fake)).await;
    let account = account.expect("created").into_inner();
    answers += &format!("{account:?}\n");
    let secret = pb::UpdateAccountRequest {
        id: account.id,
        webhook_signing_secret: Some(SIGNING_SECRET.into()),
        ..Default::default()
    };
    answers += &format!("{:?}\n", accounts.update_account(secret).await);
    let generate = pb::GenerateWebhookUrlRequest {
        account_id: account.id,
    };
    let url = accounts
        .generate_webhook_url(generate)
        .await
        .expect("a URL");
    let url = url.into_inner().webhook_url;
    let token = url.rsplit('/').next().expect("a token").to_owned();

    let mut audiences =
        AudienceServiceClient::with_interceptor(channel.clone(), Bearer(GRPC_TOKEN));
    let refresh = pb::RefreshAudiencesRequest {
        account_id: account.id,
    };
    answers += &format!("{:?}\n", audiences.refresh_audiences(refresh).await);
    let wrong = accounts
        .create_account(create("Wrong key", WRONG_API_KEY, fake))
        .await;
    let wrong = wrong.expect("created").into_inner();
    let refresh = pb::RefreshAudiencesRequest {
        account_id: wrong.id,
    };
    let refused = audiences.refresh_audiences(refresh).await;
    assert!(refused.is_err(), "the fake refuses the wrong key");
    answers += &format!("{refused:?}\n");

    let http = reqwest::Client::new();
    answers += &post(
        &http,
        &url,
        bodies::subscribe(LIST, SIGNED, "2026-03-02 10:00:00"),
        true,
    )
    .await;
    answers += &post(
        &http,
        &url,
        bodies::subscribe(LIST, UNSIGNED, "2026-03-02 10:01:00"),
        false,
    )
    .await;
    let guessed = with_token(&url, "not-the-token");
    answers += &post(
        &http,
        &guessed,
        bodies::subscribe(LIST, UNSIGNED, "2026-03-02 10:02:00"),
        true,
    )
    .await;
    let check = http.get(&url).send().await.expect("answered");
    assert_eq!(check.status().as_u16(), 200);

    let mut contacts = ContactServiceClient::with_interceptor(channel.clone(), Bearer(GRPC_TOKEN));
    let lookup = pb::GetContactRequest {
        lookup: Some(pb::get_contact_request::Lookup::Email(SIGNED.into())),
    };
    answers += &format!("{:?}\n", contacts.get_contact(lookup).await.expect("found"));
    let mut intruder = ContactServiceClient::with_interceptor(channel, Bearer(WRONG_GRPC_TOKEN));
    let list = pb::ListContactsRequest {
        audience_id: None,
        status: String::new(),
        page_size: 10,
        page_token: String::new(),
    };
    answers += &format!("{:?}\n", intruder.list_contacts(list).await);
    (answers, token, account.id)
}

async fn post(http: &reqwest::Client, url: &str, body: bodies::Form, signed: bool) -> String {
    let body = body.encode();
    let mut request = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded");
    if signed {
        let header = signature::sign(SIGNING_SECRET, Utc::now().timestamp(), body.as_bytes());
        request = request.header("x-mailchimp-signature", header);
    }
    let response = request.body(body).send().await.expect("answered");
    let status = response.status().as_u16();
    format!("{status} {}\n", response.text().await.expect("a text"))
}

/// `mailchimp-sync fetch` for the account, with the same logging; returns its output.
/// It waits on a blocking thread: the fake Mailchimp serves from this test's runtime.
async fn fetch_from_the_command_line(db: &TestDb, account_id: i64) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"));
    command
        .args(["--log-format", "json", "fetch", "--database-url", &db.url])
        .args(["--account", &account_id.to_string(), "--full"])
        .args(["--mailchimp-timeout", "10"])
        .env("MAILCHIMP_SYNC_LOG", "debug");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the waiting thread ends")
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    text
}

/// Lines at `info` or above; a line that is not JSON counts as one.
fn at_info_or_above(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|line| {
            let level = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|line| line.get("level").and_then(Value::as_str).map(str::to_owned));
            !matches!(level.as_deref(), Some("DEBUG" | "TRACE"))
        })
        .collect()
}

#[tokio::test]
async fn no_secret_at_any_level_and_no_address_at_info_in_a_whole_scenario() {
    let fake = fake_mailchimp().await;
    let db = TestDb::create();
    let log_dir = tempfile::tempdir().expect("a temporary folder");
    let options = Options {
        args: vec!["--log-format", "json"],
        env: vec![
            ("MAILCHIMP_SYNC_LOG", "debug"),
            ("MAILCHIMP_SYNC_GRPC_TOKEN", GRPC_TOKEN),
        ],
        ..Default::default()
    };
    let mut serve = ServeProcess::start_with(&db, log_dir.path(), options);
    serve.wait_until_ready(&reqwest::Client::new()).await;
    let (answers, webhook_token, account_id) = scenario(&serve, &fake).await;
    let fetched = fetch_from_the_command_line(&db, account_id).await;
    serve.signal("TERM");
    let status = serve.wait_for_exit().await;
    let logs = serve.logs() + &fetched;
    assert!(status.success(), "{logs}");

    assert!(
        logs.contains("\"DEBUG\""),
        "debug lines were captured:\n{logs}"
    );
    assert!(logs.contains("webhook received"), "{logs}");
    assert!(
        fetched.contains("1 members seen"),
        "the fetch ran: {fetched}"
    );
    let secrets = [
        API_KEY,
        WRONG_API_KEY,
        GRPC_TOKEN,
        WRONG_GRPC_TOKEN,
        SIGNING_SECRET,
        &webhook_token,
    ];
    for secret in secrets {
        // A key's part before the data centre is the secret; search for that too.
        let core = secret.split('-').next().unwrap_or(secret);
        for (text, name) in [(&logs, "the logs"), (&answers, "an answer")] {
            assert!(!text.contains(secret), "{name} hold {secret}:\n{text}");
            if core.len() >= 16 {
                assert!(!text.contains(core), "{name} hold {core}:\n{text}");
            }
        }
    }
    let loud = at_info_or_above(&logs);
    for address in [SIGNED, UNSIGNED, FETCHED] {
        let local = address.split('@').next().expect("a local part");
        for line in &loud {
            assert!(
                !line.to_lowercase().contains(local),
                "{address} logged at info or above: {line}"
            );
        }
    }
}
