//! Why a service did not do what it was asked: the one error type of every
//! service's API (routing, notify), whatever the request came over. It is
//! turned into the wire's `ErrorBody` in one place, and from there into an
//! HTTP answer (`http::ApiError`) or a gRPC status (`server::status_of`).

use herald_core::config::UnknownNamespace;
use herald_protocol::{ErrorBody, ErrorCode};

/// A refused request, by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed, or naming something malformed: fix the request.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Names a namespace, device or notification that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Over a size or count limit.
    #[error("{0}")]
    TooLarge(String),
    /// The history asked for is no longer kept.
    #[error("{0}")]
    Unrecoverable(String),
    /// A dependency is down or missing: nothing was done, and trying again
    /// may work.
    #[error("{0}")]
    Unavailable(String),
    /// The request may have taken effect: sent again with `key`, it takes
    /// effect once.
    #[error("{message}")]
    OutcomeUnknown {
        /// What happened, for people.
        message: String,
        /// The idempotency key to send the request again with.
        key: String,
    },
}

impl Refusal {
    /// [`Refusal::Invalid`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Refusal::Invalid(message.into())
    }

    /// [`Refusal::Forbidden`] with `message`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Refusal::Forbidden(message.into())
    }

    /// [`Refusal::NotFound`] with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Refusal::NotFound(message.into())
    }

    /// [`Refusal::TooLarge`] with `message`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Refusal::TooLarge(message.into())
    }

    /// [`Refusal::Unrecoverable`] with `message`.
    pub fn unrecoverable(message: impl Into<String>) -> Self {
        Refusal::Unrecoverable(message.into())
    }

    /// [`Refusal::Unavailable`] with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Refusal::Unavailable(message.into())
    }

    /// [`Refusal::OutcomeUnknown`]: retry with `key`.
    pub fn outcome_unknown(message: impl Into<String>, key: impl Into<String>) -> Self {
        Refusal::OutcomeUnknown {
            message: message.into(),
            key: key.into(),
        }
    }

    /// The protocol's code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Invalid(_) => ErrorCode::BadRequest,
            Refusal::Forbidden(_) => ErrorCode::PermissionDenied,
            Refusal::NotFound(_) => ErrorCode::UnknownChannel,
            Refusal::TooLarge(_) => ErrorCode::LimitExceeded,
            Refusal::Unrecoverable(_) => ErrorCode::Unrecoverable,
            Refusal::Unavailable(_) => ErrorCode::Internal,
            Refusal::OutcomeUnknown { .. } => ErrorCode::OutcomeUnknown,
        }
    }
}

impl From<Refusal> for ErrorBody {
    fn from(refusal: Refusal) -> Self {
        let code = refusal.code();
        match refusal {
            Refusal::OutcomeUnknown { message, key } => ErrorBody::outcome_unknown(message, key),
            Refusal::Invalid(message)
            | Refusal::Forbidden(message)
            | Refusal::NotFound(message)
            | Refusal::TooLarge(message)
            | Refusal::Unrecoverable(message)
            | Refusal::Unavailable(message) => ErrorBody::new(code, message),
        }
    }
}

impl From<UnknownNamespace> for Refusal {
    fn from(e: UnknownNamespace) -> Self {
        Refusal::NotFound(e.to_string())
    }
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        crate::server::status_of(refusal.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_body_keeps_the_code_the_message_and_the_key() {
        let body = ErrorBody::from(Refusal::invalid("no channel"));
        assert_eq!(
            (body.code, body.message.as_str()),
            (ErrorCode::BadRequest, "no channel")
        );
        let body = ErrorBody::from(Refusal::outcome_unknown("slow", "k1"));
        assert_eq!(body.code, ErrorCode::OutcomeUnknown);
        assert_eq!(body.idempotency_key.as_deref(), Some("k1"));
        let status = tonic::Status::from(Refusal::unavailable("store down"));
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
