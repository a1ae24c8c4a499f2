//! `mail_blacklist`: addresses no mailing may reach, as Odoo's `mail.blacklist`. Rows are
//! archived (`active = false`), never deleted, when an address is unblacklisted.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::mail_blacklist as table;
use super::{DbConnection, Kept, StoreResult, on_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = table)]
pub struct BlacklistRow {
    pub id: i64,
    pub email: String,
    pub active: bool,
    pub reason: Option<String>,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = table, treat_none_as_default_value = false)]
struct NewEntry<'a> {
    email: &'a str,
    active: bool,
    reason: Option<&'a str>,
    create_date: NaiveDateTime,
    write_date: NaiveDateTime,
}

pub fn get(conn: &mut DbConnection, email_normalized: &str) -> StoreResult<Option<BlacklistRow>> {
    Ok(table::table
        .filter(table::email.eq(email_normalized))
        .select(BlacklistRow::as_select())
        .get_result(conn)
        .optional()?)
}

/// Blacklists the address, reactivating an archived row. Returns whether anything changed.
pub fn add(
    conn: &mut DbConnection,
    email_normalized: &str,
    reason: &str,
    now: NaiveDateTime,
) -> StoreResult<bool> {
    match get(conn, email_normalized)? {
        Some(row) if row.active => Ok(false),
        Some(row) => {
            diesel::update(table::table.find(row.id))
                .set((
                    table::active.eq(true),
                    table::reason.eq(reason),
                    table::write_date.eq(now),
                ))
                .execute(conn)?;
            Ok(true)
        }
        None => {
            let new = NewEntry {
                email: email_normalized,
                active: true,
                reason: Some(reason),
                create_date: now,
                write_date: now,
            };
            diesel::insert_into(table::table)
                .values(&new)
                .execute(conn)?;
            Ok(true)
        }
    }
}

/// The entries of these addresses, active or not.
pub fn among(conn: &mut DbConnection, emails: &[&str]) -> StoreResult<Vec<BlacklistRow>> {
    super::in_chunks(emails, |emails| {
        let query = table::table
            .filter(table::email.eq_any(emails))
            .select(BlacklistRow::as_select());
        Ok(Kept(query).load(conn)?)
    })
}

/// Blacklists each (address, reason, time) in one statement, as [`add`] would one by one
/// for addresses it finds missing or archived.
pub fn add_many(
    conn: &mut DbConnection,
    entries: &[(&str, &str, NaiveDateTime)],
) -> StoreResult<()> {
    use diesel::upsert::excluded;
    for chunk in entries.chunks(super::MAX_ROWS_PER_INSERT) {
        let rows: Vec<NewEntry<'_>> = chunk
            .iter()
            .map(|&(email, reason, now)| NewEntry {
                email,
                active: true,
                reason: Some(reason),
                create_date: now,
                write_date: now,
            })
            .collect();
        on_backend!(&mut *conn, c => diesel::insert_into(table::table)
            .values(&rows)
            .on_conflict(table::email)
            .do_update()
            .set((
                table::active.eq(excluded(table::active)),
                table::reason.eq(excluded(table::reason)),
                table::write_date.eq(excluded(table::write_date)),
            ))
            .execute(c))?;
    }
    Ok(())
}

/// Archives the entry; `None` when the address was never blacklisted.
pub fn deactivate(
    conn: &mut DbConnection,
    email_normalized: &str,
    now: NaiveDateTime,
) -> StoreResult<Option<(BlacklistRow, bool)>> {
    let Some(row) = get(conn, email_normalized)? else {
        return Ok(None);
    };
    if !row.active {
        return Ok(Some((row, false)));
    }
    diesel::update(table::table.find(row.id))
        .set((table::active.eq(false), table::write_date.eq(now)))
        .execute(conn)?;
    Ok(get(conn, email_normalized)?.map(|row| (row, true)))
}

pub fn is_active(conn: &mut DbConnection, email_normalized: &str) -> StoreResult<bool> {
    Ok(get(conn, email_normalized)?.is_some_and(|row| row.active))
}

/// The addresses among `emails` that are actively blacklisted.
pub fn active_among(conn: &mut DbConnection, emails: &[String]) -> StoreResult<Vec<String>> {
    Ok(table::table
        .filter(table::email.eq_any(emails))
        .filter(table::active.eq(true))
        .select(table::email)
        .load(conn)?)
}

pub fn page(
    conn: &mut DbConnection,
    after_id: i64,
    limit: i64,
    include_inactive: bool,
) -> StoreResult<Vec<BlacklistRow>> {
    let mut query = table::table
        .filter(table::id.gt(after_id))
        .order(table::id)
        .limit(limit)
        .select(BlacklistRow::as_select())
        .into_boxed();
    if !include_inactive {
        query = query.filter(table::active.eq(true));
    }
    Ok(query.load(conn)?)
}
