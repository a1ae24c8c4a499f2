//! What an operator watches and does: `GET /metrics` moving with real traffic, and a
//! graceful stop on SIGTERM and SIGINT that loses no webhook it answered 200.

use mailchimp_sync::domain::fetch::{Mode, Target, Trigger};
use mailchimp_sync::fake_mailchimp::{FakeMailchimp, NewMember, Source};
use mailchimp_sync::grpc::pb;
use mailchimp_sync::store::fetch_runs::{self, Claim};
use mailchimp_sync::store::{Store, accounts, contacts, lists};

use crate::bodies;
use crate::helpers::{API_KEY, TestApp, TestDb, with_token};
use crate::process::{Options, ServeProcess};

const LIST: &str = "4f1c9a7e20";

/// The value of one series in a Prometheus text exposition; 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

#[tokio::test]
async fn metrics_count_webhooks_fetch_runs_and_the_pool() {
    let fake = FakeMailchimp::new(API_KEY);
    fake.add_list(LIST, "Newsletter");
    for n in 0..3 {
        let member = NewMember::new(&format!("member{n}@example.com"));
        fake.add_member(LIST, member, Source::Admin);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.serve(listener).await.unwrap();
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let metrics_url = app.http_url("/metrics");
    let (status, before) = app.get(&metrics_url).await;
    assert_eq!(status, 200, "{before}");
    let applied = r#"mailchimp_sync_webhook_events_total{type="subscribe",outcome="applied"}"#;
    assert_eq!(sample(&before, applied), 0.0);

    let first = bodies::subscribe(LIST, "a@example.com", "2026-03-02 10:00:00").encode();
    let second = bodies::subscribe(LIST, "b@example.com", "2026-03-02 10:01:00").encode();
    assert_eq!(app.post_webhook(&url, first.clone()).await.0, 200);
    assert_eq!(app.post_webhook(&url, second).await.0, 200);
    assert_eq!(app.post_webhook(&url, first).await.0, 200, "a repeat");
    assert_eq!(app.post_webhook(&url, "type=").await.0, 400);
    let unknown = with_token(&url, "unknown");
    assert_eq!(app.post_webhook(&unknown, "type=subscribe").await.0, 404);

    let update = pb::UpdateAccountRequest {
        id: account_id,
        api_base_url: Some(fake.base_url()),
        ..Default::default()
    };
    app.accounts()
        .update_account(update)
        .await
        .expect("updated");
    let fetcher = &app.state().fetcher;
    let claims = fetcher.claim(Target::Account(account_id), Mode::Full, Trigger::Cli, None);
    for claim in claims.await.expect("claimed") {
        let Claim::Claimed(run) = claim else {
            panic!("nothing else runs: {claim:?}")
        };
        fetcher.run(run, |_| {}).await.expect("the run ends");
    }

    let (_, after) = app.get(&metrics_url).await;
    assert_eq!(sample(&after, applied), 2.0, "{after}");
    let unchanged = r#"mailchimp_sync_webhook_events_total{type="subscribe",outcome="unchanged"}"#;
    assert_eq!(sample(&after, unchanged), 1.0, "{after}");
    let rejected = r#"mailchimp_sync_webhook_events_total{type="none",outcome="rejected"}"#;
    assert_eq!(sample(&after, rejected), 1.0, "{after}");
    assert_eq!(
        sample(&after, "mailchimp_sync_webhook_duration_seconds_count"),
        4.0
    );
    let succeeded = r#"mailchimp_sync_fetch_runs_total{state="succeeded"}"#;
    assert_eq!(sample(&after, succeeded), 1.0, "{after}");
    assert_eq!(sample(&after, "mailchimp_sync_fetch_members_total"), 3.0);
    let connections = sample(&after, "mailchimp_sync_db_pool_connections");
    assert!((1.0..=4.0).contains(&connections), "{after}");
    let idle = sample(&after, "mailchimp_sync_db_pool_idle_connections");
    assert!(idle <= connections, "{after}");
    app.shutdown().await;
}

/// Concurrent senders, the most each sends, and after how many answers the signal goes.
const SENDERS: usize = 16;
const PER_SENDER: usize = 100;
const SIGNAL_AFTER: usize = 60;

/// What a burst saw: the addresses answered 200, and how many requests got no 200.
struct Burst {
    answered: Vec<String>,
    refused: usize,
}

/// `SENDERS` concurrent senders post distinct subscribes one after the other until one is
/// not answered 200; the process gets the signal once `SIGNAL_AFTER` were answered.
async fn burst_with_signal(serve: &ServeProcess, url: &str, signal: &str) -> Burst {
    let http = reqwest::Client::new();
    let (answers, mut received) = tokio::sync::mpsc::unbounded_channel();
    for sender in 0..SENDERS {
        let (http, url, answers) = (http.clone(), url.to_owned(), answers.clone());
        tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let email = format!("burst{sender}.{n}@example.com");
                let body = bodies::subscribe(LIST, &email, "2026-03-02 10:00:00").encode();
                let response = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                let ok = response.is_ok_and(|response| response.status().as_u16() == 200);
                let _ = answers.send((email, ok));
                if !ok {
                    return;
                }
            }
        });
    }
    drop(answers);
    let mut burst = Burst {
        answered: Vec::new(),
        refused: 0,
    };
    while let Some((email, ok)) = received.recv().await {
        if ok {
            burst.answered.push(email);
            if burst.answered.len() == SIGNAL_AFTER {
                serve.signal(signal);
            }
        } else {
            burst.refused += 1;
        }
    }
    burst
}

