//! The webhook endpoint beyond the shared fixtures: tokens, limits, ordering, address
//! changes, the blacklist, hostile bodies and replay.

use mailchimp_sync::grpc::pb;
use mailchimp_sync::store::accounts;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::bodies::{self, Form, LIST_A, LIST_B};
use crate::helpers::{TestApp, expect_error, with_token};

const T1: &str = "2026-04-01 10:00:00";
const T2: &str = "2026-04-01 10:05:00";
const T3: &str = "2026-04-01 10:10:00";

/// Posts the body and returns the outcome stored for it.
async fn post_and_outcome(app: &TestApp, account_id: i64, url: &str, body: &Form) -> String {
    let (status, text) = app.post_webhook(url, body.encode()).await;
    assert_eq!(status, 200, "answer {text:?} to {}", body.encode());
    app.latest_event(account_id).await.outcome
}

fn statuses(contact: &pb::Contact) -> Vec<(String, String, bool)> {
    let mut subs: Vec<_> = contact
        .subscriptions
        .iter()
        .map(|sub| {
            (
                sub.mailchimp_list_id.clone(),
                sub.status.clone(),
                sub.opt_out,
            )
        })
        .collect();
    subs.sort();
    subs
}

fn subscribed(list_id: &str) -> (String, String, bool) {
    (list_id.to_owned(), "subscribed".to_owned(), false)
}

async fn assert_absent(app: &TestApp, email: &str) {
    let status = expect_error(app.get_contact(email).await);
    assert_eq!(
        status.code(),
        tonic::Code::NotFound,
        "{email} must be absent: {status}"
    );
}

#[tokio::test]
async fn get_with_a_valid_token_answers_200_with_an_empty_body() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    assert_eq!(app.get(&url).await, (200, String::new()));
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_tokens_answer_404_and_reveal_nothing() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    let token = url.rsplit('/').next().expect("a token").to_owned();
    let same_length = "A".repeat(token.len());
    let tokens = [
        same_length.as_str(),
        "abc",
        &"b".repeat(100),
        &"c".repeat(300),
        "tok%21en%24",
        "%00",
        "a%20b",
        "%F0%9F%98%80",
        "..%2F..%2Fhealthz",
    ];
    let body = bodies::subscribe(LIST_A, "probe@example.com", T1).encode();
    let mut answers = Vec::new();
    for token in tokens {
        let unknown = with_token(&url, token);
        let (get_status, get_text) = app.get(&unknown).await;
        let (post_status, post_text) = app.post_webhook(&unknown, body.clone()).await;
        assert_eq!((get_status, post_status), (404, 404), "token {token:?}");
        assert!(
            !post_text.contains(token),
            "the answer echoes token {token:?}"
        );
        answers.extend([get_text, post_text]);
    }
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "answers differ between unknown tokens: {answers:?}"
    );
    assert_absent(&app, "probe@example.com").await;
    app.shutdown().await;
}

