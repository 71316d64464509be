//! Failure handling as data: what a failure was (domain, class, where),
//! the labels enrichers put on it, and what the query did about it
//! (restart strategy, failover). The supervisor in
//! [`crate::runtime::supervisor`] applies it; the system tables show it.

pub mod config;
pub mod enricher;
pub mod exception;
pub mod regions;
pub mod restart_strategy;

pub use config::{FailoverStrategy, FailureConfig, OnError};
pub use enricher::{EnricherInfo, Enrichers, FailureEnricher, Labels};
pub use exception::{ExceptionRow, FailureContext};
pub use restart_strategy::{RestartDecision, RestartStrategy, RestartTracker};
