//! The gRPC face: package `mailchimp_sync.v1`, with server reflection and `grpc.health.v1`
//! always on, so `grpcurl` works with no `.proto` at hand. Each service turns requests into
//! domain calls and domain results into messages; none of them touches the store directly.
//! [`auth`] guards every call but health checks when a token is configured.

mod accounts;
pub mod auth;
mod contacts;
mod convert;
mod events;
mod fetch;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::app::AppState;
use crate::store::Store;
use crate::tls::TlsPem;
use auth::{AuthLayer, BearerToken};

/// The generated messages, servers and clients.
pub mod pb {
    tonic::include_proto!("mailchimp_sync.v1");

    /// The descriptor set that reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("mailchimp_sync_descriptor");
}

use pb::account_service_server::AccountServiceServer;
use pb::audience_service_server::AudienceServiceServer;
use pb::blacklist_service_server::BlacklistServiceServer;
use pb::contact_service_server::ContactServiceServer;
use pb::fetch_service_server::FetchServiceServer;
use pb::webhook_event_service_server::WebhookEventServiceServer;

const SERVICES: [&str; 6] = [
    "mailchimp_sync.v1.AccountService",
    "mailchimp_sync.v1.AudienceService",
    "mailchimp_sync.v1.ContactService",
    "mailchimp_sync.v1.BlacklistService",
    "mailchimp_sync.v1.WebhookEventService",
    "mailchimp_sync.v1.FetchService",
];

/// How the listener protects itself: TLS and a bearer token, each optional.
#[derive(Default)]
pub struct Protection<'a> {
    pub tls: Option<&'a TlsPem>,
    pub token: Option<&'a BearerToken>,
}

/// The server type, with its authentication layer.
pub type Server = Router<tower::layer::util::Stack<AuthLayer, tower::layer::util::Identity>>;

/// Builds the server with every service; health reports not serving until [`mark_serving`].
pub fn server(
    state: AppState,
    protection: Protection<'_>,
) -> anyhow::Result<(Server, HealthReporter)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(pem) = protection.tls {
        let identity = Identity::from_pem(&pem.cert, &pem.key);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let router = builder
        .layer(AuthLayer::new(protection.token))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AccountServiceServer::new(accounts::Accounts(state.clone())))
        .add_service(AudienceServiceServer::new(accounts::Audiences(
            state.clone(),
        )))
        .add_service(ContactServiceServer::new(contacts::Contacts(state.clone())))
        .add_service(BlacklistServiceServer::new(contacts::Blacklist(
            state.clone(),
        )))
        .add_service(FetchServiceServer::new(fetch::Fetches(state.clone())))
        .add_service(WebhookEventServiceServer::new(events::WebhookEvents(state)));
    Ok((router, health))
}

pub async fn mark_serving(health: &HealthReporter) {
    set_status(health, ServingStatus::Serving).await;
}

async fn set_status(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// How often health looks at the database.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Keeps gRPC health in step with `/readyz`: not serving while the database does not
/// answer, serving again once it does, and not serving from the moment the service stops.
pub async fn follow_database(
    health: HealthReporter,
    store: Store,
    mut stop: watch::Receiver<bool>,
) {
    let mut serving = true;
    let mut every = tokio::time::interval(HEALTH_CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            _ = every.tick() => {}
        }
        let store = store.clone();
        let ready = tokio::task::spawn_blocking(move || store.is_ready())
            .await
            .unwrap_or(false);
        if ready != serving {
            serving = ready;
            let status = match ready {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            tracing::info!(serving, "gRPC health follows the database");
            set_status(&health, status).await;
        }
    }
    set_status(&health, ServingStatus::NotServing).await;
}

/// Serves until `stop` turns true, then lets the calls in flight finish.
pub async fn serve(
    router: Server,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    router
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
