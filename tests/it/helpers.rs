//! The test harness: a fresh database per test on the backend `TEST_DATABASE_URL` names,
//! and [`TestApp`], the whole service started on port 0 with typed clients for both faces.
//!
//! `TEST_DATABASE_URL` unset or `sqlite`: a SQLite file in a temporary folder.
//! `TEST_DATABASE_URL=postgres://…/admin_db`: a database created for the test through that
//! admin connection and dropped when the test ends.

use std::env::VarError;
use std::net::SocketAddr;
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};
use mailchimp_sync::app::{self, Config, Running};
use mailchimp_sync::grpc::pb;
use mailchimp_sync::grpc::pb::account_service_client::AccountServiceClient;
use mailchimp_sync::grpc::pb::audience_service_client::AudienceServiceClient;
use mailchimp_sync::grpc::pb::blacklist_service_client::BlacklistServiceClient;
use mailchimp_sync::grpc::pb::contact_service_client::ContactServiceClient;
use mailchimp_sync::grpc::pb::fetch_service_client::FetchServiceClient;
use mailchimp_sync::grpc::pb::get_contact_request::Lookup;
use mailchimp_sync::grpc::pb::webhook_event_service_client::WebhookEventServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

/// The API key test accounts are created with; its data centre is `us6`.
pub const API_KEY: &str = "0123456789abcdef0123456789abcdef-us6";

/// How long a shutdown may take before the test fails; a bound on failure, never a wait.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The folder holding the SQLite file, held only to be removed on drop.
    Sqlite {
        _dir: TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    /// A fresh, empty database on the backend the environment names.
    pub fn create() -> TestDb {
        match std::env::var("TEST_DATABASE_URL") {
            Err(VarError::NotPresent) => TestDb::sqlite(),
            Ok(url) if url.is_empty() || url == "sqlite" => TestDb::sqlite(),
            Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                TestDb::postgres(url)
            }
            other => panic!("TEST_DATABASE_URL must be unset, `sqlite` or postgres://…: {other:?}"),
        }
    }

    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!(
            "sqlite://{}",
            dir.path().join("mailchimp-sync.db").display()
        );
        TestDb {
            url,
            cleanup: Cleanup::Sqlite { _dir: dir },
        }
    }

    fn postgres(admin_url: String) -> TestDb {
        let name = format!("mcs_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|e| panic!("cannot reach the PostgreSQL admin database: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        TestDb {
            url,
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }
}

/// While alive, the test's database refuses the service: PostgreSQL refuses connections
/// (and drops the open ones); SQLite is write-locked by another connection.
pub struct Outage {
    restore: Option<Box<dyn FnOnce()>>,
}

impl Drop for Outage {
    fn drop(&mut self) {
        if let Some(restore) = self.restore.take() {
            restore();
        }
    }
}

impl TestDb {
    /// PostgreSQL: ends every session on the database, which stays open to new ones.
    /// Returns how many sessions it ended; SQLite has none to end.
    pub fn end_sessions(&self) -> usize {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return 0;
        };
        let mut admin = PgConnection::establish(admin_url).expect("the admin database");
        let terminate = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        );
        diesel::sql_query(terminate)
            .execute(&mut admin)
            .expect("backends terminated")
    }

    pub fn outage(&self) -> Outage {
        match &self.cleanup {
            Cleanup::Sqlite { .. } => {
                let path = self.url.trim_start_matches("sqlite://").to_owned();
                let mut lock =
                    diesel::SqliteConnection::establish(&path).expect("a second connection");
                diesel::sql_query("BEGIN EXCLUSIVE")
                    .execute(&mut lock)
                    .expect("the write lock");
                let restore = move || {
                    let _ = diesel::sql_query("ROLLBACK").execute(&mut lock);
                };
                Outage {
                    restore: Some(Box::new(restore)),
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let mut admin = PgConnection::establish(admin_url).expect("the admin database");
                let refuse = format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false");
                diesel::sql_query(refuse)
                    .execute(&mut admin)
                    .expect("connections refused");
                let terminate = format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                );
                diesel::sql_query(terminate)
                    .execute(&mut admin)
                    .expect("backends terminated");
                let allow = format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true");
                let restore = move || {
                    let _ = diesel::sql_query(allow).execute(&mut admin);
                };
                Outage {
                    restore: Some(Box::new(restore)),
                }
            }
        }
    }
}

