//! `mailing_contact`: one row per normalized address, as Odoo's `mailing.contact`.
//! Merge fields, interests and tags are JSON text, kept as received.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{mailing_contact as table, mailing_subscription};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamp};

use super::{DbConnection, Kept, StoreResult, Written, on_backend};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = table, treat_none_as_default_value = false)]
pub struct ContactRow {
    pub id: i64,
    pub name: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub email_normalized: String,
    pub subscriber_hash: String,
    pub merge_fields: String,
    pub interests: String,
    pub tags: String,
    /// The Mailchimp time of the profile held (name, merge fields).
    pub last_changed: Option<NaiveDateTime>,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = table)]
pub struct NewContact<'a> {
    pub name: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub subscriber_hash: &'a str,
    pub merge_fields: &'a str,
    pub interests: &'a str,
    pub tags: &'a str,
    pub last_changed: Option<NaiveDateTime>,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

/// The profile part of a contact, written as a whole.
#[derive(Debug, Clone, PartialEq, AsChangeset)]
#[diesel(table_name = table)]
pub struct Profile {
    pub name: String,
    pub first_name: String,
    pub last_name: String,
    pub merge_fields: String,
    pub interests: String,
    pub tags: String,
    pub last_changed: Option<NaiveDateTime>,
}

impl NewContact<'_> {
    /// The row this contact becomes under `id`.
    pub fn row(&self, id: i64) -> ContactRow {
        ContactRow {
            id,
            name: self.name.to_owned(),
            first_name: self.first_name.to_owned(),
            last_name: self.last_name.to_owned(),
            email: self.email.to_owned(),
            email_normalized: self.email_normalized.to_owned(),
            subscriber_hash: self.subscriber_hash.to_owned(),
            merge_fields: self.merge_fields.to_owned(),
            interests: self.interests.to_owned(),
            tags: self.tags.to_owned(),
            last_changed: self.last_changed,
            create_date: self.create_date,
            write_date: self.write_date,
        }
    }
}

impl ContactRow {
    /// What [`set_profile`] does to the row.
    pub fn set_profile(&mut self, profile: &Profile, now: NaiveDateTime) {
        self.name.clone_from(&profile.name);
        self.first_name.clone_from(&profile.first_name);
        self.last_name.clone_from(&profile.last_name);
        self.merge_fields.clone_from(&profile.merge_fields);
        self.interests.clone_from(&profile.interests);
        self.tags.clone_from(&profile.tags);
        self.last_changed = profile.last_changed;
        self.write_date = now;
    }

    pub fn profile(&self) -> Profile {
        Profile {
            name: self.name.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            merge_fields: self.merge_fields.clone(),
            interests: self.interests.clone(),
            tags: self.tags.clone(),
            last_changed: self.last_changed,
        }
    }
}

pub fn insert(conn: &mut DbConnection, new: &NewContact<'_>) -> StoreResult<ContactRow> {
    let row = on_backend!(conn, c => diesel::insert_into(table::table)
        .values(new)
        .returning(ContactRow::as_returning())
        .get_result(c))?;
    Ok(row)
}

/// Writes the rows as given, inserting those whose id is new.
pub fn upsert_many(conn: &mut DbConnection, rows: &[ContactRow]) -> StoreResult<()> {
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
                table::name.eq(excluded(table::name)),
                table::first_name.eq(excluded(table::first_name)),
                table::last_name.eq(excluded(table::last_name)),
                table::email.eq(excluded(table::email)),
                table::email_normalized.eq(excluded(table::email_normalized)),
                table::subscriber_hash.eq(excluded(table::subscriber_hash)),
                table::merge_fields.eq(excluded(table::merge_fields)),
                table::interests.eq(excluded(table::interests)),
                table::tags.eq(excluded(table::tags)),
                table::last_changed.eq(excluded(table::last_changed)),
                table::write_date.eq(excluded(table::write_date)),
            ))
            .execute(c)?;
    }
    Ok(())
}

