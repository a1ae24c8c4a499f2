//! `GET /metrics`: counters in Prometheus text format.
//!
//! Instrumentation sits at the edges: the webhook handler once it has its receipt, the
//! fetch at the end of a run, and the database pool read when scraped. Label values come
//! from fixed sets, so no request can grow the number of series.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;
use crate::store::fetch_runs::FetchRunRow;

/// The event types Mailchimp sends; anything else is counted as `other`.
const EVENT_TYPES: [&str; 6] = [
    "subscribe",
    "unsubscribe",
    "profile",
    "upemail",
    "cleaned",
    "campaign",
];

/// Run states a finished run may have; anything else is counted as `other`.
const RUN_STATES: [&str; 3] = ["succeeded", "failed", "interrupted"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    r#type: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    state: &'static str,
}

/// Every metric of one service instance.
pub struct Metrics {
    registry: Registry,
    webhook_events: Family<WebhookLabels, Counter>,
    webhook_duration: Histogram,
    fetch_runs: Family<RunLabels, Counter>,
    fetch_members: Counter,
    pool_connections: Gauge,
    pool_idle: Gauge,
    store: Store,
}

impl Metrics {
    pub fn new(store: Store) -> Metrics {
        let mut registry = Registry::with_prefix("mailchimp_sync");
        let webhook_events = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Webhook deliveries stored, by event type and outcome",
            webhook_events.clone(),
        );
        // 1 ms to about 16 s.
        let webhook_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "webhook_duration_seconds",
            "Time from a webhook's arrival to its answer, storage included",
            webhook_duration.clone(),
        );
        let fetch_runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "fetch_runs",
            "Fetch runs ended, by final state",
            fetch_runs.clone(),
        );
        let fetch_members = Counter::default();
        registry.register(
            "fetch_members",
            "Members read from Mailchimp by ended fetch runs",
            fetch_members.clone(),
        );
        let pool_connections = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Database connections open in the pool",
            pool_connections.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Database connections open and idle in the pool",
            pool_idle.clone(),
        );
        Metrics {
            registry,
            webhook_events,
            webhook_duration,
            fetch_runs,
            fetch_members,
            pool_connections,
            pool_idle,
            store,
        }
    }

    /// A webhook delivery stored with this outcome, `took` after it arrived.
    pub fn webhook_stored(&self, event_type: Option<&str>, outcome: &'static str, took: Duration) {
        let labels = WebhookLabels {
            r#type: known(event_type, &EVENT_TYPES, "none"),
            outcome,
        };
        self.webhook_events.get_or_create(&labels).inc();
        self.webhook_duration.observe(took.as_secs_f64());
    }

    /// A fetch run ended.
    pub fn fetch_run_ended(&self, run: &FetchRunRow) {
        let labels = RunLabels {
            state: known(Some(&run.state), &RUN_STATES, "other"),
        };
        self.fetch_runs.get_or_create(&labels).inc();
        self.fetch_members
            .inc_by(u64::try_from(run.members_seen).unwrap_or(0));
    }

    /// The text exposition, with the pool read now.
    pub fn render(&self) -> String {
        let pool = self.store.pool_state();
        self.pool_connections.set(i64::from(pool.connections));
        self.pool_idle.set(i64::from(pool.idle_connections));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The value if it is one of `known`, `other` if not, `missing` without one.
fn known(value: Option<&str>, known: &[&'static str], missing: &'static str) -> &'static str {
    match value {
        None => missing,
        Some(value) => known
            .iter()
            .find(|candidate| **candidate == value)
            .copied()
            .unwrap_or("other"),
    }
}
