//! The data layer: one connection type over SQLite and PostgreSQL, an r2d2 pool, the embedded
//! migrations, and one file of queries per table. Callers hand a `&mut DbConnection` to the
//! query functions; nothing outside this module builds SQL.
//!
//! diesel's `MultiConnection` covers the SQL both backends share. `ON CONFLICT` and
//! `RETURNING` are not part of that subset, so the few queries that need them match on the
//! connection's variant through [`on_backend!`], which compiles the same DSL once per backend.
//!
//! Lookups by a unique key use `get_result`, not `first`: `first` binds its `LIMIT` as a
//! parameter, and SQLite recompiles a statement whose plan depends on a bound limit every
//! time it runs, which made those lookups the writer's largest cost.

pub mod accounts;
pub mod blacklist;
pub mod changes;
pub mod contacts;
pub mod events;
pub mod fetch_runs;
pub mod known;
pub mod lists;
pub mod schema;
pub mod subscriptions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::{self, CustomizeConnection, ManageConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::Sqlite;
use diesel::{Connection, OptionalExtension, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The most values one `IN (...)` list binds; SQLite allows 32,766 parameters a statement.
pub const MAX_IN_LIST: usize = 1000;

/// Runs an `IN (...)` query once per [`MAX_IN_LIST`] values, each list [`padded`], and
/// gathers the rows.
fn in_chunks<T: Clone, R>(
    values: &[T],
    mut query: impl FnMut(&[T]) -> StoreResult<Vec<R>>,
) -> StoreResult<Vec<R>> {
    let mut rows = Vec::new();
    for chunk in values.chunks(MAX_IN_LIST) {
        rows.extend(query(&padded(chunk))?);
    }
    Ok(rows)
}

/// The values of an `IN (...)` list, their number rounded up to a power of two by
/// repeating the last one, which matches nothing new. On SQLite, where each value is a
/// parameter of its own, the statement then takes one of a few shapes, so that it can be
/// kept prepared ([`Kept`]) instead of compiled again for every length.
pub(crate) fn padded<T: Clone>(values: &[T]) -> Vec<T> {
    let mut padded = values.to_vec();
    if let Some(last) = values.last() {
        padded.resize(values.len().next_power_of_two(), last.clone());
    }
    padded
}

/// A statement kept prepared on its connection although diesel would not keep it. diesel
/// then keys it by its SQL text, so it suits only statements whose text takes one of a few
/// shapes, or the connection's cache would grow without end: on SQLite, a [`padded`] `IN`
/// list (each value a parameter of its own); on PostgreSQL, a statement whose values are
/// bound as arrays (an `= ANY` list, or raw SQL over `unnest`), whatever their number, which
/// PostgreSQL then also plans once for all parameters (its generic plan). diesel itself
/// keeps no `IN` list on SQLite, no raw SQL, and no upsert on either backend.
pub(crate) struct Kept<Q>(pub Q);

impl<Q: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Kept<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Sqlite>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &Sqlite) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Kept<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: QueryFragment<Db>> QueryFragment<Db> for Kept<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Db>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &Db) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Kept<Q> {
    type QueryId = ();
    // Keyed by its SQL text, never by its type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Kept<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, C> RunQueryDsl<C> for Kept<Q> {}

/// How many rows a [`Kept`] statement that writes wrote: such a statement reads `WITH
/// written AS (… RETURNING 1) SELECT count(*) AS rows FROM written`, since diesel keeps a
/// statement it loads from, never one it executes (it asks the borrowed statement, which
/// does not answer for its wrapper).
#[derive(diesel::QueryableByName)]
pub(crate) struct Written {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows: i64,
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// The first id above every row of `table` (a table with an `AUTOINCREMENT` id) on SQLite.
/// Only writers call it, inside their write transaction: that transaction holds the
/// database's write lock, so every id from there on is the writer's until it commits.
pub(crate) fn first_free_sqlite_id(
    conn: &mut SqliteConnection,
    table: &'static str,
) -> StoreResult<i64> {
    let seq = diesel::sql_query("SELECT seq AS id FROM sqlite_sequence WHERE name = ?")
        .bind::<diesel::sql_types::Text, _>(table)
        .get_result::<Id>(conn)
        .optional()?;
    Ok(seq.map_or(0, |seq| seq.id) + 1)
}

/// Ids for new rows taken from PostgreSQL's sequences before the rows are written, kept by
/// the store from one transaction to the next. A sequence hands ids out outside any
/// transaction, so ids one batch took and did not use serve the next batch; ids never used
/// leave a gap, as a rolled-back insert would. Blocks double from a small first one, so a
/// quiet service takes few and a burst takes them in few queries.
#[derive(Debug, Default)]
pub struct IdPool {
    tables: Mutex<HashMap<&'static str, Block>>,
}

#[derive(Debug, Default)]
struct Block {
    /// The ids left, the next to use last.
    ids: Vec<i64>,
    /// How many blocks this table took so far.
    taken: u32,
}

impl IdPool {
    const FIRST_BLOCK: i64 = 16;
    const LARGEST_BLOCK: i64 = 1024;