async fn stop_mid_burst_loses_nothing_answered(signal: &str) {
    let db = TestDb::create();
    let log_dir = tempfile::tempdir().expect("a temporary folder");
    let mut serve = ServeProcess::start(&db, log_dir.path());
    let http = reqwest::Client::new();
    serve.wait_until_ready(&http).await;
    let url = webhook_url(&serve).await;

    let Burst { answered, refused } = burst_with_signal(&serve, &url, signal).await;
    let status = serve.wait_for_exit().await;
    assert!(status.success(), "exit {status}:\n{}", serve.logs());
    eprintln!("{} answered 200, {refused} not", answered.len());
    assert!(
        answered.len() >= SIGNAL_AFTER,
        "{} answered",
        answered.len()
    );
    assert!(
        refused > 0 && answered.len() < SENDERS * PER_SENDER,
        "the signal came mid-burst and the service stopped accepting"
    );

    let store = Store::open(&db.url, 1).expect("the store opens");
    let mut conn = store.connection().expect("a connection");
    let lost: Vec<&String> = answered
        .iter()
        .filter(|email| {
            let found = contacts::find_by_email(&mut conn, email).expect("looked up");
            found.is_none()
        })
        .collect();
    assert!(lost.is_empty(), "answered 200 but not stored: {lost:?}");
    drop(conn);

    // And the next process starts over the same database and serves.
    let mut again = serve.restart(&db, log_dir.path(), Options::default());
    again.wait_until_ready(&http).await;
}

async fn channel(serve: &ServeProcess) -> tonic::transport::Channel {
    let endpoint = format!("http://{}", serve.grpc_addr);
    tonic::transport::Channel::from_shared(endpoint)
        .expect("an endpoint")
        .connect()
        .await
        .expect("connected")
}

/// Creates an account over gRPC; returns its id.
async fn create_account(serve: &ServeProcess, api_base_url: Option<String>) -> i64 {
    let mut accounts = pb::account_service_client::AccountServiceClient::new(channel(serve).await);
    let request = pb::CreateAccountRequest {
        name: "Operations".into(),
        api_key: API_KEY.into(),
        api_base_url,
    };
    let account = accounts.create_account(request).await.expect("created");
    account.into_inner().id
}

/// Creates an account over gRPC and returns its webhook URL.
async fn webhook_url(serve: &ServeProcess) -> String {
    let account_id = create_account(serve, None).await;
    let mut accounts = pb::account_service_client::AccountServiceClient::new(channel(serve).await);
    let request = pb::GenerateWebhookUrlRequest { account_id };
    let url = accounts.generate_webhook_url(request).await.expect("a URL");
    url.into_inner().webhook_url
}

#[tokio::test]
async fn sigterm_mid_burst_exits_0_and_every_answered_webhook_is_stored() {
    stop_mid_burst_loses_nothing_answered("TERM").await;
}

#[tokio::test]
async fn sigint_mid_burst_exits_0_and_every_answered_webhook_is_stored() {
    stop_mid_burst_loses_nothing_answered("INT").await;
}

/// A served fake audience whose every answer takes seconds, so that a run is still on its
/// first page when a signal comes, however loaded the machine.
async fn slow_fake() -> FakeMailchimp {
    let fake = FakeMailchimp::new(API_KEY);
    fake.add_list(LIST, "Newsletter");
    fake.add_synthetic_members(LIST, 5_000);
    fake.faults().set_delay(std::time::Duration::from_secs(3));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.serve(listener).await.unwrap();
    fake
}