/// An account deleted while its token is still remembered: its next webhook cannot be
/// stored and is answered 404, and a webhook of another account arriving with it is stored
/// and answered 200, not failed with it.
#[tokio::test]
async fn a_webhook_of_an_account_deleted_meanwhile_fails_alone() {
    let app = TestApp::spawn().await;
    let (gone, gone_url) = app.create_account().await;
    let (kept, kept_url) = app.create_account().await;
    let first = bodies::subscribe(LIST_A, "first@example.com", T1).encode();
    assert_eq!(app.post_webhook(&gone_url, first).await.0, 200);
    // Behind the service's back, so that the token stays remembered for a moment.
    let store = app.state().store.clone();
    store
        .write(move |conn| accounts::delete(conn, gone))
        .await
        .expect("deleted");

    let late = bodies::subscribe(LIST_A, "late@example.com", T2).encode();
    let neighbour = bodies::subscribe(LIST_B, "neighbour@example.com", T2).encode();
    let (late, neighbour) = tokio::join!(
        app.post_webhook(&gone_url, late),
        app.post_webhook(&kept_url, neighbour)
    );
    assert_eq!(late.0, 404, "{late:?}");
    assert_eq!(neighbour.0, 200, "{neighbour:?}");
    assert_eq!(app.latest_event(kept).await.outcome, "applied");
    assert!(app.get_contact("neighbour@example.com").await.is_ok());
    assert_absent(&app, "late@example.com").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_rotated_token_stops_working_and_the_new_one_works() {
    let app = TestApp::spawn().await;
    let (account_id, old_url) = app.create_account().await;
    let new_url = app.generate_webhook_url(account_id).await;
    assert_ne!(old_url, new_url);
    let body = bodies::subscribe(LIST_A, "rotate@example.com", T1).encode();
    assert_eq!(app.get(&old_url).await.0, 404);
    assert_eq!(app.post_webhook(&old_url, body.clone()).await.0, 404);
    assert_eq!(app.get(&new_url).await.0, 200);
    assert_eq!(app.post_webhook(&new_url, body).await.0, 200);
    app.shutdown().await;
}

/// A subscribe body padded with a filler field to exactly `size` bytes.
fn padded_body(size: usize) -> String {
    let mut body = bodies::subscribe(LIST_A, "big@example.com", T1).encode();
    body.push_str("&pad=");
    let fill = size
        .checked_sub(body.len())
        .expect("a size above the base body");
    body.push_str(&"x".repeat(fill));
    body
}

#[tokio::test]
async fn bodies_over_64_kib_answer_413_and_64_kib_is_accepted() {
    let app = TestApp::spawn().await;
    let (_, url) = app.create_account().await;
    let (status, _) = app.post_webhook(&url, padded_body(64 * 1024 + 1)).await;
    assert_eq!(status, 413);
    let (status, text) = app.post_webhook(&url, padded_body(64 * 1024)).await;
    assert_eq!(status, 200, "{text}");
    app.get_contact("big@example.com")
        .await
        .expect("the 64 KiB event was applied");
    app.shutdown().await;
}

#[tokio::test]
async fn an_inactive_webhook_changes_nothing_even_replayed_until_active_again() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let update = pb::UpdateAccountRequest {
        id: account_id,
        webhook_active: Some(false),
        ..Default::default()
    };
    let account = app
        .accounts()
        .update_account(update)
        .await
        .expect("updated")
        .into_inner();
    assert!(!account.webhook_active);
    let body = bodies::subscribe(LIST_A, "inactive@example.com", T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &body).await,
        "ignored"
    );
    assert_absent(&app, "inactive@example.com").await;
    assert!(app.all_changes().await.is_empty());

    let ignored = app.latest_event(account_id).await;
    let request = pb::ReplayWebhookEventRequest { id: ignored.id };
    let replayed = app.events().replay_webhook_event(request).await;
    let replayed = replayed.expect("replayed").into_inner();
    assert_eq!(replayed.outcome, "ignored", "still inactive: {replayed:?}");
    assert_absent(&app, "inactive@example.com").await;

    let update = pb::UpdateAccountRequest {
        id: account_id,
        webhook_active: Some(true),
        ..Default::default()
    };
    app.accounts()
        .update_account(update)
        .await
        .expect("updated");
    let request = pb::ReplayWebhookEventRequest { id: ignored.id };
    let replayed = app.events().replay_webhook_event(request).await;
    let replayed = replayed.expect("replayed").into_inner();
    assert_eq!(replayed.outcome, "applied", "active again: {replayed:?}");
    assert!(app.get_contact("inactive@example.com").await.is_ok());
    app.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_delivery_is_unchanged_and_adds_no_change() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let body = bodies::subscribe(LIST_A, "twice@example.com", T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &body).await,
        "applied"
    );
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &body).await,
        "unchanged"
    );
    assert_eq!(app.changes_for("twice@example.com").await, 1);
    let contact = app.get_contact("twice@example.com").await.expect("created");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    app.shutdown().await;
}

/// Truth: subscribed at T1, unsubscribed at T2, subscribed again at T3. The T2 event
/// arrives last; the T3 state (an echo of T1's) must win.
#[tokio::test]
async fn a_late_unsubscribe_older_than_a_resubscribe_echo_is_stale() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "triple@example.com";
    let post = |body: Form| {
        let (app, url) = (&app, &url);
        async move { post_and_outcome(app, account_id, url, &body).await }
    };
    assert_eq!(post(bodies::subscribe(LIST_A, email, T1)).await, "applied");
    assert_eq!(
        post(bodies::subscribe(LIST_A, email, T3)).await,
        "unchanged"
    );
    assert_eq!(post(bodies::unsubscribe(LIST_A, email, T2)).await, "stale");
    let contact = app.get_contact(email).await.expect("kept");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    assert_eq!(app.changes_for(email).await, 1);
    app.shutdown().await;
}