impl TestDb {
    /// PostgreSQL: another replica's writer, stalled inside its write transaction, holding
    /// the writers' lock until the guard is dropped. SQLite has no such lock: `None`.
    pub fn stalled_writer(&self) -> Option<Outage> {
        let Cleanup::Postgres { .. } = &self.cleanup else {
            return None;
        };
        let mut stalled = PgConnection::establish(&self.url).expect("a second session");
        let lock = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({})",
            mailchimp_sync::store::WRITE_LOCK
        );
        diesel::connection::SimpleConnection::batch_execute(&mut stalled, &lock)
            .expect("the writers' lock");
        let restore = move || {
            let _ = diesel::sql_query("ROLLBACK").execute(&mut stalled);
        };
        Some(Outage {
            restore: Some(Box::new(restore)),
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return;
        };
        // Best effort: a database left behind costs disk space, not a wrong result.
        if let Ok(mut admin) = PgConnection::establish(admin_url) {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = diesel::sql_query(drop).execute(&mut admin);
        }
    }
}

/// The URL with its database (the path) replaced, keeping credentials, host and query.
fn with_database(url: &str, database: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

/// The configuration tests start the service with: an `http://` public URL on the HTTP
/// port, allowed, and no schedule.
pub fn test_config(database_url: String, http_port: u16) -> Config {
    Config {
        database_url,
        public_url: Some(format!("http://127.0.0.1:{http_port}")),
        allow_insecure_webhook_url: true,
        max_db_connections: 4,
        fetch: Default::default(),
        fetch_schedule: None,
        http_tls: None,
        grpc_tls: None,
        grpc_token: None,
        drain_limit: std::time::Duration::from_secs(10),
        header_read_timeout: std::time::Duration::from_secs(30),
    }
}

/// The service, started on port 0 over a fresh database.
pub struct TestApp {
    pub http_addr: SocketAddr,
    running: Running,
    channel: Channel,
    http: reqwest::Client,
    // Dropped last, after the service let go of its connections; `None` for a second
    // instance over another's database.
    db: Option<TestDb>,
}

impl TestApp {
    /// The service as an operator would run it for a local trial: an `http://` public URL,
    /// allowed.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], with the configuration adjusted before start.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::create();
        let url = db.url.clone();
        TestApp::spawn_over(url, Some(db), adjust).await
    }

    /// A second instance of the service over this one's database, as replicas run.
    pub async fn spawn_replica(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let url = self
            .db
            .as_ref()
            .expect("the first instance owns the database")
            .url
            .clone();
        TestApp::spawn_over(url, None, adjust).await
    }

    async fn spawn_over(
        url: String,
        db: Option<TestDb>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an HTTP port");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a gRPC port");
        let http_port = http.local_addr().expect("a bound address").port();
        let mut config = test_config(url, http_port);
        adjust(&mut config);
        let running = app::start(config, http, grpc)
            .await
            .expect("the service starts");
        let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
            .expect("a valid endpoint")
            .connect()
            .await
            .expect("the gRPC listener accepts connections");
        TestApp {
            http_addr: running.http_addr,
            running,
            channel,
            http: reqwest::Client::new(),
            db,
        }
    }

    /// Stops the service the way a SIGTERM would, and checks that it stopped cleanly and
    /// in bounded time.
    pub async fn shutdown(self) {
        let TestApp {
            running,
            channel,
            db,
            ..
        } = self;
        drop(channel);
        let stopped = tokio::time::timeout(SHUTDOWN_BOUND, running.shutdown()).await;
        let stopped = stopped.unwrap_or_else(|_| panic!("not stopped within {SHUTDOWN_BOUND:?}"));
        stopped.expect("the service stops cleanly");
        drop(db);
    }

    /// Ends the service's database sessions, as a database restart would; see
    /// [`TestDb::end_sessions`].
    pub fn end_database_sessions(&self) -> usize {
        self.db
            .as_ref()
            .expect("the instance owns its database")
            .end_sessions()
    }

    /// See [`TestDb::stalled_writer`].
    pub fn stalled_writer(&self) -> Option<Outage> {
        self.db
            .as_ref()
            .expect("the instance owns its database")
            .stalled_writer()
    }

    /// Cuts the service off its database until the guard is dropped.
    pub fn database_outage(&self) -> Outage {
        self.db
            .as_ref()
            .expect("the instance owns its database")
            .outage()
    }

    /// The connection the typed clients share, for clients built another way.
    pub fn grpc_channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The running service's state, for calling the domain directly.
    pub fn state(&self) -> &app::AppState {
        &self.running.state
    }

    pub fn fetches(&self) -> FetchServiceClient<Channel> {
        FetchServiceClient::new(self.channel.clone())
    }

    pub fn accounts(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel.clone())
    }

    pub fn audiences(&self) -> AudienceServiceClient<Channel> {
        AudienceServiceClient::new(self.channel.clone())
    }

    pub fn contacts(&self) -> ContactServiceClient<Channel> {
        ContactServiceClient::new(self.channel.clone())
    }

    pub fn blacklist(&self) -> BlacklistServiceClient<Channel> {
        BlacklistServiceClient::new(self.channel.clone())
    }

    pub fn events(&self) -> WebhookEventServiceClient<Channel> {
        WebhookEventServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }

    /// A URL on the HTTP face.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// Creates an account and generates its webhook URL; returns both.
    pub async fn create_account(&self) -> (i64, String) {
        let request = pb::CreateAccountRequest {
            name: "Test account".into(),
            api_key: API_KEY.into(),
            api_base_url: None,
        };
        let account = self
            .accounts()
            .create_account(request)
            .await
            .expect("created")
            .into_inner();
        let url = self.generate_webhook_url(account.id).await;
        (account.id, url)
    }

    pub async fn generate_webhook_url(&self, account_id: i64) -> String {
        let request = pb::GenerateWebhookUrlRequest { account_id };
        let response = self.accounts().generate_webhook_url(request).await;
        response.expect("a webhook URL").into_inner().webhook_url
    }

    /// POSTs a form body as Mailchimp does; returns the status and the answer's text.
    pub async fn post_webhook(&self, url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the HTTP face answers");
        read(response).await
    }

    pub async fn get(&self, url: &str) -> (u16, String) {
        read(
            self.http
                .get(url)
                .send()
                .await
                .expect("the HTTP face answers"),
        )
        .await
    }

    /// Every stored webhook event of the account, newest first.
    pub async fn events_of(&self, account_id: i64) -> Vec<pb::WebhookEvent> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListWebhookEventsRequest {
                outcome: String::new(),
                account_id: Some(account_id),
                page_size: 1000,
                page_token,
            };
            let page = self
                .events()
                .list_webhook_events(request)
                .await
                .expect("listed");
            let page = page.into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }

    /// The account's most recently stored webhook event.
    pub async fn latest_event(&self, account_id: i64) -> pb::WebhookEvent {
        let request = pb::ListWebhookEventsRequest {
            outcome: String::new(),
            account_id: Some(account_id),
            page_size: 1,
            page_token: String::new(),
        };
        let page = self
            .events()
            .list_webhook_events(request)
            .await
            .expect("listed");
        page.into_inner()
            .events
            .into_iter()
            .next()
            .expect("a stored event")
    }

    pub async fn get_contact(&self, email: &str) -> Result<pb::Contact, tonic::Status> {
        let request = pb::GetContactRequest {
            lookup: Some(Lookup::Email(email.into())),
        };
        Ok(self.contacts().get_contact(request).await?.into_inner())
    }

    /// Every contact in the store, read page by page.
    pub async fn all_contacts(&self) -> Vec<pb::Contact> {
        let mut contacts = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListContactsRequest {
                audience_id: None,
                status: String::new(),
                page_size: 100,
                page_token,
            };
            let page = self
                .contacts()
                .list_contacts(request)
                .await
                .expect("listed")
                .into_inner();
            contacts.extend(page.contacts);
            if page.next_page_token.is_empty() {
                return contacts;
            }
            page_token = page.next_page_token;
        }
    }

    /// The whole change feed, oldest first.
    pub async fn all_changes(&self) -> Vec<pb::Change> {
        let mut changes: Vec<pb::Change> = Vec::new();
        loop {
            let after_sequence = changes.last().map_or(0, |change| change.sequence);
            let request = pb::ListChangesRequest {
                after_sequence,
                limit: 1000,
            };
            let page = self
                .contacts()
                .list_changes(request)
                .await
                .expect("listed")
                .into_inner();
            if page.changes.is_empty() {
                return changes;
            }
            changes.extend(page.changes);
        }
    }

    /// How many change-feed entries name this normalized address.
    pub async fn changes_for(&self, email_normalized: &str) -> usize {
        let changes = self.all_changes().await;
        changes
            .iter()
            .filter(|change| change.email_normalized == email_normalized)
            .count()
    }

    pub async fn blacklist_entry(&self, email: &str) -> Result<pb::BlacklistEntry, tonic::Status> {
        let request = pb::GetBlacklistEntryRequest {
            email: email.into(),
        };
        Ok(self
            .blacklist()
            .get_blacklist_entry(request)
            .await?
            .into_inner())
    }
}

async fn read(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.expect("a readable answer"))
}

/// Swaps the token at the end of a webhook URL for another path segment.
pub fn with_token(webhook_url: &str, token: &str) -> String {
    let (base, _) = webhook_url
        .rsplit_once('/')
        .expect("a webhook URL ends in its token");
    format!("{base}/{token}")
}

/// The failing status, or a panic naming what was expected instead.
pub fn expect_error<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Status {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(status) => status,
    }
}
