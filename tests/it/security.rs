//! The service facing the internet: HTTPS and gRPC over TLS with a certificate made at
//! test time, the gRPC bearer token, and the refusals at start-up that keep an operator
//! from exposing it by mistake.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use mailchimp_sync::app::{self, Config, Running};
use mailchimp_sync::grpc::auth::BearerToken;
use mailchimp_sync::grpc::pb;
use mailchimp_sync::grpc::pb::account_service_client::AccountServiceClient;
use mailchimp_sync::grpc::pb::contact_service_client::ContactServiceClient;
use mailchimp_sync::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::bodies;
use crate::helpers::{API_KEY, SHUTDOWN_BOUND, TestApp, TestDb, expect_error, test_config};
use crate::process::{free_local_addr, run_binary};

/// The gRPC token of these tests.
pub const TOKEN: &str = "test-grpc-token-7f3a9c0d2b";

/// A test CA and a `localhost` certificate it signed, written as PEM files.
pub struct TestCerts {
    pub ca_pem: String,
    pub files: TlsFiles,
    _dir: TempDir,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mailchimp-sync test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("the CA certificate");
        let key = KeyPair::generate().expect("a key");
        let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &ca).expect("a certificate");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert.pem()),
            key: write(dir.path(), "key.pem", &key.serialize_pem()),
        };
        TestCerts {
            ca_pem: ca.pem(),
            files,
            _dir: dir,
        }
    }

    /// An HTTPS client that trusts the test CA only.
    pub fn https_client(&self, addr: std::net::SocketAddr) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("the CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve("localhost", addr)
            .build()
            .expect("a client")
    }

    /// A gRPC channel over TLS that trusts the test CA only.
    pub async fn grpc_channel(&self, addr: std::net::SocketAddr) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{addr}"))
            .expect("an endpoint")
            .tls_config(tls)
            .expect("a TLS configuration")
            .connect()
            .await
            .expect("the TLS handshake succeeds")
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("written");
    path
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub &'static str);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = MetadataValue::try_from(format!("Bearer {}", self.0)).expect("ASCII");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// The service on loopback port 0, adjusted, over a fresh database.
async fn start(db: &TestDb, adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Running> {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut config = test_config(db.url.clone(), http.local_addr()?.port());
    adjust(&mut config);
    app::start(config, http, grpc).await
}

async fn stop(running: Running) {
    let stopped = tokio::time::timeout(SHUTDOWN_BOUND, running.shutdown()).await;
    stopped.expect("stopped in time").expect("stopped cleanly");
}

fn create_request() -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        name: "Secure".into(),
        api_key: API_KEY.into(),
        api_base_url: None,
    }
}

#[tokio::test]
async fn https_and_grpc_over_tls_serve_clients_that_trust_the_certificate() {
    let certs = TestCerts::generate();
    let db = TestDb::create();
    let running = start(&db, |config| {
        let port = config
            .public_url
            .as_deref()
            .and_then(|url| url.rsplit(':').next());
        config.public_url = Some(format!("https://localhost:{}", port.expect("a port")));
        config.allow_insecure_webhook_url = false;
        config.http_tls = Some(certs.files.clone());
        config.grpc_tls = Some(certs.files.clone());
    })
    .await
    .expect("the service starts with TLS");

    let channel = certs.grpc_channel(running.grpc_addr).await;
    let mut accounts = AccountServiceClient::new(channel);
    let account = accounts.create_account(create_request()).await;
    let account_id = account.expect("created over TLS").into_inner().id;
    let request = pb::GenerateWebhookUrlRequest { account_id };
    let url = accounts.generate_webhook_url(request).await;
    let url = url.expect("a webhook URL").into_inner().webhook_url;
    assert!(url.starts_with("https://localhost:"), "{url}");

    let https = certs.https_client(running.http_addr);
    let body = bodies::subscribe(bodies::LIST_A, "tls@example.com", "2026-03-02 10:00:00");
    let response = https
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.encode())
        .send()
        .await
        .expect("the HTTPS listener answers");
    assert_eq!(response.status().as_u16(), 200);

    let plain = format!("http://{}/healthz", running.http_addr);
    let plain = reqwest::get(&plain).await;
    assert!(
        plain.is_err() || !plain.expect("an answer").status().is_success(),
        "plain HTTP is not served on a TLS listener"
    );
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", running.http_addr)
        .build()
        .expect("a client");
    let healthz = format!("https://localhost:{}/healthz", running.http_addr.port());
    assert!(
        untrusting.get(&healthz).send().await.is_err(),
        "a client that does not trust the test CA refuses the certificate"
    );
    stop(running).await;
}

