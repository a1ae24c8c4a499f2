//! The service under test: the release binary built and started as its own process on
//! loopback ports, over a fresh database, and the gRPC calls the benchmark makes to it.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use diesel::{Connection, PgConnection, RunQueryDsl};
use mailchimp_sync::grpc::pb;
use mailchimp_sync::grpc::pb::account_service_client::AccountServiceClient;
use mailchimp_sync::grpc::pb::audience_service_client::AudienceServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

/// The key every benchmark account uses; the fake Mailchimp accepts it.
pub const API_KEY: &str = "0123456789abcdef0123456789abcdef-us6";

/// How long the service may take to start or to stop.
const START_BOUND: Duration = Duration::from_secs(60);
const STOP_BOUND: Duration = Duration::from_secs(30);

/// Builds `mailchimp-sync` in release mode (a no-op when fresh) and returns its path, next
/// to this example's own binary (`target/release/examples/bench`).
pub fn build_release_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the release binary (cargo build --release --bin mailchimp-sync)…");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "mailchimp-sync"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "cargo build --release failed: {status}");
    let example = std::env::current_exe().context("cannot find this program's path")?;
    let profile_dir = example
        .parent()
        .and_then(Path::parent)
        .context("this program is not in target/<profile>/examples")?;
    Ok(profile_dir.join("mailchimp-sync"))
}

/// Which database the service runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// An admin URL through which a fresh database is created, then dropped.
    Postgres(String),
}

impl Backend {
    pub fn parse(text: &str) -> anyhow::Result<Backend> {
        match text {
            "sqlite" => Ok(Backend::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Backend::Postgres(url.to_owned()))
            }
            other => bail!("--database must be `sqlite` or a postgres:// admin URL, not {other}"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

/// A database that exists for one run, with a folder for its files and the service's log.
pub struct FreshDatabase {
    pub url: String,
    pub dir: TempDir,
    postgres: Option<(String, String)>,
}

impl FreshDatabase {
    pub fn create(backend: &Backend) -> anyhow::Result<FreshDatabase> {
        let dir = tempfile::Builder::new()
            .prefix("mailchimp-sync-bench-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        let Backend::Postgres(admin_url) = backend else {
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            return Ok(FreshDatabase {
                url,
                dir,
                postgres: None,
            });
        };
        let name = format!("mcs_bench_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::establish(admin_url)
            .with_context(|| format!("cannot reach PostgreSQL at {admin_url}"))?;
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(FreshDatabase {
            url: with_database(admin_url, &name),
            dir,
            postgres: Some((admin_url.clone(), name)),
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = &self.postgres else {
            return;
        };
        let dropped = PgConnection::establish(admin_url).map(|mut admin| {
            diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
        });
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("warning: database {name} could not be dropped");
        }
    }
}

/// The URL with its path (the database name) replaced.
fn with_database(url: &str, database: &str) -> String {
    let (url, query) = url.split_once('?').unwrap_or((url, ""));
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split('/').next().unwrap_or_default();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{authority}/{database}{query}")
}

/// `mailchimp-sync serve`, running; stopped with SIGTERM by [`Service::stop`].
pub struct Service {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    log: PathBuf,
}

impl Service {
    /// Starts the service with its log in `log` and waits until `/readyz` answers 200.
    pub async fn start(binary: &Path, database_url: &str, log: &Path) -> anyhow::Result<Service> {
        let http = free_loopback_port()?;
        let grpc = free_loopback_port()?;
        let log_file = File::create(log).context("cannot create the service log")?;
        let child = Command::new(binary)
            .arg("serve")
            .args(["--database-url", database_url])
            .args(["--http-addr", &http.to_string()])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--public-url", &format!("http://{http}")])
            .arg("--allow-insecure-webhook-url")
            .arg("--fetch-schedule=")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut service = Service {
            child,
            http,
            grpc,
            log: log.to_owned(),
        };
        service.wait_until_ready().await?;
        Ok(service)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let url = format!("http://{}/readyz", self.http);
        let started = Instant::now();
        while started.elapsed() < START_BOUND {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the service exited at start ({status}):\n{}",
                    self.log_tail()
                );
            }
            let ready = client.get(&url).send().await;
            if ready.is_ok_and(|answer| answer.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "the service was not ready within {START_BOUND:?}:\n{}",
            self.log_tail()
        )
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))?
            .connect()
            .await
            .context("cannot connect to the gRPC port")?;
        Ok(channel)
    }

    /// The last lines the service logged, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then waits for a graceful exit; kills it if it takes too long.
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_BOUND {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child.kill()?;
        bail!("the service did not stop within {STOP_BOUND:?}; killed")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Only reached with the child still running after an error: never leave it behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Creates an account (pointed at `api_base_url` when given) and returns its id.
pub async fn create_account(
    channel: &Channel,
    api_base_url: Option<String>,
) -> anyhow::Result<i64> {
    let account = AccountServiceClient::new(channel.clone())
        .create_account(pb::CreateAccountRequest {
            name: "Benchmark".into(),
            api_key: API_KEY.into(),
            api_base_url,
        })
        .await
        .context("CreateAccount failed")?
        .into_inner();
    Ok(account.id)
}

/// The account's webhook URL, freshly generated.
pub async fn webhook_url(channel: &Channel, account_id: i64) -> anyhow::Result<String> {
    let answer = AccountServiceClient::new(channel.clone())
        .generate_webhook_url(pb::GenerateWebhookUrlRequest { account_id })
        .await
        .context("GenerateWebhookUrl failed")?;
    Ok(answer.into_inner().webhook_url)
}

/// Asks Mailchimp (the fake) for the account's audiences; returns the one with this
/// Mailchimp id.
pub async fn refresh_audience(
    channel: &Channel,
    account_id: i64,
    mailchimp_list_id: &str,
) -> anyhow::Result<i64> {
    let audiences = AudienceServiceClient::new(channel.clone())
        .refresh_audiences(pb::RefreshAudiencesRequest { account_id })
        .await
        .context("RefreshAudiences failed")?
        .into_inner()
        .audiences;
    audiences
        .iter()
        .find(|audience| audience.mailchimp_list_id == mailchimp_list_id)
        .map(|audience| audience.id)
        .with_context(|| format!("audience {mailchimp_list_id} not found after a refresh"))
}
