//! `mailing_subscription` (contact × audience, as Odoo's `mailing.subscription`) and
//! `sync_tombstone`, the trace a removed subscription leaves so late events stay dead.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{mailing_list, mailing_subscription as table, sync_tombstone};
use diesel::sql_types::{self, Array, BigInt, Bool, Nullable, Text, Timestamp};

use super::{DbConnection, Kept, StoreResult, Written, on_backend};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = table, treat_none_as_default_value = false)]
pub struct SubscriptionRow {
    pub id: i64,
    pub contact_id: i64,
    pub list_id: i64,
    pub status: String,
    pub opt_out: bool,
    pub opt_out_datetime: Option<NaiveDateTime>,
    pub opt_out_reason: Option<String>,
    pub unique_email_id: Option<String>,
    pub subscriber_hash: String,
    pub last_changed: NaiveDateTime,
    /// The full fetch that last saw the member.
    pub last_fetch_run_id: Option<i64>,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

/// The Mailchimp state of a subscription, written as a whole.
#[derive(Debug, Clone, PartialEq, AsChangeset)]
#[diesel(table_name = table, treat_none_as_null = true)]
pub struct MemberState {
    pub status: String,
    pub opt_out: bool,
    pub opt_out_datetime: Option<NaiveDateTime>,
    pub opt_out_reason: Option<String>,
    pub unique_email_id: Option<String>,
    pub last_changed: NaiveDateTime,
}

impl SubscriptionRow {
    /// The row [`insert`] would write, under `id`.
    pub fn new(
        id: i64,
        contact_id: i64,
        list_id: i64,
        subscriber_hash: &str,
        state: &MemberState,
        now: NaiveDateTime,
    ) -> SubscriptionRow {
        SubscriptionRow {
            id,
            contact_id,
            list_id,
            status: state.status.clone(),
            opt_out: state.opt_out,
            opt_out_datetime: state.opt_out_datetime,
            opt_out_reason: state.opt_out_reason.clone(),
            unique_email_id: state.unique_email_id.clone(),
            subscriber_hash: subscriber_hash.to_owned(),
            last_changed: state.last_changed,
            last_fetch_run_id: None,
            create_date: now,
            write_date: now,
        }
    }

    /// What [`set_state`] does to the row.
    pub fn set_state(&mut self, state: &MemberState, now: NaiveDateTime) {
        self.status.clone_from(&state.status);
        self.opt_out = state.opt_out;
        self.opt_out_datetime = state.opt_out_datetime;
        self.opt_out_reason.clone_from(&state.opt_out_reason);
        self.unique_email_id.clone_from(&state.unique_email_id);
        self.last_changed = state.last_changed;
        self.write_date = now;
    }

