//! What one write transaction already knows of the rows a batch of events (or a page of
//! fetched members) touches: contacts by address, their subscriptions, and tombstones.
//!
//! [`Known::load`] looks them up for the whole batch in a few `IN (...)` queries; the
//! domain then reads and writes through [`Known`] instead of asking the database row by
//! row. Anything not loaded is read from the database when first asked for, and then
//! remembered. A `Known` is only valid inside the transaction it was loaded in, and only
//! while every write to these tables goes through it.
//!
//! It writes in one of two ways:
//! - at once (the default): every write goes to the database immediately and updates the
//!   entries it touches, so an entry always equals the row. After a savepoint rolls back,
//!   [`Known::forget_all`] must be called.
//! - held back ([`Known::defer_writes`]): writes only change the entries and note the row
//!   as changed; [`Known::flush`] then writes every changed row in a few multi-row
//!   statements (upserts by primary key, deletes by id), and the change-feed entries in
//!   order. New rows get their ids up front from the table's own sequence, so that a
//!   change-feed entry or a subscription can name a contact not yet inserted. A read that
//!   the entries cannot answer exactly (a subscription by Mailchimp member id) flushes
//!   first. A flush may fail where writing at once would not have (two contacts trading
//!   addresses in one batch); the caller then rolls back and writes at once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDateTime;

use super::changes::{self, NewChange};
use super::contacts::{self, ContactRow, NewContact, Profile};
use super::lists::{self, ListRow};
use super::subscriptions::{self, MemberState, SubscriptionRow, Tombstone};
use super::{DbConnection, IdPool, StoreError, StoreResult, blacklist};

#[derive(Default)]
pub struct Known {
    /// By (account, Mailchimp list id).
    lists: HashMap<(i64, String), ListRow>,
    /// By normalized address; `None` when no contact has it.
    contacts: HashMap<String, Option<ContactRow>>,
    /// Every subscription of a contact, for the contacts whose subscriptions are all known.
    subscriptions: HashMap<i64, Vec<SubscriptionRow>>,
    /// By (audience, normalized address); `None` when there is no tombstone.
    tombstones: HashMap<(i64, String), Option<Tombstone>>,
    /// By normalized address, for the addresses loaded: whether it is actively blacklisted
    /// (`None` when it never was).
    blacklist: HashMap<String, Option<bool>>,
    /// Writes held back, when deferring.
    pending: Option<Pending>,
    /// Subscriptions a full fetch saw, by run, to mark in one statement.
    seen: Vec<(i64, i64)>,
    /// The sequence of the last change-feed entry flushed, over every flush so far.
    last_sequence: Option<i64>,
}

/// What [`Known::flush`] has to write.
struct Pending {
    changes: Vec<NewChange>,
    /// Contacts to write as held, by id: existing ones first, then new ones in order.
    contacts: BTreeSet<i64>,
    new_contacts: HashSet<i64>,
    deleted_contacts: Vec<i64>,
    subscriptions: BTreeSet<i64>,
    new_subscriptions: HashSet<i64>,
    deleted_subscriptions: Vec<i64>,
    tombstones: BTreeSet<(i64, String)>,
    /// Addresses to blacklist, with the reason and time, in the order blacklisted.
    blacklist: Vec<(String, String, NaiveDateTime)>,
    contact_ids: Ids,
    subscription_ids: Ids,
}

impl Pending {
    fn new(ids: &Arc<IdPool>) -> Pending {
        let ids = || Ids {
            pool: Arc::clone(ids),
            next_free: None,
        };
        Pending {
            changes: Vec::new(),
            contacts: BTreeSet::new(),
            new_contacts: HashSet::new(),
            deleted_contacts: Vec::new(),
            subscriptions: BTreeSet::new(),
            new_subscriptions: HashSet::new(),
            deleted_subscriptions: Vec::new(),
            tombstones: BTreeSet::new(),
            blacklist: Vec::new(),
            contact_ids: ids(),
            subscription_ids: ids(),
        }
    }
}

/// Where a held-back write takes the ids of new rows: on SQLite, counting up from the first
/// free id, read once per transaction; on PostgreSQL, from the store's pool.
struct Ids {
    pool: Arc<IdPool>,
    /// SQLite's next free id, once read.
    next_free: Option<i64>,
}

