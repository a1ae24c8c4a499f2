//! The database going away: webhooks answer 503 (Mailchimp retries later) without storing a
//! half, readiness fails, and the service recovers by itself once the database is back.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::bodies;
use crate::helpers::TestApp;

const LIST: &str = "4f1c9a7e20";

#[tokio::test]
async fn an_unreachable_database_answers_503_and_the_service_recovers() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let first = bodies::subscribe(LIST, "first@example.com", "2026-03-02 10:00:00").encode();
    let second = bodies::subscribe(LIST, "second@example.com", "2026-03-02 10:01:00").encode();
    assert_eq!(app.post_webhook(&url, first).await.0, 200);

    let outage = app.database_outage();
    let (status, text) = app.post_webhook(&url, second.clone()).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        !text.contains("sqlite") && !text.contains("postgres"),
        "no internals: {text}"
    );
    let mut health = app
        .health()
        .watch(HealthCheckRequest::default())
        .await
        .expect("health watched")
        .into_inner();
    if on_postgres() {
        // SQLite keeps serving reads under another writer's lock; PostgreSQL is gone.
        assert_eq!(app.get(&app.http_url("/readyz")).await.0, 503);
        assert_eq!(next_status(&mut health).await, ServingStatus::Serving);
        assert_eq!(next_status(&mut health).await, ServingStatus::NotServing);
    }
    drop(outage);
    if on_postgres() {
        assert_eq!(next_status(&mut health).await, ServingStatus::Serving);
    }

    assert_eq!(
        app.post_webhook(&url, second).await.0,
        200,
        "recovered by itself"
    );
    assert_eq!(app.get(&app.http_url("/readyz")).await.0, 200);
    assert!(app.get_contact("second@example.com").await.is_ok());
    let events = app.events_of(account_id).await;
    assert_eq!(events.len(), 2, "the refused delivery left nothing behind");
    app.shutdown().await;
}

/// PostgreSQL ending the sessions of idle connections (a restart, an administrator) costs
/// no webhook: the writer keeps its connection between batches, finds it gone, and writes
/// the batch on a new one.
#[tokio::test]
async fn sessions_ended_while_idle_cost_no_webhook() {
    if !on_postgres() {
        return;
    }
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let first = bodies::subscribe(LIST, "first@example.com", "2026-03-02 10:00:00").encode();
    let second = bodies::subscribe(LIST, "second@example.com", "2026-03-02 10:01:00").encode();
    assert_eq!(app.post_webhook(&url, first).await.0, 200);

    assert!(app.end_database_sessions() > 0, "the service had sessions");
    let (status, text) = app.post_webhook(&url, second).await;
    assert_eq!(status, 200, "{text}");
    assert!(app.get_contact("second@example.com").await.is_ok());
    assert_eq!(app.events_of(account_id).await.len(), 2);
    app.shutdown().await;
}

/// A replica stalled inside its write transaction (a frozen machine, a cut network) holds
/// the writers' lock: the others answer 503 after a bounded wait, store nothing, and take
/// webhooks again once the lock is free.
#[tokio::test]
async fn a_stalled_replica_costs_others_a_503_not_a_hang() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let Some(stalled) = app.stalled_writer() else {
        return;
    };
    let body = bodies::subscribe(LIST, "first@example.com", "2026-03-02 10:00:00").encode();
    let (status, text) = app.post_webhook(&url, body.clone()).await;
    assert_eq!(status, 503, "{text}");
    drop(stalled);
    assert_eq!(
        app.events_of(account_id).await.len(),
        0,
        "the refused event left nothing"
    );

    let (status, text) = app.post_webhook(&url, body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.events_of(account_id).await.len(), 1);
    app.shutdown().await;
}

/// The next status the health stream reports; the bound is for a failure, never a wait.
async fn next_status(health: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), health.message());
    let response = next.await.expect("a status within the bound");
    let response = response
        .expect("the stream works")
        .expect("the stream goes on");
    ServingStatus::try_from(response.status).expect("a known status")
}

fn on_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"))
}
