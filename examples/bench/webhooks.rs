//! `bench webhooks`: ingestion against the `/healthz` ceiling, the bulk-unsubscribe burst,
//! the service's memory, and a check that every answered event was stored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mailchimp_sync::grpc::pb;
use mailchimp_sync::grpc::pb::contact_service_client::ContactServiceClient;
use mailchimp_sync::grpc::pb::get_contact_request::Lookup;
use mailchimp_sync::grpc::pb::webhook_event_service_client::WebhookEventServiceClient;
use tonic::transport::Channel;

use crate::load::{self, Requests, Run};
use crate::proc_status::{self, Kib, Memory};
use crate::service::{self, Backend, FreshDatabase, Service};
use crate::workload::{Batch, Expected, Generator, Kind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `sqlite`, or a PostgreSQL admin URL on which a fresh database is created and dropped.
    #[arg(long, default_value = "sqlite", value_parser = Backend::parse)]
    database: Backend,
    /// Webhook events to ingest, and `GET /healthz` requests for the ceiling.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Requests in flight for the ceiling and ingestion (see the doc comment of bench.rs).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Unsubscribes in the burst.
    #[arg(long, default_value_t = 3_000)]
    burst: usize,
    /// Requests in flight during the burst.
    #[arg(long, default_value_t = 64)]
    burst_concurrency: usize,
    /// Threads of the load generator; the rest of the machine is the service's.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// The longest any one phase may run, in seconds.
    #[arg(long, default_value_t = 300)]
    time_limit: u64,
}

/// Targets for this service on a 2-core machine.
const SQLITE_EVENTS_PER_SECOND: f64 = 10_000.0;
const POSTGRES_EVENTS_PER_SECOND: f64 = 5_000.0;
const CEILING_FRACTION: f64 = 0.25;
const BURST_P99: Duration = Duration::from_millis(50);
const IDLE_RSS_MB: f64 = 30.0;
const PEAK_RSS_MB: f64 = 100.0;

/// One phase: its requests' figures, and the CPU time spent on them by the service, by its
/// webhook writer thread, and by this load generator.
struct Phase {
    run: Run,
    service_cpu: Duration,
    writer_cpu: Duration,
    client_cpu: Duration,
}

/// CPU time used so far by each side.
struct CpuSample {
    service: Duration,
    writer: Duration,
    client: Duration,
}

impl CpuSample {
    fn take(service: &Service) -> CpuSample {
        let pid = service.pid().to_string();
        CpuSample {
            service: proc_status::process_cpu(&pid).unwrap_or_default(),
            writer: proc_status::thread_cpu(&pid, "webhook-writer").unwrap_or_default(),
            client: proc_status::process_cpu("self").unwrap_or_default(),
        }
    }
}

/// Sends the requests and notes the CPU time each side spent meanwhile.
async fn phase(
    service: &Service,
    client: &reqwest::Client,
    requests: Requests,
    concurrency: usize,
    limit: Duration,
) -> Phase {
    let before = CpuSample::take(service);
    let run = load::run(client, requests, concurrency, limit).await;
    let after = CpuSample::take(service);
    Phase {
        run,
        service_cpu: after.service.saturating_sub(before.service),
        writer_cpu: after.writer.saturating_sub(before.writer),
        client_cpu: after.client.saturating_sub(before.client),
    }
}

/// Everything one run measured.
struct Results {
    ceiling: Phase,
    ingestion: Phase,
    burst_setup: Phase,
    burst: Phase,
    load_before: f64,
    load_after: f64,
    mix: Batch,
    idle: Memory,
    after: Memory,
    stored: BTreeMap<String, usize>,
    sampled: usize,
    mismatches: Vec<String>,
}

pub async fn run(binary: &Path, args: Args) -> anyhow::Result<()> {
    let database = FreshDatabase::create(&args.database)?;
    let log = database.dir.path().join("serve.log");
    let service = Service::start(binary, &database.url, &log).await?;
    let measured = measure(&service, &args).await;
    if measured.is_err() {
        eprintln!("service log (last lines):\n{}", service.log_tail());
    }
    let stopped = service.stop().await;
    let results = measured?;
    let status = stopped?;
    print(&args, &results);
    anyhow::ensure!(status.success(), "the service exited with {status}");
    Ok(())
}