impl Ids {
    fn take(&mut self, conn: &mut DbConnection, table: &'static str) -> StoreResult<i64> {
        match conn {
            DbConnection::Postgresql(c) => self.pool.take(c, table),
            DbConnection::Sqlite(c) => {
                let next = match self.next_free {
                    Some(next) => next,
                    None => super::first_free_sqlite_id(c, table)?,
                };
                self.next_free = Some(next + 1);
                Ok(next)
            }
        }
    }
}

impl Known {
    /// Knows nothing yet: every lookup goes to the database, and is then remembered.
    pub fn new() -> Known {
        Known::default()
    }

    /// Looks up, in a few queries, what a batch names: each `(account id, Mailchimp list id,
    /// normalized address)` gives the audience (never created here), the contact holding
    /// the address with all its subscriptions, the address's blacklist entry, and its
    /// tombstone on that audience.
    pub fn load(conn: &mut DbConnection, named: &[(i64, &str, &str)]) -> StoreResult<Known> {
        let mut known = Known::new();
        let mut accounts: Vec<i64> = named.iter().map(|&(account, _, _)| account).collect();
        let mut list_ids: Vec<&str> = named.iter().map(|&(_, list, _)| list).collect();
        accounts.sort_unstable();
        accounts.dedup();
        list_ids.sort_unstable();
        list_ids.dedup();
        for list in lists::among(conn, &accounts, &list_ids)? {
            let key = (list.account_id, list.mailchimp_list_id.clone());
            known.lists.insert(key, list);
        }
        let emails: Vec<&str> = {
            let mut seen = HashSet::new();
            named
                .iter()
                .map(|&(_, _, email)| email)
                .filter(|e| seen.insert(*e))
                .collect()
        };
        known.load_contacts(conn, &emails)?;
        for email in &emails {
            known.blacklist.insert((*email).to_owned(), None);
        }
        for row in blacklist::among(conn, &emails)? {
            known.blacklist.insert(row.email, Some(row.active));
        }
        let mut places: Vec<(i64, &str)> = named
            .iter()
            .filter_map(|&(account, list, email)| {
                let list = known.lists.get(&(account, list.to_owned()))?;
                Some((list.id, email))
            })
            .collect();
        places.sort_unstable();
        places.dedup();
        known.load_tombstones(conn, &places)?;
        Ok(known)
    }

    /// Remembers an audience row the caller already holds.
    pub fn with_list(mut self, list: &ListRow) -> Known {
        let key = (list.account_id, list.mailchimp_list_id.clone());
        self.lists.insert(key, list.clone());
        self
    }

    fn load_contacts(&mut self, conn: &mut DbConnection, emails: &[&str]) -> StoreResult<()> {
        for email in emails {
            self.contacts.insert((*email).to_owned(), None);
        }
        let found = contacts::by_emails(conn, emails)?;
        self.hold_contacts(conn, found)
    }

    /// Remembers contacts read from the database, with all their subscriptions.
    fn hold_contacts(
        &mut self,
        conn: &mut DbConnection,
        found: Vec<ContactRow>,
    ) -> StoreResult<()> {
        if found.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = found.iter().map(|contact| contact.id).collect();
        for contact in found {
            self.subscriptions.insert(contact.id, Vec::new());
            self.contacts
                .insert(contact.email_normalized.clone(), Some(contact));
        }
        for row in subscriptions::of_contacts(conn, &ids)? {
            if let Some(held) = self.subscriptions.get_mut(&row.contact_id) {
                held.push(row);
            }
        }
        Ok(())
    }

    /// The tombstones of these (audience, address) places.
    fn load_tombstones(
        &mut self,
        conn: &mut DbConnection,
        places: &[(i64, &str)],
    ) -> StoreResult<()> {
        for &(list_id, email) in places {
            self.tombstones.insert((list_id, email.to_owned()), None);
        }
        for (list_id, email, tombstone) in subscriptions::tombstones_at(conn, places)? {
            self.tombstones.insert((list_id, email), Some(tombstone));
        }
        Ok(())
    }