    pub fn state(&self) -> MemberState {
        MemberState {
            status: self.status.clone(),
            opt_out: self.opt_out,
            opt_out_datetime: self.opt_out_datetime,
            opt_out_reason: self.opt_out_reason.clone(),
            unique_email_id: self.unique_email_id.clone(),
            last_changed: self.last_changed,
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = table)]
struct NewSubscription<'a> {
    contact_id: i64,
    list_id: i64,
    status: &'a str,
    opt_out: bool,
    opt_out_datetime: Option<NaiveDateTime>,
    opt_out_reason: Option<&'a str>,
    unique_email_id: Option<&'a str>,
    subscriber_hash: &'a str,
    last_changed: NaiveDateTime,
    create_date: NaiveDateTime,
    write_date: NaiveDateTime,
}

pub fn find(
    conn: &mut DbConnection,
    contact_id: i64,
    list_id: i64,
) -> StoreResult<Option<SubscriptionRow>> {
    Ok(table::table
        .filter(table::contact_id.eq(contact_id))
        .filter(table::list_id.eq(list_id))
        .select(SubscriptionRow::as_select())
        .get_result(conn)
        .optional()?)
}

/// The subscription Mailchimp knows by this member id (`unique_email_id`) on the audience.
pub fn find_by_member_id(
    conn: &mut DbConnection,
    list_id: i64,
    unique_email_id: &str,
) -> StoreResult<Option<SubscriptionRow>> {
    Ok(table::table
        .filter(table::list_id.eq(list_id))
        .filter(table::unique_email_id.eq(unique_email_id))
        .select(SubscriptionRow::as_select())
        .get_result(conn)
        .optional()?)
}

pub fn insert(
    conn: &mut DbConnection,
    contact_id: i64,
    list_id: i64,
    subscriber_hash: &str,
    state: &MemberState,
    now: NaiveDateTime,
) -> StoreResult<SubscriptionRow> {
    let new = NewSubscription {
        contact_id,
        list_id,
        status: &state.status,
        opt_out: state.opt_out,
        opt_out_datetime: state.opt_out_datetime,
        opt_out_reason: state.opt_out_reason.as_deref(),
        unique_email_id: state.unique_email_id.as_deref(),
        subscriber_hash,
        last_changed: state.last_changed,
        create_date: now,
        write_date: now,
    };
    let row = on_backend!(conn, c => diesel::insert_into(table::table)
        .values(&new)
        .returning(SubscriptionRow::as_returning())
        .get_result(c))?;
    Ok(row)
}

/// Writes the rows as given, inserting those whose id is new. The full fetch's mark is
/// only written with a new row: an existing row's is left as it is.
pub fn upsert_many(conn: &mut DbConnection, rows: &[SubscriptionRow]) -> StoreResult<()> {
    use diesel::upsert::excluded;
    if rows.is_empty() {
        return Ok(());
    }
    let c = match conn {
        DbConnection::Postgresql(c) => return upsert_arrays(c, rows),
        DbConnection::Sqlite(c) => c,
    };
    for rows in rows.chunks(super::MAX_ROWS_PER_INSERT) {
        diesel::insert_into(table::table)
            .values(rows)
            .on_conflict(table::id)
            .do_update()
            .set((
                table::contact_id.eq(excluded(table::contact_id)),
                table::status.eq(excluded(table::status)),
                table::opt_out.eq(excluded(table::opt_out)),
                table::opt_out_datetime.eq(excluded(table::opt_out_datetime)),
                table::opt_out_reason.eq(excluded(table::opt_out_reason)),
                table::unique_email_id.eq(excluded(table::unique_email_id)),
                table::subscriber_hash.eq(excluded(table::subscriber_hash)),
                table::last_changed.eq(excluded(table::last_changed)),
                table::write_date.eq(excluded(table::write_date)),
            ))
            .execute(c)?;
    }
    Ok(())
}

/// [`upsert_many`] on PostgreSQL: one statement whose text does not depend on the number of
/// rows, each column bound as one array, so that the connection parses and plans it once.
fn upsert_arrays(c: &mut PgConnection, rows: &[SubscriptionRow]) -> StoreResult<()> {
    const UPSERT: &str = "\
        WITH written AS (\
            INSERT INTO mailing_subscription (id, contact_id, list_id, status, opt_out, \
                opt_out_datetime, opt_out_reason, unique_email_id, subscriber_hash, \
                last_changed, last_fetch_run_id, create_date, write_date) \
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], \
                $5::boolean[], $6::timestamp[], $7::text[], $8::text[], $9::text[], \
                $10::timestamp[], $11::bigint[], $12::timestamp[], $13::timestamp[]) \
            ON CONFLICT (id) DO UPDATE SET contact_id = excluded.contact_id, \
                status = excluded.status, opt_out = excluded.opt_out, \
                opt_out_datetime = excluded.opt_out_datetime, \
                opt_out_reason = excluded.opt_out_reason, \
                unique_email_id = excluded.unique_email_id, \
                subscriber_hash = excluded.subscriber_hash, \
                last_changed = excluded.last_changed, write_date = excluded.write_date \
            RETURNING 1) \
        SELECT count(*) AS rows FROM written";
    let column = |f: fn(&SubscriptionRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&SubscriptionRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&SubscriptionRow) -> NaiveDateTime| rows.iter().map(f).collect::<Vec<_>>();
    let query = diesel::sql_query(UPSERT)
        .bind::<Array<BigInt>, _>(column(|r| r.id))
        .bind::<Array<BigInt>, _>(column(|r| r.contact_id))
        .bind::<Array<BigInt>, _>(column(|r| r.list_id))
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(rows.iter().map(|r| r.opt_out).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamp>>, _>(
            rows.iter().map(|r| r.opt_out_datetime).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.opt_out_reason.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(text(|r| r.unique_email_id.as_deref()))
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|r| r.subscriber_hash.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamp>, _>(time(|r| r.last_changed))
        .bind::<Array<Nullable<BigInt>>, _>(
            rows.iter().map(|r| r.last_fetch_run_id).collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamp>, _>(time(|r| r.create_date))
        .bind::<Array<Timestamp>, _>(time(|r| r.write_date));
    let written: Written = Kept(query).get_result(c)?;
    debug_assert_eq!(written.rows, rows.len() as i64);
    Ok(())
}

pub fn delete_many(conn: &mut DbConnection, ids: &[i64]) -> StoreResult<()> {
    for ids in ids.chunks(super::MAX_IN_LIST) {
        diesel::delete(table::table.filter(table::id.eq_any(ids))).execute(conn)?;
    }
    Ok(())
}

pub fn set_state(
    conn: &mut DbConnection,
    id: i64,
    state: &MemberState,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((state, table::write_date.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Moves the subscription to another contact (an email change in Mailchimp).
pub fn reassign(
    conn: &mut DbConnection,
    id: i64,
    contact_id: i64,
    subscriber_hash: &str,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::contact_id.eq(contact_id),
            table::subscriber_hash.eq(subscriber_hash),
            table::write_date.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn set_hash(conn: &mut DbConnection, id: i64, subscriber_hash: &str) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set(table::subscriber_hash.eq(subscriber_hash))
        .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    diesel::delete(table::table.find(id)).execute(conn)?;
    Ok(())
}

/// Notes that a full fetch saw these subscriptions.
pub fn mark_seen_many(conn: &mut DbConnection, ids: &[i64], run_id: i64) -> StoreResult<()> {
    for ids in ids.chunks(super::MAX_IN_LIST) {
        diesel::update(table::table.filter(table::id.eq_any(ids)))
            .set(table::last_fetch_run_id.eq(run_id))
            .execute(conn)?;
    }
    Ok(())
}

/// Subscriptions of the audience that the full run did not see and that nothing wrote
/// since it started: the members Mailchimp no longer has. At most `limit` at a time.
pub fn unseen(
    conn: &mut DbConnection,
    list_id: i64,
    run_id: i64,
    started: NaiveDateTime,
    limit: i64,
) -> StoreResult<Vec<SubscriptionRow>> {
    Ok(table::table
        .filter(table::list_id.eq(list_id))
        .filter(
            table::last_fetch_run_id
                .ne(run_id)
                .or(table::last_fetch_run_id.is_null()),
        )
        .filter(table::write_date.lt(started))
        .order(table::id)
        .limit(limit)
        .select(SubscriptionRow::as_select())
        .load(conn)?)
}

/// Up to `limit` subscriptions of the audience.
pub fn of_list(
    conn: &mut DbConnection,
    list_id: i64,
    limit: i64,
) -> StoreResult<Vec<SubscriptionRow>> {
    Ok(table::table
        .filter(table::list_id.eq(list_id))
        .order(table::id)
        .limit(limit)
        .select(SubscriptionRow::as_select())
        .load(conn)?)
}

pub fn count_for_contact(conn: &mut DbConnection, contact_id: i64) -> StoreResult<i64> {
    Ok(table::table
        .filter(table::contact_id.eq(contact_id))
        .count()
        .get_result(conn)?)
}

/// The subscriptions of these contacts, each with its audience's Mailchimp id.
pub fn for_contacts(
    conn: &mut DbConnection,
    contact_ids: &[i64],
) -> StoreResult<Vec<(SubscriptionRow, String)>> {
    Ok(table::table
        .inner_join(mailing_list::table)
        .filter(table::contact_id.eq_any(contact_ids))
        .order((table::contact_id, table::list_id))
        .select((
            SubscriptionRow::as_select(),
            mailing_list::mailchimp_list_id,
        ))
        .load(conn)?)
}

/// Every subscription of these contacts.
pub fn of_contacts(
    conn: &mut DbConnection,
    contact_ids: &[i64],
) -> StoreResult<Vec<SubscriptionRow>> {
    super::in_chunks(contact_ids, |ids| {
        let query = table::table
            .filter(table::contact_id.eq_any(ids))
            .select(SubscriptionRow::as_select());
        Ok(Kept(query).load(conn)?)
    })
}

/// The trace a member leaves on an address it left: when, and the address it moved to when
/// an email change took it there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tombstone {
    pub removed_at: NaiveDateTime,
    pub moved_to: Option<String>,
}

impl Tombstone {
    /// A removal that sends no later event anywhere.
    pub fn removed(removed_at: NaiveDateTime) -> Tombstone {
        Tombstone {
            removed_at,
            moved_to: None,
        }
    }
}

/// The tombstones at these (audience, address) places: audience, address, tombstone.
/// SQLite may also return tombstones at other pairings of the same audiences and addresses.
pub fn tombstones_at(
    conn: &mut DbConnection,
    places: &[(i64, &str)],
) -> StoreResult<Vec<(i64, String, Tombstone)>> {
    if places.is_empty() {
        return Ok(Vec::new());
    }
    match conn {
        // One index probe per place, whatever plan the statement was kept with: matching
        // audiences and addresses separately would scan every tombstone of the audiences.
        DbConnection::Postgresql(c) => {
            let mut found = Vec::new();
            for chunk in places.chunks(super::MAX_IN_LIST) {
                let (list_ids, emails): (Vec<i64>, Vec<&str>) = chunk.iter().copied().unzip();
                let query = diesel::sql_query(
                    "SELECT t.list_id, t.email_normalized, t.removed_at, t.moved_to \
                     FROM unnest($1::bigint[], $2::text[]) AS k (list_id, email_normalized) \
                     JOIN sync_tombstone t \
                     ON t.list_id = k.list_id AND t.email_normalized = k.email_normalized",
                )
                .bind::<sql_types::Array<sql_types::BigInt>, _>(list_ids)
                .bind::<sql_types::Array<sql_types::Text>, _>(emails);
                let rows: Vec<TombstoneRow> = Kept(query).load(c)?;
                found.extend(rows.into_iter().map(|t| {
                    let tombstone = Tombstone {
                        removed_at: t.removed_at,
                        moved_to: t.moved_to,
                    };
                    (t.list_id, t.email_normalized, tombstone)
                }));
            }
            Ok(found)
        }
        // SQLite walks the index for every audience and address of the two lists.
        DbConnection::Sqlite(_) => {
            let mut list_ids: Vec<i64> = places.iter().map(|&(list, _)| list).collect();
            let mut emails: Vec<&str> = places.iter().map(|&(_, email)| email).collect();
            list_ids.sort_unstable();
            list_ids.dedup();
            emails.sort_unstable();
            emails.dedup();
            let list_ids = super::padded(&list_ids);
            super::in_chunks(&emails, |emails| {
                let query = sync_tombstone::table
                    .filter(sync_tombstone::list_id.eq_any(&list_ids))
                    .filter(sync_tombstone::email_normalized.eq_any(emails))
                    .select((
                        sync_tombstone::list_id,
                        sync_tombstone::email_normalized,
                        sync_tombstone::removed_at,
                        sync_tombstone::moved_to,
                    ));
                let rows: Vec<(i64, String, NaiveDateTime, Option<String>)> =
                    Kept(query).load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(list_id, email, removed_at, moved_to)| {
                        let tombstone = Tombstone {
                            removed_at,
                            moved_to,
                        };
                        (list_id, email, tombstone)
                    })
                    .collect())
            })
        }
    }
}

#[derive(QueryableByName)]
struct TombstoneRow {
    #[diesel(sql_type = sql_types::BigInt)]
    list_id: i64,
    #[diesel(sql_type = sql_types::Text)]
    email_normalized: String,
    #[diesel(sql_type = sql_types::Timestamp)]
    removed_at: NaiveDateTime,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    moved_to: Option<String>,
}

/// The address's tombstone on the audience, if it left it.
pub fn tombstone(
    conn: &mut DbConnection,
    list_id: i64,
    email_normalized: &str,
) -> StoreResult<Option<Tombstone>> {
    let found: Option<(NaiveDateTime, Option<String>)> = sync_tombstone::table
        .filter(sync_tombstone::list_id.eq(list_id))
        .filter(sync_tombstone::email_normalized.eq(email_normalized))
        .select((sync_tombstone::removed_at, sync_tombstone::moved_to))
        .get_result(conn)
        .optional()?;
    Ok(found.map(|(removed_at, moved_to)| Tombstone {
        removed_at,
        moved_to,
    }))
}

/// Remembers that the address left the audience (the later removal wins).
pub fn put_tombstone(
    conn: &mut DbConnection,
    list_id: i64,
    email_normalized: &str,
    tombstone: &Tombstone,
) -> StoreResult<()> {
    let held = self::tombstone(conn, list_id, email_normalized)?;
    if held.is_some_and(|held| held.removed_at >= tombstone.removed_at) {
        return Ok(());
    }
    write_tombstone(conn, list_id, email_normalized, tombstone)
}

/// Sets the address's tombstone on the audience, whatever was held.
pub fn write_tombstone(
    conn: &mut DbConnection,
    list_id: i64,
    email_normalized: &str,
    tombstone: &Tombstone,
) -> StoreResult<()> {
    put_tombstones(conn, &[(list_id, email_normalized, tombstone)])
}

/// Sets each (audience, address) tombstone, whatever was held.
pub fn put_tombstones(
    conn: &mut DbConnection,
    tombstones: &[(i64, &str, &Tombstone)],
) -> StoreResult<()> {
    use diesel::upsert::excluded;
    for chunk in tombstones.chunks(super::MAX_ROWS_PER_INSERT) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|&(list_id, email, tombstone)| {
                (
                    sync_tombstone::list_id.eq(list_id),
                    sync_tombstone::email_normalized.eq(email),
                    sync_tombstone::removed_at.eq(tombstone.removed_at),
                    sync_tombstone::moved_to.eq(tombstone.moved_to.as_deref()),
                )
            })
            .collect();
        on_backend!(&mut *conn, c => diesel::insert_into(sync_tombstone::table)
            .values(&rows)
            .on_conflict((sync_tombstone::list_id, sync_tombstone::email_normalized))
            .do_update()
            .set((
                sync_tombstone::removed_at.eq(excluded(sync_tombstone::removed_at)),
                sync_tombstone::moved_to.eq(excluded(sync_tombstone::moved_to)),
            ))
            .execute(c))?;
    }
    Ok(())
}

pub fn clear_tombstones(conn: &mut DbConnection, tombstones: &[(i64, &str)]) -> StoreResult<()> {
    for &(list_id, email) in tombstones {
        clear_tombstone(conn, list_id, email)?;
    }
    Ok(())
}

pub fn clear_tombstone(
    conn: &mut DbConnection,
    list_id: i64,
    email_normalized: &str,
) -> StoreResult<()> {
    diesel::delete(
        sync_tombstone::table
            .filter(sync_tombstone::list_id.eq(list_id))
            .filter(sync_tombstone::email_normalized.eq(email_normalized)),
    )
    .execute(conn)?;
    Ok(())
}
