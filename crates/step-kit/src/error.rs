//! One typed error for every step, mapped to the exit codes of the step contract.

use std::fmt;

/// What kind of failure a step hit; it decides the exit code and whether Argo retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Invalid input or usage: never worth a retry. Exit 2.
    Invalid,
    /// A precondition or conflict that a retry will not fix (protected branch, missing source,
    /// authentication refused). Exit 3.
    Precondition,
    /// A transient failure, a timeout or a cancellation, after the step's own retries: worth an Argo
    /// retry. Exit 4.
    Transient,
    /// Anything unexpected (a bug, an I/O error on the local disk). Exit 1.
    Unexpected,
}

impl ErrorKind {
    /// The process exit code of the step contract.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Invalid => 2,
            ErrorKind::Precondition => 3,
            ErrorKind::Transient => 4,
            ErrorKind::Unexpected => 1,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Precondition => "precondition",
            ErrorKind::Transient => "transient",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

/// A step's failure: its kind, a message for the engineer reading the log, and an optional hint on
/// what to do about it. Messages must never contain a secret; URLs in them go through
/// [`crate::redact_text`] when the error is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl StepError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StepError {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Precondition, message)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, message)
    }

    /// Adds what the engineer should do about it (e.g. which RBAC rule is missing).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for StepError {}

/// Why a TLS connection failed in a way no retry heals, as a hint for the user; `None` for a
/// network failure, which may heal. `chain` is the error's text with its sources
/// ([`error_chain`]), from rustls (reqwest) or OpenSSL (libgit2):
/// - the server does not speak TLS at that address (an `https://` URL for a plain-HTTP server:
///   rustls reads an HTTP answer as a corrupt TLS record, OpenSSL as a wrong version number);
/// - its certificate is not trusted (unknown issuer, expired, another host's name).
pub fn tls_refusal(chain: &str) -> Option<&'static str> {
    let chain = chain.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| chain.contains(n));
    if any(&[
        "invalidcontenttype",
        "corrupt message",
        "wrong version number",
        "packet length too long",
        "http request to an https server",
    ]) {
        return Some(NOT_TLS_HINT);
    }
    if any(&[
        "invalid peer certificate",
        "certificate verify failed",
        "unknownissuer",
        "self-signed certificate",
        "certificate has expired",
        "notvalidforname",
    ]) {
        return Some(CERTIFICATE_HINT);
    }
    None
}

/// The hint for a server that answers `https://` in plain HTTP.
pub const NOT_TLS_HINT: &str = "the server does not speak TLS at this address: is the URL's \
     scheme right (http:// rather than https://), and the port?";

/// The hint for a TLS certificate the step does not trust.
pub const CERTIFICATE_HINT: &str = "the server's TLS certificate is not trusted: check the CA \
     bundle (SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt) and the host name";

/// An error with its chain of sources, one line: `outer: cause: root cause` (HTTP clients hide
/// the useful part, "connection refused", in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Problems with a step's flags, collected so that all are reported at once: one escaped line
/// each in the log, one invalid-input error (exit 2) naming them all.
#[derive(Debug, Default)]
pub struct FlagProblems(Vec<String>);

impl FlagProblems {
    /// Records `flag value: rule` when `result` is an error (the value escaped: it is untrusted).
    pub fn check(&mut self, flag: &str, value: &str, result: Result<(), String>) {
        if let Err(rule) = result {
            self.0
                .push(format!("{flag} {}: {rule}", crate::escape_untrusted(value)));
        }
    }

    /// Records a problem that belongs to no single flag.
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// `Ok` when there were none; else each logged and all in one error.
    pub fn into_result(self) -> Result<(), StepError> {
        if self.0.is_empty() {
            return Ok(());
        }
        for problem in &self.0 {
            tracing::error!("{problem}");
        }
        Err(StepError::invalid(format!(
            "{} invalid flag(s): {}",
            self.0.len(),
            self.0.join("; ")
        )))
    }
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        StepError::unexpected(format!("I/O error: {e}"))
    }
}

#[cfg(test)]
mod tls_tests {
    use super::{tls_refusal, CERTIFICATE_HINT, NOT_TLS_HINT};

    #[test]
    fn tls_refusals_are_told_from_network_failures() {
        for (chain, hint) in [
            (
                "client error (Connect): received corrupt message of type InvalidContentType",
                NOT_TLS_HINT,
            ),
            ("SSL routines::wrong version number", NOT_TLS_HINT),
            (
                "client error (Connect): invalid peer certificate: UnknownIssuer",
                CERTIFICATE_HINT,
            ),
            ("invalid peer certificate: NotValidForName", CERTIFICATE_HINT),
            (
                "the SSL certificate is invalid: certificate verify failed (self-signed certificate)",
                CERTIFICATE_HINT,
            ),
        ] {
            assert_eq!(tls_refusal(chain), Some(hint), "{chain}");
        }
        for network in [
            "client error (Connect): tcp connect error: Connection refused",
            "operation timed out",
            "connection reset by peer",
        ] {
            assert_eq!(tls_refusal(network), None, "{network}");
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn flag_problems_are_reported_together_and_escaped() {
        let mut problems = FlagProblems::default();
        problems.check("--name", "ok", Ok(()));
        assert!(FlagProblems::default().into_result().is_ok());
        problems.check("--name", "a\u{202e}b", Err("must be a DNS label".into()));
        problems.push("nothing to set");
        let err = problems.into_result().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.message,
            r#"2 invalid flag(s): --name "a\u{202e}b": must be a DNS label; nothing to set"#
        );
    }
    use super::*;

    #[test]
    fn each_kind_maps_to_its_contract_exit_code() {
        assert_eq!(StepError::invalid("x").exit_code(), 2);
        assert_eq!(StepError::precondition("x").exit_code(), 3);
        assert_eq!(StepError::transient("x").exit_code(), 4);
        assert_eq!(StepError::unexpected("x").exit_code(), 1);
    }

    #[test]
    fn hint_is_part_of_the_display() {
        let e = StepError::precondition("forbidden").with_hint("grant get on workflows");
        assert_eq!(e.to_string(), "forbidden (hint: grant get on workflows)");
    }
}
