//! The integration suite: the whole service started on port 0 with a fresh database, driven
//! as Mailchimp and as an Odoo module would drive it. `TEST_DATABASE_URL` picks the backend
//! (see `helpers`), so every test here runs on SQLite and on PostgreSQL.

mod bodies;
mod cli;
mod fetch;
mod fixtures;
mod grpc_api;
mod grpcurl_e2e;
mod helpers;
mod hostile;
mod logs;
mod odoo_client;
mod operations;
mod outage;
mod process;
mod security;
mod simulation;
mod simulation_check;
mod simulation_network;
mod simulation_scenario;
mod store_suite;
mod webhooks;
