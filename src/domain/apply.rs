//! What each webhook event does to the store. Every function here runs inside the caller's
//! write transaction and either changes the store and says so, or changes nothing.
//!
//! Ordering rule: a subscription remembers the Mailchimp time of the state it holds
//! (`last_changed`); an event fired before that time is stale. A contact's profile has its
//! own time, because profile events from different audiences share one contact. A removed
//! subscription leaves a tombstone with the removal time, so an older event that arrives
//! late cannot bring the member back.

use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use crate::email::EmailIdentity;
use crate::mailchimp::types::ApiMember;
use crate::store::changes::NewChange;
use crate::store::contacts::{self, ContactRow, NewContact, Profile};
use crate::store::known::Known;
use crate::store::lists::ListRow;
use crate::store::subscriptions::{self, MemberState, SubscriptionRow, Tombstone};
use crate::store::{DbConnection, IdPool, StoreResult, changes};
use crate::webhook::event::{Event, MemberData};

/// How many email changes an event follows to find the member's address now.
const MAX_FORWARDS: usize = 8;

/// What a status event for an address the audience does not hold makes of the address's
/// removal after the event was fired.
#[derive(Debug, Clone, Copy)]
enum Moves {
    /// The event is older than the removal: stale. Profiles, cleans (the old address
    /// bounced, not the new one) and fetched members.
    Stop,
    /// The event follows the email changes that moved the member on, to its address now;
    /// stale only if the member left the audience. Subscribes and unsubscribes.
    Follow,
    /// The event has followed them to this address.
    Followed,
}

/// The most a contact's merge fields take, as JSON: what one webhook body may carry. Real
/// audiences stay far below it, even a contact's on several of them together.
pub const MAX_MERGE_FIELDS: usize = 64 * 1024;

/// What became of one webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Unchanged,
    Stale,
    Ignored,
    Rejected,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// The result of applying an event: its outcome and, for some, a note worth keeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    pub note: Option<String>,
}

impl From<Outcome> for Applied {
    fn from(outcome: Outcome) -> Self {
        Applied {
            outcome,
            note: None,
        }
    }
}

/// Applies one event of the account, fired at `fired_at`, at wall-clock time `now`, reading
/// and writing through `known` (see [`Known`]).
pub fn apply(
    conn: &mut DbConnection,
    known: &mut Known,
    account_id: i64,
    fired_at: NaiveDateTime,
    event: &Event,
    now: NaiveDateTime,
) -> StoreResult<Applied> {
    let mut ctx = Ctx {
        conn,
        known,
        account_id,
        fired_at,
        now,
        fetched_tags: None,
        changes: Vec::new(),
    };
    let applied = ctx.dispatch(event)?;
    ctx.commit_changes(applied.outcome)?;
    Ok(applied)
}

/// Applies a page of members as the Marketing API listed them, in order, with the rows they
/// touch looked up once for the page; returns how many changed something.
pub fn apply_fetched_page(
    conn: &mut DbConnection,
    ids: &Arc<IdPool>,
    list: &ListRow,
    members: &[ApiMember],
    seen_by: Option<i64>,
    now: NaiveDateTime,
) -> StoreResult<i64> {
    let emails: Vec<EmailIdentity> = members
        .iter()
        .filter_map(|member| EmailIdentity::parse(&member.email_address))
        .collect();
    let named: Vec<(i64, &str, &str)> = emails
        .iter()
        .map(|e| {
            (
                list.account_id,
                list.mailchimp_list_id.as_str(),
                e.normalized.as_str(),
            )
        })
        .collect();
    let mut known = Known::load(conn, &named)?.with_list(list);
    known.defer_writes(ids);
    let mut written = 0;
    for member in members {
        let outcome = apply_fetched(conn, &mut known, list, member, seen_by, now)?;
        written += i64::from(outcome == Outcome::Applied);
    }
    known.flush(conn)?;
    Ok(written)
}