/// A profile edit says nothing about the status: a clean fired before it, arriving after
/// it, still cleans.
/// Profile edits that each name merge fields never seen before: a contact gathers fields
/// up to a bound, then takes the latest event's own fields, and the events keep applying.
#[tokio::test]
async fn merge_fields_never_seen_before_cannot_grow_a_contact_without_end() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "wide@example.com";
    let subscribe = bodies::subscribe(LIST_A, email, T1).encode();
    assert_eq!(app.post_webhook(&url, subscribe).await.0, 200);
    // Each edit carries 1,500 new fields, about half the bound as JSON.
    let value = "v".repeat(8);
    for round in 0..8 {
        let at = format!("2026-04-01 11:00:{round:02}");
        let mut profile = bodies::profile(LIST_A, email, &at);
        for n in 0..1_500 {
            profile = profile.with(&format!("data[merges][R{round}F{n}]"), &value);
        }
        let body = profile.encode();
        assert!(body.len() < 64 * 1024, "each body is within the limit");
        assert_eq!(app.post_webhook(&url, body).await.0, 200);
        assert_eq!(app.latest_event(account_id).await.outcome, "applied");
    }
    let contact = app.get_contact(email).await.expect("the contact");
    let fields = contact.merge_fields.expect("merge fields").fields;
    let size: usize = fields.keys().map(|k| k.len() + value.len() + 6).sum();
    assert!(
        size <= mailchimp_sync::domain::apply::MAX_MERGE_FIELDS,
        "{size} bytes"
    );
    assert!(fields.contains_key("R7F0") && fields.contains_key("R7F1499"));
    assert!(!fields.contains_key("R0F0"), "{} fields", fields.len());
    assert_eq!(contact.subscriptions[0].status, "subscribed");
    app.shutdown().await;
}

#[tokio::test]
async fn a_late_clean_older_than_a_profile_edit_still_cleans() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "bounced@example.com";
    post_and_outcome(
        &app,
        account_id,
        &url,
        &bodies::subscribe(LIST_A, email, T1),
    )
    .await;
    let profile = bodies::profile(LIST_A, email, T3).with("data[merges][FNAME]", "Robyn");
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &profile).await,
        "applied"
    );

    let cleaned = bodies::cleaned(LIST_A, email, T2);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &cleaned).await,
        "applied"
    );
    let contact = app.get_contact(email).await.expect("kept");
    assert_eq!(
        statuses(&contact),
        [(LIST_A.to_owned(), "cleaned".to_owned(), true)]
    );
    assert!(contact.is_blacklisted);
    assert_eq!(contact.first_name, "Robyn", "the newer profile stays");
    app.shutdown().await;
}

/// A clean carries no name: the sign-up it overtook still brings one.
#[tokio::test]
async fn a_late_sign_up_older_than_a_clean_still_brings_the_name() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "overtaken@example.com";
    let cleaned = bodies::cleaned(LIST_A, email, T2);
    post_and_outcome(&app, account_id, &url, &cleaned).await;

    let sign_up = bodies::subscribe(LIST_A, email, T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &sign_up).await,
        "applied"
    );
    let contact = app.get_contact(email).await.expect("kept");
    assert_eq!(contact.name, "Robin Vale");
    assert_eq!(
        statuses(&contact),
        [(LIST_A.to_owned(), "cleaned".to_owned(), true)],
        "the status stays the newer one"
    );
    assert!(contact.is_blacklisted);
    app.shutdown().await;
}

/// A profile tells no status: the unsubscribe it overtook still applies.
#[tokio::test]
async fn a_late_unsubscribe_older_than_the_first_profile_seen_still_applies() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "profile.first@example.com";
    let profile = bodies::profile(LIST_A, email, T3);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &profile).await,
        "applied"
    );

    let unsubscribe = bodies::unsubscribe(LIST_A, email, T2);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &unsubscribe).await,
        "applied"
    );
    let contact = app.get_contact(email).await.expect("kept");
    assert_eq!(
        statuses(&contact),
        [(LIST_A.to_owned(), "unsubscribed".to_owned(), true)]
    );
    assert_eq!(contact.first_name, "Robin", "the profile stays");
    let stale = bodies::subscribe(LIST_A, email, T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &stale).await,
        "stale"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_late_subscribe_older_than_a_delete_leaves_the_contact_absent() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "gone@example.com";
    let subscribe = bodies::subscribe(LIST_A, email, T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &subscribe).await,
        "applied"
    );
    let delete = bodies::delete(LIST_A, email, T3);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &delete).await,
        "applied"
    );
    let late = bodies::subscribe(LIST_A, email, T2);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &late).await,
        "stale"
    );
    assert_absent(&app, email).await;
    assert!(app.all_contacts().await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_subscribe_newer_than_a_delete_brings_the_member_back() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "back@example.com";
    let delete = bodies::delete(LIST_A, email, T2);
    post_and_outcome(
        &app,
        account_id,
        &url,
        &bodies::subscribe(LIST_A, email, T1),
    )
    .await;
    post_and_outcome(&app, account_id, &url, &delete).await;
    let again = bodies::subscribe(LIST_A, email, T3);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &again).await,
        "applied"
    );
    let contact = app.get_contact(email).await.expect("back");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    app.shutdown().await;
}

