//! The simulation's unreliable network: for each webhook event, whether it is delivered
//! once, twice (a retry after a timeout), late (held back for minutes, so it overtakes or is
//! overtaken), or never; then the deliveries, POSTed by the fake in the order they arrive.
//!
//! Arrival order is decided up front from the seed, so a run replays exactly. Deliveries go
//! out in waves: consecutive arrivals about different addresses are sent together (the
//! service batches them), while two about one address are never in flight at once, so the
//! order each contact sees is the planned one.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use mailchimp_sync::fake_mailchimp::{DeliveryOutcome, FakeMailchimp, WebhookEvent};
use rand::Rng;
use rand::rngs::StdRng;

use crate::simulation_scenario::Op;

/// How often each mishap happens, as a share of events.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    pub dropped: f64,
    pub duplicated: f64,
    pub delayed: f64,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// No registered webhook wanted it (a change made through the API).
    NotSent,
    Dropped,
    /// Arrival times, in the order they arrive.
    Delivered(Vec<DateTime<Utc>>),
}

/// One copy of an event on its way.
struct Arrival {
    at: DateTime<Utc>,
    event: usize,
}

pub struct Network {
    pub fates: Vec<Fate>,
    arrivals: Vec<Arrival>,
}

/// At most this many deliveries in flight at once.
const WAVE: usize = 32;

impl Network {
    /// Decides every event's fate.
    pub fn plan(events: &[WebhookEvent], shares: Shares, rng: &mut StdRng) -> Network {
        let mut fates = Vec::with_capacity(events.len());
        let mut arrivals = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if event.deliveries.is_empty() {
                fates.push(Fate::NotSent);
                continue;
            }
            let roll: f64 = rng.random();
            if roll < shares.dropped {
                fates.push(Fate::Dropped);
                continue;
            }
            let first = if roll < shares.dropped + shares.delayed {
                Duration::seconds(rng.random_range(10..=600))
            } else {
                Duration::seconds(rng.random_range(0..=2))
            };
            let mut times = vec![event.fired_at + first];
            if rng.random_bool(shares.duplicated) {
                let retry = Duration::seconds(rng.random_range(60..=75 * 60));
                times.push(event.fired_at + retry);
            }
            times.sort();
            arrivals.extend(times.iter().map(|at| Arrival {
                at: *at,
                event: index,
            }));
            fates.push(Fate::Delivered(times));
        }
        arrivals.sort_by_key(|arrival| (arrival.at, arrival.event));
        Network { fates, arrivals }
    }

    /// POSTs every planned copy, in arrival order, and checks each was answered 200.
    pub async fn deliver(&self, fake: &FakeMailchimp, events: Arc<Vec<WebhookEvent>>, ops: &[Op]) {
        let mut op_of = vec![0; events.len()];
        for (index, op) in ops.iter().enumerate() {
            for event in op.events.clone() {
                op_of[event] = index;
            }
        }
        let mut wave = tokio::task::JoinSet::new();
        let mut busy: HashSet<&str> = HashSet::new();
        for arrival in &self.arrivals {
            let addresses = &ops[op_of[arrival.event]].addresses;
            let clash = addresses.iter().any(|a| busy.contains(a.as_str()));
            if clash || wave.len() == WAVE {
                finish(&mut wave).await;
                busy.clear();
            }
            busy.extend(addresses.iter().map(String::as_str));
            let (fake, events, event) = (fake.clone(), Arc::clone(&events), arrival.event);
            wave.spawn(async move { (event, fake.deliver(&events[event], 0).await) });
        }
        finish(&mut wave).await;
    }

    /// How many events were dropped, delivered twice, and held back.
    pub fn counts(&self, events: &[WebhookEvent]) -> (usize, usize, usize) {
        let dropped = self.fates.iter().filter(|f| **f == Fate::Dropped).count();
        let twice = self
            .fates
            .iter()
            .filter(|f| matches!(f, Fate::Delivered(times) if times.len() > 1))
            .count();
        let late = self
            .fates
            .iter()
            .zip(events)
            .filter(|(fate, event)| match fate {
                Fate::Delivered(times) => times[0] - event.fired_at > Duration::seconds(2),
                _ => false,
            })
            .count();
        (dropped, twice, late)
    }
}

async fn finish(wave: &mut tokio::task::JoinSet<(usize, DeliveryOutcome)>) {
    while let Some(done) = wave.join_next().await {
        let (event, outcome) = done.expect("a delivery task ends");
        assert_eq!(
            outcome,
            DeliveryOutcome::Answered(200),
            "delivery of event {event} was not accepted"
        );
    }
}
