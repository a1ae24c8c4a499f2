//! The `mailchimp-sync` binary: parses the command line, sets up logging, and calls into
//! the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mailchimp_sync::app::{self, Config};
use mailchimp_sync::domain::fetch;
use mailchimp_sync::grpc::auth::BearerToken;
use mailchimp_sync::tls::TlsFiles;
mod fetch_progress;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Keeps an Odoo database's mailing contacts in step with Mailchimp audiences.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "MAILCHIMP_SYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the service: the webhook endpoint over HTTP and the control plane over gRPC.
    /// Migrations run first.
    Serve(Box<ServeArgs>),
    /// Runs the database migrations and exits.
    Migrate(DatabaseArgs),
    /// Fetches audience members from Mailchimp now, in this process, and waits for the end.
    /// Without --account or --audience, every audience of every account.
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
struct FetchArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    #[command(flatten)]
    mailchimp: MailchimpArgs,

    /// Only the audiences of this account (its id in the store).
    #[arg(long, conflicts_with = "audience")]
    account: Option<i64>,

    /// Only this audience (its id in the store, as ListAudiences shows it).
    #[arg(long)]
    audience: Option<i64>,

    /// Every member, then remove those Mailchimp no longer has; otherwise only members
    /// changed since the last successful fetch.
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Args)]
struct MailchimpArgs {
    /// Most Mailchimp API requests in flight per account (Mailchimp allows 10).
    #[arg(long, env = "MAILCHIMP_SYNC_MAILCHIMP_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    mailchimp_concurrency: u8,

    /// Timeout of one Mailchimp API request, in seconds.
    #[arg(long, env = "MAILCHIMP_SYNC_MAILCHIMP_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    mailchimp_timeout: u64,
}

impl MailchimpArgs {
    fn settings(&self) -> fetch::Settings {
        let mut settings = fetch::Settings {
            concurrency: usize::from(self.mailchimp_concurrency),
            ..Default::default()
        };
        settings.limits.request_timeout = std::time::Duration::from_secs(self.mailchimp_timeout);
        settings
    }
}

#[derive(Debug, Args)]
struct DatabaseArgs {
    /// Database URL: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "MAILCHIMP_SYNC_DATABASE_URL",
        default_value = "sqlite://mailchimp-sync.db"
    )]
    database_url: String,

    /// Most database connections the pool opens; at least 2, since the webhook writer keeps
    /// one for itself.
    #[arg(long, env = "MAILCHIMP_SYNC_DB_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(2..=256))]
    db_connections: u32,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    /// Address of the HTTP listener (webhooks, /healthz, /readyz, /metrics).
    #[arg(long, env = "MAILCHIMP_SYNC_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Address of the gRPC listener (control plane, reflection, health).
    #[arg(
        long,
        env = "MAILCHIMP_SYNC_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    grpc_addr: SocketAddr,

    /// Public base URL of the HTTP listener, as Mailchimp reaches it; generated webhook URLs
    /// start with it. Must be https:// unless --allow-insecure-webhook-url is given.
    #[arg(long, env = "MAILCHIMP_SYNC_PUBLIC_URL")]
    public_url: Option<String>,

    /// Allows an http:// public URL, for local trials only: Mailchimp would send contact
    /// data in clear text.
    #[arg(long, env = "MAILCHIMP_SYNC_ALLOW_INSECURE_WEBHOOK_URL")]
    allow_insecure_webhook_url: bool,

    /// When the scheduled fetch runs: six cron fields, seconds first, in UTC. An empty
    /// value disables it.
    #[arg(
        long,
        env = "MAILCHIMP_SYNC_FETCH_SCHEDULE",
        default_value = "0 0 2 * * *",
        value_parser = fetch_schedule
    )]
    fetch_schedule: String,

    /// On SIGTERM or SIGINT, how long open connections may take to finish their requests,
    /// in seconds, before they are dropped and the service exits.
    #[arg(long, env = "MAILCHIMP_SYNC_SHUTDOWN_GRACE", default_value_t = 10)]
    shutdown_grace: u64,

    #[command(flatten)]
    mailchimp: MailchimpArgs,

    #[command(flatten)]
    security: SecurityArgs,
}

#[derive(Debug, Args)]
struct SecurityArgs {
    /// PEM certificate chain: the HTTP listener serves HTTPS with it (needs --tls-key).
    #[arg(long, env = "MAILCHIMP_SYNC_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "MAILCHIMP_SYNC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// PEM certificate chain: the gRPC listener serves TLS with it (needs --grpc-tls-key).
    #[arg(long, env = "MAILCHIMP_SYNC_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,

    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "MAILCHIMP_SYNC_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,