/// Mailchimp may send the `profile` carrying the new address before the `upemail`.
#[tokio::test]
async fn an_email_change_after_a_profile_with_the_new_address_leaves_one_contact() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let (old, new) = ("first.addr@example.com", "second.addr@example.com");
    post_and_outcome(&app, account_id, &url, &bodies::subscribe(LIST_A, old, T1)).await;
    let profile = bodies::profile(LIST_A, new, T2).with("data[id]", &bodies::member_id(old));
    post_and_outcome(&app, account_id, &url, &profile).await;
    let upemail = bodies::upemail(LIST_A, old, new, T2);
    let outcome = post_and_outcome(&app, account_id, &url, &upemail).await;
    assert!(
        ["applied", "unchanged"].contains(&outcome.as_str()),
        "upemail was {outcome}"
    );
    let contact = app
        .get_contact(new)
        .await
        .expect("the contact has the new address");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    assert_absent(&app, old).await;
    assert_eq!(app.all_contacts().await.len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_email_change_that_only_changes_case_keeps_the_member_and_takes_the_new_spelling() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let (old, new) = ("Robin.Vale@Example.com", "robin.vale@example.COM");
    post_and_outcome(&app, account_id, &url, &bodies::subscribe(LIST_A, old, T1)).await;
    let upemail = bodies::upemail(LIST_A, old, new, T2);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &upemail).await,
        "applied"
    );

    let contact = app.get_contact(new).await.expect("the member stays");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    assert_eq!(contact.email, new, "the address as Mailchimp now spells it");
    assert_eq!(contact.email_normalized, "robin.vale@example.com");
    assert_eq!(app.all_contacts().await.len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_email_change_to_an_address_on_another_list_merges_the_contacts() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let (old, new) = ("merge.old@example.com", "merge.new@example.com");
    post_and_outcome(&app, account_id, &url, &bodies::subscribe(LIST_A, old, T1)).await;
    post_and_outcome(&app, account_id, &url, &bodies::subscribe(LIST_B, new, T1)).await;
    let upemail = bodies::upemail(LIST_A, old, new, T2);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &upemail).await,
        "applied"
    );
    let contact = app
        .get_contact(new)
        .await
        .expect("merged into the new address");
    assert_eq!(statuses(&contact), [subscribed(LIST_A), subscribed(LIST_B)]);
    assert_absent(&app, old).await;
    assert_eq!(app.all_contacts().await.len(), 1);
    app.shutdown().await;
}

/// The change feed reports what the merge kept, not what the email change carried.
#[tokio::test]
async fn an_email_change_merged_into_a_newer_state_reports_the_state_kept() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let (old, new) = ("kept.old@example.com", "kept.new@example.com");
    post_and_outcome(&app, account_id, &url, &bodies::subscribe(LIST_A, old, T1)).await;
    post_and_outcome(
        &app,
        account_id,
        &url,
        &bodies::unsubscribe(LIST_A, new, T3),
    )
    .await;

    let upemail = bodies::upemail(LIST_A, old, new, T2);
    post_and_outcome(&app, account_id, &url, &upemail).await;
    let contact = app.get_contact(new).await.expect("merged");
    assert_eq!(
        statuses(&contact),
        [(LIST_A.to_owned(), "unsubscribed".to_owned(), true)]
    );
    let changes = app.all_changes().await;
    let last = changes
        .iter()
        .rev()
        .find(|change| change.email_normalized == new)
        .expect("a change for the new address");
    assert_eq!(
        (last.kind.as_str(), last.status.as_str(), last.opt_out),
        ("email_changed", "unsubscribed", true)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_email_change_from_an_unknown_address_is_recorded_not_failed() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let upemail = bodies::upemail(LIST_A, "ghost@example.com", "ghost.new@example.com", T1);
    let outcome = post_and_outcome(&app, account_id, &url, &upemail).await;
    assert!(
        !["failed", "rejected"].contains(&outcome.as_str()),
        "upemail was {outcome}"
    );
    let stored = app.latest_event(account_id).await;
    assert_eq!(
        (
            stored.event_type.as_str(),
            stored.mailchimp_list_id.as_str()
        ),
        ("upemail", LIST_A)
    );
    assert_absent(&app, "ghost@example.com").await;
    app.shutdown().await;
}

