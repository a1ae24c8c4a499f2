//! The nightly "Fetch MailChimp Audience": the scheduler only wires a cron expression to
//! [`Fetcher::run_schedule`]; the fetch itself is a plain function, tested without it.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DurationRound, TimeDelta};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::domain::fetch::Fetcher;

/// Starts the schedule (six fields, seconds first, UTC).
pub async fn start(expression: &str, fetcher: Arc<Fetcher>) -> anyhow::Result<JobScheduler> {
    let job = Job::new_async(expression, move |_id, _scheduler| {
        let fetcher = Arc::clone(&fetcher);
        Box::pin(async move {
            // Replicas fire at the same minute; the minute names the slot they all claim.
            let slot = crate::now()
                .duration_trunc(TimeDelta::minutes(1))
                .unwrap_or_else(|_| crate::now());
            tracing::info!(slot = %slot, "scheduled fetch starting");
            fetcher.run_schedule(slot).await;
        })
    })
    .with_context(|| {
        format!("invalid --fetch-schedule {expression:?}: expected six cron fields, seconds first")
    })?;
    let scheduler = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;
    scheduler
        .add(job)
        .await
        .context("cannot schedule the fetch")?;
    scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    Ok(scheduler)
}
