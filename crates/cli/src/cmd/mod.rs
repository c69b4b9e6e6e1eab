pub mod beacon;
pub mod bench;
pub mod bench_model;
pub mod bench_surveil;
pub mod catalog;
pub mod city;
pub mod cohort;
pub mod demo;
pub mod evidence;
pub mod gwas_report;
pub mod hub;
pub mod import;
pub mod model;
pub mod network;
pub mod node;
pub mod pgload;
pub mod progress;
pub mod report;
pub mod sql;
pub mod study;
pub mod surveil;
pub mod synth;
pub mod vehicles;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
