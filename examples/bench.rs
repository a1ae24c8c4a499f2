//! The performance benchmark: the real release binary, driven over loopback.
//!
//! ```text
//! cargo run --release --example bench -- webhooks                       # SQLite
//! cargo run --release --example bench -- webhooks --database postgres://postgres@127.0.0.1:5432/postgres
//! cargo run --release --example bench -- fetch                          # 10k and 1M members
//! ```
//!
//! Before measuring, it runs `cargo build --release --bin mailchimp-sync` (a no-op when the
//! binary is fresh) and then starts `target/release/mailchimp-sync` as a separate process,
//! each time over a fresh database: a SQLite file in a temporary folder, or a PostgreSQL
//! database created through the given admin URL and dropped afterwards. All traffic stays on
//! 127.0.0.1, and every phase is bounded in requests and in time.
//!
//! `webhooks` measures, at one concurrency over HTTP keep-alive (128 requests in flight by
//! default: a bulk action in Mailchimp's UI, or Mailchimp retrying after an outage, sends
//! thousands of webhooks within minutes, many of them at once; the writer commits every
//! event waiting in one transaction, so the number in flight is what one durable commit is
//! shared by; `--concurrency` measures any other):
//! - the ceiling: the same server answering `GET /healthz`, N times;
//! - ingestion: N distinct webhook bodies as Mailchimp sends them (subscribes, profile
//!   updates, unsubscribes, email changes and cleans over three audiences, `fired_at`
//!   increasing), each answered only once committed: events/s, p50/p99/max, errors, and
//!   the rate as a fraction of the ceiling;
//! - a bulk-unsubscribe burst: 3,000 unsubscribes at concurrency 64 of members subscribed
//!   just before;
//! - the service's resident memory (`/proc/PID/status`): idle after start, and the peak;
//! - afterwards, over gRPC, that every event answered 200 is stored and that sampled
//!   contacts hold the state their last event gave them.
//!
//! `fetch` serves a synthetic audience from the in-process fake Mailchimp, creates the
//! account through the service's gRPC API, then times `mailchimp-sync fetch --full
//! --audience ID` to its exit: members/s, and the fetching process's peak memory (VmHWM),
//! for each audience size given (10,000 and 1,000,000 by default).
//!
//! The load generator shares the machine with the service: on a small machine its own CPU
//! use lowers every figure, the ceiling included, which is why the ceiling is measured in
//! the same run with the same client.

#[path = "bench/fetch.rs"]
mod fetch;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/proc_status.rs"]
mod proc_status;
#[path = "bench/service.rs"]
mod service;
#[path = "bench/webhooks.rs"]
mod webhooks;
#[path = "bench/workload.rs"]
mod workload;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Benchmarks the mailchimp-sync release binary on this machine.
#[derive(Debug, Parser)]
struct Cli {
    /// Use this binary instead of building target/release/mailchimp-sync.
    #[arg(long, global = true)]
    binary: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Webhook ingestion against the /healthz ceiling, a bulk-unsubscribe burst, memory.
    Webhooks(webhooks::Args),
    /// `mailchimp-sync fetch --full` from a fake Mailchimp: members/s and peak memory.
    Fetch(fetch::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let binary = match cli.binary {
        Some(path) => path,
        None => service::build_release_binary()?,
    };
    anyhow::ensure!(
        binary.is_file(),
        "no binary at {}; build it with `cargo build --release`",
        binary.display()
    );
    // The load generator gets as few threads as it needs, leaving the cores to the service.
    let threads = match &cli.command {
        Command::Webhooks(args) => args.client_threads,
        Command::Fetch(_) => 2,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Webhooks(args) => webhooks::run(&binary, args).await,
            Command::Fetch(args) => fetch::run(&binary, args).await,
        }
    })
}
