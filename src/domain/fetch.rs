//! Fetch MailChimp Audience: the safety net behind webhooks.
//!
//! A run walks an audience's members page by page (one page in flight, written as it
//! arrives, so memory does not grow with the audience), applies each member with the same
//! rules as webhooks (never over newer state), and counts its progress on the `fetch_run`
//! row. Incremental runs ask only for members changed since the last successful run's
//! watermark, minus an overlap; full runs ask for everyone and then remove the members
//! Mailchimp no longer has. Both make a second pass for archived members, which the plain
//! listing leaves out. The watermark moves only when the whole run succeeds.
//!
//! Claims go through the store's serialized write transaction, so one audience has one run
//! at a time, across replicas; a scheduled run also claims its schedule slot, so a schedule
//! firing on every replica fetches each audience once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{Duration, NaiveDateTime};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::domain::apply;
use crate::error::{AppError, AppResult, Kind};
use crate::mailchimp::types::ApiMember;
use crate::mailchimp::{self, ApiError, Client, Limits, MembersQuery};
use crate::store::accounts::{self, AccountRow};
use crate::store::fetch_runs::{self, Claim, FetchRunRow, NewRun};
use crate::store::lists::{self, ListRow};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Incremental,
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Incremental => "incremental",
            Mode::Full => "full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Grpc,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Grpc => "grpc",
            Trigger::Cli => "cli",
        }
    }
}

/// What to fetch.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Account(i64),
    Audience(i64),
}

/// How fetches behave; the defaults suit Mailchimp.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests in flight per account, at most [`mailchimp::MAX_CONCURRENCY`].
    pub concurrency: usize,
    pub limits: Limits,
    /// How far before the watermark an incremental run starts, for members changed in the
    /// same second as the watermark and for clocks that disagree.
    pub overlap: Duration,
    /// A running run whose heartbeat is older than this belonged to a process that died.
    pub abandoned_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 4,
            limits: Limits::default(),
            overlap: Duration::minutes(5),
            abandoned_after: Duration::minutes(10),
        }
    }
}

/// Counters a caller may show while a run works.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub pages: i64,
    pub members_seen: i64,
    pub members_written: i64,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the service shut down during the run")]
    Interrupted,
}

/// Runs fetches for the whole process; shared by the scheduler, gRPC and the CLI.
pub struct Fetcher {
    store: Store,
    http: reqwest::Client,
    settings: Settings,
    permits: Mutex<HashMap<i64, Arc<Semaphore>>>,
    active: Mutex<HashSet<i64>>,
    stopping: std::sync::atomic::AtomicBool,
    on_run_end: std::sync::OnceLock<RunObserver>,
}

/// Called with every run once it has ended, whatever its state.
type RunObserver = Box<dyn Fn(&FetchRunRow) + Send + Sync>;

impl Fetcher {
    pub fn new(store: Store, mut settings: Settings) -> anyhow::Result<Arc<Fetcher>> {
        settings.concurrency = settings.concurrency.clamp(1, mailchimp::MAX_CONCURRENCY);
        Ok(Arc::new(Fetcher {
            store,
            http: mailchimp::http_client()?,
            settings,
            permits: Mutex::default(),
            active: Mutex::default(),
            stopping: Default::default(),
            on_run_end: Default::default(),
        }))
    }

    /// Sets what is told of every ended run (the metrics); the first setting stays.
    pub fn on_run_end(&self, observer: impl Fn(&FetchRunRow) + Send + Sync + 'static) {
        let _ = self.on_run_end.set(Box::new(observer));
    }

