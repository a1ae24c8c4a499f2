//! The nightly "Fetch MailChimp Audience": the scheduler only wires a cron expression to
//! [`Fetcher::run_schedule`]; the fetch itself is a plain function, tested without it.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DurationRound, TimeDelta};
use croner::parser::{CronParser, Seconds};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::domain::fetch::Fetcher;

/// Starts the schedule (six fields, seconds first, UTC).
pub async fn start(expression: &str, fetcher: Arc<Fetcher>) -> anyhow::Result<JobScheduler> {
    check(expression)
        .map_err(|why| anyhow::anyhow!("invalid --fetch-schedule {expression:?}: {why}"))?;
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
    .with_context(|| format!("invalid --fetch-schedule {expression:?}"))?;
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

/// Why the expression is not a schedule this service runs: six fields, seconds first, that
/// name a time to come. The scheduler's own parser also takes a seventh field (years) and
/// only says that parsing failed.
pub fn check(expression: &str) -> Result<(), String> {
    let fields = expression.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "expected six cron fields (second minute hour day month weekday), found {fields}"
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expression)
        .map_err(|error| error.to_string())?;
    cron.find_next_occurrence(&chrono::Utc::now(), false)
        .map(|_| ())
        .map_err(|_| "it names no time to come (a date that does not exist?)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn six_fields_that_name_a_time_are_a_schedule() {
        for expression in ["0 0 2 * * *", "0 */15 * * * MON-FRI", "30 0 3 1 * *"] {
            assert_eq!(check(expression), Ok(()), "{expression}");
        }
    }

    #[test]
    fn what_is_not_a_schedule_says_why() {
        for (expression, why) in [
            ("0 2 * * *", "found 5"),
            ("0 0 2 * * * 2030", "found 7"),
            ("0 0 25 * * *", "out of bounds"),
            ("0 0 2 31 2 *", "no time to come"),
        ] {
            let error = check(expression).expect_err(expression);
            assert!(error.to_lowercase().contains(why), "{expression}: {error}");
        }
    }
}
