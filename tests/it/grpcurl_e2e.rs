//! End to end as an operator meets the service: the built binary serving on real ports,
//! driven by `grpcurl` through server reflection alone (no `.proto` at hand) with the gRPC
//! token in `-H`, and a webhook posted as Mailchimp would.
//!
//! `grpcurl` is taken from `GRPCURL` or `PATH`. Without it the test says so and passes,
//! except under CI, where it must run.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::fixtures;
use crate::helpers::{API_KEY, TestDb};
use crate::process::{Options, ServeProcess};

const FIXTURE_CASE: &str = "subscribe_creates_contact";

fn find_grpcurl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join("grpcurl"))
        .find(|path| path.is_file())
}

struct Grpcurl {
    bin: PathBuf,
    addr: String,
    /// `-H` with the bearer token, as an operator passes it.
    authorization: String,
}

/// The service runs with a gRPC token, as it would anywhere but a laptop.
const TOKEN: &str = "grpcurl-e2e-token-3c9d";

impl Grpcurl {
    /// Runs grpcurl with `options` before the address and `rest` after it; returns its
    /// standard output.
    fn run(&self, options: &[&str], rest: &[&str]) -> String {
        let output = Command::new(&self.bin)
            .args(["-plaintext", "-max-time", "10", "-H", &self.authorization])
            .args(options)
            .arg(&self.addr)
            .args(rest)
            .output()
            .expect("grpcurl runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "grpcurl {options:?} {rest:?} failed: {stderr}"
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Calls a method with a JSON request; returns the JSON answer.
    fn call(&self, method: &str, request: &Value) -> Value {
        let answer = self.run(&["-d", &request.to_string()], &[method]);
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{method}: {e}: {answer}"))
    }
}

/// A field of a JSON answer, under its proto name or its JSON (lowerCamelCase) name.
fn field<'a>(message: &'a Value, proto_name: &str) -> &'a Value {
    let camel = proto_name.split('_').enumerate().map(|(i, part)| match i {
        0 => part.to_owned(),
        _ => part[..1].to_uppercase() + &part[1..],
    });
    let camel: String = camel.collect();
    let found = message.get(proto_name).or_else(|| message.get(&camel));
    found.unwrap_or_else(|| panic!("no {proto_name} in {message}"))
}

#[tokio::test]
async fn an_operator_drives_the_service_with_grpcurl_through_reflection() {
    let Some(bin) = find_grpcurl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: grpcurl is missing"
        );
        eprintln!("grpcurl is not installed (set GRPCURL or add it to PATH): skipping this test");
        return;
    };
    let db = TestDb::create();
    let log_dir = tempfile::tempdir().expect("a temporary folder");
    let http = reqwest::Client::new();
    let options = Options {
        env: vec![("MAILCHIMP_SYNC_GRPC_TOKEN", TOKEN)],
        ..Default::default()
    };
    let mut serve = ServeProcess::start_with(&db, log_dir.path(), options);
    serve.wait_until_ready(&http).await;
    let anonymous = Command::new(&bin)
        .args(["-plaintext", "-max-time", "10", &serve.grpc_addr, "list"])
        .output()
        .expect("grpcurl runs");
    assert!(!anonymous.status.success(), "reflection needs the token");
    let grpcurl = Grpcurl {
        bin,
        addr: serve.grpc_addr.clone(),
        authorization: format!("authorization: Bearer {TOKEN}"),
    };

    let services = grpcurl.run(&[], &["list"]);
    for service in [
        "mailchimp_sync.v1.AccountService",
        "mailchimp_sync.v1.ContactService",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} missing:\n{services}"
        );
    }

    let create = serde_json::json!({"name": "Acme", "api_key": API_KEY});
    let account = grpcurl.call("mailchimp_sync.v1.AccountService/CreateAccount", &create);
    let account_id = field(&account, "id").clone();
    let generate = serde_json::json!({"account_id": account_id});
    let generated = grpcurl.call(
        "mailchimp_sync.v1.AccountService/GenerateWebhookUrl",
        &generate,
    );
    let webhook_url = field(&generated, "webhook_url")
        .as_str()
        .expect("a URL")
        .to_owned();

    let response = http
        .post(&webhook_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fixtures::event_body(FIXTURE_CASE, 0))
        .send()
        .await
        .expect("the webhook answers");
    assert_eq!(response.status().as_u16(), 200, "{}", serve.logs());

    let email = fixtures::expected_email(FIXTURE_CASE);
    let lookup = serde_json::json!({"email": email.to_uppercase()});
    let contact = grpcurl.call("mailchimp_sync.v1.ContactService/GetContact", &lookup);
    assert_eq!(field(&contact, "email_normalized"), email);
}