/// The sign-up of the old address may still be on its way when its email change arrives:
/// it does not bring the old address back, and lands where the member went.
#[tokio::test]
async fn a_late_sign_up_of_an_address_that_changed_since_lands_on_the_new_address() {
    let app = TestApp::spawn().await;
    let (old, new) = ("late.old@example.com", "late.new@example.com");
    let outcome = deliver(
        &app,
        &[
            bodies::upemail(LIST_A, old, new, T2),
            bodies::subscribe(LIST_A, old, T1),
        ],
    )
    .await;
    assert_eq!(outcome, "applied");
    assert_member_at(&app, new, &[old]).await;
    app.shutdown().await;
}

/// The same, but the member was deleted from the new address since: nothing comes back.
#[tokio::test]
async fn a_late_sign_up_followed_to_an_address_deleted_since_is_stale() {
    let app = TestApp::spawn().await;
    let (old, new) = ("gone.old@example.com", "gone.new@example.com");
    let outcome = deliver(
        &app,
        &[
            bodies::upemail(LIST_A, old, new, T2),
            bodies::delete(LIST_A, new, T3),
            bodies::subscribe(LIST_A, old, T1),
        ],
    )
    .await;
    assert_eq!(outcome, "stale");
    assert_absent(&app, old).await;
    assert_absent(&app, new).await;
    app.shutdown().await;
}

/// Two email changes delivered in reverse: the earlier one, arriving last, moves the member
/// straight to where the later one took it.
#[tokio::test]
async fn email_changes_delivered_in_reverse_leave_the_member_at_its_last_address() {
    let app = TestApp::spawn().await;
    let (first, second, third) = (
        "rev.first@example.com",
        "rev.second@example.com",
        "rev.third@example.com",
    );
    let outcome = deliver(
        &app,
        &[
            bodies::subscribe(LIST_A, first, T1),
            bodies::upemail(LIST_A, second, third, T3),
            bodies::upemail(LIST_A, first, second, T2),
        ],
    )
    .await;
    assert_eq!(outcome, "applied");
    assert_member_at(&app, third, &[first, second]).await;
    app.shutdown().await;
}

/// An address changed and changed back before its sign-up arrives: the member is at the
/// address it started from.
#[tokio::test]
async fn a_late_sign_up_of_an_address_changed_and_changed_back_stays_there() {
    let app = TestApp::spawn().await;
    let (home, away) = ("back.home@example.com", "back.away@example.com");
    let outcome = deliver(
        &app,
        &[
            bodies::upemail(LIST_A, home, away, T2),
            bodies::upemail(LIST_A, away, home, T3),
            bodies::subscribe(LIST_A, home, T1),
        ],
    )
    .await;
    assert_eq!(outcome, "applied");
    assert_member_at(&app, home, &[away]).await;
    app.shutdown().await;
}

/// Posts each body in turn to a new account's webhook; returns the last one's outcome.
async fn deliver(app: &TestApp, bodies: &[Form]) -> String {
    let (account_id, url) = app.create_account().await;
    let mut outcome = String::new();
    for body in bodies {
        outcome = post_and_outcome(app, account_id, &url, body).await;
    }
    outcome
}

/// The member is subscribed to the audience at `address`, and none of `gone` is a contact.
async fn assert_member_at(app: &TestApp, address: &str, gone: &[&str]) {
    let contact = app
        .get_contact(address)
        .await
        .expect("the member's address now");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    for email in gone {
        assert_absent(app, email).await;
    }
}

