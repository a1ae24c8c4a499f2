//! The service's webhook decoding, compiled on its own for fuzzing: the form decoder, the
//! event mapping and the address rules they use, from the service's own source files, so
//! a fuzz build needs none of the database or network stack.

#[path = "../../src/email.rs"]
pub mod email;
#[path = "../../src/webhook/event.rs"]
#[doc(hidden)]
pub mod event_source;
#[path = "../../src/webhook/form.rs"]
#[doc(hidden)]
pub mod form_source;

/// The same paths as in the service, which the source files use.
pub mod webhook {
    pub use super::event_source as event;
    pub use super::form_source as form;
}
