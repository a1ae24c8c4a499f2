//! A closed-loop load generator: `concurrency` tasks share one keep-alive HTTP client and
//! take requests from a shared counter until every request was sent or the time limit
//! passed. Each request's latency is from just before sending to the end of the answer's
//! body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// What to send.
#[derive(Clone)]
pub enum Requests {
    /// `GET url`, `count` times.
    Get { url: String, count: usize },
    /// `POST url` with each body once, form-encoded, in order.
    Post {
        url: String,
        bodies: Arc<Vec<Bytes>>,
    },
}

impl Requests {
    pub fn post(url: &str, bodies: &[String]) -> Requests {
        let bodies = bodies.iter().map(|body| Bytes::from(body.clone()));
        Requests::Post {
            url: url.to_owned(),
            bodies: Arc::new(bodies.collect()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Requests::Get { count, .. } => *count,
            Requests::Post { bodies, .. } => bodies.len(),
        }
    }

    fn request(&self, client: &reqwest::Client, index: usize) -> reqwest::RequestBuilder {
        match self {
            Requests::Get { url, .. } => client.get(url),
            Requests::Post { url, bodies } => client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("user-agent", "MailChimp")
                .body(bodies[index].clone()),
        }
    }
}

/// What one run of requests gave.
#[derive(Debug, Default)]
pub struct Run {
    /// One per answered request, sorted.
    pub latencies: Vec<Duration>,
    /// Answers with status 200.
    pub ok: usize,
    /// Any other status, or no answer at all.
    pub errors: usize,
    /// The first few errors, to show.
    pub error_samples: Vec<String>,
    /// Requests not sent because the time limit passed.
    pub unsent: usize,
    pub elapsed: Duration,
}

impl Run {
    pub fn sent(&self) -> usize {
        self.ok + self.errors
    }

    /// Answers per second over the run's wall time.
    pub fn rate(&self) -> f64 {
        self.sent() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The nearest-rank percentile of the latencies (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    fn merge(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.errors += other.errors;
        let room = 5usize.saturating_sub(self.error_samples.len());
        self.error_samples
            .extend(other.error_samples.into_iter().take(room));
    }
}

/// A client for loopback load: no proxy, keep-alive, no Nagle delay, a request timeout.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Sends every request with `concurrency` in flight, stopping early at `time_limit`.
pub async fn run(
    client: &reqwest::Client,
    requests: Requests,
    concurrency: usize,
    time_limit: Duration,
) -> Run {
    let total = requests.len();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut run = Run::default();
                while started.elapsed() < time_limit {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    send(&client, &requests, index, &mut run).await;
                }
                run
            })
        })
        .collect();
    let mut run = Run::default();
    for worker in workers {
        match worker.await {
            Ok(part) => run.merge(part),
            Err(error) => {
                run.errors += 1;
                run.error_samples
                    .push(format!("a load task failed: {error}"));
            }
        }
    }
    run.elapsed = started.elapsed();
    run.unsent = total.saturating_sub(run.sent());
    run.latencies.sort_unstable();
    run
}

async fn send(client: &reqwest::Client, requests: &Requests, index: usize, run: &mut Run) {
    let sent = Instant::now();
    let answer = requests.request(client, index).send().await;
    let result = match answer {
        Ok(answer) => {
            let status = answer.status();
            answer.bytes().await.map(|body| (status, body))
        }
        Err(error) => Err(error),
    };
    run.latencies.push(sent.elapsed());
    match result {
        Ok((status, _)) if status == reqwest::StatusCode::OK => run.ok += 1,
        Ok((status, body)) => {
            run.errors += 1;
            if run.error_samples.len() < 5 {
                let body = String::from_utf8_lossy(&body);
                run.error_samples
                    .push(format!("request {index}: {status} {}", body.trim()));
            }
        }
        Err(error) => {
            run.errors += 1;
            if run.error_samples.len() < 5 {
                run.error_samples.push(format!("request {index}: {error}"));
            }
        }
    }
}
