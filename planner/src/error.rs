use thiserror::Error;
use weir_executor::ExecError;

#[derive(Debug, Error)]
pub enum PlanError {
    /// A construct streaming queries cannot run (yet); SQLSTATE 0A000.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl From<datafusion::error::DataFusionError> for PlanError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        PlanError::Exec(ExecError::DataFusion(e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for PlanError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        PlanError::Exec(ExecError::Arrow(e))
    }
}

pub type PlanResult<T> = Result<T, PlanError>;

pub(crate) fn unsupported<T>(what: impl Into<String>) -> PlanResult<T> {
    Err(PlanError::Unsupported(format!(
        "{} is not supported in streaming queries yet",
        what.into()
    )))
}
