//! `sync_change`: the change feed. Its id is the sequence readers resume from; writers are
//! serialized (see [`super::write_transaction`]) so ids appear in commit order.

use chrono::NaiveDateTime;
use diesel::dsl::max;
use diesel::prelude::*;

use super::schema::sync_change as table;
use super::{DbConnection, StoreResult};

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

pub fn count_for_contact(conn: &mut DbConnection, contact_id: i64) -> StoreResult<i64> {
    Ok(table::table
        .filter(table::contact_id.eq(contact_id))
        .count()
        .get_result(conn)?)
}
