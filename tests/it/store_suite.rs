//! The data layer on whichever backend `TEST_DATABASE_URL` names: migrations up, down and
//! up again, and the queries whose rules the rest of the service leans on.

use chrono::{NaiveDate, NaiveDateTime};
use mailchimp_sync::store::accounts::{self, NewAccount};
use mailchimp_sync::store::changes::{self, NewChange};
use mailchimp_sync::store::contacts::{self, ContactRow, NewContact};
use mailchimp_sync::store::lists::{self, ListRow};
use mailchimp_sync::store::subscriptions::Tombstone;
use mailchimp_sync::store::{
    DbConnection, Store, StoreError, blacklist, revert_all_migrations, run_migrations,
    subscriptions, write_transaction,
};

use crate::helpers::{API_KEY, TestDb};

/// A migrated store over a fresh database; the store is dropped before the database.
struct Migrated {
    store: Store,
    _db: TestDb,
}

fn migrated() -> Migrated {
    let db = TestDb::create();
    let store = Store::open(&db.url, 2).expect("the store opens");
    store.migrate().expect("the migrations run");
    Migrated { store, _db: db }
}

/// 2026-04-01 at the given hour and minute.
fn at(hour: u32, minute: u32) -> NaiveDateTime {
    let day = NaiveDate::from_ymd_opt(2026, 4, 1).expect("a date");
    day.and_hms_opt(hour, minute, 0).expect("a time")
}

fn new_contact<'a>(email: &'a str, email_normalized: &'a str) -> NewContact<'a> {
    NewContact {
        name: "Robin Vale",
        first_name: "Robin",
        last_name: "Vale",
        email,
        email_normalized,
        subscriber_hash: "0123456789abcdef0123456789abcdef",
        merge_fields: "{}",
        interests: "[]",
        tags: "[]",
        last_changed: Some(at(9, 0)),
        create_date: at(9, 0),
        write_date: at(9, 0),
    }
}

fn an_audience(conn: &mut DbConnection) -> ListRow {
    let account = NewAccount {
        name: "Acme",
        api_key: API_KEY,
        data_center: "us6",
        api_base_url: None,
        create_date: at(8, 0),
        write_date: at(8, 0),
    };
    let account = accounts::insert(conn, &account).expect("an account");
    lists::get_or_create(conn, account.id, "aa11bb22cc", at(8, 0)).expect("an audience")
}

fn change_of(contact: &ContactRow, kind: &'static str) -> NewChange {
    NewChange {
        contact_id: contact.id,
        email_normalized: contact.email_normalized.clone(),
        list_id: None,
        mailchimp_list_id: None,
        kind,
        status: None,
        opt_out: None,
        create_date: at(10, 0),
    }
}

#[test]
fn migrations_go_up_down_and_up_again() {
    let db = TestDb::create();
    let store = Store::open(&db.url, 2).expect("the store opens");
    let mut conn = store.connection().expect("a connection");
    let up = run_migrations(&mut conn).expect("up");
    assert!(!up.is_empty(), "a fresh database has migrations to run");
    assert_eq!(contacts::count(&mut conn).expect("the tables exist"), 0);
    let mut down = revert_all_migrations(&mut conn).expect("down");
    down.reverse();
    assert_eq!(down, up, "every migration is reverted");
    assert!(
        contacts::count(&mut conn).is_err(),
        "the tables are gone after down"
    );
    assert_eq!(run_migrations(&mut conn).expect("up again"), up);
    assert_eq!(
        contacts::count(&mut conn).expect("the tables exist again"),
        0
    );
    drop(conn);
    assert!(store.migrate().expect("nothing left to run").is_empty());
    assert!(store.is_ready());
}

#[test]
fn contacts_are_unique_on_the_normalized_address() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    contacts::insert(
        &mut conn,
        &new_contact("Robin@Example.com", "robin@example.com"),
    )
    .expect("the first contact");
    let second = contacts::insert(
        &mut conn,
        &new_contact("ROBIN@example.com", "robin@example.com"),
    );
    let error = second.expect_err("a second contact with the same address");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(contacts::count(&mut conn).expect("counted"), 1);
}

