//! End to end as an operator meets the service: the built binary serving on real ports,
//! driven by `grpcurl` through server reflection alone (no `.proto` at hand), with a
//! webhook posted as Mailchimp would.
//!
//! `grpcurl` is taken from `GRPCURL` or `PATH`. Without it the test says so and passes,
//! except under CI, where it must run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures;
use crate::helpers::{API_KEY, TestDb};

/// How long the service may take to become ready.
const READY_BOUND: Duration = Duration::from_secs(30);
const FIXTURE_CASE: &str = "subscribe_creates_contact";

/// A `mailchimp-sync serve` process, killed when dropped.
struct ServeProcess {
    child: Child,
    log: PathBuf,
    http_addr: String,
    grpc_addr: String,
}

impl ServeProcess {
    fn start(db: &TestDb, log_dir: &Path) -> ServeProcess {
        let (http_addr, grpc_addr) = (free_local_addr(), free_local_addr());
        let public_url = format!("http://{http_addr}");
        let log = log_dir.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"))
            .args([
                "serve",
                "--database-url",
                &db.url,
                "--http-addr",
                &http_addr,
            ])
            .args(["--grpc-addr", &grpc_addr, "--public-url", &public_url])
            .arg("--allow-insecure-webhook-url")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("a log file"))
            .spawn()
            .expect("the binary starts");
        ServeProcess {
            child,
            log,
            http_addr,
            grpc_addr,
        }
    }

    /// Polls `/readyz` until it answers 200; fails early if the process exits.
    async fn wait_until_ready(&mut self, http: &reqwest::Client) {
        let url = format!("http://{}/readyz", self.http_addr);
        let started = Instant::now();
        while started.elapsed() < READY_BOUND {
            if let Some(status) = self.child.try_wait().expect("the process can be polled") {
                panic!("serve exited with {status}:\n{}", self.logs());
            }
            let answer = http.get(&url).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "serve was not ready within {READY_BOUND:?}:\n{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").to_string()
}

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
}

impl Grpcurl {
    /// Runs grpcurl with `options` before the address and `rest` after it; returns its
    /// standard output.
    fn run(&self, options: &[&str], rest: &[&str]) -> String {
        let output = Command::new(&self.bin)
            .args(["-plaintext", "-max-time", "10"])
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
    let mut serve = ServeProcess::start(&db, log_dir.path());
    serve.wait_until_ready(&http).await;
    let grpcurl = Grpcurl {
        bin,
        addr: serve.grpc_addr.clone(),
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