    /// The next id for a new row of `table` (a table with an `id` from a sequence).
    pub(crate) fn take(&self, conn: &mut PgConnection, table: &'static str) -> StoreResult<i64> {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let block = tables.entry(table).or_default();
        if let Some(id) = block.ids.pop() {
            return Ok(id);
        }
        let count = (Self::FIRST_BLOCK << block.taken.min(6)).min(Self::LARGEST_BLOCK);
        let ids = diesel::sql_query(
            "SELECT nextval(pg_get_serial_sequence($1, 'id')) AS id \
             FROM generate_series(1, $2)",
        )
        .bind::<diesel::sql_types::Text, _>(table)
        .bind::<diesel::sql_types::BigInt, _>(count)
        .load::<Id>(conn)?;
        block.taken += 1;
        block.ids = ids.into_iter().rev().map(|id| id.id).collect();
        block
            .ids
            .pop()
            .ok_or(StoreError::Query(DieselError::NotFound))
    }
}

/// The most rows one multi-row `INSERT` carries, well inside both backends' parameter limits.
pub const MAX_ROWS_PER_INSERT: usize = 500;

/// Runs a multi-row statement over `rows` in pieces: `$body` runs once per piece, with `$c`
/// the concrete connection and `$piece` the rows, and its error ends the loop.
///
/// On PostgreSQL a piece is a slice of up to [`MAX_ROWS_PER_INSERT`] rows, so that a batch
/// takes one round trip per table. On SQLite, where there is no round trip to save but
/// preparing a statement of many rows costs about as much as running it, a piece is an
/// array of 256, 32, 4 or 1 rows: a plain `INSERT` over an array of rows that own their
/// values has a fixed shape, which diesel prepares once per connection and keeps. (It
/// keeps no upsert or update, so those are better left as few statements as possible.)
macro_rules! in_pieces {
    ($conn:expr, $rows:expr, |$c:ident, $piece:ident| $body:expr) => {{
        let rows = $rows;
        match $conn {
            $crate::store::DbConnection::Postgresql($c) => {
                for $piece in rows.chunks($crate::store::MAX_ROWS_PER_INSERT) {
                    $body?;
                }
            }
            $crate::store::DbConnection::Sqlite($c) => {
                let mut rest = rows;
                while let Some(($piece, tail)) = rest.split_first_chunk::<256>() {
                    $body?;
                    rest = tail;
                }
                while let Some(($piece, tail)) = rest.split_first_chunk::<32>() {
                    $body?;
                    rest = tail;
                }
                while let Some(($piece, tail)) = rest.split_first_chunk::<4>() {
                    $body?;
                    rest = tail;
                }
                for one in rest {
                    let $piece = std::array::from_ref(one);
                    $body?;
                }
            }
        }
    }};
}
pub(crate) use in_pieces;

/// A connection to whichever database the URL named.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// The backend type diesel generated for [`DbConnection`].
pub type Db = <DbConnection as Connection>::Backend;

/// Runs the same expression against the concrete connection inside a [`DbConnection`], for
/// queries outside the portable subset (`ON CONFLICT`, `RETURNING`, locks).
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::DbConnection::Postgresql($c) => $body,
            $crate::store::DbConnection::Sqlite($c) => $body,
        }
    };
}
pub use on_backend;