#[tokio::test]
async fn a_missing_or_unparsable_certificate_stops_the_start_with_a_clear_error() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let certs = TestCerts::generate();
    let other = TestCerts::generate();

    let cases = [
        (
            Some((missing.clone(), certs.files.key.clone())),
            None,
            "missing.pem",
        ),
        (
            Some((garbage.clone(), certs.files.key.clone())),
            None,
            "no PEM certificate",
        ),
        (
            None,
            Some((certs.files.cert.clone(), garbage.clone())),
            "no PEM private key",
        ),
        (
            None,
            Some((certs.files.key.clone(), certs.files.key.clone())),
            "PEM",
        ),
        (
            Some((certs.files.cert.clone(), other.files.key.clone())),
            None,
            "does not fit",
        ),
    ];
    for (http, grpc, expected) in cases {
        let files =
            |pair: Option<(PathBuf, PathBuf)>| pair.map(|(cert, key)| TlsFiles { cert, key });
        let started = start(&db, |config| {
            config.http_tls = files(http.clone());
            config.grpc_tls = files(grpc.clone());
        })
        .await;
        let Err(error) = started else {
            panic!("started with {http:?} {grpc:?}");
        };
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{expected:?} not in: {message}");
        assert!(
            message.contains("--"),
            "the message names the flag: {message}"
        );
        let (cert, _) = http.or(grpc).expect("a pair of files");
        assert!(
            message.contains(&*cert.to_string_lossy()),
            "the message names the file: {message}"
        );
    }
}

/// `serve` with these gRPC address and extra arguments, expected to refuse to start;
/// returns its exit status and standard error.
fn serve_until_refused(db: &TestDb, grpc_addr: &str, extra: &[&str]) -> (ExitStatus, String) {
    let http = free_local_addr();
    let mut args = vec!["serve", "--database-url", &db.url, "--http-addr", &http];
    args.extend(["--grpc-addr", grpc_addr]);
    args.extend(extra);
    run_binary(&args)
}

#[tokio::test]
async fn the_binary_exits_non_zero_on_a_bad_certificate_path() {
    let db = TestDb::create();
    let grpc = free_local_addr();
    let tls = [
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ];
    let (status, stderr) = serve_until_refused(&db, &grpc, &tls);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

/// The service with gRPC bound to every interface (HTTP stays on loopback).
async fn start_on_every_interface(db: &TestDb, token: Option<&str>) -> anyhow::Result<Running> {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let mut config = test_config(db.url.clone(), http.local_addr()?.port());
    config.grpc_token = token.map(|token| BearerToken::new(token.into()).expect("a token"));
    app::start(config, http, grpc).await
}

#[tokio::test]
async fn without_a_token_grpc_refuses_to_listen_beyond_loopback() {
    let db = TestDb::create();
    let Err(error) = start_on_every_interface(&db, None).await else {
        panic!("gRPC served on every interface without a token");
    };
    let message = format!("{error:#}");
    assert!(message.contains("--grpc-token"), "{message}");

    let (status, stderr) = serve_until_refused(&db, "0.0.0.0:0", &[]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("--grpc-token"), "{stderr}");
}

#[tokio::test]
async fn with_a_token_grpc_may_listen_beyond_loopback() {
    let db = TestDb::create();
    let running = start_on_every_interface(&db, Some(TOKEN)).await;
    stop(running.expect("started")).await;
}

#[tokio::test]
async fn every_grpc_call_but_health_needs_the_bearer_token() {
    let app = TestApp::spawn_with(|config| {
        config.grpc_token = Some(BearerToken::new(TOKEN.into()).expect("a token"));
    })
    .await;
    let channel = app.grpc_channel();

    let status = expect_error(app.accounts().create_account(create_request()).await);
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let wrong = "wrong-token-5d1e";
    let mut intruder = AccountServiceClient::with_interceptor(channel.clone(), Bearer(wrong));
    let status = expect_error(intruder.create_account(create_request()).await);
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(!status.message().contains(wrong), "{status:?}");
    assert!(!format!("{status:?}").contains(TOKEN));

    let mut accounts = AccountServiceClient::with_interceptor(channel.clone(), Bearer(TOKEN));
    let account = accounts.create_account(create_request()).await;
    assert!(account.is_ok(), "{account:?}");
    let listed = intruder.list_accounts(pb::ListAccountsRequest {}).await;
    assert_eq!(expect_error(listed).code(), tonic::Code::Unauthenticated);

    let request = pb::WatchChangesRequest { after_sequence: 0 };
    let watch = app.contacts().watch_changes(request).await;
    assert_eq!(expect_error(watch).code(), tonic::Code::Unauthenticated);
    let mut contacts = ContactServiceClient::with_interceptor(channel, Bearer(TOKEN));
    assert!(contacts.watch_changes(request).await.is_ok());

    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let health = app
        .health()
        .check(check)
        .await
        .expect("health needs no token");
    assert_eq!(health.into_inner().status, 1, "SERVING");
    app.shutdown().await;
}

#[test]
fn help_never_shows_the_grpc_token_from_the_environment() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"))
        .args(["serve", "--help"])
        .env("MAILCHIMP_SYNC_GRPC_TOKEN", TOKEN)
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("MAILCHIMP_SYNC_GRPC_TOKEN"), "{help}");
    assert!(!help.contains(TOKEN), "{help}");
}