    /// Bearer token every gRPC call must carry (`authorization: Bearer <token>`), health
    /// checks excepted. Without it the gRPC listener only binds to a loopback address.
    /// Prefer the environment variable: command lines are visible to other local users.
    #[arg(long, env = "MAILCHIMP_SYNC_GRPC_TOKEN", hide_env_values = true)]
    grpc_token: Option<String>,
}

impl SecurityArgs {
    fn apply(self, config: &mut Config) -> anyhow::Result<()> {
        config.http_tls = tls_files(self.tls_cert, self.tls_key);
        config.grpc_tls = tls_files(self.grpc_tls_cert, self.grpc_tls_key);
        config.grpc_token = self
            .grpc_token
            .map(BearerToken::new)
            .transpose()
            .map_err(|problem| anyhow::anyhow!("--grpc-token: {problem}"))?;
        Ok(())
    }
}

fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: cert?,
        key: key?,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error.into()),
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Migrate(args) => migrate(&args),
        Command::Fetch(args) => runtime.block_on(fetch_now(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

fn init_tracing(format: LogFormat) {
    // The scheduler reports its own start-up steps at `info`; they say nothing to an operator.
    let filter = EnvFilter::try_from_env("MAILCHIMP_SYNC_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A schedule the service can run, or empty; refused before anything starts.
fn fetch_schedule(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() {
        mailchimp_sync::schedule::check(value)?;
    }
    Ok(value.to_owned())
}

fn config(database: &DatabaseArgs) -> Config {
    Config {
        database_url: database.database_url.clone(),
        public_url: None,
        allow_insecure_webhook_url: false,
        max_db_connections: database.db_connections,
        fetch: Default::default(),
        fetch_schedule: None,
        http_tls: None,
        grpc_tls: None,
        grpc_token: None,
        drain_limit: std::time::Duration::from_secs(10),
        header_read_timeout: std::time::Duration::from_secs(30),
    }
}

fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    app::open_store(&config(args))?;
    tracing::info!("database is up to date");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config {
        public_url: args.public_url.clone(),
        allow_insecure_webhook_url: args.allow_insecure_webhook_url,
        fetch: args.mailchimp.settings(),
        fetch_schedule: Some(args.fetch_schedule.clone()).filter(|s| !s.is_empty()),
        drain_limit: std::time::Duration::from_secs(args.shutdown_grace),
        ..config(&args.database)
    };
    args.security.apply(&mut config)?;
    let http = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--http-addr)", args.http_addr))?;
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--grpc-addr)", args.grpc_addr))?;
    let running = app::start(config, http, grpc).await?;
    let stop = running.stop_handle();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = running.wait_for_stop_signal() => {}
    }
    let _ = stop.send(true);
    running.shutdown().await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn fetch_now(args: FetchArgs) -> anyhow::Result<()> {
    let config = config(&args.database);
    let store = tokio::task::spawn_blocking(move || app::open_store(&config)).await??;
    let fetcher = fetch::Fetcher::new(store, args.mailchimp.settings())?;
    let mode = if args.full {
        fetch::Mode::Full
    } else {
        fetch::Mode::Incremental
    };
    let targets = match (args.account, args.audience) {
        (_, Some(id)) => vec![fetch::Target::Audience(id)],
        (Some(id), None) => vec![fetch::Target::Account(id)],
        (None, None) => fetch::all_accounts(&fetcher).await?,
    };
    let fetches = async {
        let mut failed = 0;
        for target in targets {
            failed += fetch_progress::run_with_progress(&fetcher, target, mode).await?;
        }
        anyhow::Ok(failed)
    };
    // A run stopped here is marked interrupted at once, so that the next fetch redoes it
    // instead of waiting for it to be found abandoned.
    let failed = tokio::select! {
        failed = fetches => failed?,
        _ = shutdown_signal() => {
            fetcher.interrupt_all().await;
            anyhow::bail!("stopped by a signal: the run in progress is marked interrupted");
        }
    };
    match failed {
        0 => Ok(()),
        n => anyhow::bail!("{n} fetch run(s) did not succeed"),
    }
}

/// jemalloc, built with one arena for every thread (`narenas:1`, set in
/// `.cargo/config.toml`). With the system allocator each thread that allocates gets an
/// arena of its own, and each arena keeps the memory its thread freed: a fetch, whose pages
/// are read on one thread and written on another, held more memory the longer it ran. One
/// arena, behind jemalloc's per-thread caches, keeps memory flat and costs the webhook path
/// less time than the system allocator did.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
