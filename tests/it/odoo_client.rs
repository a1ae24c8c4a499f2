//! The Odoo-style client in `tests/odoo_client/` against the real binary with a gRPC token:
//! it posts the fixture webhooks, follows the change feed into Odoo-shaped tables and checks
//! them against the service.
//!
//! The client needs a Python with `grpcio` and `grpcio-tools`, named by
//! `ODOO_CLIENT_PYTHON` (`.ci/run` sets it to its virtual environment's). Without it the
//! test says so and passes, except under CI, where it must run.

use std::path::Path;
use std::process::Command;

use crate::helpers::TestDb;
use crate::process::{Options, ServeProcess};

const TOKEN: &str = "odoo-client-token-2f8b61c4";

#[tokio::test]
async fn an_odoo_module_following_the_feed_ends_with_the_services_contacts() {
    let Some(python) = std::env::var_os("ODOO_CLIENT_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: ODOO_CLIENT_PYTHON is not set"
        );
        eprintln!("ODOO_CLIENT_PYTHON is not set: skipping the Odoo client test");
        return;
    };
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = Options {
        env: vec![("MAILCHIMP_SYNC_GRPC_TOKEN", TOKEN)],
        ..Default::default()
    };
    let mut serve = ServeProcess::start_with(&db, dir.path(), options);
    serve.wait_until_ready(&reqwest::Client::new()).await;

    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/odoo_client/client.py");
    let cursor = dir.path().join("cursor");
    let output = Command::new(python)
        .arg(client)
        .args(["--grpc", &serve.grpc_addr, "--cursor-file"])
        .arg(&cursor)
        .env("MAILCHIMP_SYNC_GRPC_TOKEN", TOKEN)
        .output()
        .expect("python runs");
    let report = format!(
        "{}{}\nservice log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        serve.logs()
    );
    assert!(output.status.success(), "{report}");
    assert!(report.contains("contacts match the service"), "{report}");
    let saved: i64 = std::fs::read_to_string(&cursor)
        .expect("the cursor was saved")
        .trim()
        .parse()
        .expect("a sequence");
    assert!(saved > 0, "{report}");
}