/// What can go wrong below the domain. The domain decides what each means to a caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("not found")]
    NotFound,
    #[error("a row with the same key exists")]
    Conflict(#[source] DieselError),
    #[error("database query failed")]
    Query(#[source] DieselError),
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error("migrations failed: {0}")]
    Migration(String),
    /// A write held back for a batch found no row to apply to; the batch is written again
    /// row by row rather than lose it.
    #[error("a held-back write lost its row: {0}")]
    Untracked(&'static str),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Conflict(error)
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(error)),
            // SQLite's busy timeout, or PostgreSQL's lock timeout, ran out: another process
            // held the write lock throughout.
            DieselError::DatabaseError(_, ref info)
                if info.message().contains("database is locked")
                    || info.message().contains("due to lock timeout") =>
            {
                StoreError::Unavailable(Box::new(error))
            }
            other => StoreError::Query(other),
        }
    }
}

impl From<r2d2::PoolError> for StoreError {
    fn from(error: r2d2::PoolError) -> Self {
        StoreError::Unavailable(Box::new(error))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a URL names, decided from its scheme alone: SQLite accepts almost any
/// string as a file name, so trying backends in turn would pick SQLite for a mistyped URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend and the string its driver expects.
    pub fn parse(url: &str) -> StoreResult<(Backend, String)> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok((Backend::Postgres, url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                StoreError::BadUrl("expected sqlite://PATH or postgres://…".to_owned())
            })?;
        if path.is_empty() || path.contains(":memory:") {
            return Err(StoreError::BadUrl(
                "the SQLite URL needs a file path".to_owned(),
            ));
        }
        // The driver would take `?mode=ro` as part of the file name.
        if path.contains('?') {
            return Err(StoreError::BadUrl(
                "the SQLite URL takes no parameters (`?`)".to_owned(),
            ));
        }
        Ok((Backend::Sqlite, path.to_owned()))
    }
}

/// Opens connections for the pool, each of the backend the URL named.
#[derive(Debug)]
pub struct Manager {
    backend: Backend,
    target: String,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        let conn = match self.backend {
            Backend::Postgres => {
                PgConnection::establish(&self.target).map(DbConnection::Postgresql)
            }
            Backend::Sqlite => SqliteConnection::establish(&self.target).map(DbConnection::Sqlite),
        };
        conn.map_err(|error| {
            // libpq quotes what it could not parse, which may be the URL's password.
            let message = without_password(error.to_string().trim_end(), &self.target);
            r2d2::Error::ConnectionError(diesel::ConnectionError::BadConnection(message))
        })
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// Each session set up for a server.
///
/// SQLite: WAL so readers never wait for the writer, foreign keys on, a busy timeout
/// instead of instant `SQLITE_BUSY` (short enough that a webhook still answers inside
/// Mailchimp's ten seconds), full sync so that a committed event survives a power cut, and
/// statement journals in memory rather than in temporary files (a multi-row upsert inside a
/// transaction keeps one, so that it can be undone alone).
///
/// PostgreSQL: a writer waits at most 4 seconds for a lock, so that a replica stalled inside
/// its write transaction costs other replicas' webhooks a 503 (Mailchimp retries) rather
/// than a hang; and a session that stays idle inside a transaction for 30 seconds, which no
/// code path here does while running, is ended by the server, which frees the lock. No
/// sequential scans. Every query of this service reads by key or pages in
/// key order, so an index can always serve it. diesel keeps its statements prepared per
/// connection and PostgreSQL settles on one generic plan per statement after a few runs;
/// without this, a plan made while a table was small (or had no statistics yet, as with
/// autovacuum off) could be a scan that stays as the table grows to millions of rows.
/// Generic plans are wanted otherwise: they spare planning every statement on every run,
/// the foreign-key checks of each inserted row included.
#[derive(Debug)]
struct SessionSetup;

impl CustomizeConnection<DbConnection, r2d2::Error> for SessionSetup {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        let setup = match conn {
            DbConnection::Sqlite(_) => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                 PRAGMA temp_store = MEMORY;"
            }
            DbConnection::Postgresql(_) => POSTGRES_SESSION,
        };
        conn.batch_execute(setup).map_err(r2d2::Error::QueryError)
    }
}

