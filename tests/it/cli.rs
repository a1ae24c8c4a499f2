//! The `mailchimp-sync` binary as an operator runs it.

use std::process::{Command, Output};

use mailchimp_sync::store::{Store, contacts};

use crate::helpers::TestDb;

fn mailchimp_sync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn migrate_runs_the_migrations_and_exits_0() {
    let db = TestDb::create();
    let output = mailchimp_sync(&["migrate", "--database-url", &db.url]);
    assert!(output.status.success(), "{output:?}");
    let store = Store::open(&db.url, 1).expect("the store opens");
    assert!(store.is_ready(), "no migration is left to run");
    let mut conn = store.connection().expect("a connection");
    assert_eq!(contacts::count(&mut conn).expect("the tables exist"), 0);
}

#[test]
fn serve_help_names_the_contract_flags() {
    let output = mailchimp_sync(&["serve", "--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = text(&output.stdout);
    for flag in [
        "--database-url",
        "--http-addr",
        "--grpc-addr",
        "--public-url",
        "--tls-cert",
        "--tls-key",
        "--grpc-tls-cert",
        "--grpc-tls-key",
        "--grpc-token",
    ] {
        assert!(
            help.contains(flag),
            "`serve --help` does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn an_unsupported_database_url_fails_with_a_one_line_error() {
    let output = mailchimp_sync(&["migrate", "--database-url", "mysql://x"]);
    assert!(!output.status.success(), "{output:?}");
    let error = text(&output.stderr);
    let lines: Vec<&str> = error
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr:\n{error}");
}

#[test]
fn a_pool_too_small_for_the_webhook_writer_is_refused() {
    let db = TestDb::create();
    let output = mailchimp_sync(&["serve", "--database-url", &db.url, "--db-connections", "1"]);
    assert!(!output.status.success(), "{output:?}");
    let error = text(&output.stderr);
    assert!(error.contains("--db-connections"), "{error}");
    assert!(error.contains("2..=256"), "{error}");
}

#[test]
fn a_malformed_database_url_fails_without_showing_its_password() {
    for (url, password) in [
        ("postgres://sync:My%Pass!word@127.0.0.1:5432/x", "Pass!word"),
        ("postgres://sync:hunter2/x@127.0.0.1/x", "hunter2"),
        ("postgres://sync:Sec@ret42@127.0.0.1:5432/x", "ret42"),
    ] {
        let output = mailchimp_sync(&["migrate", "--database-url", url]);
        assert!(!output.status.success(), "{url}: {output:?}");
        let error = text(&output.stderr);
        assert!(
            error.contains("database is unavailable"),
            "{url}: says what failed: {error}"
        );
        assert!(
            !error.contains(password),
            "{url}: shows its password: {error}"
        );
        assert!(
            !text(&output.stdout).contains(password),
            "{url}: shows its password on stdout"
        );
    }
}

#[test]
fn a_fetch_schedule_that_cannot_run_is_refused_before_anything_starts() {
    let db = TestDb::create();
    for (schedule, why) in [
        ("0 0 2 * * * 2030", "six cron fields"),
        ("0 0 2 31 2 *", "no time to come"),
    ] {
        let output = mailchimp_sync(&[
            "serve",
            "--database-url",
            &db.url,
            "--fetch-schedule",
            schedule,
        ]);
        assert!(!output.status.success(), "{schedule}: {output:?}");
        let error = text(&output.stderr);
        assert!(error.contains("--fetch-schedule"), "{schedule}: {error}");
        assert!(error.contains(why), "{schedule}: {error}");
    }
    let store = Store::open(&db.url, 1).expect("the store opens");
    assert!(!store.is_ready(), "refused before the migrations ran");
}