    /// Forgets everything, for when writes made at once were rolled back.
    pub fn forget_all(&mut self) {
        debug_assert!(
            self.pending.is_none(),
            "held-back writes are never forgotten"
        );
        *self = Known::new();
    }

    /// From now on, writes are held back until [`Known::flush`]; new rows take their ids
    /// from `ids`.
    pub fn defer_writes(&mut self, ids: &Arc<IdPool>) {
        self.pending.get_or_insert_with(|| Pending::new(ids));
    }

    /// Writes what was held back: changed rows, change-feed entries in the order recorded,
    /// and the marks of members seen. Returns the sequence of the last entry written by
    /// this or an earlier flush (a read may have flushed in the middle of a batch), if any.
    pub fn flush(&mut self, conn: &mut DbConnection) -> StoreResult<Option<i64>> {
        if let Some(mut pending) = self.pending.take() {
            let last = self.write(conn, &mut pending)?;
            self.last_sequence = last.or(self.last_sequence);
            // Ids already taken carry on.
            let mut next = Pending::new(&pending.contact_ids.pool);
            next.contact_ids = pending.contact_ids;
            next.subscription_ids = pending.subscription_ids;
            self.pending = Some(next);
        }
        let mut seen = std::mem::take(&mut self.seen);
        seen.sort_unstable();
        for run in seen.chunk_by(|a, b| a.0 == b.0) {
            let ids: Vec<i64> = run.iter().map(|&(_, id)| id).collect();
            subscriptions::mark_seen_many(conn, &ids, run[0].0)?;
        }
        Ok(self.last_sequence)
    }

    /// Writes the held-back rows. Rows leave first, so that an address or an audience seat
    /// they free can be taken by a row written after them. A contact's deletion cascades to
    /// the subscriptions the database still has under it, including any the batch moved to
    /// another contact: those are changed rows, and their upsert by id writes them back.
    fn write(&self, conn: &mut DbConnection, pending: &mut Pending) -> StoreResult<Option<i64>> {
        subscriptions::delete_many(conn, &pending.deleted_subscriptions)?;
        contacts::delete_many(conn, &pending.deleted_contacts)?;
        let contacts: Vec<ContactRow> = self
            .contacts
            .values()
            .flatten()
            .filter(|row| pending.contacts.contains(&row.id))
            .cloned()
            .collect();
        contacts::upsert_many(conn, &sorted_by_id(contacts, |row| row.id))?;
        let subscriptions: Vec<SubscriptionRow> = self
            .subscriptions
            .values()
            .flatten()
            .filter(|row| pending.subscriptions.contains(&row.id))
            .cloned()
            .collect();
        subscriptions::upsert_many(conn, &sorted_by_id(subscriptions, |row| row.id))?;
        let mut removed = Vec::new();
        let mut placed = Vec::new();
        for key in &pending.tombstones {
            match self.tombstones.get(key).and_then(Option::as_ref) {
                Some(tombstone) => placed.push((key.0, key.1.as_str(), tombstone)),
                None => removed.push((key.0, key.1.as_str())),
            }
        }
        subscriptions::put_tombstones(conn, &placed)?;
        subscriptions::clear_tombstones(conn, &removed)?;
        let entries: Vec<(&str, &str, NaiveDateTime)> = pending
            .blacklist
            .iter()
            .map(|(email, reason, at)| (email.as_str(), reason.as_str(), *at))
            .collect();
        blacklist::add_many(conn, &entries)?;
        changes::insert_many(conn, &pending.changes)
    }

    /// Writes change-feed entries, or holds them back when deferring.
    pub fn record_changes(
        &mut self,
        conn: &mut DbConnection,
        entries: &[NewChange],
    ) -> StoreResult<()> {
        match &mut self.pending {
            Some(pending) => {
                pending.changes.extend_from_slice(entries);
                Ok(())
            }
            None => changes::insert_all(conn, entries),
        }
    }

    /// The audience, created with an empty name when this is the first the store hears of it.
    pub fn list(
        &mut self,
        conn: &mut DbConnection,
        account_id: i64,
        mailchimp_list_id: &str,
        now: NaiveDateTime,
    ) -> StoreResult<ListRow> {
        let key = (account_id, mailchimp_list_id.to_owned());
        if let Some(list) = self.lists.get(&key) {
            return Ok(list.clone());
        }
        let list = lists::get_or_create(conn, account_id, mailchimp_list_id, now)?;
        self.lists.insert(key, list.clone());
        Ok(list)
    }

