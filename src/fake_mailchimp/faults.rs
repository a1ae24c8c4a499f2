//! Fault injection: the ways Mailchimp misbehaves that a client has to survive, switched on
//! and off at run time, and the traffic figures a test checks the client's manners with.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Mailchimp's limit of simultaneous connections per user.
pub const MAILCHIMP_CONCURRENCY_LIMIT: usize = 10;

/// The fault knobs of one fake. All start off except the concurrency limit, which starts
/// at Mailchimp's own.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    failures: VecDeque<u16>,
    concurrency_limit: Option<usize>,
    gateway_timeout_on_full_pages: bool,
    delay: Duration,
    cut_countdown: Option<u64>,
}

impl Default for State {
    fn default() -> State {
        State {
            failures: VecDeque::new(),
            concurrency_limit: Some(MAILCHIMP_CONCURRENCY_LIMIT),
            gateway_timeout_on_full_pages: false,
            delay: Duration::ZERO,
            cut_countdown: None,
        }
    }
}

impl Faults {
    /// The next `n` requests answer `status` (after any failures queued before): 429 and
    /// 500 as problem+json, 502, 503 and 504 as the CDN's HTML page.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state().failures.extend(std::iter::repeat_n(status, n));
    }

    /// Answers 429 whenever more than `limit` requests are in flight; `None` never does.
    pub fn set_concurrency_limit(&self, limit: Option<usize>) {
        self.state().concurrency_limit = limit;
    }

    /// While on, every members listing asking for 1000 or more answers 504 with HTML.
    pub fn set_gateway_timeout_on_full_pages(&self, on: bool) {
        self.state().gateway_timeout_on_full_pages = on;
    }

    /// Holds every request this long before answering, counted as in flight meanwhile.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// The `k`-th members listing from now (1 is the next) sends its headers and half its
    /// body, then closes the connection. Only listings about to succeed count: one refused
    /// with a 429, a 504 or a 400 does not.
    pub fn cut_members_response(&self, k: u64) {
        self.state().cut_countdown = (k > 0).then_some(k);
    }

    /// Everything back to the start: no failures, no delay, Mailchimp's concurrency limit.
    pub fn reset(&self) {
        *self.state() = State::default();
    }

    pub(crate) fn take_failure(&self) -> Option<u16> {
        self.state().failures.pop_front()
    }

    pub(crate) fn concurrency_limit(&self) -> Option<usize> {
        self.state().concurrency_limit
    }

    pub(crate) fn gateway_timeout_on_full_pages(&self) -> bool {
        self.state().gateway_timeout_on_full_pages
    }

    pub(crate) fn delay(&self) -> Duration {
        self.state().delay
    }

    /// Counts one members listing; true when it is the one to cut.
    pub(crate) fn cut_this_listing(&self) -> bool {
        let mut state = self.state();
        match state.cut_countdown {
            Some(1) => {
                state.cut_countdown = None;
                true
            }
            Some(k) => {
                state.cut_countdown = Some(k - 1);
                false
            }
            None => false,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not take every later request down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Requests in flight now, and the most seen at once.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
}

impl Traffic {
    /// Counts a request in until the returned guard drops; gives the count including it.
    pub fn enter(&self) -> (InFlight<'_>, usize) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        (InFlight(self), now)
    }

    pub fn max_seen(&self) -> usize {
        self.max_seen.load(Ordering::SeqCst)
    }

    pub fn reset_max(&self) {
        self.max_seen
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// One request counted in flight.
pub(crate) struct InFlight<'a>(&'a Traffic);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
