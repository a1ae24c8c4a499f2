-- Tables named after Odoo's mass-mailing models, so an Odoo module can map them one to one.
-- Timestamps are naive UTC, as in Odoo.

CREATE TABLE mailchimp_account (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    api_key TEXT NOT NULL,
    data_center TEXT NOT NULL,
    api_base_url TEXT,
    webhook_token TEXT,
    webhook_token_hash TEXT UNIQUE,
    webhook_active BOOLEAN NOT NULL DEFAULT 1,
    webhook_signing_secret TEXT,
    create_date TIMESTAMP NOT NULL,
    write_date TIMESTAMP NOT NULL
);

CREATE TABLE mailing_list (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES mailchimp_account (id) ON DELETE CASCADE,
    mailchimp_list_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    member_count BIGINT NOT NULL DEFAULT 0,
    fetch_cursor TIMESTAMP,
    last_fetch_date TIMESTAMP,
    webhook_registered BOOLEAN NOT NULL DEFAULT 0,
    create_date TIMESTAMP NOT NULL,
    write_date TIMESTAMP NOT NULL,
    UNIQUE (account_id, mailchimp_list_id)
);

CREATE TABLE mailing_contact (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    subscriber_hash TEXT NOT NULL,
    merge_fields TEXT NOT NULL DEFAULT '{}',
    interests TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    last_changed TIMESTAMP,
    create_date TIMESTAMP NOT NULL,
    write_date TIMESTAMP NOT NULL
);

CREATE TABLE mailing_subscription (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL REFERENCES mailing_contact (id) ON DELETE CASCADE,
    list_id INTEGER NOT NULL REFERENCES mailing_list (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    opt_out BOOLEAN NOT NULL DEFAULT 0,
    opt_out_datetime TIMESTAMP,
    opt_out_reason TEXT,
    unique_email_id TEXT,
    subscriber_hash TEXT NOT NULL,
    last_changed TIMESTAMP NOT NULL,
    -- The full fetch that last saw this member; one that did not is gone from Mailchimp.
    last_fetch_run_id INTEGER,
    create_date TIMESTAMP NOT NULL,
    write_date TIMESTAMP NOT NULL,
    UNIQUE (contact_id, list_id)
);
CREATE INDEX mailing_subscription_list_member ON mailing_subscription (list_id, unique_email_id);

CREATE TABLE mail_blacklist (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    active BOOLEAN NOT NULL DEFAULT 1,
    reason TEXT,
    create_date TIMESTAMP NOT NULL,
    write_date TIMESTAMP NOT NULL
);

-- What a removed subscription leaves behind, out of Odoo's sight, so that a late event
-- older than the removal cannot bring it back.
CREATE TABLE sync_tombstone (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id INTEGER NOT NULL REFERENCES mailing_list (id) ON DELETE CASCADE,
    email_normalized TEXT NOT NULL,
    removed_at TIMESTAMP NOT NULL,
    UNIQUE (list_id, email_normalized)
);

CREATE TABLE webhook_event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES mailchimp_account (id) ON DELETE CASCADE,
    mailchimp_list_id TEXT,
    event_type TEXT,
    fired_at TIMESTAMP,
    raw_body BLOB NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    received_date TIMESTAMP NOT NULL,
    replay_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_event_outcome ON webhook_event (outcome, id);
CREATE INDEX webhook_event_account ON webhook_event (account_id, id);

CREATE TABLE fetch_run (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id INTEGER NOT NULL REFERENCES mailing_list (id) ON DELETE CASCADE,
    trigger TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    pages BIGINT NOT NULL DEFAULT 0,
    members_seen BIGINT NOT NULL DEFAULT 0,
    members_written BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    -- For scheduled runs, the schedule's firing time: replicas firing together claim one run.
    scheduled_for TIMESTAMP,
    -- Moved forward while the run works; a running row whose heartbeat stopped was abandoned.
    heartbeat_date TIMESTAMP,
    started_date TIMESTAMP,
    finished_date TIMESTAMP,
    create_date TIMESTAMP NOT NULL,
    UNIQUE (list_id, scheduled_for)
);
CREATE INDEX fetch_run_list ON fetch_run (list_id, id);

-- The change feed: one row per contact an applied change touched, in commit order.
CREATE TABLE sync_change (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    email_normalized TEXT NOT NULL,
    list_id INTEGER,
    mailchimp_list_id TEXT,
    kind TEXT NOT NULL,
    status TEXT,
    opt_out BOOLEAN,
    create_date TIMESTAMP NOT NULL
);
CREATE INDEX sync_change_contact ON sync_change (contact_id);