/// An email change overtaken by a later one: the address it moves to has left already.
#[tokio::test]
async fn a_late_email_change_to_an_address_that_left_since_does_not_bring_it_back() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let (first, second, third) = (
        "first.hop@example.com",
        "second.hop@example.com",
        "third.hop@example.com",
    );
    post_and_outcome(
        &app,
        account_id,
        &url,
        &bodies::subscribe(LIST_A, first, T1),
    )
    .await;
    let profile = bodies::profile(LIST_A, second, T1).with("data[id]", &bodies::member_id(second));
    post_and_outcome(&app, account_id, &url, &profile).await;
    let onwards = bodies::upemail(LIST_A, first, third, T3);
    post_and_outcome(&app, account_id, &url, &onwards).await;
    let late = bodies::upemail(LIST_A, second, first, T2);

    assert_eq!(
        post_and_outcome(&app, account_id, &url, &late).await,
        "applied"
    );
    assert_absent(&app, first).await;
    assert_absent(&app, second).await;
    let contact = app
        .get_contact(third)
        .await
        .expect("the member's address now");
    assert_eq!(statuses(&contact), [subscribed(LIST_A)]);
    app.shutdown().await;
}

#[tokio::test]
async fn cleaned_for_an_unknown_address_creates_a_cleaned_blacklisted_contact() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "never.seen@example.com";
    let cleaned = bodies::cleaned(LIST_A, email, T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &cleaned).await,
        "applied"
    );
    let contact = app.get_contact(email).await.expect("created");
    assert_eq!(
        statuses(&contact),
        [(LIST_A.to_owned(), "cleaned".to_owned(), true)]
    );
    assert!(contact.is_blacklisted);
    let entry = app.blacklist_entry(email).await.expect("on the blacklist");
    assert!(entry.active);
    app.shutdown().await;
}

#[tokio::test]
async fn cleaned_after_unblacklisting_reactivates_the_same_entry() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "bounces.again@example.com";
    post_and_outcome(
        &app,
        account_id,
        &url,
        &bodies::subscribe(LIST_A, email, T1),
    )
    .await;
    post_and_outcome(&app, account_id, &url, &bodies::cleaned(LIST_A, email, T2)).await;
    let first = app.blacklist_entry(email).await.expect("blacklisted");
    let request = pb::RemoveFromBlacklistRequest {
        email: email.into(),
    };
    let removed = app
        .blacklist()
        .remove_from_blacklist(request)
        .await
        .expect("removed");
    assert!(!removed.into_inner().active);
    assert!(!app.get_contact(email).await.expect("kept").is_blacklisted);
    let again = bodies::cleaned(LIST_A, email, T3);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &again).await,
        "applied"
    );
    let entry = app.blacklist_entry(email).await.expect("blacklisted");
    assert!(entry.active);
    assert_eq!(
        entry.id, first.id,
        "the archived row is reactivated, not duplicated"
    );
    assert!(app.get_contact(email).await.expect("kept").is_blacklisted);
    app.shutdown().await;
}

#[tokio::test]
async fn an_audience_first_seen_through_a_webhook_is_listed() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    post_and_outcome(
        &app,
        account_id,
        &url,
        &bodies::subscribe(LIST_B, "new@example.com", T1),
    )
    .await;
    let request = pb::ListAudiencesRequest { account_id };
    let audiences = app
        .audiences()
        .list_audiences(request)
        .await
        .expect("listed")
        .into_inner();
    let listed: Vec<_> = audiences
        .audiences
        .iter()
        .map(|a| (a.account_id, a.mailchimp_list_id.as_str(), a.name.as_str()))
        .collect();
    assert_eq!(listed, [(account_id, LIST_B, "")]);
    app.shutdown().await;
}

