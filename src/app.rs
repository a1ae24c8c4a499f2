//! Start-up: the store is opened and migrated, the webhook writer started, then both faces
//! serve on listeners the caller bound (tests bind port 0 and read the real addresses).
//! Readiness turns on only once all of that is done.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::JobScheduler;

use crate::domain::accounts::WebhookBase;
use crate::domain::fetch::{self, Fetcher};
use crate::domain::ingest::Ingestor;
use crate::grpc::auth::BearerToken;
use crate::metrics::Metrics;
use crate::store::{Store, changes};
use crate::tls::TlsFiles;

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub public_url: Option<String>,
    pub allow_insecure_webhook_url: bool,
    pub max_db_connections: u32,
    pub fetch: fetch::Settings,
    /// Six-field cron expression (seconds first) for the scheduled fetch; `None` disables it.
    pub fetch_schedule: Option<String>,
    /// Serve HTTPS on the HTTP listener with this certificate and key.
    pub http_tls: Option<TlsFiles>,
    /// Serve gRPC over TLS with this certificate and key.
    pub grpc_tls: Option<TlsFiles>,
    /// Every gRPC call but health checks must carry it; without one, gRPC serves loopback
    /// only.
    pub grpc_token: Option<BearerToken>,
    /// How long a shutdown waits for open connections to finish their requests; a client
    /// that never finishes one does not hold the service up longer.
    pub drain_limit: Duration,
    /// How long an HTTP client may take to send a request's head (or, between requests on
    /// a kept-alive connection, to start the next one) before it is disconnected.
    pub header_read_timeout: Duration,
}

/// Everything a request handler may use. Every request clones it, so a clone is one shared
/// count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub store: Store,
    pub ingestor: Ingestor,
    pub webhook_base: WebhookBase,
    /// The last change-feed sequence this process knows of; watchers wait on it.
    pub feed: Arc<watch::Sender<i64>>,
    pub ready: Arc<AtomicBool>,
    pub fetcher: Arc<Fetcher>,
    /// Turns true when the service stops; long-lived streams end on it.
    pub stopping: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

/// A started service: its addresses, and a way to stop it and wait until it has.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<anyhow::Result<()>>>,
    writer: std::thread::JoinHandle<()>,
    scheduler: Option<JobScheduler>,
    drain_limit: Duration,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, then drains the webhook writer.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        if let Some(mut scheduler) = self.scheduler {
            let _ = scheduler.shutdown().await;
        }
        self.state.fetcher.interrupt_all().await;
        let deadline = tokio::time::Instant::now() + self.drain_limit;
        for mut server in self.servers {
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(served) => served.context("a server task panicked")??,
                Err(_) => {
                    server.abort();
                    tracing::warn!(
                        limit_s = self.drain_limit.as_secs(),
                        "connections still open at the end of the shutdown grace time were dropped"
                    );
                }
            }
        }
        let Running { state, writer, .. } = self;
        state.ingestor.stop().await;
        drop(state);
        tokio::task::spawn_blocking(move || writer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the webhook writer panicked"))?;
        Ok(())
    }

    /// Resolves when a server stops on its own (an error), or never.
    pub async fn wait_for_stop_signal(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Opens the database and runs the migrations; the `migrate` command stops here.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::open(&config.database_url, config.max_db_connections)
        .context("cannot open the database")?;
    let ran = store.migrate().context("cannot migrate the database")?;
    for version in &ran {
        tracing::info!(migration = %version, "migration applied");
    }
    Ok(store)
}

/// Without a token, anyone who reaches the gRPC port could read every contact and change
/// accounts: only loopback is safe then.
fn check_grpc_exposure(config: &Config, addr: SocketAddr) -> anyhow::Result<()> {
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
    };
    anyhow::ensure!(
        loopback || config.grpc_token.is_some(),
        "refusing to serve gRPC on {addr} without a token: anyone reaching it could read \
         contacts and change accounts; set --grpc-token (MAILCHIMP_SYNC_GRPC_TOKEN) or bind \
         --grpc-addr to a loopback address such as 127.0.0.1"
    );
    Ok(())
}

/// Starts the service on the given listeners.
pub async fn start(
    config: Config,
    http: TcpListener,
    grpc: TcpListener,
) -> anyhow::Result<Running> {
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;
    check_grpc_exposure(&config, grpc_addr)?;
    crate::tls::install_crypto_provider();
    let http_tls = match &config.http_tls {
        Some(files) => Some(
            files
                .load()
                .context("cannot serve HTTPS (--tls-cert, --tls-key)")?
                .server_config_with_alpn(&[b"http/1.1"])?,
        ),
        None => None,
    };
    let grpc_tls = match &config.grpc_tls {
        Some(files) => Some(
            files
                .load()
                .context("cannot serve gRPC over TLS (--grpc-tls-cert, --grpc-tls-key)")?,
        ),
        None => None,
    };
    let store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || open_store(&config)).await??
    };
    let last = store
        .run(changes::last_sequence)
        .await
        .context("cannot read the change feed")?;
    let feed = Arc::new(watch::Sender::new(last));
    let (ingestor, writer) = Ingestor::start(store.clone(), feed.clone());
    let webhook_base = WebhookBase {
        public_url: config.public_url.clone(),
        allow_insecure: config.allow_insecure_webhook_url,
    };
    webhook_base.validate().map_err(anyhow::Error::msg)?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stopping) = watch::channel(false);
    let fetcher = Fetcher::new(store.clone(), config.fetch.clone())?;
    let metrics = Arc::new(Metrics::new(store.clone()));
    {
        let metrics = metrics.clone();
        fetcher.on_run_end(move |run| metrics.fetch_run_ended(run));
    }
    let scheduler = match config.fetch_schedule.as_deref() {
        Some(expression) => Some(crate::schedule::start(expression, fetcher.clone()).await?),
        None => None,
    };
    let state = AppState(Arc::new(Shared {
        store,
        ingestor,
        webhook_base,
        feed,
        ready,
        fetcher,
        stopping,
        metrics,
    }));
    let protection = crate::grpc::Protection {
        tls: grpc_tls.as_ref(),
        token: config.grpc_token.as_ref(),
    };
    let (grpc_server, health) = crate::grpc::server(state.clone(), protection)?;
    let servers = vec![
        tokio::spawn(crate::http::serve(
            http,
            http_tls,
            state.clone(),
            config.header_read_timeout,
            stop.subscribe(),
        )),
        tokio::spawn(crate::grpc::serve(grpc_server, grpc, stop.subscribe())),
    ];
    crate::grpc::mark_serving(&health).await;
    tokio::spawn(crate::grpc::follow_database(
        health,
        state.store.clone(),
        stop.subscribe(),
    ));
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        http.addr = %http_addr,
        http.tls = config.http_tls.is_some(),
        grpc.addr = %grpc_addr,
        grpc.tls = config.grpc_tls.is_some(),
        grpc.auth = if config.grpc_token.is_some() { "bearer token" } else { "none, loopback only" },
        "service ready"
    );
    Ok(Running {
        http_addr,
        grpc_addr,
        state,
        stop,
        servers,
        writer,
        scheduler,
        drain_limit: config.drain_limit,
    })
}
