//! mailchimp-sync keeps an Odoo database's mailing contacts in step with Mailchimp audiences.
//!
//! Faces: [`webhook`] and [`http`] (what Mailchimp calls) and [`grpc`] (what Odoo and
//! operators call). They call the [`domain`], which calls the [`store`]. [`app`] wires it
//! all together.

pub mod app;
pub mod domain;
pub mod email;
pub mod error;
pub mod fake_mailchimp;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod schedule;
pub mod store;
pub mod tls;
pub mod webhook;

/// The current time as stored: naive UTC, as Odoo keeps it.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}
pub mod mailchimp;
