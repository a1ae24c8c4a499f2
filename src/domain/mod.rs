//! The domain: what the service does, independent of how it is asked. The webhook face, the
//! gRPC face and the jobs call in here; this calls the store; nothing here calls back up.

pub mod accounts;
pub mod apply;
pub mod contacts;
pub mod fetch;
pub mod ingest;
pub mod operations;
pub mod register;