/// Bodies no real webhook carries, each named for the failure message.
fn garbage_bodies() -> Vec<(String, Vec<u8>)> {
    let valid = bodies::subscribe(LIST_A, "shape@example.com", T1).encode();
    let mut cases: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|seed| {
            (
                format!("random bytes, seed {seed}"),
                random_bytes(seed, 2048),
            )
        })
        .collect();
    let mut named = |name: &str, body: Vec<u8>| cases.push((name.to_owned(), body));
    named(
        "invalid UTF-8 escape",
        b"type=subscribe&data%5Bemail%5D=%C3%28".to_vec(),
    );
    named(
        "raw bytes that are not UTF-8",
        b"type=\xff\xfe&data\x80=\xc3".to_vec(),
    );
    named("10,000 keys", many_keys(10_000).into_bytes());
    named("10,001 keys", many_keys(10_001).into_bytes());
    named(
        "a huge GROUPINGS index",
        huge_grouping_index(&valid).into_bytes(),
    );
    named(
        "deeply nested brackets",
        format!("{valid}&data{}=x", "[a]".repeat(200)).into_bytes(),
    );
    named(
        "unbalanced brackets",
        format!("{valid}&data{}=x", "[".repeat(500)).into_bytes(),
    );
    named(
        "closing brackets",
        format!("{valid}&{}=x", "]".repeat(500)).into_bytes(),
    );
    named(
        "type is not a string",
        b"type%5Bx%5D=subscribe&fired_at=2026-04-01+10%3A00%3A00".to_vec(),
    );
    named(
        "data is not an object",
        format!("{valid}&data=x").into_bytes(),
    );
    named(
        "broken percent escapes",
        b"type=subscribe&fired_at=%&data%5Blist_id%5D=%zz%".to_vec(),
    );
    named("only separators", b"&&&==&=&".to_vec());
    named(
        "NUL bytes",
        b"type=sub%00scribe&fired_at=2026-04-01+10%3A00%3A00%00".to_vec(),
    );
    named(
        "an impossible date",
        valid.replace("2026-04-01", "2026-02-30").into_bytes(),
    );
    named(
        "an invalid address",
        valid
            .replace("shape%40example.com", "not-an-address")
            .into_bytes(),
    );
    named(
        "a hostile list id",
        valid.replace(LIST_A, "..%2F..%2Fx%27%3B--").into_bytes(),
    );
    named(
        "one huge value",
        format!("{valid}&data%5Bmerges%5D%5BNOTE%5D={}", "z".repeat(60_000)).into_bytes(),
    );
    cases
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// `count` fields in all, `type` and `fired_at` among them, with short distinct keys so the
/// body stays under the size limit.
fn many_keys(count: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let key = |i: usize| {
        let digit = |n: usize| char::from(DIGITS[n % DIGITS.len()]);
        [digit(i / 3844), digit(i / 62), digit(i)]
            .iter()
            .collect::<String>()
    };
    let mut fields = vec![
        "type=subscribe".to_owned(),
        "fired_at=2026-04-01+10%3A00%3A00".to_owned(),
    ];
    fields.extend((0..count - 2).map(|i| format!("{}=", key(i))));
    fields.join("&")
}

fn huge_grouping_index(valid: &str) -> String {
    let key = "data%5Bmerges%5D%5BGROUPINGS%5D%5B99999999%5D";
    format!("{valid}&{key}%5Bname%5D=Hobbies&{key}%5Bgroups%5D=Chess")
}

