//! `bench fetch`: `mailchimp-sync fetch --full` from the in-process fake Mailchimp into a
//! fresh database, timed to the process's exit, with its peak memory.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mailchimp_sync::fake_mailchimp::FakeMailchimp;
use mailchimp_sync::store::{Store, contacts};

use crate::proc_status::{self, Kib};
use crate::service::{self, API_KEY, Backend, FreshDatabase, Service};

/// The fake audience's Mailchimp id.
const LIST_ID: &str = "f3e7c1b2a9";

/// How often the fetching process's memory is read.
const POLL: Duration = Duration::from_millis(20);

/// Target: members per second into SQLite.
const MEMBERS_PER_SECOND: f64 = 20_000.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audience sizes, one fetch each, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 1_000_000])]
    members: Vec<u64>,
    /// `sqlite`, or a PostgreSQL admin URL on which a fresh database is created and dropped.
    #[arg(long, default_value = "sqlite", value_parser = Backend::parse)]
    database: Backend,
    /// The longest one fetch may run, in seconds.
    #[arg(long, default_value_t = 1800)]
    time_limit: u64,
}

/// One fetch, measured.
struct Fetched {
    members: u64,
    elapsed: Duration,
    peak: Kib,
    summary: String,
    contacts: i64,
}

pub async fn run(binary: &Path, args: Args) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &members in &args.members {
        eprintln!("fetching an audience of {members} members…");
        results.push(fetch_once(binary, &args, members).await?);
    }
    println!();
    println!(
        "fetch --full into {}, from a fake Mailchimp on loopback",
        args.database.name()
    );
    println!(
        "{:>10} {:>9} {:>10} {:>11} {:>10}  run",
        "members", "seconds", "members/s", "peak RSS", "contacts"
    );
    for result in &results {
        println!(
            "{:>10} {:>9.2} {:>10.0} {:>11} {:>10}  {}",
            result.members,
            result.elapsed.as_secs_f64(),
            rate(result),
            result.peak.to_string(),
            result.contacts,
            result.summary
        );
    }
    println!("targets:");
    for result in &results {
        let met = rate(result) >= MEMBERS_PER_SECOND;
        println!(
            "  {} members: {:.0} members/s >= {MEMBERS_PER_SECOND:.0}: {}",
            result.members,
            rate(result),
            if met { "met" } else { "MISSED" }
        );
    }
    let peaks = results.iter().map(|result| result.peak);
    if let (Some(low), Some(high)) = (peaks.clone().min(), peaks.max()) {
        // Allocator noise aside, the peak must not follow the audience's size.
        let flat = high.0 <= low.0 + low.0 / 5;
        println!(
            "  peak memory {low} to {high} across sizes (within 20%): {}",
            if flat { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

fn rate(result: &Fetched) -> f64 {
    result.members as f64 / result.elapsed.as_secs_f64().max(1e-9)
}

async fn fetch_once(binary: &Path, args: &Args, members: u64) -> anyhow::Result<Fetched> {
    let fake = FakeMailchimp::new(API_KEY);
    fake.add_list(LIST_ID, "Benchmark audience");
    fake.add_synthetic_members(LIST_ID, members);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    fake.serve(listener).await?;

    let database = FreshDatabase::create(&args.database)?;
    let dir = database.dir.path();
    let service = Service::start(binary, &database.url, &dir.join("serve.log")).await?;
    let audience = async {
        let channel = service.channel().await?;
        let account = service::create_account(&channel, Some(fake.base_url())).await?;
        service::refresh_audience(&channel, account, LIST_ID).await
    }
    .await;
    service.stop().await?;
    let audience = audience?;

    let stdout = dir.join("fetch.out");
    let stderr = dir.join("fetch.err");
    let mut child = Command::new(binary)
        .args(["fetch", "--full", "--audience", &audience.to_string()])
        .args(["--database-url", &database.url])
        .stdin(Stdio::null())
        .stdout(File::create(&stdout)?)
        .stderr(File::create(&stderr)?)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let started = Instant::now();
    let limit = Duration::from_secs(args.time_limit);
    let mut peak = Kib::default();
    let status = loop {
        // VmHWM only grows, so the last reading before the exit is the process's peak.
        if let Some(memory) = proc_status::memory(child.id()) {
            peak = peak.max(memory.peak);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            child.kill()?;
            let _ = child.wait();
            bail!("the fetch of {members} members did not end within {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let elapsed = started.elapsed();
    let output = std::fs::read_to_string(&stdout).unwrap_or_default();
    if !status.success() {
        let errors = std::fs::read_to_string(&stderr).unwrap_or_default();
        bail!("mailchimp-sync fetch failed ({status}):\n{output}\n{errors}");
    }
    let summary = output.lines().last().unwrap_or_default();
    let summary = summary.split(": ").nth(1).unwrap_or(summary).to_owned();
    Ok(Fetched {
        members,
        elapsed,
        peak,
        summary,
        contacts: count_contacts(&database.url).await?,
    })
}

/// Contacts in the database after the fetch, read through the store.
async fn count_contacts(url: &str) -> anyhow::Result<i64> {
    let store = Store::open(url, 1)?;
    Ok(store.run(contacts::count).await?)
}