const POSTGRES_SESSION: &str = "SET enable_seqscan = off; SET lock_timeout = '4s'; \
     SET idle_in_transaction_session_timeout = '30s'";

/// Connection failures are reported by whoever waited for the connection, with the last
/// failure's text; r2d2 would also log each attempt at `error`.
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<r2d2::Error> for QuietErrors {
    fn handle_error(&self, error: r2d2::Error) {
        tracing::debug!(error = %error, "database connection attempt failed");
    }
}

/// `message` with every trace of the password in the database URL `url` masked. A URL
/// that is not well formed leaves it unclear where the password ends (a driver may quote
/// any part of it), so the text between the scheme and the last `@` after the user name's
/// `:` counts as the password, and so does each piece of it between separators.
pub fn without_password(message: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return message.to_owned();
    };
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return message.to_owned();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return message.to_owned();
    };
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    let mut secrets: Vec<&str> = [password, decoded.as_str()]
        .into_iter()
        .flat_map(|whole| {
            let pieces = whole.split(['/', '@', ':', '?', '#', '%']);
            std::iter::once(whole).chain(pieces.filter(|piece| piece.len() >= 3))
        })
        .filter(|secret| !secret.is_empty())
        .collect();
    // The longest first, so that a piece never masks part of a longer secret that holds it.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets
        .into_iter()
        .fold(message.to_owned(), |text, secret| {
            text.replace(secret, "***")
        })
}

pub type Pool = r2d2::Pool<Manager>;

/// A connection checked out of the pool.
pub type HeldConnection = r2d2::PooledConnection<Manager>;

/// The shared handle on the database: cheap to clone, safe to send across tasks.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    backend: Backend,
    /// Writers of this process take turns here before the database's own lock: a blocked
    /// thread is woken when the lock is free, where SQLite's busy handler would sleep and
    /// poll, and a waiting writer holds no pooled connection.
    writer: Arc<Mutex<()>>,
    tokens: Arc<accounts::RecentTokens>,
    ids: Arc<IdPool>,
}

