//! The national hub: it registers hospital nodes, turns studies into signed tasks, hands them out to
//! nodes that poll for them, applies the nodes' signed results exactly once, and pools them into the
//! national statistics database.
//!
//! - [`db`]: SQLite (embedded default) and PostgreSQL behind one trait;
//! - [`store`]: schema and transactions (exactly-once application, study completion);
//! - [`core`]: the hub's behaviour, shared by the HTTP server and the in-process transport;
//! - [`server`]: the `/v1` HTTPS API (axum on rustls);
//! - [`beacon`]: the GA4GH Beacon v2 endpoint `/api/g_variants`;
//! - [`setup`]: `medfed hub init` (keys, self-signed certificate, researcher token, configuration).
//!
//! Architecture invariant: the hub never connects to a node, and never accepts an unsigned task result
//! or a request from a node that is not registered.

pub mod beacon;
pub mod core;
pub mod db;
pub mod server;
pub mod setup;
pub mod store;

pub use crate::core::{Hub, HubError, StudyStatus, Submitted};
pub use setup::{HubConfig, HubDir};
