//! Driver vital signs for the in-car emergency extension (issue 8): reading PhysioNet WFDB records
//! ([`wfdb`]), streaming R-peak detection on ECG ([`rpeak`]), checked against cardiologists' beat
//! annotations, vital-sign trends with persistence ([`trend`]), and asystole with signal-quality gating
//! and the plethysmogram as a witness ([`arrest`]).
//!
//! Architecture invariant: no I/O besides [`wfdb`]'s file reading, no network, no knowledge of
//! vehicles, brokers or the hub: samples in, beats out.

pub mod arrest;
pub mod driver;
pub mod escalate;
pub mod rhythm;
pub mod rpeak;
pub mod sim;
pub mod trend;
pub mod wfdb;
