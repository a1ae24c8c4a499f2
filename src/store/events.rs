//! `webhook_event`: every webhook request received, with its raw body and outcome, so that
//! nothing Mailchimp sent is lost and any event can be replayed.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::webhook_event as table;
use diesel::sql_types::{Array, BigInt, Binary, Nullable, Text, Timestamp};

use super::{DbConnection, Kept, StoreResult, Written};

/// An event without its body, for listings.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = table)]
pub struct EventSummary {
    pub id: i64,
    pub account_id: i64,
    pub mailchimp_list_id: Option<String>,
    pub event_type: Option<String>,
    pub fired_at: Option<NaiveDateTime>,
    pub outcome: String,
    pub error: Option<String>,
    pub received_date: NaiveDateTime,
    pub replay_count: i32,
    #[diesel(select_expression = length(table::raw_body))]
    #[diesel(select_expression_type = length<table::raw_body>)]
    pub body_size: i32,
}

diesel::define_sql_function! {
    /// Bytes in a blob, on both backends.
    fn length(x: diesel::sql_types::Binary) -> diesel::sql_types::Integer;
}

/// A new event. It owns what it holds, so that on SQLite a batch of them is inserted by
/// statements the connection keeps prepared (see [`super::in_pieces`]).
#[derive(Debug, Insertable)]
#[diesel(table_name = table, treat_none_as_default_value = false)]
pub struct NewEvent {
    pub account_id: i64,
    pub mailchimp_list_id: Option<String>,
    pub event_type: Option<String>,
    pub fired_at: Option<NaiveDateTime>,
    pub raw_body: Vec<u8>,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub received_date: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, new: &NewEvent) -> StoreResult<()> {
    diesel::insert_into(table::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

/// Inserts the events in as few statements as the backend allows, in order.
pub fn insert_many(conn: &mut DbConnection, new: &[NewEvent]) -> StoreResult<()> {
    if let DbConnection::Postgresql(c) = conn {
        return insert_arrays(c, new);
    }
    super::in_pieces!(&mut *conn, new, |c, rows| diesel::insert_into(table::table)
        .values(rows)
        .execute(c));
    Ok(())
}

/// [`insert_many`] on PostgreSQL: one statement whose text does not depend on the number of
/// rows, each column bound as one array, so that the connection parses and plans it once.
fn insert_arrays(c: &mut PgConnection, rows: &[NewEvent]) -> StoreResult<()> {
    const INSERT: &str = "\
        WITH written AS (\
            INSERT INTO webhook_event (account_id, mailchimp_list_id, event_type, fired_at, \
                raw_body, outcome, error, received_date) \
            SELECT a, l, t, f, b, o, e, r \
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamp[], \
                $5::bytea[], $6::text[], $7::text[], $8::timestamp[]) \
                WITH ORDINALITY AS u (a, l, t, f, b, o, e, r, n) \
            ORDER BY n \
            RETURNING 1) \
        SELECT count(*) AS rows FROM written";
    if rows.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&NewEvent) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let query = diesel::sql_query(INSERT)
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.account_id).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.mailchimp_list_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.event_type.as_deref()))
        .bind::<Array<Nullable<Timestamp>>, _>(rows.iter().map(|r| r.fired_at).collect::<Vec<_>>())
        .bind::<Array<Binary>, _>(
            rows.iter()
                .map(|r| r.raw_body.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.outcome).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.error.as_deref()))
        .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.received_date).collect::<Vec<_>>());
    let written: Written = Kept(query).get_result(c)?;
    debug_assert_eq!(written.rows, rows.len() as i64);
    Ok(())
}

pub fn get(conn: &mut DbConnection, id: i64) -> StoreResult<EventSummary> {
    Ok(table::table
        .find(id)
        .select(EventSummary::as_select())
        .get_result(conn)?)
}

pub fn raw_body(conn: &mut DbConnection, id: i64) -> StoreResult<Vec<u8>> {
    Ok(table::table
        .find(id)
        .select(table::raw_body)
        .get_result(conn)?)
}

/// Which events a listing shows.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub outcome: Option<String>,
    pub account_id: Option<i64>,
}

/// Events newest first, below `before_id` (0 for the first page).
pub fn page(
    conn: &mut DbConnection,
    filter: &EventFilter,
    before_id: i64,
    limit: i64,
) -> StoreResult<Vec<EventSummary>> {
    let mut query = table::table
        .order(table::id.desc())
        .limit(limit)
        .select(EventSummary::as_select())
        .into_boxed();
    if before_id > 0 {
        query = query.filter(table::id.lt(before_id));
    }
    if let Some(outcome) = &filter.outcome {
        query = query.filter(table::outcome.eq(outcome.clone()));
    }
    if let Some(account_id) = filter.account_id {
        query = query.filter(table::account_id.eq(account_id));
    }
    Ok(query.load(conn)?)
}

/// Stores the outcome of applying the event again.
pub fn record_replay(
    conn: &mut DbConnection,
    id: i64,
    outcome: &str,
    error: Option<&str>,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::outcome.eq(outcome),
            table::error.eq(error),
            table::replay_count.eq(table::replay_count + 1),
        ))
        .execute(conn)?;
    Ok(())
}

/// The most recent event of the account, newest first; for tests and operators.
pub fn latest(conn: &mut DbConnection, account_id: i64) -> StoreResult<Option<EventSummary>> {
    Ok(table::table
        .filter(table::account_id.eq(account_id))
        .order(table::id.desc())
        .select(EventSummary::as_select())
        .first(conn)
        .optional()?)
}