/// Applies a member as the Marketing API listed it. It only overwrites state that is not
/// newer than the member's `last_changed`. `seen_by` is the full run that saw it.
pub fn apply_fetched(
    conn: &mut DbConnection,
    known: &mut Known,
    list: &ListRow,
    member: &ApiMember,
    seen_by: Option<i64>,
    now: NaiveDateTime,
) -> StoreResult<Outcome> {
    let Some(email) = EmailIdentity::parse(&member.email_address) else {
        return Ok(Outcome::Failed);
    };
    let data = member_data(list, member, email);
    let fired_at = member
        .last_changed
        .unwrap_or(chrono::DateTime::UNIX_EPOCH.naive_utc());
    let tags = member
        .tags
        .iter()
        .map(|tag| tag.name.clone())
        .collect::<Vec<_>>();
    let fetched_tags = Some(Value::from(tags).to_string());
    let account_id = list.account_id;
    let mut ctx = Ctx {
        conn,
        known,
        account_id,
        fired_at,
        now,
        fetched_tags,
        changes: Vec::new(),
    };
    let reason = member.unsubscribe_reason.as_deref();
    let mut applied = ctx.member_event(&data, &member.status, reason, true)?;
    if member.status == "cleaned" {
        applied = ctx.blacklist_cleaned(applied, &data.email, list, "cleaned")?;
    }
    if let Some(run_id) = seen_by {
        ctx.mark_seen(list, &data.email, run_id)?;
    }
    ctx.commit_changes(applied.outcome)?;
    Ok(applied.outcome)
}

/// Removes the subscriptions of the audience that the full run `run_id` did not see and
/// that nothing touched since it started; returns how many.
pub fn remove_unseen(
    conn: &mut DbConnection,
    list: &ListRow,
    run_id: i64,
    started: NaiveDateTime,
    now: NaiveDateTime,
) -> StoreResult<usize> {
    remove_in_batches(conn, list, started, now, |conn| {
        subscriptions::unseen(conn, list.id, run_id, started, 500)
    })
}

/// Removes every subscription of the audience, with a change-feed entry for each contact
/// and the contacts left without any, before the audience itself goes.
pub fn remove_audience_members(
    conn: &mut DbConnection,
    list: &ListRow,
    now: NaiveDateTime,
) -> StoreResult<usize> {
    remove_in_batches(conn, list, now, now, |conn| {
        subscriptions::of_list(conn, list.id, 500)
    })
}

fn remove_in_batches(
    conn: &mut DbConnection,
    list: &ListRow,
    removed_at: NaiveDateTime,
    now: NaiveDateTime,
    next_batch: impl Fn(&mut DbConnection) -> StoreResult<Vec<SubscriptionRow>>,
) -> StoreResult<usize> {
    let mut removed = 0;
    loop {
        let batch = next_batch(conn)?;
        if batch.is_empty() {
            return Ok(removed);
        }
        // Known afresh for each batch, so that memory does not grow with the audience.
        let mut known = Known::new();
        let mut ctx = Ctx {
            conn: &mut *conn,
            known: &mut known,
            account_id: list.account_id,
            fired_at: removed_at,
            now,
            fetched_tags: None,
            changes: Vec::new(),
        };
        for held in &batch {
            let contact = contacts::get(ctx.conn, held.contact_id)?;
            ctx.remove_subscription(&contact, list, held)?;
        }
        changes::insert_all(ctx.conn, &ctx.changes)?;
        removed += batch.len();
    }
}

fn member_data(list: &ListRow, member: &ApiMember, email: EmailIdentity) -> MemberData {
    let mut merge_fields = member.merge_fields.clone();
    merge_fields.remove("EMAIL");
    MemberData {
        list_id: list.mailchimp_list_id.clone(),
        member_id: member.unique_email_id.clone(),
        email,
        email_raw: member.email_address.clone(),
        first_name: member.text_field("FNAME"),
        last_name: member.text_field("LNAME"),
        merge_fields,
        interests: Vec::new(),
    }
}

struct Ctx<'a> {
    conn: &'a mut DbConnection,
    known: &'a mut Known,
    account_id: i64,
    fired_at: NaiveDateTime,
    now: NaiveDateTime,
    /// For a fetched member, its tags (JSON); a webhook carries none, so tags held stay.
    fetched_tags: Option<String>,
    changes: Vec<NewChange>,
}

/// The state a subscribe, unsubscribe or clean leaves the member in.
fn target_state(
    status: &str,
    reason: Option<&str>,
    member_id: Option<&str>,
    fired_at: NaiveDateTime,
) -> MemberState {
    let opt_out = status != "subscribed";
    MemberState {
        status: status.to_owned(),
        opt_out,
        opt_out_datetime: opt_out.then_some(fired_at),
        opt_out_reason: reason.filter(|_| opt_out).map(str::to_owned),
        unique_email_id: member_id.map(str::to_owned),
        last_changed: fired_at,
    }
}