impl Store {
    /// Builds the pool without connecting; the first use reports an unreachable database.
    pub fn open(url: &str, max_connections: u32) -> StoreResult<Store> {
        let (backend, target) = Backend::parse(url)?;
        let pool = r2d2::Pool::builder()
            .max_size(max_connections)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5))
            .connection_customizer(Box::new(SessionSetup))
            .error_handler(Box::new(QuietErrors))
            .build_unchecked(Manager { backend, target });
        Ok(Store {
            pool,
            backend,
            writer: Arc::default(),
            tokens: Arc::default(),
            ids: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many connections the pool holds and how many of them are idle.
    pub fn pool_state(&self) -> r2d2::State {
        self.pool.state()
    }

    /// Accounts recently found by webhook token, shared by every clone of this store.
    pub fn recent_tokens(&self) -> &accounts::RecentTokens {
        &self.tokens
    }

    /// Ids for new rows, shared by every writer of this store.
    pub fn ids(&self) -> &Arc<IdPool> {
        &self.ids
    }

    /// A connection from the pool, blocking up to the pool's timeout.
    pub fn connection(&self) -> StoreResult<HeldConnection> {
        Ok(self.pool.get()?)
    }

    /// Runs blocking database work on tokio's blocking threads, never on the async ones.
    pub async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
        .map_err(|join| StoreError::Unavailable(Box::new(join)))?
    }

    /// Runs `work` in a write transaction (see [`write_transaction`]) on the blocking
    /// threads.
    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> StoreResult<T> + Send + 'static,
    {
        let store = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            store.write_blocking(work)
        })
        .await
        .map_err(|join| StoreError::Unavailable(Box::new(join)))?
    }

    /// Like [`Store::write`], on the calling thread.
    pub fn write_blocking<T, F>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(&mut DbConnection) -> StoreResult<T>,
    {
        let _turn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut conn = self.connection()?;
        write_transaction(&mut conn, work)
    }

    /// Like [`Store::write_blocking`], on a connection the caller keeps from one call to the
    /// next, which saves checking one out of the pool (and the pool's check of it) each
    /// time. `held` is filled from the pool when empty, and emptied when the work fails, so
    /// that the call after a failure starts on a connection the pool has just checked.
    pub fn write_held<T, F>(&self, held: &mut Option<HeldConnection>, work: F) -> StoreResult<T>
    where
        F: FnOnce(&mut DbConnection) -> StoreResult<T>,
    {
        let _turn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match held {
            Some(conn) => conn,
            None => held.insert(self.connection()?),
        };
        let result = write_transaction(conn, work);
        if result.is_err() {
            *held = None;
        }
        result
    }

    /// Applies every pending migration; returns the versions it ran.
    pub fn migrate(&self) -> StoreResult<Vec<String>> {
        let mut conn = self.connection()?;
        run_migrations(&mut conn)
    }

    /// Whether the database answers and every migration has run.
    pub fn is_ready(&self) -> bool {
        let Ok(mut conn) = self.pool.get() else {
            return false;
        };
        let migrations = migrations_for(&conn);
        on_backend!(&mut *conn, c => c.has_pending_migration(migrations))
            .is_ok_and(|pending| !pending)
    }
}

fn migrations_for(conn: &DbConnection) -> EmbeddedMigrations {
    match conn {
        DbConnection::Postgresql(_) => POSTGRES_MIGRATIONS,
        DbConnection::Sqlite(_) => SQLITE_MIGRATIONS,
    }
}

/// Applies every pending migration on one connection.
pub fn run_migrations(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let migrations = migrations_for(conn);
    // A migration waits as long as it takes for the tables it alters, not a writer's 4 s.
    let postgres = matches!(conn, DbConnection::Postgresql(_));
    if postgres {
        conn.batch_execute("SET lock_timeout = 0")?;
    }
    let ran = on_backend!(&mut *conn, c => c.run_pending_migrations(migrations).map(versions))
        .map_err(|e| StoreError::Migration(e.to_string()));
    if postgres {
        conn.batch_execute(POSTGRES_SESSION)?;
    }
    ran
}

/// Reverts every applied migration, newest first; used to prove each `down.sql` works.
pub fn revert_all_migrations(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let migrations = migrations_for(conn);
    on_backend!(conn, c => c.revert_all_migrations(migrations).map(versions))
        .map_err(|e| StoreError::Migration(e.to_string()))
}

