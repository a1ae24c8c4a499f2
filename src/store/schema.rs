//! The tables, as diesel sees them. One portable description serves both backends: ids are
//! 64-bit integers, timestamps naive UTC, JSON values text.

diesel::table! {
    mailchimp_account (id) {
        id -> BigInt,
        name -> Text,
        api_key -> Text,
        data_center -> Text,
        api_base_url -> Nullable<Text>,
        webhook_token -> Nullable<Text>,
        webhook_token_hash -> Nullable<Text>,
        webhook_active -> Bool,
        webhook_signing_secret -> Nullable<Text>,
        create_date -> Timestamp,
        write_date -> Timestamp,
    }
}

diesel::table! {
    mailing_list (id) {
        id -> BigInt,
        account_id -> BigInt,
        mailchimp_list_id -> Text,
        name -> Text,
        member_count -> BigInt,
        fetch_cursor -> Nullable<Timestamp>,
        last_fetch_date -> Nullable<Timestamp>,
        webhook_registered -> Bool,
        create_date -> Timestamp,
        write_date -> Timestamp,
        webhook_signing_secret -> Nullable<Text>,
    }
}

diesel::table! {
    mailing_contact (id) {
        id -> BigInt,
        name -> Text,
        first_name -> Text,
        last_name -> Text,
        email -> Text,
        email_normalized -> Text,
        subscriber_hash -> Text,
        merge_fields -> Text,
        interests -> Text,
        tags -> Text,
        last_changed -> Nullable<Timestamp>,
        create_date -> Timestamp,
        write_date -> Timestamp,
    }
}

diesel::table! {
    mailing_subscription (id) {
        id -> BigInt,
        contact_id -> BigInt,
        list_id -> BigInt,
        status -> Text,
        opt_out -> Bool,
        opt_out_datetime -> Nullable<Timestamp>,
        opt_out_reason -> Nullable<Text>,
        unique_email_id -> Nullable<Text>,
        subscriber_hash -> Text,
        last_changed -> Timestamp,
        last_fetch_run_id -> Nullable<BigInt>,
        create_date -> Timestamp,
        write_date -> Timestamp,
    }
}

diesel::table! {
    mail_blacklist (id) {
        id -> BigInt,
        email -> Text,
        active -> Bool,
        reason -> Nullable<Text>,
        create_date -> Timestamp,
        write_date -> Timestamp,
    }
}

diesel::table! {
    sync_tombstone (id) {
        id -> BigInt,
        list_id -> BigInt,
        email_normalized -> Text,
        removed_at -> Timestamp,
        moved_to -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_event (id) {
        id -> BigInt,
        account_id -> BigInt,
        mailchimp_list_id -> Nullable<Text>,
        event_type -> Nullable<Text>,
        fired_at -> Nullable<Timestamp>,
        raw_body -> Binary,
        outcome -> Text,
        error -> Nullable<Text>,
        received_date -> Timestamp,
        replay_count -> Integer,
    }
}

diesel::table! {
    fetch_run (id) {
        id -> BigInt,
        list_id -> BigInt,
        trigger -> Text,
        mode -> Text,
        state -> Text,
        pages -> BigInt,
        members_seen -> BigInt,
        members_written -> BigInt,
        error -> Nullable<Text>,
        scheduled_for -> Nullable<Timestamp>,
        heartbeat_date -> Nullable<Timestamp>,
        started_date -> Nullable<Timestamp>,
        finished_date -> Nullable<Timestamp>,
        create_date -> Timestamp,
    }
}

diesel::table! {
    sync_change (id) {
        id -> BigInt,
        contact_id -> BigInt,
        email_normalized -> Text,
        list_id -> Nullable<BigInt>,
        mailchimp_list_id -> Nullable<Text>,
        kind -> Text,
        status -> Nullable<Text>,
        opt_out -> Nullable<Bool>,
        create_date -> Timestamp,
    }
}

diesel::joinable!(mailing_list -> mailchimp_account (account_id));
diesel::joinable!(mailing_subscription -> mailing_contact (contact_id));
diesel::joinable!(mailing_subscription -> mailing_list (list_id));
diesel::joinable!(sync_tombstone -> mailing_list (list_id));
diesel::joinable!(webhook_event -> mailchimp_account (account_id));
diesel::joinable!(fetch_run -> mailing_list (list_id));

diesel::allow_tables_to_appear_in_same_query!(
    mailchimp_account,
    mailing_list,
    mailing_contact,
    mailing_subscription,
    mail_blacklist,
    sync_tombstone,
    webhook_event,
    fetch_run,
    sync_change,
);
