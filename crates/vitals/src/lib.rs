//! Driver vital signs for the in-car emergency extension (issue 8): reading PhysioNet WFDB records
//! ([`wfdb`]) and streaming R-peak detection on ECG ([`rpeak`]), checked against cardiologists'
//! beat annotations.
//!
//! Architecture invariant: no I/O besides [`wfdb`]'s file reading, no network, no knowledge of
//! vehicles, brokers or the hub: samples in, beats out.

pub mod rpeak;
pub mod wfdb;