impl Ctx<'_> {
    fn dispatch(&mut self, event: &Event) -> StoreResult<Applied> {
        match event {
            Event::Subscribe(member) => {
                self.member_event_at(member, "subscribed", None, true, Moves::Follow)
            }
            Event::Unsubscribe {
                member,
                delete: true,
                ..
            } => self.delete(member),
            Event::Unsubscribe { member, reason, .. } => {
                let reason = reason.as_deref();
                self.member_event_at(member, "unsubscribed", reason, false, Moves::Follow)
            }
            Event::Profile(member) => self.profile(member),
            Event::EmailChanged {
                list_id,
                new_id,
                old_email,
                new_email,
                new_email_raw,
                ..
            } => self.email_changed(
                list_id,
                new_id.as_deref(),
                old_email,
                new_email,
                new_email_raw,
            ),
            Event::Cleaned {
                list_id,
                email,
                email_raw,
                reason,
                ..
            } => self.cleaned(list_id, email, email_raw, reason.as_deref()),
            Event::Campaign { .. } => Ok(ignored("campaign events are recorded only")),
            Event::Unknown { .. } => Ok(ignored("an event type this service does not handle")),
        }
    }

    fn list(&mut self, mailchimp_list_id: &str) -> StoreResult<ListRow> {
        self.known
            .list(self.conn, self.account_id, mailchimp_list_id, self.now)
    }

    /// The address's tombstone on the audience, when it was left after `since`.
    fn removal_after(
        &mut self,
        list: &ListRow,
        email: &EmailIdentity,
        since: NaiveDateTime,
    ) -> StoreResult<Option<Tombstone>> {
        let tombstone = self
            .known
            .tombstone(self.conn, list.id, &email.normalized)?;
        Ok(tombstone.filter(|removed| removed.removed_at > since))
    }

    /// The address on the audience that an event fired for `email` now concerns. Email
    /// changes made after the event was fired moved the member on, maybe more than once:
    /// the event follows them, each change later than the one that led to the address.
    /// `None` when the member left the audience after the event.
    fn destination(
        &mut self,
        list: &ListRow,
        email: &EmailIdentity,
    ) -> StoreResult<Option<EmailIdentity>> {
        let (mut at, mut since) = (email.clone(), self.fired_at);
        for _ in 0..MAX_FORWARDS {
            let Some(removed) = self.removal_after(list, &at, since)? else {
                return Ok(Some(at));
            };
            let Some(next) = removed.moved_to.as_deref().and_then(EmailIdentity::parse) else {
                return Ok(None);
            };
            (at, since) = (next, removed.removed_at);
        }
        Ok(None)
    }

    /// Subscribe and unsubscribe: the member ends in `status` on the audience.
    fn member_event(
        &mut self,
        member: &MemberData,
        status: &str,
        reason: Option<&str>,
        carries_profile: bool,
    ) -> StoreResult<Applied> {
        self.member_event_at(member, status, reason, carries_profile, Moves::Stop)
    }

    /// [`Self::member_event`], with what an address the audience does not hold makes of
    /// the address's later removal.
    fn member_event_at(
        &mut self,
        member: &MemberData,
        status: &str,
        reason: Option<&str>,
        carries_profile: bool,
        moves: Moves,
    ) -> StoreResult<Applied> {
        let list = self.list(&member.list_id)?;
        let contact = self.known.contact(self.conn, &member.email.normalized)?;
        let held = match &contact {
            Some(contact) => self.known.subscription(self.conn, contact.id, list.id)?,
            None => None,
        };
        // An address the audience does not hold may have been left after the event was
        // fired: for good, or by an email change.
        let left = match (&held, moves) {
            (Some(_), _) | (None, Moves::Followed) => false,
            (None, Moves::Stop) => {
                let fired_at = self.fired_at;
                self.removal_after(&list, &member.email, fired_at)?
                    .is_some()
            }
            (None, Moves::Follow) => match self.destination(&list, &member.email)? {
                None => true,
                Some(to) if to.normalized != member.email.normalized => {
                    // The member's id at the old address would later lead a profile back.
                    let moved = MemberData {
                        email_raw: to.normalized.clone(),
                        email: to,
                        member_id: None,
                        ..member.clone()
                    };
                    let followed = Moves::Followed;
                    return self.member_event_at(&moved, status, reason, carries_profile, followed);
                }
                Some(_) => false,
            },
        };
        let state = target_state(status, reason, member.member_id.as_deref(), self.fired_at);
        let Some(contact) = contact else {
            if left {
                return Ok(Outcome::Stale.into());
            }
            let contact = self.create_contact(member)?;
            return self.create_subscription(&contact, &list, &state, kind_of(status));
        };
        let stale = match &held {
            Some(held) => self.fired_at < held.last_changed,
            None => left,
        };
        if stale {
            // The status is older than the one held, but the profile it carries has its own
            // time and may still be the newest seen (a clean, which carries none, may have
            // overtaken the sign-up).
            if carries_profile && self.update_profile(&contact, member)? {
                self.record(&contact, Some(&list), "profile_updated", None);
                return Ok(Outcome::Applied.into());
            }
            return Ok(Outcome::Stale.into());
        }
        let profile_changed = carries_profile && self.update_profile(&contact, member)?;
        let raw_changed = self.keep_raw_email(&contact, &member.email_raw)?;
        let outcome = self.set_state(&contact, &list, held, state, kind_of(status))?;
        if outcome == Outcome::Unchanged && (profile_changed || raw_changed) {
            self.record(&contact, Some(&list), "profile_updated", None);
            return Ok(Outcome::Applied.into());
        }
        Ok(outcome.into())
    }

    /// Brings an existing contact's subscription to `state`, creating it when missing.
    /// The caller has checked that the event is not stale.
    fn set_state(
        &mut self,
        contact: &ContactRow,
        list: &ListRow,
        held: Option<SubscriptionRow>,
        mut state: MemberState,
        kind: &'static str,
    ) -> StoreResult<Outcome> {
        let Some(held) = held else {
            return Ok(self
                .create_subscription(contact, list, &state, kind)?
                .outcome);
        };
        if state.unique_email_id.is_none() {
            state.unique_email_id = held.unique_email_id.clone();
        }
        if same_status(&held, &state) {
            // Nothing visible changes, but the newer time must be kept: a late event fired
            // between the held state and this echo is still older than the truth.
            self.touch(&held, state.last_changed)?;
            return Ok(Outcome::Unchanged);
        }
        if held.opt_out && state.opt_out {
            state.opt_out_datetime = held.opt_out_datetime;
        }
        self.known.set_state(self.conn, &held, &state, self.now)?;
        self.record(contact, Some(list), kind, Some(&state));
        Ok(Outcome::Applied)
    }

    fn touch(&mut self, held: &SubscriptionRow, last_changed: NaiveDateTime) -> StoreResult<()> {
        if last_changed > held.last_changed {
            let state = MemberState {
                last_changed,
                ..held.state()
            };
            self.known.set_state(self.conn, held, &state, self.now)?;
        }
        Ok(())
    }

    /// The profile a member describes, its merge fields laid over those already held (a
    /// contact on several audiences gathers each audience's fields), up to
    /// [`MAX_MERGE_FIELDS`]: past it, the member's own fields replace the held ones, so that
    /// events each naming fields never seen before cannot grow a contact without end.
    fn profile_of(&self, member: &MemberData, held: Held<'_>) -> Profile {
        let mut fields = held.merge_fields;
        fields.extend(
            member
                .merge_fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut merge_fields = Value::Object(fields).to_string();
        if merge_fields.len() > MAX_MERGE_FIELDS {
            merge_fields = Value::Object(member.merge_fields.clone()).to_string();
        }
        let interests = match self.fetched_tags {
            Some(_) => held.interests.to_owned(),
            None => Value::from(member.interests.clone()).to_string(),
        };
        Profile {
            name: member.full_name(),
            first_name: member.first_name.clone(),
            last_name: member.last_name.clone(),
            merge_fields,
            interests,
            tags: self
                .fetched_tags
                .clone()
                .unwrap_or_else(|| held.tags.to_owned()),
            last_changed: Some(self.fired_at),
        }
    }

    fn create_contact(&mut self, member: &MemberData) -> StoreResult<ContactRow> {
        let profile = self.profile_of(member, Held::nothing());
        // An event that carries no profile (a clean) gives the contact no profile time, so
        // that the profile of an older event still on its way is taken when it arrives.
        let says_nothing = member.first_name.is_empty()
            && member.last_name.is_empty()
            && member.merge_fields.is_empty();
        let new = NewContact {
            name: &profile.name,
            first_name: &profile.first_name,
            last_name: &profile.last_name,
            email: &member.email_raw,
            email_normalized: &member.email.normalized,
            subscriber_hash: &member.email.subscriber_hash,
            merge_fields: &profile.merge_fields,
            interests: &profile.interests,
            tags: &profile.tags,
            last_changed: (!says_nothing).then_some(self.fired_at),
            create_date: self.now,
            write_date: self.now,
        };
        self.known.insert_contact(self.conn, &new)
    }

    fn create_subscription(
        &mut self,
        contact: &ContactRow,
        list: &ListRow,
        state: &MemberState,
        kind: &'static str,
    ) -> StoreResult<Applied> {
        self.known
            .insert_subscription(self.conn, contact, list.id, state, self.now)?;
        self.known
            .clear_tombstone(self.conn, list.id, &contact.email_normalized)?;
        self.record(contact, Some(list), kind, Some(state));
        Ok(Outcome::Applied.into())
    }

    /// Writes the event's name and merge fields when they are not older than those held.
    fn update_profile(&mut self, contact: &ContactRow, member: &MemberData) -> StoreResult<bool> {
        if contact
            .last_changed
            .is_some_and(|held| held > self.fired_at)
        {
            return Ok(false);
        }
        let profile = self.profile_of(member, Held::of(contact));
        let unchanged = Profile {
            last_changed: profile.last_changed,
            ..contact.profile()
        };
        if profile == unchanged {
            if contact.last_changed != profile.last_changed {
                self.known
                    .set_profile(self.conn, contact, &profile, self.now)?;
            }
            return Ok(false);
        }
        self.known
            .set_profile(self.conn, contact, &profile, self.now)?;
        Ok(true)
    }

    fn keep_raw_email(&mut self, contact: &ContactRow, raw: &str) -> StoreResult<bool> {
        if contact.email == raw {
            return Ok(false);
        }
        self.known.set_raw_email(self.conn, contact, raw)?;
        Ok(true)
    }

    /// `unsubscribe` with `action=delete`: the member left the audience for good.
    fn delete(&mut self, member: &MemberData) -> StoreResult<Applied> {
        let list = self.list(&member.list_id)?;
        let email = &member.email.normalized;
        let contact = self.known.contact(self.conn, email)?;
        let held = match &contact {
            Some(contact) => self.known.subscription(self.conn, contact.id, list.id)?,
            None => None,
        };
        let (Some(contact), Some(held)) = (contact, held) else {
            self.known.put_tombstone(
                self.conn,
                list.id,
                email,
                Tombstone::removed(self.fired_at),
            )?;
            return Ok(Outcome::Unchanged.into());
        };
        if self.fired_at < held.last_changed {
            return Ok(Outcome::Stale.into());
        }
        self.remove_subscription(&contact, &list, &held)?;
        Ok(Outcome::Applied.into())
    }

    /// Removes the subscription, and the contact with it when it was the last one.
    fn remove_subscription(
        &mut self,
        contact: &ContactRow,
        list: &ListRow,
        held: &SubscriptionRow,
    ) -> StoreResult<()> {
        self.known.delete_subscription(self.conn, held)?;
        self.known.put_tombstone(
            self.conn,
            list.id,
            &contact.email_normalized,
            Tombstone::removed(self.fired_at),
        )?;
        if self.known.subscription_count(self.conn, contact.id)? == 0 {
            self.known.delete_contact(self.conn, contact)?;
            self.record(contact, Some(list), "contact_removed", None);
        } else {
            self.record(contact, Some(list), "subscription_removed", None);
        }
        Ok(())
    }

    /// `profile`: new name, merge fields, and possibly a new address.
    fn profile(&mut self, member: &MemberData) -> StoreResult<Applied> {
        let list = self.list(&member.list_id)?;
        let by_email = self.known.contact(self.conn, &member.email.normalized)?;
        if let Some(contact) = by_email {
            return self.profile_of_known(&contact, &list, member);
        }
        let moved = match &member.member_id {
            Some(id) => self
                .known
                .subscription_by_member_id(self.conn, list.id, id)?,
            None => None,
        };
        match moved {
            Some(held) if self.fired_at < held.last_changed => Ok(Outcome::Stale.into()),
            Some(held) => {
                let from = self.known.contact_by_id(self.conn, held.contact_id)?;
                let to = self.move_subscription(
                    &from,
                    &list,
                    &held,
                    member.email.clone(),
                    &member.email_raw,
                )?;
                self.update_profile(&to, member)?;
                Ok(Outcome::Applied.into())
            }
            None => self.member_from_profile(member, &list),
        }
    }

    /// A profile of a member the store does not hold on the audience. The member is on it,
    /// so the store mirrors it as subscribed until an event or a fetch says otherwise; but
    /// the profile tells no status, so the subscription claims no status time (the time the
    /// address last left the audience, or none), and every status event still applies.
    fn member_from_profile(&mut self, member: &MemberData, list: &ListRow) -> StoreResult<Applied> {
        let left = self
            .known
            .tombstone(self.conn, list.id, &member.email.normalized)?;
        let applied = self.member_event(member, "subscribed", None, true)?;
        if applied.outcome != Outcome::Applied {
            return Ok(applied);
        }
        let contact = self.known.contact(self.conn, &member.email.normalized)?;
        let created = match &contact {
            Some(contact) => self.known.subscription(self.conn, contact.id, list.id)?,
            None => None,
        };
        if let Some(held) = created {
            let unknown = chrono::DateTime::UNIX_EPOCH.naive_utc();
            let state = MemberState {
                last_changed: left.map_or(unknown, |left| left.removed_at),
                ..held.state()
            };
            self.known.set_state(self.conn, &held, &state, self.now)?;
        }
        Ok(applied)
    }

    fn profile_of_known(
        &mut self,
        contact: &ContactRow,
        list: &ListRow,
        member: &MemberData,
    ) -> StoreResult<Applied> {
        let held = self.known.subscription(self.conn, contact.id, list.id)?;
        let Some(held) = held else {
            return self.member_from_profile(member, list);
        };
        // A profile says nothing about the status: it is ordered against the profile's own
        // time only, and leaves the status's time alone, so that an older status change
        // still on its way is applied when it arrives.
        let older = contact.last_changed.is_some_and(|at| self.fired_at < at);
        let changed = self.update_profile(contact, member)?
            | self.keep_raw_email(contact, &member.email_raw)?;
        if !changed {
            let outcome = if older {
                Outcome::Stale
            } else {
                Outcome::Unchanged
            };
            return Ok(outcome.into());
        }
        self.record(contact, Some(list), "profile_updated", Some(&held.state()));
        Ok(Outcome::Applied.into())
    }

    /// `upemail`: the member of this audience now has another address.
    fn email_changed(
        &mut self,
        list_id: &str,
        new_id: Option<&str>,
        old: &EmailIdentity,
        new: &EmailIdentity,
        new_raw: &str,
    ) -> StoreResult<Applied> {
        let list = self.list(list_id)?;
        let from = self.known.contact(self.conn, &old.normalized)?;
        let held = match &from {
            Some(contact) => self.known.subscription(self.conn, contact.id, list.id)?,
            None => None,
        };
        let (Some(from), Some(mut held)) = (from, held) else {
            // The old address left the audience now, even if the event that put it there is
            // still on its way: that event, older, goes to the new address instead.
            let moved = Tombstone {
                removed_at: self.fired_at,
                moved_to: Some(new.normalized.clone()),
            };
            self.known
                .put_tombstone(self.conn, list.id, &old.normalized, moved)?;
            let note = "the old address is not on this audience in the store";
            return Ok(Applied {
                outcome: Outcome::Unchanged,
                note: Some(note.into()),
            });
        };
        if self.fired_at < held.last_changed {
            return Ok(Outcome::Stale.into());
        }
        if old.normalized == new.normalized {
            return self.respell(&from, &list, &held, new_id, new_raw);
        }
        let Some(to) = self.destination(&list, new)? else {
            // The new address has left the audience since: the member is gone from both.
            self.remove_subscription(&from, &list, &held)?;
            return Ok(Outcome::Applied.into());
        };
        if to.normalized == old.normalized {
            // A later change took the member back to the old address.
            return Ok(Outcome::Stale.into());
        }
        // A later change may already have moved the member on from the new address; the
        // member's id and spelling there are then not the ones this change gave it.
        let to_raw = if to.normalized == new.normalized {
            held.unique_email_id = new_id.map(str::to_owned).or(held.unique_email_id);
            new_raw.to_owned()
        } else {
            to.normalized.clone()
        };
        self.move_subscription(&from, &list, &held, to, &to_raw)?;
        Ok(Outcome::Applied.into())
    }

    /// An email change to the same address once normalized (say, only its case changed):
    /// the member stays where it is, with the address as now spelled.
    fn respell(
        &mut self,
        contact: &ContactRow,
        list: &ListRow,
        held: &SubscriptionRow,
        new_id: Option<&str>,
        new_raw: &str,
    ) -> StoreResult<Applied> {
        let mut state = MemberState {
            last_changed: self.fired_at,
            ..held.state()
        };
        if let Some(new_id) = new_id {
            state.unique_email_id = Some(new_id.to_owned());
        }
        self.known.set_state(self.conn, held, &state, self.now)?;
        if !self.keep_raw_email(contact, new_raw)? {
            return Ok(Outcome::Unchanged.into());
        }
        self.record(contact, Some(list), "email_changed", Some(&state));
        Ok(Outcome::Applied.into())
    }

    /// Moves one audience's subscription from `from` to the contact holding `to`, renaming
    /// `from` in place when it has nothing else and the address is new to the store, and
    /// merging into the existing contact otherwise. Returns the contact now holding it.
    fn move_subscription(
        &mut self,
        from: &ContactRow,
        list: &ListRow,
        held: &SubscriptionRow,
        to: EmailIdentity,
        to_raw: &str,
    ) -> StoreResult<ContactRow> {
        let existing = self.known.contact(self.conn, &to.normalized)?;
        let only_one = self.known.subscription_count(self.conn, from.id)? == 1;
        let state = MemberState {
            last_changed: self.fired_at,
            ..held.state()
        };
        let moved = Tombstone {
            removed_at: self.fired_at,
            moved_to: Some(to.normalized.clone()),
        };
        self.known
            .put_tombstone(self.conn, list.id, &from.email_normalized, moved)?;
        self.known
            .clear_tombstone(self.conn, list.id, &to.normalized)?;
        if existing.is_none() && only_one {
            let now = self.now;
            self.known.set_email(
                self.conn,
                from,
                to_raw,
                &to.normalized,
                &to.subscriber_hash,
                now,
            )?;
            self.known.set_hash(self.conn, held, &to.subscriber_hash)?;
            self.known.set_state(self.conn, held, &state, now)?;
            let moved = self.known.contact_by_id(self.conn, from.id)?;
            self.record(&moved, Some(list), "email_changed", Some(&state));
            return Ok(moved);
        }
        let target = match existing {
            Some(contact) => contact,
            None => self.copy_contact(from, &to, to_raw)?,
        };
        let state = self.merge_subscription(&target, list, held, &state)?;
        if self.known.subscription_count(self.conn, from.id)? == 0 {
            self.known.delete_contact(self.conn, from)?;
            self.record(from, Some(list), "contact_removed", None);
        } else {
            self.record(from, Some(list), "subscription_removed", None);
        }
        self.record(&target, Some(list), "email_changed", Some(&state));
        Ok(target)
    }

    /// Gives `target` the moved subscription; when it already has one on the audience, the
    /// newer of the two states wins. Returns the state `target` now holds there.
    fn merge_subscription(
        &mut self,
        target: &ContactRow,
        list: &ListRow,
        held: &SubscriptionRow,
        state: &MemberState,
    ) -> StoreResult<MemberState> {
        match self.known.subscription(self.conn, target.id, list.id)? {
            Some(theirs) => {
                self.known.delete_subscription(self.conn, held)?;
                if theirs.last_changed > state.last_changed {
                    return Ok(theirs.state());
                }
                self.known.set_state(self.conn, &theirs, state, self.now)?;
            }
            None => {
                let hash = &target.subscriber_hash;
                self.known
                    .reassign(self.conn, held, target.id, hash, self.now)?;
                self.known.set_state(self.conn, held, state, self.now)?;
            }
        }
        Ok(state.clone())
    }

    fn copy_contact(
        &mut self,
        from: &ContactRow,
        to: &EmailIdentity,
        to_raw: &str,
    ) -> StoreResult<ContactRow> {
        let new = NewContact {
            name: &from.name,
            first_name: &from.first_name,
            last_name: &from.last_name,
            email: to_raw,
            email_normalized: &to.normalized,
            subscriber_hash: &to.subscriber_hash,
            merge_fields: &from.merge_fields,
            interests: &from.interests,
            tags: &from.tags,
            last_changed: from.last_changed,
            create_date: self.now,
            write_date: self.now,
        };
        self.known.insert_contact(self.conn, &new)
    }

    /// `cleaned`: the address bounced hard or complained; it is blacklisted everywhere and
    /// opted out of this audience.
    fn cleaned(
        &mut self,
        list_id: &str,
        email: &EmailIdentity,
        email_raw: &str,
        reason: Option<&str>,
    ) -> StoreResult<Applied> {
        let member = MemberData {
            list_id: list_id.to_owned(),
            member_id: None,
            email: email.clone(),
            email_raw: email_raw.to_owned(),
            first_name: String::new(),
            last_name: String::new(),
            merge_fields: Map::new(),
            interests: Vec::new(),
        };
        let applied = self.member_event(&member, "cleaned", reason.or(Some("cleaned")), false)?;
        let list = self.list(list_id)?;
        self.blacklist_cleaned(applied, email, &list, reason.unwrap_or("unknown reason"))
    }

    /// Blacklists a cleaned address unless the clean was stale; a clean that only
    /// reactivates the blacklist entry is still a change.
    fn blacklist_cleaned(
        &mut self,
        applied: Applied,
        email: &EmailIdentity,
        list: &ListRow,
        reason: &str,
    ) -> StoreResult<Applied> {
        if applied.outcome == Outcome::Stale {
            return Ok(applied);
        }
        let reason = format!("cleaned by Mailchimp ({reason})");
        let listed =
            self.known
                .add_to_blacklist(self.conn, &email.normalized, &reason, self.now)?;
        if !listed || applied.outcome == Outcome::Applied {
            return Ok(applied);
        }
        if let Some(contact) = self.known.contact(self.conn, &email.normalized)? {
            self.record(&contact, Some(list), "blacklisted", None);
        }
        Ok(Outcome::Applied.into())
    }

    fn mark_seen(&mut self, list: &ListRow, email: &EmailIdentity, run_id: i64) -> StoreResult<()> {
        let Some(contact) = self.known.contact(self.conn, &email.normalized)? else {
            return Ok(());
        };
        if let Some(held) = self.known.subscription(self.conn, contact.id, list.id)? {
            self.known.mark_seen(&held, run_id);
        }
        Ok(())
    }

    fn commit_changes(&mut self, outcome: Outcome) -> StoreResult<()> {
        if outcome == Outcome::Applied {
            self.known.record_changes(self.conn, &self.changes)?;
        }
        Ok(())
    }

    /// Adds a change-feed entry; one per contact per event, the last word winning.
    fn record(
        &mut self,
        contact: &ContactRow,
        list: Option<&ListRow>,
        kind: &'static str,
        state: Option<&MemberState>,
    ) {
        self.changes
            .retain(|change| change.contact_id != contact.id);
        self.changes.push(NewChange {
            contact_id: contact.id,
            email_normalized: contact.email_normalized.clone(),
            list_id: list.map(|list| list.id),
            mailchimp_list_id: list.map(|list| list.mailchimp_list_id.clone()),
            kind,
            status: state.map(|state| state.status.clone()),
            opt_out: state.map(|state| state.opt_out),
            create_date: self.now,
        });
    }
}

