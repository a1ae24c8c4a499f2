//! The built binary as an operator runs it: `mailchimp-sync serve` as a child process on
//! free loopback ports, its log captured in a file, stopped with a real signal.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::TestDb;

/// How long the service may take to become ready.
const READY_BOUND: Duration = Duration::from_secs(30);

/// How long the service may take to stop after a signal; a bound on failure, never a wait.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// A `mailchimp-sync serve` process, killed when dropped.
pub struct ServeProcess {
    /// `None` once it exited and was waited for.
    child: Option<Child>,
    log: PathBuf,
    pub http_addr: String,
    pub grpc_addr: String,
}

/// How to start it, beyond the database and the two addresses.
#[derive(Default)]
pub struct Options<'a> {
    pub args: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
    /// Defaults to plain HTTP on the HTTP address, allowed.
    pub public_url: Option<String>,
}

impl ServeProcess {
    /// The service for a local trial: plain HTTP, insecure public URL allowed.
    pub fn start(db: &TestDb, log_dir: &Path) -> ServeProcess {
        ServeProcess::start_with(db, log_dir, Options::default())
    }

    pub fn start_with(db: &TestDb, log_dir: &Path, options: Options<'_>) -> ServeProcess {
        let (http_addr, grpc_addr) = (free_local_addr(), free_local_addr());
        ServeProcess::start_on(db, log_dir, options, http_addr, grpc_addr)
    }

    /// Another process over the same database and ports, after this one stopped.
    pub fn restart(&self, db: &TestDb, log_dir: &Path, options: Options<'_>) -> ServeProcess {
        let (http_addr, grpc_addr) = (self.http_addr.clone(), self.grpc_addr.clone());
        ServeProcess::start_on(db, log_dir, options, http_addr, grpc_addr)
    }

    fn start_on(
        db: &TestDb,
        log_dir: &Path,
        options: Options<'_>,
        http_addr: String,
        grpc_addr: String,
    ) -> ServeProcess {
        let public_url = options
            .public_url
            .unwrap_or_else(|| format!("http://{http_addr}"));
        let log = log_dir.join(format!("serve-{}.log", rand::random::<u32>()));
        let child = Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"))
            .args(["serve", "--database-url", &db.url])
            .args(["--http-addr", &http_addr, "--grpc-addr", &grpc_addr])
            .args(["--public-url", &public_url, "--allow-insecure-webhook-url"])
            .args(["--fetch-schedule", ""])
            .args(&options.args)
            .env_remove("MAILCHIMP_SYNC_LOG")
            .envs(options.env.iter().copied())
            .stdout(File::create(&log).expect("a log file"))
            .stderr(
                File::options()
                    .append(true)
                    .open(&log)
                    .expect("the log file"),
            )
            .spawn()
            .expect("the binary starts");
        ServeProcess {
            child: Some(child),
            log,
            http_addr,
            grpc_addr,
        }
    }

    /// Polls `/readyz` until it answers 200; fails early if the process exits.
    pub async fn wait_until_ready(&mut self, http: &reqwest::Client) {
        let url = format!("http://{}/readyz", self.http_addr);
        let started = Instant::now();
        while started.elapsed() < READY_BOUND {
            let child = self.child.as_mut().expect("the process runs");
            if let Some(status) = child.try_wait().expect("the process can be polled") {
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

    /// Sends a signal (`TERM`, `INT`) the way an operator or an orchestrator would.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself, within a bound; it is gone afterwards.
    pub async fn wait_for_exit(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("the process was not waited for yet");
        let exited = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(STOP_BOUND, exited).await {
            Ok(status) => status
                .expect("the waiting thread ends")
                .expect("the process can be waited for"),
            Err(_) => panic!("serve did not stop within {STOP_BOUND:?}:\n{}", self.logs()),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process runs").id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").to_string()
}

/// Runs the binary to completion with these arguments; returns its exit status and stderr.
pub fn run_binary(args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mailchimp-sync"))
        .args(args)
        .env_remove("MAILCHIMP_SYNC_GRPC_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stderr)
}
