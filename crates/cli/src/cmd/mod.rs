pub mod demo;
pub mod import;
pub mod progress;
pub mod sql;
pub mod synth;
