//! The hospital node.
//!
//! A node holds a hospital's site store and answers the hub's tasks with released statistics only.
//! For each task it: verifies the hub's signature, its own name, the expiry and the nonce; checks the
//! local policy (allow, hold for `medfed node approve`, or deny); runs the analysis's local step; passes
//! the statistic through [`medfed_privacy::release`]; appends the signed result to the hash-chained
//! [`audit`] log; and only then posts it. Every step is persisted in the node folder so that a node
//! killed at any point resumes after restart, and the hub applies each result exactly once.
//!
//! Architecture invariant: the node only makes outbound connections ([`transport`]); it never listens.
//! The only value it ever sends to the hub is a [`medfed_protocol::Signed`]
//! [`medfed_protocol::TaskResult`], whose statistic is a [`medfed_privacy::Released`]. The only
//! other thing that leaves is a [`consent`] profile batch: categories and an age band for persons who
//! consented to a service, signed and audited like a result.

pub mod audit;
pub mod config;
pub mod consent;
pub mod runner;
mod state;
pub mod transport;

pub use config::{NodeConfig, NodeDir};
pub use runner::{Node, NodeError, StepReport};
pub use transport::{HttpTransport, PostAck, Transport, TransportError};

/// Crash on purpose at a named point when `MEDFED_FAILPOINT` names it. Used by the end-to-end tests to
/// kill a process at an exact step (a real kill, not a simulated one: the process aborts).
pub fn failpoint(name: &str) {
    if std::env::var("MEDFED_FAILPOINT").is_ok_and(|v| v.split(',').any(|p| p == name)) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
