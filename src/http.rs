//! The HTTP listener: the webhook routes, health and readiness, a body limit, and one
//! access-log line per request. The log shows the matched route, so the webhook token in
//! the path never reaches it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

use crate::app::AppState;
use crate::tls::TlsListener;
use crate::webhook;

/// How long one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/mailchimp/{token}",
            get(webhook::check_url).post(webhook::receive),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY))
        // A client that never finishes its body would otherwise hold a connection forever.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// Serves, over TLS when given a configuration, until `stop` turns true, then finishes
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let router = router(state);
    match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config)?;
            accept_loop(listener, router, header_timeout, stop).await
        }
        None => accept_loop(listener, router, header_timeout, stop).await,
    }
    Ok(())
}

/// Accepts connections until `stop`, each served as HTTP/1.1 with a deadline for its
/// request heads: a client that connects and sends nothing, or half a request line, is
/// disconnected instead of holding a socket for as long as it likes. Then waits for the
/// connections to finish their requests in flight.
async fn accept_loop<L>(
    mut listener: L,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
{
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "http connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once migrations ran and both listeners serve, and while the database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let database = tokio::task::spawn_blocking(move || store.is_ready())
        .await
        .unwrap_or(false);
    if state.ready.load(Ordering::SeqCst) && database {
        return (StatusCode::OK, "ready\n").into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = state.metrics.clone();
    // The pool's state takes its lock; keep that off the async threads.
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => {
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_millis() as u64;
    // Refusals (unknown token, too large, too slow) are worth a line at the default level.
    if status >= 400 {
        tracing::info!(http.method = %method, http.route = %route, http.status = status, duration_ms, "http request refused");
    } else {
        tracing::debug!(http.method = %method, http.route = %route, http.status = status, duration_ms, "http request");
    }
    response
}
