//! `mailchimp-sync fetch` on a terminal: a progress bar per audience; elsewhere (CI, cron,
//! a pipe), one plain line per page.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailchimp_sync::domain::fetch::{Fetcher, Mode, Progress, Target, Trigger};
use mailchimp_sync::store::fetch_runs::{Claim, SUCCEEDED};

/// Claims and runs the target's fetches one after the other; returns how many failed.
pub async fn run_with_progress(
    fetcher: &Fetcher,
    target: Target,
    mode: Mode,
) -> anyhow::Result<usize> {
    let mut failed = 0;
    for claim in fetcher.claim(target, mode, Trigger::Cli, None).await? {
        let run = match claim {
            Claim::Claimed(run) => run,
            Claim::Active(run) | Claim::AlreadyScheduled(run) => {
                println!(
                    "audience {}: run {} is already in progress, skipped",
                    run.list_id, run.id
                );
                continue;
            }
        };
        let list = fetcher.audience(run.list_id).await?;
        let label = format!("audience {} ({})", list.mailchimp_list_id, list.name);
        let bar = progress_bar(&label, list.member_count);
        let terminal = std::io::stderr().is_terminal();
        let report = |progress: Progress| {
            bar.set_position(progress.members_seen.max(0) as u64);
            if !terminal {
                eprintln!(
                    "{label}: page {}, {} members seen",
                    progress.pages, progress.members_seen
                );
            }
        };
        let done = fetcher.run(run, report).await?;
        bar.finish_and_clear();
        let error = done.error.map(|e| format!(": {e}")).unwrap_or_default();
        println!(
            "{label}: {} ({} mode), {} members seen, {} written{error}",
            done.state, done.mode, done.members_seen, done.members_written
        );
        failed += usize::from(done.state != SUCCEEDED);
    }
    Ok(failed)
}

fn progress_bar(label: &str, expected: i64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(expected.max(0) as u64);
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} members ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}