    pub fn contact(
        &mut self,
        conn: &mut DbConnection,
        email_normalized: &str,
    ) -> StoreResult<Option<ContactRow>> {
        if let Some(known) = self.contacts.get(email_normalized) {
            return Ok(known.clone());
        }
        let found = contacts::find_by_email(conn, email_normalized)?;
        self.contacts.insert(email_normalized.to_owned(), None);
        self.hold_contacts(conn, found.iter().cloned().collect())?;
        Ok(found)
    }

    /// The contact with this id, which must exist.
    pub fn contact_by_id(&mut self, conn: &mut DbConnection, id: i64) -> StoreResult<ContactRow> {
        let held = self.contacts.values().flatten().find(|row| row.id == id);
        if let Some(row) = held {
            return Ok(row.clone());
        }
        let row = contacts::get(conn, id)?;
        self.hold_contacts(conn, vec![row.clone()])?;
        Ok(row)
    }

    pub fn insert_contact(
        &mut self,
        conn: &mut DbConnection,
        new: &NewContact<'_>,
    ) -> StoreResult<ContactRow> {
        let row = match &mut self.pending {
            Some(pending) => {
                let id = pending.contact_ids.take(conn, "mailing_contact")?;
                pending.contacts.insert(id);
                pending.new_contacts.insert(id);
                new.row(id)
            }
            None => contacts::insert(conn, new)?,
        };
        self.subscriptions.insert(row.id, Vec::new());
        self.contacts
            .insert(row.email_normalized.clone(), Some(row.clone()));
        Ok(row)
    }

    /// The known row of this contact, to update in step with the database. It is found by
    /// id: the caller's copy may name an address the contact has left since.
    fn held_contact(&mut self, contact: &ContactRow) -> Option<&mut ContactRow> {
        let id = contact.id;
        let under_its_address = self
            .contacts
            .get(&contact.email_normalized)
            .is_some_and(|held| held.as_ref().is_some_and(|row| row.id == id));
        if under_its_address {
            return self.contacts.get_mut(&contact.email_normalized)?.as_mut();
        }
        self.contacts
            .values_mut()
            .flatten()
            .find(|row| row.id == id)
    }

    /// Runs `write` now, or notes the contact as changed when deferring; then updates the
    /// held row with `change`. A held-back write needs the row held: it is read first.
    fn change_contact(
        &mut self,
        conn: &mut DbConnection,
        contact: &ContactRow,
        write: impl FnOnce(&mut DbConnection) -> StoreResult<()>,
        change: impl FnOnce(&mut ContactRow),
    ) -> StoreResult<()> {
        let Some(pending) = &mut self.pending else {
            write(conn)?;
            if let Some(held) = self.held_contact(contact) {
                change(held);
            }
            return Ok(());
        };
        pending.contacts.insert(contact.id);
        if self.held_contact(contact).is_none() {
            self.contact_by_id(conn, contact.id)?;
        }
        let held = self
            .held_contact(contact)
            .ok_or(StoreError::Untracked("mailing_contact"))?;
        change(held);
        Ok(())
    }

    pub fn set_profile(
        &mut self,
        conn: &mut DbConnection,
        contact: &ContactRow,
        profile: &Profile,
        now: NaiveDateTime,
    ) -> StoreResult<()> {
        self.change_contact(
            conn,
            contact,
            |conn| contacts::set_profile(conn, contact.id, profile, now),
            |held| held.set_profile(profile, now),
        )
    }

    pub fn set_raw_email(
        &mut self,
        conn: &mut DbConnection,
        contact: &ContactRow,
        email: &str,
    ) -> StoreResult<()> {
        self.change_contact(
            conn,
            contact,
            |conn| contacts::set_raw_email(conn, contact.id, email),
            |held| email.clone_into(&mut held.email),
        )
    }

