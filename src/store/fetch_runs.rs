//! `fetch_run`: every fetch of an audience, its progress counters and its end. A run is
//! claimed inside a write transaction, which every writer takes in turn (on PostgreSQL
//! across replicas too), so two claims for one audience cannot both succeed.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::fetch_run as table;
use super::{DbConnection, StoreResult, on_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = table)]
pub struct FetchRunRow {
    pub id: i64,
    pub list_id: i64,
    pub trigger: String,
    pub mode: String,
    pub state: String,
    pub pages: i64,
    pub members_seen: i64,
    pub members_written: i64,
    pub error: Option<String>,
    pub scheduled_for: Option<NaiveDateTime>,
    pub heartbeat_date: Option<NaiveDateTime>,
    pub started_date: Option<NaiveDateTime>,
    pub finished_date: Option<NaiveDateTime>,
    pub create_date: NaiveDateTime,
}

pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const INTERRUPTED: &str = "interrupted";

/// What a claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The run is ours to do.
    Claimed(FetchRunRow),
    /// Another run of the audience is in progress.
    Active(FetchRunRow),
    /// The scheduled slot was already taken, by this replica or another.
    AlreadyScheduled(FetchRunRow),
}

/// What a new run is.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub list_id: i64,
    pub trigger: &'a str,
    pub mode: &'a str,
    pub scheduled_for: Option<NaiveDateTime>,
}

/// Claims a run of the audience. A running row whose heartbeat is older than
/// `abandoned_before` belonged to a process that died: it is marked interrupted and no
/// longer blocks. The caller holds the write transaction.
pub fn claim(
    conn: &mut DbConnection,
    run: &NewRun<'_>,
    now: NaiveDateTime,
    abandoned_before: NaiveDateTime,
) -> StoreResult<Claim> {
    if let Some(slot) = run.scheduled_for
        && let Some(existing) = for_slot(conn, run.list_id, slot)?
    {
        return Ok(Claim::AlreadyScheduled(existing));
    }
    for active in running(conn, run.list_id)? {
        if active
            .heartbeat_date
            .is_some_and(|beat| beat >= abandoned_before)
        {
            return Ok(Claim::Active(active));
        }
        finish(
            conn,
            active.id,
            INTERRUPTED,
            Some("abandoned: its process stopped"),
            now,
        )?;
    }
    let row = on_backend!(conn, c => diesel::insert_into(table::table)
        .values((
            table::list_id.eq(run.list_id),
            table::trigger.eq(run.trigger),
            table::mode.eq(run.mode),
            table::state.eq(RUNNING),
            table::scheduled_for.eq(run.scheduled_for),
            table::heartbeat_date.eq(now),
            table::started_date.eq(now),
            table::create_date.eq(now),
        ))
        .returning(FetchRunRow::as_returning())
        .get_result(c))?;
    Ok(Claim::Claimed(row))
}

fn for_slot(
    conn: &mut DbConnection,
    list_id: i64,
    slot: NaiveDateTime,
) -> StoreResult<Option<FetchRunRow>> {
    Ok(table::table
        .filter(table::list_id.eq(list_id))
        .filter(table::scheduled_for.eq(slot))
        .select(FetchRunRow::as_select())
        .get_result(conn)
        .optional()?)
}

fn running(conn: &mut DbConnection, list_id: i64) -> StoreResult<Vec<FetchRunRow>> {
    Ok(table::table
        .filter(table::list_id.eq(list_id))
        .filter(table::state.eq(RUNNING))
        .select(FetchRunRow::as_select())
        .load(conn)?)
}

/// Adds a page's counts and moves the heartbeat.
pub fn record_page(
    conn: &mut DbConnection,
    id: i64,
    seen: i64,
    written: i64,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::pages.eq(table::pages + 1),
            table::members_seen.eq(table::members_seen + seen),
            table::members_written.eq(table::members_written + written),
            table::heartbeat_date.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn finish(
    conn: &mut DbConnection,
    id: i64,
    state: &str,
    error: Option<&str>,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::state.eq(state),
            table::error.eq(error),
            table::finished_date.eq(now),
            table::heartbeat_date.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConnection, id: i64) -> StoreResult<FetchRunRow> {
    Ok(table::table
        .find(id)
        .select(FetchRunRow::as_select())
        .get_result(conn)?)
}

/// Which runs a listing shows.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub list_id: Option<i64>,
    pub state: Option<String>,
}

/// Runs newest first, below `before_id` (0 for the first page).
pub fn page(
    conn: &mut DbConnection,
    filter: &RunFilter,
    before_id: i64,
    limit: i64,
) -> StoreResult<Vec<FetchRunRow>> {
    let mut query = table::table
        .order(table::id.desc())
        .limit(limit)
        .select(FetchRunRow::as_select())
        .into_boxed();
    if before_id > 0 {
        query = query.filter(table::id.lt(before_id));
    }
    if let Some(list_id) = filter.list_id {
        query = query.filter(table::list_id.eq(list_id));
    }
    if let Some(state) = &filter.state {
        query = query.filter(table::state.eq(state.clone()));
    }
    Ok(query.load(conn)?)
}

/// Marks every run this process left running as interrupted, at shutdown.
pub fn interrupt(conn: &mut DbConnection, ids: &[i64], now: NaiveDateTime) -> StoreResult<()> {
    diesel::update(
        table::table
            .filter(table::id.eq_any(ids))
            .filter(table::state.eq(RUNNING)),
    )
    .set((
        table::state.eq(INTERRUPTED),
        table::error.eq("the service shut down during the run"),
        table::finished_date.eq(now),
    ))
    .execute(conn)?;
    Ok(())
}
