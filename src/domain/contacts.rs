//! Reading contact state: a contact with its subscriptions and blacklist flag, looked up by
//! id or by an address in any form, and listed page by page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::email::EmailIdentity;
use crate::error::{AppError, AppResult};
use crate::store::blacklist::{self, BlacklistRow};
use crate::store::contacts::{self, ContactFilter, ContactRow};
use crate::store::subscriptions::{self, SubscriptionRow};
use crate::store::{DbConnection, Store, StoreResult};

/// A contact as the store holds it, with what belongs to it.
#[derive(Debug, Clone)]
pub struct ContactView {
    pub contact: ContactRow,
    /// Each subscription with its audience's Mailchimp id.
    pub subscriptions: Vec<(SubscriptionRow, String)>,
    pub is_blacklisted: bool,
}

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// How a contact is asked for.
#[derive(Debug, Clone)]
pub enum Lookup {
    Id(i64),
    Email(String),
}

pub async fn get(store: &Store, lookup: Lookup) -> AppResult<ContactView> {
    let found = match lookup {
        Lookup::Id(id) => store.run(move |conn| by_id(conn, id)).await?,
        Lookup::Email(raw) => {
            let email = EmailIdentity::parse(&raw)
                .ok_or_else(|| AppError::invalid("email", "not a valid email address"))?;
            store
                .run(move |conn| by_email(conn, &email.normalized))
                .await?
        }
    };
    found.ok_or_else(|| AppError::not_found("contact"))
}

fn by_id(conn: &mut DbConnection, id: i64) -> StoreResult<Option<ContactView>> {
    match contacts::get(conn, id) {
        Ok(row) => Ok(views(conn, vec![row])?.pop()),
        Err(crate::store::StoreError::NotFound) => Ok(None),
        Err(other) => Err(other),
    }
}

fn by_email(conn: &mut DbConnection, email_normalized: &str) -> StoreResult<Option<ContactView>> {
    let Some(row) = contacts::find_by_email(conn, email_normalized)? else {
        return Ok(None);
    };
    Ok(views(conn, vec![row])?.pop())
}

/// Attaches subscriptions and blacklist flags to contacts, with two queries for the lot.
fn views(conn: &mut DbConnection, rows: Vec<ContactRow>) -> StoreResult<Vec<ContactView>> {
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let emails: Vec<String> = rows
        .iter()
        .map(|row| row.email_normalized.clone())
        .collect();
    let mut subs = subscriptions::for_contacts(conn, &ids)?;
    let listed = blacklist::active_among(conn, &emails)?;
    Ok(rows
        .into_iter()
        .map(|contact| {
            let (mine, rest) = subs
                .drain(..)
                .partition(|(sub, _)| sub.contact_id == contact.id);
            subs = rest;
            let is_blacklisted = listed.contains(&contact.email_normalized);
            ContactView {
                contact,
                subscriptions: mine,
                is_blacklisted,
            }
        })
        .collect())
}

/// One page of contacts and the token of the next page, if there is one.
pub async fn page(
    store: &Store,
    filter: ContactFilter,
    page_size: i32,
    page_token: &str,
) -> AppResult<(Vec<ContactView>, String)> {
    let limit = page_limit(page_size)?;
    let after = decode_page_token(page_token)?;
    let rows = store
        .run(move |conn| {
            let rows = contacts::page(conn, &filter, after, limit)?;
            views(conn, rows)
        })
        .await?;
    let next = next_page_token(&rows, limit, |view| view.contact.id);
    Ok((rows, next))
}

/// The blacklist entry of an address in any form.
pub async fn blacklist_entry(store: &Store, raw: &str) -> AppResult<BlacklistRow> {
    let email = EmailIdentity::parse(raw)
        .ok_or_else(|| AppError::invalid("email", "not a valid email address"))?;
    store
        .run(move |conn| blacklist::get(conn, &email.normalized))
        .await?
        .ok_or_else(|| AppError::not_found("blacklist entry"))
}

pub fn page_limit(page_size: i32) -> AppResult<i64> {
    match i64::from(page_size) {
        0 => Ok(DEFAULT_PAGE),
        n if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(AppError::invalid("page_size", "must be between 0 and 1000")),
    }
}

/// Page tokens are opaque to callers; inside they hold the last id of the previous page.
pub fn decode_page_token(token: &str) -> AppResult<i64> {
    if token.is_empty() {
        return Ok(0);
    }
    let invalid = || AppError::invalid("page_token", "not a token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix("after:")
        .and_then(|id| id.parse().ok())
        .ok_or_else(invalid)
}

pub fn next_page_token<T>(rows: &[T], limit: i64, id: impl Fn(&T) -> i64) -> String {
    match rows.last() {
        Some(last) if rows.len() as i64 == limit => page_token_after(id(last)),
        _ => String::new(),
    }
}

/// The token of the page that follows the row with this id.
pub fn page_token_after(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_forgeries() {
        let token = next_page_token(&[7_i64, 9], 2, |id| *id);
        assert_eq!(decode_page_token(&token).unwrap(), 9);
        assert_eq!(next_page_token(&[7_i64], 2, |id| *id), "");
        assert_eq!(decode_page_token("").unwrap(), 0);
        for bad in ["%%%", "YWJj", "after:1"] {
            let error = decode_page_token(bad).unwrap_err();
            assert!(error.message().starts_with("page_token"), "{bad}");
        }
    }

    #[test]
    fn page_size_is_bounded() {
        assert_eq!(page_limit(0).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(1000).unwrap(), 1000);
        assert!(page_limit(1001).is_err());
        assert!(page_limit(-1).is_err());
    }
}