#[test]
fn lookups_by_address_find_each_contact_once_whatever_the_list_length() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    let emails: Vec<String> = (0..6).map(|i| format!("member{i}@example.com")).collect();
    for email in &emails {
        contacts::insert(&mut conn, &new_contact(email, email)).expect("a contact");
    }
    let found = |conn: &mut DbConnection, asked: &[&str]| {
        let mut found: Vec<String> = contacts::by_emails(conn, asked)
            .expect("looked up")
            .into_iter()
            .map(|contact| contact.email_normalized)
            .collect();
        found.sort();
        found
    };
    // Lists of every length, padded to a few shapes and run again with other values.
    for length in 1..=emails.len() {
        for start in 0..=emails.len() - length {
            let wanted = &emails[start..start + length];
            let mut asked: Vec<&str> = wanted.iter().map(String::as_str).collect();
            asked.push("nobody@example.com");
            assert_eq!(found(&mut conn, &asked), wanted, "asked {asked:?}");
        }
    }
    // A list longer than one statement takes, the known addresses at both ends.
    let mut long: Vec<String> = (0..1500).map(|i| format!("x{i}@example.com")).collect();
    long.insert(0, emails[0].clone());
    long.push(emails[5].clone());
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    assert_eq!(
        found(&mut conn, &long),
        [emails[0].clone(), emails[5].clone()]
    );
}

#[test]
fn a_tombstone_keeps_the_latest_removal_until_cleared() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    let list = an_audience(&mut conn);
    let email = "left@example.com";
    let held =
        |conn: &mut DbConnection| subscriptions::tombstone(conn, list.id, email).expect("read");
    assert_eq!(held(&mut conn), None);
    let removed = Tombstone::removed(at(10, 0));
    subscriptions::put_tombstone(&mut conn, list.id, email, &removed).expect("put");
    assert_eq!(held(&mut conn), Some(removed.clone()));
    let older = Tombstone {
        removed_at: at(9, 0),
        moved_to: Some("elsewhere@example.com".to_owned()),
    };
    subscriptions::put_tombstone(&mut conn, list.id, email, &older).expect("an older put");
    assert_eq!(
        held(&mut conn),
        Some(removed),
        "an older removal does not win"
    );
    let moved = Tombstone {
        removed_at: at(11, 0),
        moved_to: Some("new@example.com".to_owned()),
    };
    subscriptions::put_tombstone(&mut conn, list.id, email, &moved).expect("a newer put");
    assert_eq!(
        held(&mut conn),
        Some(moved),
        "the newer one, with where it went"
    );
    let other = subscriptions::tombstone(&mut conn, list.id, "stayed@example.com").expect("read");
    assert_eq!(other, None);
    subscriptions::clear_tombstone(&mut conn, list.id, email).expect("cleared");
    assert_eq!(held(&mut conn), None);
}

#[test]
fn tombstones_are_found_at_each_audience_and_address_asked_for() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    let first = an_audience(&mut conn);
    let second = lists::get_or_create(&mut conn, first.account_id, "dd33ee44ff", at(8, 0))
        .expect("a second audience");
    // Many tombstones on the first audience, among which the ones asked for must be found.
    let others: Vec<String> = (0..300).map(|n| format!("gone{n}@example.com")).collect();
    let (nine, ten) = (Tombstone::removed(at(9, 0)), Tombstone::removed(at(10, 0)));
    let moved = Tombstone {
        removed_at: at(11, 0),
        moved_to: Some("c@example.com".to_owned()),
    };
    let mut placed: Vec<(i64, &str, &Tombstone)> = others
        .iter()
        .map(|email| (first.id, email.as_str(), &nine))
        .collect();
    placed.push((first.id, "a@example.com", &ten));
    placed.push((second.id, "b@example.com", &moved));
    subscriptions::put_tombstones(&mut conn, &placed).expect("tombstones");
    let asked = [
        (first.id, "a@example.com"),
        (second.id, "b@example.com"),
        (first.id, "never@example.com"),
        (second.id, others[7].as_str()),
        (first.id, others[299].as_str()),
    ];
    let mut found = subscriptions::tombstones_at(&mut conn, &asked).expect("looked up");
    found.sort();
    // Each found tombstone exists; each asked-for one is found.
    for (list_id, email, tombstone) in &found {
        assert!(
            placed.contains(&(*list_id, email.as_str(), tombstone)),
            "{found:?}"
        );
    }
    let found_at: Vec<(i64, &str)> = found.iter().map(|(l, e, _)| (*l, e.as_str())).collect();
    assert!(found_at.contains(&(first.id, "a@example.com")), "{found:?}");
    assert!(
        found_at.contains(&(second.id, "b@example.com")),
        "{found:?}"
    );
    assert!(
        found_at.contains(&(first.id, others[299].as_str())),
        "{found:?}"
    );
    assert!(!found_at.contains(&(second.id, others[7].as_str())));
    assert!(!found_at.contains(&(first.id, "never@example.com")));
    assert!(
        subscriptions::tombstones_at(&mut conn, &[])
            .expect("none asked")
            .is_empty()
    );
}