fn versions(list: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// The advisory lock PostgreSQL writers take in turn, in every replica.
pub const WRITE_LOCK: i64 = 7305001;

const POSTGRES_BEGIN_WRITE: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
     SELECT pg_advisory_xact_lock(7305001)";

/// Runs `work` in a write transaction that every writer, in this process or another replica,
/// takes in turn. Serial writers keep the change feed's sequence in commit order, so a reader
/// that resumes after the last sequence it saw never skips a change committed later.
/// Nested `transaction` calls inside `work` become savepoints.
pub fn write_transaction<T, F>(conn: &mut DbConnection, work: F) -> StoreResult<T>
where
    F: FnOnce(&mut DbConnection) -> StoreResult<T>,
{
    // SQLite: IMMEDIATE takes the write lock up front, so the busy timeout applies, instead of
    // failing when a read transaction later tries to upgrade.
    // PostgreSQL: writers take turns on a transaction-scoped advisory lock, taken in the
    // same round trip as BEGIN. The transaction also asks for generic plans: its prepared
    // lookups take arrays, and a custom plan would be made anew at every bind.
    let begin = match conn {
        DbConnection::Sqlite(_) => "BEGIN IMMEDIATE",
        DbConnection::Postgresql(_) => POSTGRES_BEGIN_WRITE,
    };
    let began =
        on_backend!(&mut *conn, c => AnsiTransactionManager::begin_transaction_sql(c, begin));
    if let Err(error) = began {
        // The lock may have failed after BEGIN: leave no transaction open on the connection.
        if let DbConnection::Postgresql(c) = conn {
            let _ = c.batch_execute("ROLLBACK");
        }
        return Err(error.into());
    }
    let result = work(conn);
    match result {
        Ok(value) => {
            on_backend!(&mut *conn, c => AnsiTransactionManager::commit_transaction(c))?;
            Ok(value)
        }
        Err(error) => {
            // A failed rollback means the connection is gone; the error that caused it matters more.
            let _ = on_backend!(&mut *conn, c => AnsiTransactionManager::rollback_transaction(c));
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_masked_wherever_a_driver_quotes_it() {
        let cases = [
            // Well formed, quoted whole or decoded.
            (
                "postgres://u:s3cr%40t@h/db",
                "bad password s3cr%40t",
                "s3cr%40t",
            ),
            (
                "postgres://u:s3cr%40t@h/db",
                "bad password s3cr@t",
                "s3cr@t",
            ),
            // An unencoded `%`: the driver quotes the raw text.
            (
                "postgres://u:My%Pass!word@h/db",
                "invalid token \"My%Pass!word\"",
                "Pass",
            ),
            // An unencoded `/`: the driver reads part of the password as a port.
            (
                "postgres://u:hunter2/x@h/db",
                "invalid port \"hunter2\"",
                "hunter2",
            ),
            // An unencoded `@`: the driver reads part of it as a host name.
            (
                "postgres://u:Sec@ret42@h/db",
                "no host \"ret42@h\"",
                "ret42",
            ),
        ];
        for (url, message, secret) in cases {
            let masked = without_password(message, url);
            assert!(!masked.contains(secret), "{url}: {masked}");
            assert!(masked.contains("***"), "{url}: {masked}");
        }
    }

    #[test]
    fn a_url_without_a_password_leaves_the_message_alone() {
        for url in ["postgres://u@h/db", "postgres://h/db", "sqlite://a:b.db"] {
            let message = "could not connect to u@h: b.db";
            assert_eq!(without_password(message, url), message, "{url}");
        }
    }

    #[test]
    fn sqlite_urls_name_a_file_and_nothing_else() {
        assert_eq!(
            Backend::parse("sqlite://data/sync.db").ok(),
            Some((Backend::Sqlite, "data/sync.db".to_owned()))
        );
        for url in [
            "sqlite://",
            "sqlite://:memory:",
            "sqlite://q.db?mode=ro",
            "q.db",
        ] {
            assert!(
                matches!(Backend::parse(url), Err(StoreError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn postgres_writers_take_the_named_lock() {
        assert!(POSTGRES_BEGIN_WRITE.contains(&format!("pg_advisory_xact_lock({WRITE_LOCK})")));
    }
}
