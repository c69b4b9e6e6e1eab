//! The in-car emergency extension (issue 8): cars publish vitals over MQTT; the vehicle service
//! runs a monitor per driver ([`medfed_vitals`]), prompts the driver, and calls 119 over HTTPS with
//! an eCall-style minimum set of data, exactly once per event, storing and forwarding while the
//! centre or the network is down.
//!
//! * [`msg`] — topics and sealed payloads between cars and the service.
//! * [`service`] — the broker reader, the per-driver worker, commands, the events log.
//! * [`dispatch`] — the outbox and the sender.
//! * [`center`] — `medfed emergency-center`, the receiving 119 endpoint.
//! * [`fleet`] — `medfed vehicles simulate`, simulated cars over a real broker.
//! * [`broker`] — the embedded rumqttd.
//! * [`stats`] — counts of events for the national statistics, under the release rules.
//! * [`regions`] — positions to districts.

pub mod broker;
pub mod center;
pub mod dispatch;
pub mod fleet;
pub mod msg;
pub mod regions;
pub mod service;
pub mod stats;