    /// Gives the contact another address.
    pub fn set_email(
        &mut self,
        conn: &mut DbConnection,
        contact: &ContactRow,
        email: &str,
        email_normalized: &str,
        subscriber_hash: &str,
        now: NaiveDateTime,
    ) -> StoreResult<()> {
        let Some(pending) = &mut self.pending else {
            contacts::set_email(
                conn,
                contact.id,
                email,
                email_normalized,
                subscriber_hash,
                now,
            )?;
            self.contacts.remove(&contact.email_normalized);
            self.contacts.remove(email_normalized);
            return Ok(());
        };
        pending.contacts.insert(contact.id);
        let mut row = match self.held_contact(contact) {
            Some(held) => held.clone(),
            None => self.contact_by_id(conn, contact.id)?,
        };
        email.clone_into(&mut row.email);
        email_normalized.clone_into(&mut row.email_normalized);
        subscriber_hash.clone_into(&mut row.subscriber_hash);
        row.write_date = now;
        self.contacts.insert(contact.email_normalized.clone(), None);
        self.contacts.insert(email_normalized.to_owned(), Some(row));
        Ok(())
    }

    /// Deletes the contact, and with it (by cascade) its subscriptions.
    pub fn delete_contact(
        &mut self,
        conn: &mut DbConnection,
        contact: &ContactRow,
    ) -> StoreResult<()> {
        match &mut self.pending {
            Some(pending) => {
                pending.contacts.remove(&contact.id);
                if !pending.new_contacts.remove(&contact.id) {
                    pending.deleted_contacts.push(contact.id);
                }
            }
            None => contacts::delete(conn, contact.id)?,
        }
        if self.held_contact(contact).is_some() || self.pending.is_some() {
            self.contacts.insert(contact.email_normalized.clone(), None);
        } else {
            self.contacts.remove(&contact.email_normalized);
        }
        self.subscriptions.insert(contact.id, Vec::new());
        Ok(())
    }

    /// Reads every subscription of the contact, unless they are all held already.
    fn hold_subscriptions(&mut self, conn: &mut DbConnection, contact_id: i64) -> StoreResult<()> {
        if let Entry::Vacant(entry) = self.subscriptions.entry(contact_id) {
            entry.insert(subscriptions::of_contacts(conn, &[contact_id])?);
        }
        Ok(())
    }

    pub fn subscription(
        &mut self,
        conn: &mut DbConnection,
        contact_id: i64,
        list_id: i64,
    ) -> StoreResult<Option<SubscriptionRow>> {
        if let Some(held) = self.subscriptions.get(&contact_id) {
            return Ok(held.iter().find(|row| row.list_id == list_id).cloned());
        }
        subscriptions::find(conn, contact_id, list_id)
    }

    /// The subscription Mailchimp knows by this member id on the audience.
    pub fn subscription_by_member_id(
        &mut self,
        conn: &mut DbConnection,
        list_id: i64,
        unique_email_id: &str,
    ) -> StoreResult<Option<SubscriptionRow>> {
        if self.pending.is_some() {
            self.flush(conn)?;
        }
        let found = subscriptions::find_by_member_id(conn, list_id, unique_email_id)?;
        let Some(row) = found else {
            return Ok(None);
        };
        self.hold_subscriptions(conn, row.contact_id)?;
        let held = self.subscriptions[&row.contact_id]
            .iter()
            .find(|held| held.id == row.id);
        Ok(Some(held.cloned().unwrap_or(row)))
    }

    /// How many audiences the contact is on.
    pub fn subscription_count(
        &mut self,
        conn: &mut DbConnection,
        contact_id: i64,
    ) -> StoreResult<i64> {
        match self.subscriptions.get(&contact_id) {
            Some(held) => Ok(held.len() as i64),
            None => subscriptions::count_for_contact(conn, contact_id),
        }
    }