async fn measure(service: &Service, args: &Args) -> anyhow::Result<Results> {
    let limit = Duration::from_secs(args.time_limit);
    let channel = service.channel().await?;
    let account_id = service::create_account(&channel, None).await?;
    let url = service::webhook_url(&channel, account_id).await?;

    // Every body before any load, stamped one second apart and ending before now.
    let total = args.events + 2 * args.burst;
    let start = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(total as i64 + 60);
    let mut generator = Generator::new(start);
    let mix = generator.mixed(
        args.events,
        8 * args.concurrency.max(args.burst_concurrency),
    );
    let (subscribes, unsubscribes) = generator.subscribe_then_unsubscribe(args.burst);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(service)?;

    let client = load::client()?;
    let healthz = format!("http://{}/healthz", service.http);
    let warm_up = Requests::Get {
        url: healthz.clone(),
        count: 50 * args.burst_concurrency,
    };
    load::run(&client, warm_up, args.burst_concurrency, limit).await;

    let load_before = proc_status::load_average().unwrap_or_default();
    let c = args.concurrency;
    eprintln!("ceiling: GET /healthz…");
    let ceiling = Requests::Get {
        url: healthz,
        count: args.events,
    };
    let ceiling = phase(service, &client, ceiling, c, limit).await;
    eprintln!("ingestion…");
    let posts = Requests::post(&url, &mix.bodies);
    let ingestion = phase(service, &client, posts, c, limit).await;
    eprintln!("burst: subscribing its members…");
    let posts = Requests::post(&url, &subscribes.bodies);
    let burst_setup = phase(service, &client, posts, c, limit).await;
    eprintln!("burst: unsubscribes…");
    let posts = Requests::post(&url, &unsubscribes.bodies);
    let burst = phase(service, &client, posts, args.burst_concurrency, limit).await;
    let after = memory(service)?;
    let load_after = proc_status::load_average().unwrap_or_default();

    eprintln!("checking what was stored…");
    let stored = stored_outcomes(&channel, account_id).await?;
    let sample = generator.sample((args.events / 200).max(1));
    let mismatches = check_contacts(&channel, &sample).await?;
    Ok(Results {
        ceiling,
        ingestion,
        burst_setup,
        burst,
        load_before,
        load_after,
        mix,
        idle,
        after,
        stored,
        sampled: sample.len(),
        mismatches,
    })
}

fn memory(service: &Service) -> anyhow::Result<Memory> {
    proc_status::memory(service.pid()).context("cannot read the service's /proc status")
}

/// The account's stored events, counted by outcome, through `ListWebhookEvents`.
async fn stored_outcomes(
    channel: &Channel,
    account_id: i64,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut client = WebhookEventServiceClient::new(channel.clone());
    let mut outcomes = BTreeMap::new();
    let mut page_token = String::new();
    // Bounded: a million events at a thousand a page.
    for _ in 0..1_000 {
        let page = client
            .list_webhook_events(pb::ListWebhookEventsRequest {
                outcome: String::new(),
                account_id: Some(account_id),
                page_size: 1000,
                page_token,
            })
            .await
            .context("ListWebhookEvents failed")?
            .into_inner();
        for event in page.events {
            *outcomes.entry(event.outcome).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(outcomes);
        }
        page_token = page.next_page_token;
    }
    anyhow::bail!("ListWebhookEvents did not end within 1,000 pages")
}

/// Reads each sampled person with `GetContact`; returns what differs from the expectation.
async fn check_contacts(channel: &Channel, sample: &[Expected]) -> anyhow::Result<Vec<String>> {
    let mut client = ContactServiceClient::new(channel.clone());
    let mut mismatches = Vec::new();
    for expected in sample {
        let request = pb::GetContactRequest {
            lookup: Some(Lookup::Email(expected.email.clone())),
        };
        let status = match client.get_contact(request).await {
            Ok(contact) => contact
                .into_inner()
                .subscriptions
                .into_iter()
                .find(|sub| sub.mailchimp_list_id == expected.list_id)
                .map_or_else(|| "no subscription".to_owned(), |sub| sub.status),
            Err(status) if status.code() == tonic::Code::NotFound => "no contact".to_owned(),
            Err(status) => return Err(status).context("GetContact failed"),
        };
        if status != expected.status {
            mismatches.push(format!(
                "{} on {}: {status}, expected {}",
                expected.email, expected.list_id, expected.status
            ));
        }
    }
    Ok(mismatches)
}