#[tokio::test]
async fn garbage_bodies_never_answer_5xx_and_are_all_stored() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let garbage = garbage_bodies();
    for (name, body) in &garbage {
        assert!(body.len() <= 64 * 1024, "{name} is over the size limit");
        let (status, text) = app.post_webhook(&url, body.clone()).await;
        assert!(
            status < 500 && status != 404 && status != 413,
            "{name}: {status} {text:?}"
        );
        if status == 400 {
            let reason = text.trim_end();
            assert!(
                !reason.is_empty() && !reason.contains('\n'),
                "{name}: reason {text:?}"
            );
        }
    }
    assert_eq!(
        app.events_of(account_id).await.len(),
        garbage.len(),
        "every body is stored"
    );
    assert_eq!(app.get(&app.http_url("/readyz")).await.0, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn replaying_a_failed_event_gives_its_new_outcome() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let no_email = Form::event("subscribe", T1).with("data[list_id]", LIST_A);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &no_email).await,
        "failed"
    );
    let failed = app.latest_event(account_id).await;
    assert!(!failed.error.is_empty(), "a failed event keeps its error");
    let request = pb::ReplayWebhookEventRequest { id: failed.id };
    let replayed = app
        .events()
        .replay_webhook_event(request)
        .await
        .expect("replayed");
    let replayed = replayed.into_inner();
    assert_eq!(
        (replayed.id, replayed.outcome.as_str()),
        (failed.id, "failed")
    );
    assert_eq!(replayed.replay_count, failed.replay_count + 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_overlong_member_id_fails_its_event_on_every_backend_and_spares_the_next() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let overlong =
        bodies::subscribe(LIST_A, "long@example.com", T1).with("data[id]", &"f".repeat(20_000));
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &overlong).await,
        "failed"
    );
    let failed = app.latest_event(account_id).await;
    assert!(failed.error.contains("data[id]"), "{}", failed.error);
    assert_absent(&app, "long@example.com").await;

    let next = bodies::subscribe(LIST_A, "next@example.com", T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &next).await,
        "applied"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn replaying_an_unknown_event_is_not_found() {
    let app = TestApp::spawn().await;
    let request = pb::ReplayWebhookEventRequest { id: 987_654 };
    let status = expect_error(app.events().replay_webhook_event(request).await);
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn a_nul_character_is_rejected_without_harming_events_in_the_same_burst() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let poisoned = "type=subscribe&fired_at=2026-03-11+10:00:00&data%5Blist_id%5D=P%001&data%5Bemail%5D=a%40x.org";
    let client = reqwest::Client::new();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..20 {
        let body = match i % 5 {
            0 => poisoned.to_owned(),
            _ => bodies::subscribe(LIST_A, &format!("n{i}@example.com"), T1).encode(),
        };
        let request = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        posts.spawn(async move { (i, request.send().await.expect("answered").status().as_u16()) });
    }

    while let Some(answer) = posts.join_next().await {
        let (i, status) = answer.expect("the post task ends");
        assert_eq!(status, if i % 5 == 0 { 400 } else { 200 }, "post {i}");
    }
    for i in (0..20).filter(|i| i % 5 != 0) {
        assert!(
            app.get_contact(&format!("n{i}@example.com")).await.is_ok(),
            "n{i}"
        );
    }
    let events = app.events_of(account_id).await;
    assert_eq!(events.len(), 20, "every request is stored");
    assert_eq!(events.iter().filter(|e| e.outcome == "rejected").count(), 4);
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_fired_in_the_future_fails_and_cannot_lock_the_member() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let email = "victim@example.com";
    let future = bodies::subscribe(LIST_A, email, "9999-12-31 23:59:59").encode();
    assert_eq!(app.post_webhook(&url, future).await.0, 200);
    let stored = app.latest_event(account_id).await;
    assert_eq!(stored.outcome, "failed");
    assert!(stored.error.contains("fired_at"), "{}", stored.error);

    let unsubscribe = bodies::unsubscribe(LIST_A, email, T2).encode();
    assert_eq!(app.post_webhook(&url, unsubscribe).await.0, 200);
    assert_eq!(app.latest_event(account_id).await.outcome, "applied");
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_an_account_removes_its_members_through_the_change_feed() {
    let app = TestApp::spawn().await;
    let (gone_id, gone_url) = app.create_account().await;
    let (_kept_id, kept_url) = app.create_account().await;
    let only = bodies::subscribe(LIST_A, "only@example.com", T1).encode();
    let shared_gone = bodies::subscribe(LIST_A, "both@example.com", T1).encode();
    let shared_kept = bodies::subscribe(LIST_B, "both@example.com", T1).encode();
    assert_eq!(app.post_webhook(&gone_url, only).await.0, 200);
    assert_eq!(app.post_webhook(&gone_url, shared_gone).await.0, 200);
    assert_eq!(app.post_webhook(&kept_url, shared_kept).await.0, 200);

    let request = pb::DeleteAccountRequest { id: gone_id };
    app.accounts()
        .delete_account(request)
        .await
        .expect("deleted");

    assert_absent(&app, "only@example.com").await;
    let both = app
        .get_contact("both@example.com")
        .await
        .expect("kept by the other account");
    assert_eq!(both.subscriptions.len(), 1);
    let kinds: Vec<(String, String)> = app
        .all_changes()
        .await
        .into_iter()
        .skip(3)
        .map(|change| (change.email_normalized, change.kind))
        .collect();
    assert!(
        kinds.contains(&("only@example.com".into(), "contact_removed".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("both@example.com".into(), "subscription_removed".into())),
        "{kinds:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn account_changes_apply_at_once_to_a_url_already_in_use() {
    let app = TestApp::spawn().await;
    let (account_id, url) = app.create_account().await;
    let first = bodies::subscribe(LIST_A, "busy@example.com", T1);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &first).await,
        "applied"
    );

    let update = pb::UpdateAccountRequest {
        id: account_id,
        webhook_active: Some(false),
        ..Default::default()
    };
    app.accounts()
        .update_account(update)
        .await
        .expect("updated");
    let second = bodies::unsubscribe(LIST_A, "busy@example.com", T2);
    assert_eq!(
        post_and_outcome(&app, account_id, &url, &second).await,
        "ignored"
    );

    let new_url = app.generate_webhook_url(account_id).await;
    let third = bodies::unsubscribe(LIST_A, "busy@example.com", T3).encode();
    assert_eq!(app.post_webhook(&url, third.clone()).await.0, 404);
    assert_eq!(app.get(&url).await.0, 404);
    assert_eq!(app.post_webhook(&new_url, third).await.0, 200);
    app.shutdown().await;
}