    pub fn insert_subscription(
        &mut self,
        conn: &mut DbConnection,
        contact: &ContactRow,
        list_id: i64,
        state: &MemberState,
        now: NaiveDateTime,
    ) -> StoreResult<SubscriptionRow> {
        let hash = &contact.subscriber_hash;
        let row = match &mut self.pending {
            Some(pending) => {
                let id = pending
                    .subscription_ids
                    .take(conn, "mailing_subscription")?;
                pending.subscriptions.insert(id);
                pending.new_subscriptions.insert(id);
                SubscriptionRow::new(id, contact.id, list_id, hash, state, now)
            }
            None => subscriptions::insert(conn, contact.id, list_id, hash, state, now)?,
        };
        if self.pending.is_some() {
            self.hold_subscriptions(conn, contact.id)?;
        }
        if let Some(held) = self.subscriptions.get_mut(&contact.id) {
            held.push(row.clone());
        }
        Ok(row)
    }

    /// The known row of this subscription, to update in step with the database. It is found
    /// by id: the caller's copy may name a contact the subscription was moved away from.
    fn held_subscription(&mut self, row: &SubscriptionRow) -> Option<&mut SubscriptionRow> {
        let id = row.id;
        let with_its_contact = self
            .subscriptions
            .get(&row.contact_id)
            .is_some_and(|held| held.iter().any(|held| held.id == id));
        let rows = match with_its_contact {
            true => self.subscriptions.get_mut(&row.contact_id)?,
            false => self
                .subscriptions
                .values_mut()
                .find(|held| held.iter().any(|held| held.id == id))?,
        };
        rows.iter_mut().find(|held| held.id == id)
    }

    /// Like [`Known::change_contact`], for a subscription.
    fn change_subscription(
        &mut self,
        conn: &mut DbConnection,
        row: &SubscriptionRow,
        write: impl FnOnce(&mut DbConnection) -> StoreResult<()>,
        change: impl FnOnce(&mut SubscriptionRow),
    ) -> StoreResult<()> {
        let Some(pending) = &mut self.pending else {
            write(conn)?;
            if let Some(held) = self.held_subscription(row) {
                change(held);
            }
            return Ok(());
        };
        pending.subscriptions.insert(row.id);
        self.hold_subscriptions(conn, row.contact_id)?;
        let held = self
            .held_subscription(row)
            .ok_or(StoreError::Untracked("mailing_subscription"))?;
        change(held);
        Ok(())
    }

    pub fn set_state(
        &mut self,
        conn: &mut DbConnection,
        row: &SubscriptionRow,
        state: &MemberState,
        now: NaiveDateTime,
    ) -> StoreResult<()> {
        self.change_subscription(
            conn,
            row,
            |conn| subscriptions::set_state(conn, row.id, state, now),
            |held| held.set_state(state, now),
        )
    }

    pub fn set_hash(
        &mut self,
        conn: &mut DbConnection,
        row: &SubscriptionRow,
        subscriber_hash: &str,
    ) -> StoreResult<()> {
        self.change_subscription(
            conn,
            row,
            |conn| subscriptions::set_hash(conn, row.id, subscriber_hash),
            |held| subscriber_hash.clone_into(&mut held.subscriber_hash),
        )
    }

    /// Moves the subscription to another contact.
    pub fn reassign(
        &mut self,
        conn: &mut DbConnection,
        row: &SubscriptionRow,
        contact_id: i64,
        subscriber_hash: &str,
        now: NaiveDateTime,
    ) -> StoreResult<()> {
        let Some(pending) = &mut self.pending else {
            subscriptions::reassign(conn, row.id, contact_id, subscriber_hash, now)?;
            self.subscriptions.remove(&row.contact_id);
            self.subscriptions.remove(&contact_id);
            return Ok(());
        };
        pending.subscriptions.insert(row.id);
        self.hold_subscriptions(conn, row.contact_id)?;
        self.hold_subscriptions(conn, contact_id)?;
        let from = self.subscriptions.entry(row.contact_id).or_default();
        let mut moved = match from.iter().position(|held| held.id == row.id) {
            Some(at) => from.remove(at),
            None => row.clone(),
        };
        moved.contact_id = contact_id;
        subscriber_hash.clone_into(&mut moved.subscriber_hash);
        moved.write_date = now;
        self.subscriptions
            .entry(contact_id)
            .or_default()
            .push(moved);
        Ok(())
    }