fn print(args: &Args, results: &Results) {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!(
        "webhooks on {}: {} events at concurrency {}; {cpus} CPUs shared with {} client \
         thread(s); load average {:.2} before, {:.2} after",
        args.database.name(),
        args.events,
        args.concurrency,
        args.client_threads,
        results.load_before,
        results.load_after,
    );
    println!(
        "{:<28} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "phase",
        "requests",
        "errors",
        "per s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "svc µs/r",
        "wrtr µs/r",
        "clnt µs/r"
    );
    let burst = format!("burst: unsubscribes, c={}", args.burst_concurrency);
    let phases = [
        ("ceiling: GET /healthz", &results.ceiling),
        ("ingestion: POST webhook", &results.ingestion),
        ("burst setup: subscribes", &results.burst_setup),
        (burst.as_str(), &results.burst),
    ];
    for (name, phase) in phases {
        let run = &phase.run;
        let per_request = |cpu: Duration| micros(cpu) / run.sent().max(1) as f64;
        let unsent = match run.unsent {
            0 => String::new(),
            n => format!("  ({n} not sent: time limit)"),
        };
        println!(
            "{name:<28} {:>8} {:>6} {:>7.0} {:>7.2} {:>7.2} {:>7.2} {:>9.0} {:>9.0} {:>9.0}{unsent}",
            run.sent(),
            run.errors,
            run.rate(),
            millis(run.percentile(50.0)),
            millis(run.percentile(99.0)),
            millis(run.max()),
            per_request(phase.service_cpu),
            per_request(phase.writer_cpu),
            per_request(phase.client_cpu),
        );
    }
    println!(
        "(µs/r: CPU time per request of the service, of its webhook-writer thread, and of this \
         load generator)"
    );
    let fraction = results.ingestion.run.rate() / results.ceiling.run.rate().max(1e-9);
    println!(
        "ingestion is {:.0}% of the ceiling; mix: {}",
        100.0 * fraction,
        mix(&results.mix)
    );
    for (_, phase) in phases {
        for sample in &phase.run.error_samples {
            println!("  error: {sample}");
        }
    }
    println!(
        "service memory: idle {} (VmRSS), peak {} (VmHWM), {} after the run",
        results.idle.rss, results.after.peak, results.after.rss
    );
    let answered: usize = phases[1..].iter().map(|(_, phase)| phase.run.ok).sum();
    let stored: usize = results.stored.values().sum();
    let outcomes: Vec<String> = results
        .stored
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect();
    println!(
        "stored: {stored} events ({}) for {answered} answered 200: {}",
        outcomes.join(", "),
        verdict(stored >= answered)
    );
    println!(
        "contacts: {} of {} sampled hold the state of their last event: {}",
        results.sampled - results.mismatches.len(),
        results.sampled,
        verdict(results.mismatches.is_empty())
    );
    for mismatch in results.mismatches.iter().take(5) {
        println!("  {mismatch}");
    }
    print_targets(args, results, fraction);
}

fn print_targets(args: &Args, results: &Results, fraction: f64) {
    let wanted = match args.database {
        Backend::Sqlite => SQLITE_EVENTS_PER_SECOND,
        Backend::Postgres(_) => POSTGRES_EVENTS_PER_SECOND,
    };
    let ingestion = &results.ingestion.run;
    let burst = &results.burst.run;
    let rate = ingestion.rate();
    let burst_p99 = burst.percentile(99.0);
    let idle = results.idle.rss;
    let peak = results.after.peak;
    let lines = [
        (
            format!("ingestion {rate:.0} events/s >= {wanted:.0}"),
            rate >= wanted && ingestion.errors == 0 && ingestion.unsent == 0,
        ),
        (
            format!(
                "{:.0}% of the ceiling >= {:.0}%",
                100.0 * fraction,
                100.0 * CEILING_FRACTION
            ),
            fraction >= CEILING_FRACTION,
        ),
        (
            format!(
                "burst p99 {:.1} ms <= {} ms, {} errors",
                millis(burst_p99),
                BURST_P99.as_millis(),
                burst.errors
            ),
            burst_p99 <= BURST_P99 && burst.errors == 0 && burst.unsent == 0,
        ),
        (
            format!("idle RSS {idle} < {IDLE_RSS_MB} MB"),
            megabytes(idle) < IDLE_RSS_MB,
        ),
        (
            format!("peak RSS {peak} < {PEAK_RSS_MB} MB"),
            megabytes(peak) < PEAK_RSS_MB,
        ),
    ];
    println!("targets:");
    for (line, met) in lines {
        println!("  {line:<46} {}", if met { "met" } else { "MISSED" });
    }
}

fn mix(batch: &Batch) -> String {
    let kinds = [
        Kind::Subscribe,
        Kind::Profile,
        Kind::Unsubscribe,
        Kind::EmailChange,
        Kind::Cleaned,
    ];
    let counts: Vec<String> = kinds
        .iter()
        .map(|&kind| format!("{} {}", batch.count(kind), kind.name()))
        .collect();
    counts.join(", ")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISMATCH" }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn megabytes(kib: Kib) -> f64 {
    kib.0 as f64 / 1024.0
}
