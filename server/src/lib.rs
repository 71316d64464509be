//! `weir-server`: the `weir` binary's library. It owns sessions and the
//! PostgreSQL wire protocol ([`pg`]), statement dispatch and the catalog
//! ([`engine`]), and the DataFusion views of relations ([`providers`]).
//! Entry point: [`run`], which opens the data directory and serves until
//! SIGTERM/SIGINT.

pub mod backfill;
pub mod catalog;
pub mod config;
pub mod cooperative;
pub mod copy;
pub mod datetime_input;
pub mod engine;
pub mod enrichers;
pub mod error;
pub mod event_time;
pub mod fail_if;
pub mod functions;
pub mod lifecycle;
pub mod literal_casts;
pub mod metrics;
pub mod naming;
pub mod parse_guard;
pub mod pg;
pub mod providers;
pub mod session;
pub mod sql_text;
pub mod statements;
pub mod system;
pub mod typed_literals;
pub mod types;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;

/// Reported to clients as `server_version`.
pub const SERVER_VERSION: &str = "16.0 (Weir 0.1.0)";

/// Serves until a shutdown signal arrives.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let plugins = enrichers::plugins(&config.failure_enrichers)?;
    let enrichers = Arc::new(weir_executor::failure::Enrichers::new(
        plugins,
        config.enricher_timeout,
    ));
    let engine = engine::Engine::open_with(&config.data_dir, enrichers).await?;
    engine.server_metrics.start_sampler();
    let metrics_listener = TcpListener::bind(&config.metrics_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for metrics on {}: {e} (set --metrics-listen)",
                config.metrics_listen
            )
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    tokio::spawn(metrics::prometheus::serve(engine.clone(), metrics_listener));
    eprintln!("weir metrics on http://{metrics_addr}/metrics");
    let listener = TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "weir listening on {addr}");
    eprintln!(
        "weir listening on {addr} (data dir {})",
        config.data_dir.display()
    );
    let factory = Arc::new(pg::Factory::new(engine.clone(), config.limits));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((socket, _)) => {
                        let _ = socket.set_nodelay(true);
                        let f = factory.clone();
                        let m = engine.server_metrics.clone();
                        m.open_sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::spawn(async move {
                            if let Err(e) = pg::connection::serve(socket, f).await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            m.open_sessions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                }
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                engine.shutdown();
                return Ok(());
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
