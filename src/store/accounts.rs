//! `mailchimp_account`: API credentials and the webhook token of each Mailchimp account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::mailchimp_account as table;
use super::{DbConnection, StoreError, StoreResult, on_backend};

/// An account with its secrets; its `Debug` shows none of them.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = table)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    pub api_key: String,
    pub data_center: String,
    pub api_base_url: Option<String>,
    pub webhook_token: Option<String>,
    pub webhook_token_hash: Option<String>,
    pub webhook_active: bool,
    pub webhook_signing_secret: Option<String>,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("data_center", &self.data_center)
            .field("api_base_url", &self.api_base_url)
            .field("webhook_active", &self.webhook_active)
            .finish_non_exhaustive()
    }
}

#[derive(Insertable)]
#[diesel(table_name = table)]
pub struct NewAccount<'a> {
    pub name: &'a str,
    pub api_key: &'a str,
    pub data_center: &'a str,
    pub api_base_url: Option<&'a str>,
    pub create_date: NaiveDateTime,
    pub write_date: NaiveDateTime,
}

/// Columns to change; `None` keeps the stored value.
#[derive(Default, AsChangeset)]
#[diesel(table_name = table)]
pub struct AccountChanges {
    pub name: Option<String>,
    pub api_key: Option<String>,
    pub data_center: Option<String>,
    pub api_base_url: Option<Option<String>>,
    pub webhook_active: Option<bool>,
    pub webhook_signing_secret: Option<Option<String>>,
    pub webhook_token: Option<Option<String>>,
    pub webhook_token_hash: Option<Option<String>>,
    pub write_date: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConnection, new: &NewAccount<'_>) -> StoreResult<AccountRow> {
    let row = on_backend!(conn, c => diesel::insert_into(table::table)
        .values(new)
        .returning(AccountRow::as_returning())
        .get_result(c))?;
    Ok(row)
}

pub fn get(conn: &mut DbConnection, id: i64) -> StoreResult<AccountRow> {
    Ok(table::table
        .find(id)
        .select(AccountRow::as_select())
        .get_result(conn)?)
}

pub fn list(conn: &mut DbConnection) -> StoreResult<Vec<AccountRow>> {
    Ok(table::table
        .order(table::id)
        .select(AccountRow::as_select())
        .load(conn)?)
}

pub fn update(
    conn: &mut DbConnection,
    id: i64,
    changes: &AccountChanges,
) -> StoreResult<AccountRow> {
    let updated = diesel::update(table::table.find(id))
        .set(changes)
        .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::NotFound);
    }
    get(conn, id)
}

pub fn delete(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    match diesel::delete(table::table.find(id)).execute(conn)? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// The account whose webhook token hashes to `token_hash`. The caller still compares the
/// token itself in constant time: the index lookup only narrows the candidates.
pub fn find_by_token_hash(
    conn: &mut DbConnection,
    token_hash: &str,
) -> StoreResult<Option<AccountRow>> {
    Ok(table::table
        .filter(table::webhook_token_hash.eq(token_hash))
        .select(AccountRow::as_select())
        .get_result(conn)
        .optional()?)
}

/// An account as its webhook sees it: the row, and every secret a delivery may be signed
/// with (the account's own and each registered audience webhook's; none means unsigned).
pub struct WebhookAccount {
    pub row: AccountRow,
    pub signing_secrets: Vec<String>,
}

/// The account whose webhook token hashes to `token_hash`, with its signing secrets.
pub fn find_for_webhook(
    conn: &mut DbConnection,
    token_hash: &str,
) -> StoreResult<Option<WebhookAccount>> {
    let Some(row) = find_by_token_hash(conn, token_hash)? else {
        return Ok(None);
    };
    let mut signing_secrets = super::lists::signing_secrets(conn, row.id)?;
    signing_secrets.extend(row.webhook_signing_secret.clone());
    Ok(Some(WebhookAccount {
        row,
        signing_secrets,
    }))
}

/// Accounts recently found by webhook token hash, so that a burst of webhooks does not look
/// its account up once per request. An entry is used for [`RecentTokens::FRESH_FOR`] at
/// most: a token rotated, a secret set or an account deleted through another replica takes
/// that long to be seen here. Changes made through this process call
/// [`RecentTokens::forget_all`] once committed, and a lookup that raced with one is not
/// remembered.
#[derive(Default)]
pub struct RecentTokens {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Moves on with every `forget_all`.
    generation: u64,
    rows: HashMap<String, (Arc<WebhookAccount>, Instant)>,
}

impl RecentTokens {
    pub const FRESH_FOR: Duration = Duration::from_secs(1);

    /// The account remembered for the hash, or else the generation to remember a lookup under.
    pub fn get(&self, token_hash: &str) -> Result<Arc<WebhookAccount>, u64> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.rows.get(token_hash) {
            Some((row, at)) if at.elapsed() < Self::FRESH_FOR => Ok(row.clone()),
            _ => Err(held.generation),
        }
    }

    /// Remembers a lookup begun at `generation`, unless something was forgotten since.
    pub fn put(&self, generation: u64, token_hash: String, row: Arc<WebhookAccount>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.generation != generation {
            return;
        }
        let now = Instant::now();
        held.rows
            .retain(|_, (_, at)| now.duration_since(*at) < Self::FRESH_FOR);
        held.rows.insert(token_hash, (row, now));
    }

    pub fn forget_all(&self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.generation += 1;
        held.rows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_secret() {
        let now = chrono::DateTime::UNIX_EPOCH.naive_utc();
        let row = AccountRow {
            id: 1,
            name: "Acme".into(),
            api_key: "0123456789abcdefSECRETKEY-us6".into(),
            data_center: "us6".into(),
            api_base_url: None,
            webhook_token: Some("TOKENTOKENTOKEN".into()),
            webhook_token_hash: Some("HASHHASH".into()),
            webhook_active: true,
            webhook_signing_secret: Some("SIGNINGSECRET".into()),
            create_date: now,
            write_date: now,
        };
        let shown = format!("{row:?}");
        assert!(shown.contains("Acme"));
        for secret in ["SECRETKEY", "TOKENTOKEN", "HASHHASH", "SIGNINGSECRET"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