    /// The API client of an account; every client of one account shares its cap.
    fn client(&self, account: &AccountRow) -> Client {
        let permits = self
            .permits
            .lock()
            .expect("the permit registry is never poisoned")
            .entry(account.id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.concurrency)))
            .clone();
        let base = account
            .api_base_url
            .clone()
            .unwrap_or_else(|| format!("https://{}.api.mailchimp.com", account.data_center));
        Client::new(
            self.http.clone(),
            &base,
            &account.api_key,
            permits,
            self.settings.limits.clone(),
        )
    }

    pub async fn account_client(&self, account_id: i64) -> AppResult<Client> {
        let account = crate::domain::accounts::get(&self.store, account_id).await?;
        Ok(self.client(&account))
    }

    /// Pages `GET /lists` so every audience of the account exists with its name and count.
    pub async fn refresh_audiences(&self, account_id: i64) -> AppResult<Vec<ListRow>> {
        let client = self.account_client(account_id).await?;
        let found = client.lists().await.map_err(api_error)?;
        let now = crate::now();
        let rows = self
            .store
            .write(move |conn| {
                for list in &found {
                    let count = list.stats.member_count;
                    lists::upsert_from_api(conn, account_id, &list.id, &list.name, count, now)?;
                }
                lists::for_account(conn, account_id)
            })
            .await?;
        Ok(rows)
    }

    /// Claims a run for each audience of the target (refreshing an account's audiences
    /// first). An audience with a run in progress gives that run instead.
    pub async fn claim(
        &self,
        target: Target,
        mode: Mode,
        trigger: Trigger,
        scheduled_for: Option<NaiveDateTime>,
    ) -> AppResult<Vec<Claim>> {
        let list_ids = match target {
            Target::Account(id) => self
                .refresh_audiences(id)
                .await?
                .iter()
                .map(|l| l.id)
                .collect(),
            Target::Audience(id) => vec![self.audience(id).await?.id],
        };
        let now = crate::now();
        let abandoned_before = now - self.settings.abandoned_after;
        let claims = self
            .store
            .write(move |conn| {
                list_ids
                    .iter()
                    .map(|&list_id| {
                        let run = NewRun {
                            list_id,
                            trigger: trigger.as_str(),
                            mode: mode.as_str(),
                            scheduled_for,
                        };
                        fetch_runs::claim(conn, &run, now, abandoned_before)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(claims)
    }

    pub async fn audience(&self, id: i64) -> AppResult<ListRow> {
        match self.store.run(move |conn| lists::get(conn, id)).await {
            Err(StoreError::NotFound) => Err(AppError::not_found("audience")),
            other => Ok(other?),
        }
    }

    /// Claims and starts runs in the background; returns them as claimed (or the runs
    /// already in progress).
    pub async fn trigger(
        self: &Arc<Self>,
        target: Target,
        mode: Mode,
        trigger: Trigger,
    ) -> AppResult<Vec<FetchRunRow>> {
        let claims = self.claim(target, mode, trigger, None).await?;
        let mut runs = Vec::with_capacity(claims.len());
        for claim in claims {
            match claim {
                Claim::Claimed(run) => {
                    let fetcher = Arc::clone(self);
                    let started = run.clone();
                    tokio::spawn(async move { fetcher.run(started, |_| {}).await });
                    runs.push(run);
                }
                Claim::Active(run) | Claim::AlreadyScheduled(run) => runs.push(run),
            }
        }
        Ok(runs)
    }

    /// The scheduled fetch: an incremental run of every audience of every account, each
    /// claimed for this schedule slot. Waits for the runs to end.
    pub async fn run_schedule(self: &Arc<Self>, slot: NaiveDateTime) {
        let accounts = match self.store.run(accounts::list).await {
            Ok(accounts) => accounts,
            Err(error) => {
                tracing::warn!(error = %error, "scheduled fetch could not list accounts");
                return;
            }
        };
        let mut tasks = Vec::new();
        for account in accounts {
            let target = Target::Account(account.id);
            match self
                .claim(target, Mode::Incremental, Trigger::Schedule, Some(slot))
                .await
            {
                Ok(claims) => {
                    for claim in claims {
                        if let Claim::Claimed(run) = claim {
                            let fetcher = Arc::clone(self);
                            tasks.push(tokio::spawn(async move { fetcher.run(run, |_| {}).await }));
                        }
                    }
                }
                Err(error) => tracing::warn!(
                    account_id = account.id,
                    error = %error,
                    "scheduled fetch could not start"
                ),
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Executes a claimed run to its end and returns the final row. `on_page` sees the
    /// counters after each page.
    pub async fn run(
        &self,
        run: FetchRunRow,
        on_page: impl Fn(Progress) + Send + Sync,
    ) -> AppResult<FetchRunRow> {
        let started = Instant::now();
        self.active.lock().expect("never poisoned").insert(run.id);
        let list = self.audience(run.list_id).await?;
        let account = crate::domain::accounts::get(&self.store, list.account_id).await?;
        let client = self.client(&account);
        let result = self.execute(&run, &list, &client, &on_page).await;
        self.active.lock().expect("never poisoned").remove(&run.id);
        let (state, error) = match &result {
            Ok(()) => (fetch_runs::SUCCEEDED, None),
            Err(RunError::Interrupted) => (
                fetch_runs::INTERRUPTED,
                Some(RunError::Interrupted.to_string()),
            ),
            Err(error) => (fetch_runs::FAILED, Some(error.to_string())),
        };
        let id = run.id;
        let finished = self
            .store
            .run(move |conn| {
                if state != fetch_runs::SUCCEEDED {
                    fetch_runs::finish(conn, id, state, error.as_deref(), crate::now())?;
                }
                fetch_runs::get(conn, id)
            })
            .await?;
        tracing::info!(
            fetch_run_id = finished.id,
            audience_id = finished.list_id,
            mode = %finished.mode,
            state = %finished.state,
            members = finished.members_seen,
            duration_ms = started.elapsed().as_millis() as u64,
            "fetch run ended"
        );
        if let Some(observe) = self.on_run_end.get() {
            observe(&finished);
        }
        Ok(finished)
    }

    async fn execute(
        &self,
        run: &FetchRunRow,
        list: &ListRow,
        client: &Client,
        on_page: &(impl Fn(Progress) + Send + Sync),
    ) -> Result<(), RunError> {
        let full = run.mode == Mode::Full.as_str();
        let since = match full {
            true => None,
            false => list
                .fetch_cursor
                .map(|cursor| cursor - self.settings.overlap),
        };
        let mut newest = list.fetch_cursor;
        let mut progress = Progress::default();
        // Archived members are missing from the plain listing: a second pass asks for them.
        for status in [None, Some("archived")] {
            let mut query = MembersQuery {
                offset: 0,
                status: status.map(str::to_owned),
                since_last_changed: since,
            };
            let mut next = Some(spawn_page(client, list, &query));
            while let Some(pending) = next.take() {
                if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    pending.abort();
                    return Err(RunError::Interrupted);
                }
                let members = match pending.await {
                    Ok(members) => members?,
                    Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                    Err(_) => return Err(RunError::Interrupted),
                };
                let count = members.len();
                newest = newest.max(members.iter().filter_map(|m| m.last_changed).max());
                // The next page is asked for while this one is written: two pages at most
                // are held, whatever the audience's size.
                let mut following = query.clone();
                following.offset += count as u64;
                if count >= client.page_size() as usize {
                    next = Some(spawn_page(client, list, &following));
                }
                let written = match self.write_page(run.id, list, members, full).await {
                    Ok(written) => written,
                    Err(error) => {
                        if let Some(next) = next {
                            next.abort();
                        }
                        return Err(error);
                    }
                };
                progress.pages += 1;
                progress.members_seen += count as i64;
                progress.members_written += written;
                on_page(progress);
                tracing::debug!(
                    fetch_run_id = run.id,
                    offset = query.offset,
                    members = count,
                    written,
                    "fetch page written"
                );
                query = following;
            }
        }
        self.finish_success(run, list, newest, full).await
    }

    /// Writes one page in one transaction, with the run's counters and heartbeat.
    async fn write_page(
        &self,
        run_id: i64,
        list: &ListRow,
        members: Vec<ApiMember>,
        full: bool,
    ) -> Result<i64, RunError> {
        let list = list.clone();
        let seen_by = full.then_some(run_id);
        let ids = Arc::clone(self.store.ids());
        let written = self
            .store
            .write(move |conn| {
                let now = crate::now();
                let written = apply::apply_fetched_page(conn, &ids, &list, &members, seen_by, now)?;
                fetch_runs::record_page(conn, run_id, members.len() as i64, written, now)?;
                Ok(written)
            })
            .await?;
        Ok(written)
    }

    /// Removes what a full run did not see, moves the watermark and marks the run done, all
    /// in one transaction.
    async fn finish_success(
        &self,
        run: &FetchRunRow,
        list: &ListRow,
        newest: Option<NaiveDateTime>,
        full: bool,
    ) -> Result<(), RunError> {
        let (run, list) = (run.clone(), list.clone());
        self.store
            .write(move |conn| {
                let now = crate::now();
                if full {
                    let started = run.started_date.unwrap_or(run.create_date);
                    let removed = apply::remove_unseen(conn, &list, run.id, started, now)?;
                    tracing::debug!(
                        fetch_run_id = run.id,
                        removed,
                        "members gone from mailchimp removed"
                    );
                }
                lists::record_fetch(conn, list.id, newest, now)?;
                fetch_runs::finish(conn, run.id, fetch_runs::SUCCEEDED, None, now)
            })
            .await?;
        Ok(())
    }

    /// Stops new pages and marks this process's running runs as interrupted, so that the
    /// next run redoes them.
    pub async fn interrupt_all(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<i64> = self
            .active
            .lock()
            .expect("never poisoned")
            .iter()
            .copied()
            .collect();
        if ids.is_empty() {
            return;
        }
        let result = self
            .store
            .run(move |conn| fetch_runs::interrupt(conn, &ids, crate::now()))
            .await;
        if let Err(error) = result {
            tracing::warn!(error = %error, "could not mark fetch runs interrupted");
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Asks for one page of members in a task of its own, so that it arrives while the caller
/// writes the page before.
fn spawn_page(
    client: &Client,
    list: &ListRow,
    query: &MembersQuery,
) -> JoinHandle<Result<Vec<ApiMember>, ApiError>> {
    let (client, query) = (client.clone(), query.clone());
    let list_id = list.mailchimp_list_id.clone();
    let page = async move { client.members(&list_id, &query).await };
    tokio::spawn(page.instrument(tracing::Span::current()))
}

/// A target per account in the store.
pub async fn all_accounts(fetcher: &Fetcher) -> AppResult<Vec<Target>> {
    let accounts = fetcher.store.run(accounts::list).await?;
    Ok(accounts
        .into_iter()
        .map(|account| Target::Account(account.id))
        .collect())
}

/// Mailchimp's refusal, as the caller should see it; the detail is Mailchimp's own words.
pub fn api_error(error: ApiError) -> AppError {
    let kind = match error.status() {
        Some(401 | 403) => Kind::FailedPrecondition,
        Some(404) => Kind::NotFound,
        Some(429) => Kind::Unavailable,
        Some(400..=499) => Kind::FailedPrecondition,
        _ => Kind::Unavailable,
    };
    AppError::new(kind, error.to_string())
}