/// [`upsert_many`] on PostgreSQL: one statement whose text does not depend on the number of
/// rows, each column bound as one array, so that the connection parses and plans it once.
fn upsert_arrays(c: &mut PgConnection, rows: &[ContactRow]) -> StoreResult<()> {
    const UPSERT: &str = "\
        WITH written AS (\
            INSERT INTO mailing_contact (id, name, first_name, last_name, email, \
                email_normalized, subscriber_hash, merge_fields, interests, tags, \
                last_changed, create_date, write_date) \
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], \
                $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                $11::timestamp[], $12::timestamp[], $13::timestamp[]) \
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                first_name = excluded.first_name, last_name = excluded.last_name, \
                email = excluded.email, email_normalized = excluded.email_normalized, \
                subscriber_hash = excluded.subscriber_hash, \
                merge_fields = excluded.merge_fields, interests = excluded.interests, \
                tags = excluded.tags, last_changed = excluded.last_changed, \
                write_date = excluded.write_date \
            RETURNING 1) \
        SELECT count(*) AS rows FROM written";
    let text = |column: fn(&ContactRow) -> &str| rows.iter().map(column).collect::<Vec<_>>();
    let query = diesel::sql_query(UPSERT)
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(text(|r| &r.name))
        .bind::<Array<Text>, _>(text(|r| &r.first_name))
        .bind::<Array<Text>, _>(text(|r| &r.last_name))
        .bind::<Array<Text>, _>(text(|r| &r.email))
        .bind::<Array<Text>, _>(text(|r| &r.email_normalized))
        .bind::<Array<Text>, _>(text(|r| &r.subscriber_hash))
        .bind::<Array<Text>, _>(text(|r| &r.merge_fields))
        .bind::<Array<Text>, _>(text(|r| &r.interests))
        .bind::<Array<Text>, _>(text(|r| &r.tags))
        .bind::<Array<Nullable<Timestamp>>, _>(
            rows.iter().map(|r| r.last_changed).collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.create_date).collect::<Vec<_>>())
        .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.write_date).collect::<Vec<_>>());
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

pub fn get(conn: &mut DbConnection, id: i64) -> StoreResult<ContactRow> {
    Ok(table::table
        .find(id)
        .select(ContactRow::as_select())
        .get_result(conn)?)
}

pub fn find_by_email(
    conn: &mut DbConnection,
    email_normalized: &str,
) -> StoreResult<Option<ContactRow>> {
    Ok(table::table
        .filter(table::email_normalized.eq(email_normalized))
        .select(ContactRow::as_select())
        .get_result(conn)
        .optional()?)
}

/// The contacts holding these normalized addresses.
pub fn by_emails(
    conn: &mut DbConnection,
    emails_normalized: &[&str],
) -> StoreResult<Vec<ContactRow>> {
    super::in_chunks(emails_normalized, |emails| {
        let query = table::table
            .filter(table::email_normalized.eq_any(emails))
            .select(ContactRow::as_select());
        Ok(Kept(query).load(conn)?)
    })
}

pub fn set_profile(
    conn: &mut DbConnection,
    id: i64,
    profile: &Profile,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((profile, table::write_date.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Gives the contact another address (an email change made in Mailchimp).
pub fn set_email(
    conn: &mut DbConnection,
    id: i64,
    email: &str,
    email_normalized: &str,
    subscriber_hash: &str,
    now: NaiveDateTime,
) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set((
            table::email.eq(email),
            table::email_normalized.eq(email_normalized),
            table::subscriber_hash.eq(subscriber_hash),
            table::write_date.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Keeps the address as Mailchimp last spelled it, when only its case changed.
pub fn set_raw_email(conn: &mut DbConnection, id: i64, email: &str) -> StoreResult<()> {
    diesel::update(table::table.find(id))
        .set(table::email.eq(email))
        .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    diesel::delete(table::table.find(id)).execute(conn)?;
    Ok(())
}

pub fn count(conn: &mut DbConnection) -> StoreResult<i64> {
    Ok(table::table.count().get_result(conn)?)
}

/// Which contacts a listing shows.
#[derive(Debug, Default, Clone)]
pub struct ContactFilter {
    pub list_id: Option<i64>,
    pub status: Option<String>,
}

/// Contacts with an id above `after_id`, in id order, matching the filter.
pub fn page(
    conn: &mut DbConnection,
    filter: &ContactFilter,
    after_id: i64,
    limit: i64,
) -> StoreResult<Vec<ContactRow>> {
    if filter.list_id.is_none() && filter.status.is_none() {
        return Ok(table::table
            .filter(table::id.gt(after_id))
            .order(table::id)
            .limit(limit)
            .select(ContactRow::as_select())
            .load(conn)?);
    }
    let mut query = table::table
        .inner_join(mailing_subscription::table)
        .filter(table::id.gt(after_id))
        .order(table::id)
        .limit(limit)
        .select(ContactRow::as_select())
        .distinct()
        .into_boxed();
    if let Some(list_id) = filter.list_id {
        query = query.filter(mailing_subscription::list_id.eq(list_id));
    }
    if let Some(status) = &filter.status {
        query = query.filter(mailing_subscription::status.eq(status.clone()));
    }
    Ok(query.load(conn)?)
}
