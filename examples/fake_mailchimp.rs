//! A fake Mailchimp Marketing API to point mailchimp-sync (or curl) at:
//!
//! ```text
//! cargo run --example fake_mailchimp -- --members 100000 --api-key KEY
//! ```
//!
//! It serves one audience of generated members until interrupted. Give the printed base
//! URL as the account's API base URL.

use std::time::Duration;

use clap::Parser;
use mailchimp_sync::fake_mailchimp::{FakeMailchimp, MAILCHIMP_CONCURRENCY_LIMIT};

/// Serves a fake Mailchimp Marketing API v3 with one generated audience.
#[derive(Debug, Parser)]
struct Args {
    /// Generated members in the audience; any number, memory does not grow with it.
    #[arg(long, default_value_t = 1000)]
    members: u64,
    /// The API key the fake accepts (HTTP Basic password, or Bearer token).
    #[arg(long, default_value = "fake-key-us1")]
    api_key: String,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: String,
    #[arg(long, default_value = "a1b2c3d4e5")]
    list_id: String,
    #[arg(long, default_value = "Generated audience")]
    list_name: String,
    /// Answer 429 above this many requests in flight; 0 for no limit.
    #[arg(long, default_value_t = MAILCHIMP_CONCURRENCY_LIMIT)]
    max_concurrent: usize,
    /// Hold every request this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Answer members requests with count=1000 with an HTML 504, as Mailchimp sometimes does.
    #[arg(long)]
    gateway_timeout_on_full_pages: bool,
    /// POST the webhooks Mailchimp would send to registered webhook URLs.
    #[arg(long)]
    deliver_webhooks: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let fake = FakeMailchimp::new(&args.api_key);
    fake.add_list(&args.list_id, &args.list_name);
    fake.add_synthetic_members(&args.list_id, args.members);
    let faults = fake.faults();
    faults.set_concurrency_limit((args.max_concurrent > 0).then_some(args.max_concurrent));
    faults.set_delay(Duration::from_millis(args.delay_ms));
    faults.set_gateway_timeout_on_full_pages(args.gateway_timeout_on_full_pages);
    fake.set_webhook_delivery(args.deliver_webhooks);

    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    fake.serve(listener).await?;
    let base = fake.base_url();
    println!(
        "fake Mailchimp serving {} members of list {}",
        args.members, args.list_id
    );
    println!("API base URL: {base}");
    println!(
        "try: curl -u any:{} '{base}/3.0/lists/{}/members?count=2'",
        args.api_key, args.list_id
    );
    tokio::signal::ctrl_c().await
}
