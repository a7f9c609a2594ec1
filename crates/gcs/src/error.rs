//! What a failed GCS call means for a step: retry it, or report it with the right exit code.

use std::fmt;

use gcloud_storage::http::Error as HttpError;
use step_kit::{error_chain, ErrorKind, StepError};

/// The class of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 408, 429, 5xx, connection refused or reset, timeouts, a truncated response: retry.
    Transient,
    /// 404: the bucket or the object is not there.
    NotFound,
    /// 401 or 403: the credentials are missing, refused, or lack a permission.
    Auth,
    /// 412: a precondition (`ifGenerationMatch`…) failed.
    Conflict,
    /// Anything else the service refused (400…), or a response we could not read.
    Other,
}

/// A failed GCS call: its class and a one-line message naming the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub class: ErrorClass,
    pub message: String,
}

impl Error {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
        }
    }

    /// Classifies an error of gcloud-storage; `what` names the call ("list gs://b/p/").
    pub fn from_http(what: &str, e: &HttpError) -> Self {
        let class = match e {
            HttpError::Response(r) => class_of_status(r.code),
            HttpError::HttpClient(e) | HttpError::RawResponse(e, _) => class_of_reqwest(e),
            // No middleware is installed; a token source failing is usually the metadata server
            // or the token endpoint being unreachable for a moment.
            HttpError::HttpMiddleware(_) | HttpError::TokenSource(_) => ErrorClass::Transient,
            HttpError::InvalidRangeHeader(_) => ErrorClass::Other,
        };
        let status = match e {
            HttpError::Response(r) => format!("HTTP {}: ", r.code),
            _ => String::new(),
        };
        Error::new(class, format!("{what}: {status}{}", error_chain(e)))
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// The step error for this failure, with the exit code of the step contract: transient → 4,
    /// not found, refused credentials or a conflict → 3, anything else → 3 as well (a retry of
    /// the same request gets the same answer).
    pub fn into_step_error(self) -> StepError {
        let kind = match self.class {
            ErrorClass::Transient => ErrorKind::Transient,
            _ => ErrorKind::Precondition,
        };
        let err = StepError::new(kind, self.message);
        match self.class {
            _ if step_kit::tls_refusal(&err.message).is_some() => {
                let hint = step_kit::tls_refusal(&err.message).unwrap_or_default();
                err.with_hint(hint)
            }
            ErrorClass::Auth => err.with_hint(
                "the credentials (Application Default Credentials or Workload Identity) need \
                 storage.objects.list/get on the source and storage.objects.create/delete on \
                 the destination (roles/storage.objectViewer and roles/storage.objectAdmin)",
            ),
            _ => err,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        e.into_step_error()
    }
}

/// The class of an HTTP status (GCS's retry guidance: 408, 429 and 5xx are worth a retry).
pub fn class_of_status(code: u16) -> ErrorClass {
    match code {
        408 | 429 | 500..=599 => ErrorClass::Transient,
        404 => ErrorClass::NotFound,
        401 | 403 => ErrorClass::Auth,
        409 | 412 => ErrorClass::Conflict,
        _ => ErrorClass::Other,
    }
}

fn class_of_reqwest(e: &reqwest::Error) -> ErrorClass {
    if let Some(status) = e.status() {
        return class_of_status(status.as_u16());
    }
    if e.is_builder() || step_kit::tls_refusal(&error_chain(e)).is_some() {
        // Also an untrusted certificate or a server that does not speak TLS: no retry heals it.
        return ErrorClass::Other;
    }
    // Connect, timeout, a reset or closed connection (is_request), a body cut short (is_body,
    // is_decode: the JSON of a truncated response does not parse): all worth another try.
    ErrorClass::Transient
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_as_gcs_documents() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(class_of_status(code), ErrorClass::Transient, "{code}");
        }
        assert_eq!(class_of_status(404), ErrorClass::NotFound);
        assert_eq!(class_of_status(401), ErrorClass::Auth);
        assert_eq!(class_of_status(403), ErrorClass::Auth);
        assert_eq!(class_of_status(412), ErrorClass::Conflict);
        assert_eq!(class_of_status(400), ErrorClass::Other);
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let step = |class| Error::new(class, "x").into_step_error().exit_code();
        assert_eq!(step(ErrorClass::Transient), 4);
        assert_eq!(step(ErrorClass::NotFound), 3);
        assert_eq!(step(ErrorClass::Auth), 3);
        assert_eq!(step(ErrorClass::Other), 3);
    }
}
