//! `mailing_list`: one row per Mailchimp audience of an account.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::mailing_list as table;
use super::{DbConnection, Kept, StoreResult, on_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = table)]
pub struct ListRow {
    pub id: i64,
    pub account_id: i64,
    pub mailchimp_list_id: String,
    pub name: String,
    pub member_count: i64,
    pub fetch_cursor: Option<NaiveDateTime>,
    pub last_fetch_date: Option<NaiveDateTime>,
    pub webhook_registered: bool,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = table)]
struct NewList<'a> {
    account_id: i64,
    mailchimp_list_id: &'a str,
    create_date: NaiveDateTime,
    write_date: NaiveDateTime,
}

pub fn find(
    conn: &mut DbConnection,
    account_id: i64,
    mailchimp_list_id: &str,
) -> StoreResult<Option<ListRow>> {
    Ok(table::table
        .filter(table::account_id.eq(account_id))
        .filter(table::mailchimp_list_id.eq(mailchimp_list_id))
        .select(ListRow::as_select())
        .get_result(conn)
        .optional()?)
}

/// The audiences of these accounts that have one of these Mailchimp ids.
pub fn among(
    conn: &mut DbConnection,
    account_ids: &[i64],
    mailchimp_list_ids: &[&str],
) -> StoreResult<Vec<ListRow>> {
    if account_ids.is_empty() || mailchimp_list_ids.is_empty() {
        return Ok(Vec::new());
    }
    let account_ids = super::padded(account_ids);
    super::in_chunks(mailchimp_list_ids, |ids| {
        let query = table::table
            .filter(table::account_id.eq_any(&account_ids))
            .filter(table::mailchimp_list_id.eq_any(ids))
            .select(ListRow::as_select());
        Ok(Kept(query).load(conn)?)
    })
}

/// The audience, created with an empty name when this is the first the store hears of it.
pub fn get_or_create(
    conn: &mut DbConnection,
    account_id: i64,
    mailchimp_list_id: &str,
    now: NaiveDateTime,
) -> StoreResult<ListRow> {
    if let Some(row) = find(conn, account_id, mailchimp_list_id)? {
        return Ok(row);
    }
    let new = NewList {
        account_id,
        mailchimp_list_id,
        create_date: now,
        write_date: now,
    };
    let row = on_backend!(conn, c => diesel::insert_into(table::table)
        .values(&new)
        .returning(ListRow::as_returning())
        .get_result(c))?;
    Ok(row)
}

pub fn get(conn: &mut DbConnection, id: i64) -> StoreResult<ListRow> {
    Ok(table::table
        .find(id)
        .select(ListRow::as_select())
        .get_result(conn)?)
}

pub fn for_account(conn: &mut DbConnection, account_id: i64) -> StoreResult<Vec<ListRow>> {
    Ok(table::table
        .filter(table::account_id.eq(account_id))
        .order(table::id)
        .select(ListRow::as_select())
        .load(conn)?)
}

/// Creates or renames the audience as Mailchimp lists it.
pub fn upsert_from_api(
    conn: &mut DbConnection,
    account_id: i64,
    mailchimp_list_id: &str,
    name: &str,
    member_count: i64,
    now: NaiveDateTime,
) -> StoreResult<ListRow> {
    let row = get_or_create(conn, account_id, mailchimp_list_id, now)?;
    if row.name == name && row.member_count == member_count {
        return Ok(row);
    }
    diesel::update(table::table.find(row.id))
        .set((
            table::name.eq(name),
            table::member_count.eq(member_count),
            table::write_date.eq(now),
        ))
        .execute(conn)?;
    get(conn, row.id)
}

/// Records a successful fetch: its time, and the newest `last_changed` it saw.
pub fn record_fetch(
    conn: &mut DbConnection,
    id: i64,
    cursor: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::fetch_cursor.eq(cursor),
            table::last_fetch_date.eq(now),
            table::write_date.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn set_webhook_registered(
    conn: &mut DbConnection,
    id: i64,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::webhook_registered.eq(true),
            table::write_date.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Keeps the signing secret Mailchimp returned for the audience's webhook.
pub fn set_signing_secret(conn: &mut DbConnection, id: i64, secret: &str) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set(table::webhook_signing_secret.eq(secret))
        .execute(conn)?;
    Ok(())
}

/// The signing secrets of the account's audiences' webhooks, one per registered webhook.
pub fn signing_secrets(conn: &mut DbConnection, account_id: i64) -> StoreResult<Vec<String>> {
    let secrets: Vec<Option<String>> = table::table
        .filter(table::account_id.eq(account_id))
        .select(table::webhook_signing_secret)
        .load(conn)?;
    Ok(secrets.into_iter().flatten().collect())
}
