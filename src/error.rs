//! One error vocabulary for both faces.
//!
//! Domain code returns [`AppError`]: a [`Kind`] that decides the HTTP status and the gRPC
//! code, a message safe to show a caller, and for server-side failures the cause, which is
//! logged once where the error is answered and never sent. Store errors are classified on
//! purpose: an unreachable database is `Unavailable` (Mailchimp retries a 503), a missing
//! row `NotFound`, a duplicate key `AlreadyExists`, anything else `Internal`.

use std::fmt;

use axum::http::StatusCode;

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    Unavailable,
    Internal,
}

impl Kind {
    pub fn http_status(self) -> StatusCode {
        match self {
            Kind::InvalidArgument => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::AlreadyExists => StatusCode::CONFLICT,
            Kind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Kind::InvalidArgument => tonic::Code::InvalidArgument,
            Kind::NotFound => tonic::Code::NotFound,
            Kind::AlreadyExists => tonic::Code::AlreadyExists,
            Kind::FailedPrecondition => tonic::Code::FailedPrecondition,
            Kind::Unauthenticated => tonic::Code::Unauthenticated,
            Kind::Unavailable => tonic::Code::Unavailable,
            Kind::Internal => tonic::Code::Internal,
        }
    }
}

pub struct AppError {
    kind: Kind,
    message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        AppError {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    /// A bad argument; the message names the field.
    pub fn invalid(field: &str, problem: &str) -> Self {
        AppError::new(Kind::InvalidArgument, format!("{field}: {problem}"))
    }

    pub fn not_found(what: &str) -> Self {
        AppError::new(Kind::NotFound, format!("{what} not found"))
    }

    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError {
            kind: Kind::Internal,
            message: "internal error".into(),
            cause: Some(cause.into()),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs server-side failures with their cause chain; client errors are not worth a line.
    pub fn log(&self) {
        if matches!(self.kind, Kind::Internal | Kind::Unavailable) {
            tracing::error!(error.kind = ?self.kind, error.cause = %CauseChain(self), "request failed");
        }
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, CauseChain(self))
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

struct CauseChain<'a>(&'a AppError);

impl fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        let mut next: Option<&(dyn std::error::Error + 'static)> = match &self.0.cause {
            Some(cause) => Some(cause.as_ref()),
            None => None,
        };
        // A cause that only repeats the text before it adds nothing.
        let mut last = self.0.message.clone();
        while let Some(error) = next {
            let text = error.to_string();
            if text != last {
                write!(f, ": {text}")?;
                last = text;
            }
            next = error.source();
        }
        Ok(())
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        let kind = match &error {
            StoreError::NotFound => return AppError::not_found("record"),
            StoreError::Conflict(_) => Kind::AlreadyExists,
            StoreError::Unavailable(_) => Kind::Unavailable,
            StoreError::Query(_)
            | StoreError::BadUrl(_)
            | StoreError::Migration(_)
            | StoreError::Untracked(_) => Kind::Internal,
        };
        let message = match kind {
            Kind::Unavailable => "the database is unavailable",
            Kind::AlreadyExists => "already exists",
            _ => "internal error",
        };
        AppError {
            kind,
            message: message.into(),
            cause: Some(Box::new(error)),
        }
    }
}

impl From<AppError> for tonic::Status {
    fn from(error: AppError) -> Self {
        error.log();
        tonic::Status::new(error.kind.grpc_code(), error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_that_repeats_the_message_is_shown_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = AppError::from(StoreError::Unavailable(Box::new(refused)));
        assert_eq!(
            format!("{error:?}"),
            "Unavailable: the database is unavailable: refused"
        );
    }

    #[test]
    fn store_errors_map_to_their_kinds() {
        let unavailable = StoreError::Unavailable("pool timed out".into());
        assert_eq!(AppError::from(unavailable).kind(), Kind::Unavailable);
        assert_eq!(AppError::from(StoreError::NotFound).kind(), Kind::NotFound);
        let conflict = StoreError::from(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            Box::new("duplicate key".to_owned()),
        ));
        assert_eq!(AppError::from(conflict).kind(), Kind::AlreadyExists);
        let other = StoreError::from(diesel::result::Error::RollbackTransaction);
        assert_eq!(AppError::from(other).kind(), Kind::Internal);
    }

    #[test]
    fn internal_errors_do_not_show_their_cause() {
        let error = AppError::from(StoreError::Query(diesel::result::Error::QueryBuilderError(
            "secret detail".into(),
        )));
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn each_kind_has_distinct_http_and_grpc_codes() {
        assert_eq!(
            Kind::Unavailable.http_status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Kind::InvalidArgument.grpc_code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(Kind::NotFound.http_status(), StatusCode::NOT_FOUND);
    }
}