fn ignored(note: &str) -> Applied {
    Applied {
        outcome: Outcome::Ignored,
        note: Some(note.to_owned()),
    }
}

fn kind_of(status: &str) -> &'static str {
    match status {
        "subscribed" => "subscribed",
        "unsubscribed" => "unsubscribed",
        "cleaned" => "cleaned",
        _ => "status_changed",
    }
}

fn same_status(held: &SubscriptionRow, state: &MemberState) -> bool {
    held.status == state.status
        && held.opt_out == state.opt_out
        && (held.opt_out_reason == state.opt_out_reason || !state.opt_out)
        && held.unique_email_id == state.unique_email_id
}

fn parse_object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// What a profile keeps when the event does not say: interests (the API lists interest
/// ids, not the group names webhooks carry) and tags (webhooks carry none).
struct Held<'a> {
    merge_fields: Map<String, Value>,
    interests: &'a str,
    tags: &'a str,
}

impl Held<'_> {
    fn nothing() -> Held<'static> {
        Held {
            merge_fields: Map::new(),
            interests: "[]",
            tags: "[]",
        }
    }

    fn of(contact: &ContactRow) -> Held<'_> {
        let merge_fields = parse_object(&contact.merge_fields);
        Held {
            merge_fields,
            interests: &contact.interests,
            tags: &contact.tags,
        }
    }
}