    pub fn delete_subscription(
        &mut self,
        conn: &mut DbConnection,
        row: &SubscriptionRow,
    ) -> StoreResult<()> {
        match &mut self.pending {
            Some(pending) => {
                pending.subscriptions.remove(&row.id);
                if !pending.new_subscriptions.remove(&row.id) {
                    pending.deleted_subscriptions.push(row.id);
                }
            }
            None => subscriptions::delete(conn, row.id)?,
        }
        if let Some(held) = self.subscriptions.get_mut(&row.contact_id) {
            held.retain(|held| held.id != row.id);
        }
        Ok(())
    }

    /// Blacklists the address, reactivating an archived entry, as [`blacklist::add`] does.
    /// Returns whether anything changed.
    pub fn add_to_blacklist(
        &mut self,
        conn: &mut DbConnection,
        email_normalized: &str,
        reason: &str,
        now: NaiveDateTime,
    ) -> StoreResult<bool> {
        let known = self.blacklist.get(email_normalized).copied();
        let Some(pending) = &mut self.pending else {
            let added = blacklist::add(conn, email_normalized, reason, now)?;
            self.blacklist
                .insert(email_normalized.to_owned(), Some(true));
            return Ok(added);
        };
        let active = match known {
            Some(active) => active == Some(true),
            None => blacklist::is_active(conn, email_normalized)?,
        };
        if active {
            return Ok(false);
        }
        pending
            .blacklist
            .push((email_normalized.to_owned(), reason.to_owned(), now));
        self.blacklist
            .insert(email_normalized.to_owned(), Some(true));
        Ok(true)
    }

    /// Notes that the full run saw the subscription; written by [`Known::flush`], with the
    /// row itself when the row is new.
    pub fn mark_seen(&mut self, row: &SubscriptionRow, run_id: i64) {
        let new = self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.new_subscriptions.contains(&row.id));
        if new && let Some(held) = self.held_subscription(row) {
            held.last_fetch_run_id = Some(run_id);
            return;
        }
        self.seen.push((run_id, row.id));
    }

    /// The address's tombstone on the audience, if it left it.
    pub fn tombstone(
        &mut self,
        conn: &mut DbConnection,
        list_id: i64,
        email_normalized: &str,
    ) -> StoreResult<Option<Tombstone>> {
        let key = (list_id, email_normalized.to_owned());
        if let Some(known) = self.tombstones.get(&key) {
            return Ok(known.clone());
        }
        let found = subscriptions::tombstone(conn, list_id, email_normalized)?;
        self.tombstones.insert(key, found.clone());
        Ok(found)
    }

    /// Sets the tombstone, or clears it, now or when flushing.
    fn set_tombstone(
        &mut self,
        conn: &mut DbConnection,
        key: (i64, String),
        tombstone: Option<Tombstone>,
    ) -> StoreResult<()> {
        match (&mut self.pending, &tombstone) {
            (Some(pending), _) => {
                pending.tombstones.insert(key.clone());
            }
            (None, Some(tombstone)) => {
                subscriptions::write_tombstone(conn, key.0, &key.1, tombstone)?
            }
            (None, None) => subscriptions::clear_tombstone(conn, key.0, &key.1)?,
        }
        self.tombstones.insert(key, tombstone);
        Ok(())
    }

    /// Remembers that the address left the audience (the later removal wins).
    pub fn put_tombstone(
        &mut self,
        conn: &mut DbConnection,
        list_id: i64,
        email_normalized: &str,
        tombstone: Tombstone,
    ) -> StoreResult<()> {
        let held = self.tombstone(conn, list_id, email_normalized)?;
        if held.is_some_and(|held| held.removed_at >= tombstone.removed_at) {
            return Ok(());
        }
        let key = (list_id, email_normalized.to_owned());
        self.set_tombstone(conn, key, Some(tombstone))
    }

    pub fn clear_tombstone(
        &mut self,
        conn: &mut DbConnection,
        list_id: i64,
        email_normalized: &str,
    ) -> StoreResult<()> {
        let key = (list_id, email_normalized.to_owned());
        if self.tombstones.get(&key) == Some(&None) {
            return Ok(());
        }
        self.set_tombstone(conn, key, None)
    }
}

fn sorted_by_id<T>(mut rows: Vec<T>, id: impl Fn(&T) -> i64) -> Vec<T> {
    rows.sort_by_key(id);
    rows
}