#[test]
fn blacklisting_an_archived_address_reactivates_its_row() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    let email = "bounce@example.com";
    assert!(blacklist::add(&mut conn, email, "hard", at(10, 0)).expect("added"));
    assert!(!blacklist::add(&mut conn, email, "hard", at(10, 1)).expect("already there"));
    let first = blacklist::get(&mut conn, email)
        .expect("read")
        .expect("a row");
    let (archived, changed) = blacklist::deactivate(&mut conn, email, at(10, 2))
        .expect("archived")
        .expect("a row");
    assert!(changed && !archived.active);
    assert!(!blacklist::is_active(&mut conn, email).expect("read"));
    assert!(blacklist::add(&mut conn, email, "abuse", at(10, 3)).expect("reactivated"));
    let again = blacklist::get(&mut conn, email)
        .expect("read")
        .expect("a row");
    assert_eq!((again.id, again.active), (first.id, true));
    assert_eq!(again.reason.as_deref(), Some("abuse"));
    let unknown = blacklist::deactivate(&mut conn, "never@example.com", at(10, 4)).expect("read");
    assert!(unknown.is_none());
}

#[test]
fn the_change_feed_sequence_strictly_increases() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    let contact = contacts::insert(
        &mut conn,
        &new_contact("feed@example.com", "feed@example.com"),
    )
    .expect("a contact");
    let kinds = [
        "subscribed",
        "profile_updated",
        "unsubscribed",
        "subscribed",
        "cleaned",
    ];
    for kind in kinds {
        changes::insert_all(&mut conn, &[change_of(&contact, kind)]).expect("inserted");
    }
    let feed = changes::after(&mut conn, 0, 100).expect("read");
    let read: Vec<_> = feed.iter().map(|change| change.kind.as_str()).collect();
    assert_eq!(read, kinds);
    assert!(
        feed.windows(2).all(|pair| pair[0].id < pair[1].id),
        "{feed:?}"
    );
    let last = feed.last().expect("changes").id;
    assert_eq!(changes::last_sequence(&mut conn).expect("read"), last);
    let rest = changes::after(&mut conn, feed[2].id, 100).expect("read");
    assert_eq!(
        rest.iter().map(|change| change.id).collect::<Vec<_>>(),
        [feed[3].id, last]
    );
    let all = changes::after(&mut conn, 0, 100).expect("read");
    assert_eq!(all.iter().filter(|c| c.contact_id == contact.id).count(), 5);
}

#[test]
fn a_failed_write_transaction_leaves_nothing_behind() {
    let db = migrated();
    let mut conn = db.store.connection().expect("a connection");
    let result: Result<(), StoreError> = write_transaction(&mut conn, |conn| {
        contacts::insert(conn, &new_contact("undo@example.com", "undo@example.com"))?;
        Err(StoreError::NotFound)
    });
    assert!(matches!(result, Err(StoreError::NotFound)));
    assert_eq!(contacts::count(&mut conn).expect("counted"), 0);
    let committed = write_transaction(&mut conn, |conn| {
        contacts::insert(conn, &new_contact("kept@example.com", "kept@example.com"))
    });
    committed.expect("committed");
    assert_eq!(contacts::count(&mut conn).expect("counted"), 1);
}

#[test]
fn a_full_fetch_marks_every_member_it_saw_new_or_already_stored() {
    use mailchimp_sync::domain::apply::apply_fetched_page;
    use mailchimp_sync::mailchimp::types::ApiMember;

    let m = migrated();
    let mut conn = m.store.connection().expect("a connection");
    let list = an_audience(&mut conn);
    let member = |email: &str| -> ApiMember {
        serde_json::from_value(serde_json::json!({
            "email_address": email,
            "status": "subscribed",
            "last_changed": "2026-04-01T09:00:00+00:00",
        }))
        .expect("a member")
    };
    let earlier = [member("known@example.org")];
    apply_fetched_page(
        &mut conn,
        m.store.ids(),
        &list,
        &earlier,
        Some(1),
        at(9, 30),
    )
    .expect("first run");
    let page = [
        member("known@example.org"),
        member("new@example.org"),
        member("other@example.org"),
    ];
    apply_fetched_page(&mut conn, m.store.ids(), &list, &page, Some(2), at(10, 0))
        .expect("second run");

    let unseen_by = |conn: &mut DbConnection, run| {
        let rows = subscriptions::unseen(conn, list.id, run, at(23, 0), 500).expect("unseen");
        rows.len()
    };
    assert_eq!(unseen_by(&mut conn, 2), 0, "the second run saw all three");
    assert_eq!(unseen_by(&mut conn, 1), 3, "the first run's mark moved on");
    assert_eq!(unseen_by(&mut conn, 3), 3);
}