#[tokio::test]
async fn sigterm_during_a_fetch_marks_the_run_interrupted_and_exits_0() {
    let fake = slow_fake().await;
    let db = TestDb::create();
    let log_dir = tempfile::tempdir().expect("a temporary folder");
    let mut serve = ServeProcess::start(&db, log_dir.path());
    serve.wait_until_ready(&reqwest::Client::new()).await;
    let account_id = create_account(&serve, Some(fake.base_url())).await;

    let mut fetches = pb::fetch_service_client::FetchServiceClient::new(channel(&serve).await);
    let request = pb::TriggerFetchRequest {
        target: Some(pb::trigger_fetch_request::Target::AccountId(account_id)),
        mode: pb::FetchMode::Full.into(),
    };
    let runs = fetches.trigger_fetch(request).await.expect("triggered");
    let run = runs.into_inner().runs.pop().expect("a run");
    assert_eq!(run.state, "running");
    serve.signal("TERM");
    let status = serve.wait_for_exit().await;
    assert!(status.success(), "exit {status}:\n{}", serve.logs());

    let store = Store::open(&db.url, 1).expect("the store opens");
    let mut conn = store.connection().expect("a connection");
    let stored = fetch_runs::get(&mut conn, run.id).expect("the run is stored");
    assert_eq!(stored.state, fetch_runs::INTERRUPTED, "{}", serve.logs());
}

#[tokio::test]
async fn sigterm_during_the_fetch_command_marks_the_run_interrupted() {
    stop_the_fetch_command("TERM").await;
}

#[tokio::test]
async fn ctrl_c_during_the_fetch_command_marks_the_run_interrupted() {
    stop_the_fetch_command("INT").await;
}

/// `mailchimp-sync fetch` stopped by a signal while it waits for its first page: it exits
/// non-zero saying why, and the run is marked interrupted, not left running.
async fn stop_the_fetch_command(signal: &str) {
    let fake = slow_fake().await;
    let db = TestDb::create();
    let store = Store::open(&db.url, 1).expect("the store opens");
    store.migrate().expect("migrated");
    let audience = {
        let mut conn = store.connection().expect("a connection");
        let now = mailchimp_sync::now();
        let new = accounts::NewAccount {
            name: "Acme",
            api_key: API_KEY,
            data_center: "us6",
            api_base_url: Some(&fake.base_url()),
            create_date: now,
            write_date: now,
        };
        let account = accounts::insert(&mut conn, &new).expect("an account");
        lists::get_or_create(&mut conn, account.id, LIST, now).expect("an audience")
    };

    let fetch = std::process::Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"))
        .args(["fetch", "--full", "--audience", &audience.id.to_string()])
        .args(["--database-url", &db.url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the fetch starts");
    // The run is claimed before its first page is asked for.
    let run = loop {
        let mut conn = store.connection().expect("a connection");
        let running = fetch_runs::RunFilter {
            list_id: Some(audience.id),
            state: Some(fetch_runs::RUNNING.to_owned()),
        };
        if let Some(run) = fetch_runs::page(&mut conn, &running, 0, 1)
            .expect("read")
            .pop()
        {
            break run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let pid = fetch.id().to_string();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || fetch.wait_with_output());
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), exit)
        .await
        .expect("the fetch ends soon after the signal")
        .expect("joined")
        .expect("the fetch ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("stopped by a signal"), "{stderr}");

    let mut conn = store.connection().expect("a connection");
    let stored = fetch_runs::get(&mut conn, run.id).expect("the run is stored");
    assert_eq!(stored.state, fetch_runs::INTERRUPTED, "{stderr}");
}

#[tokio::test]
async fn clients_that_never_finish_a_request_do_not_hold_up_a_stop() {
    use tokio::io::AsyncWriteExt;

    let db = TestDb::create();
    let log_dir = tempfile::tempdir().expect("a temporary folder");
    let options = Options {
        args: vec!["--shutdown-grace", "1"],
        ..Options::default()
    };
    let mut serve = ServeProcess::start_with(&db, log_dir.path(), options);
    serve.wait_until_ready(&reqwest::Client::new()).await;
    let half_sent: [(&str, &[u8]); 3] = [
        (&serve.http_addr, b"GET /heal"),
        (
            &serve.http_addr,
            b"POST /webhooks/mailchimp/0123456789abcdef0123 HTTP/1.1\r\nHost: a\r\n\
              Content-Length: 100\r\n\r\ntype=subscribe",
        ),
        (&serve.grpc_addr, b"PRI * HTTP/2.0\r\n"),
    ];
    let mut held = Vec::new();
    for (addr, bytes) in half_sent {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        stream.write_all(bytes).await.expect("sent");
        held.push(stream);
    }
    serve.signal("TERM");
    // Within the process helper's bound, though the clients still hold their connections.
    let status = serve.wait_for_exit().await;
    assert!(status.success(), "exit {status}:\n{}", serve.logs());
    assert!(
        serve.logs().contains("shutdown grace time"),
        "{}",
        serve.logs()
    );
    drop(held);
}
