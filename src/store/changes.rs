//! `sync_change`: the change feed. Its id is the sequence readers resume from; writers are
//! serialized (see [`super::write_transaction`]) so ids appear in commit order.

use chrono::NaiveDateTime;
use diesel::dsl::max;
use diesel::prelude::*;

use super::schema::sync_change as table;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};

use super::{DbConnection, Kept, StoreResult};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = table)]
pub struct ChangeRow {
    pub id: i64,
    pub contact_id: i64,
    pub email_normalized: String,
    pub list_id: Option<i64>,
    pub mailchimp_list_id: Option<String>,
    pub kind: String,
    pub status: Option<String>,
    pub opt_out: Option<bool>,
    pub create_date: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = table, treat_none_as_default_value = false)]
pub struct NewChange {
    pub contact_id: i64,
    pub email_normalized: String,
    pub list_id: Option<i64>,
    pub mailchimp_list_id: Option<String>,
    pub kind: &'static str,
    pub status: Option<String>,
    pub opt_out: Option<bool>,
    pub create_date: NaiveDateTime,
}

pub fn insert_all(conn: &mut DbConnection, changes: &[NewChange]) -> StoreResult<()> {
    insert_many(conn, changes).map(drop)
}

/// Inserts the changes in order, in as few statements as the backend allows; returns the
/// sequence of the last one, if any.
pub fn insert_many(conn: &mut DbConnection, changes: &[NewChange]) -> StoreResult<Option<i64>> {
    if let DbConnection::Postgresql(c) = conn {
        return insert_arrays(c, changes);
    }
    let mut last = None;
    super::in_pieces!(&mut *conn, changes, |c, rows| {
        let ids = diesel::insert_into(table::table)
            .values(rows)
            .returning(table::id)
            .get_results::<i64>(c);
        ids.map(|ids| last = last.max(ids.into_iter().max()))
    });
    Ok(last)
}

/// [`insert_many`] on PostgreSQL: one statement whose text does not depend on the number of
/// rows, each column bound as one array, so that the connection parses and plans it once.
fn insert_arrays(c: &mut PgConnection, rows: &[NewChange]) -> StoreResult<Option<i64>> {
    const INSERT: &str = "\
        WITH written AS (\
            INSERT INTO sync_change (contact_id, email_normalized, list_id, \
                mailchimp_list_id, kind, status, opt_out, create_date) \
            SELECT c, e, l, m, k, s, o, d \
            FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                $6::text[], $7::boolean[], $8::timestamp[]) \
                WITH ORDINALITY AS u (c, e, l, m, k, s, o, d, n) \
            ORDER BY n \
            RETURNING id) \
        SELECT max(id) AS id FROM written";
    if rows.is_empty() {
        return Ok(None);
    }
    let text = |f: fn(&NewChange) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let query = diesel::sql_query(INSERT)
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.contact_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|r| r.email_normalized.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.list_id).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.mailchimp_list_id.as_deref()))
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.status.as_deref()))
        .bind::<Array<Nullable<Bool>>, _>(rows.iter().map(|r| r.opt_out).collect::<Vec<_>>())
        .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.create_date).collect::<Vec<_>>());
    let last: Last = Kept(query).get_result(c)?;
    Ok(last.id)
}

#[derive(QueryableByName)]
struct Last {
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
}

/// Changes with a sequence above `after`, oldest first.
pub fn after(conn: &mut DbConnection, after: i64, limit: i64) -> StoreResult<Vec<ChangeRow>> {
    Ok(table::table
        .filter(table::id.gt(after))
        .order(table::id)
        .limit(limit)
        .select(ChangeRow::as_select())
        .load(conn)?)
}

pub fn last_sequence(conn: &mut DbConnection) -> StoreResult<i64> {
    Ok(table::table
        .select(max(table::id))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}
