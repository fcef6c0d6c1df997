//! Every way an HTTP call fails, how each reaches the audit log.

use crate::host::audit::AuditCase;

/// Every way an HTTP call fails; each version spells these its own way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// Manifest or gate said no; the reason is for the audit log only.
    Denied(String),
    InvalidRequest(&'static str),
    DnsError,
    AirlockRejected,
    TlsError,
    Timeout,
    ConnectionError,
    BodyTooLarge,
    Closed,
    Quota,
    RedirectBlocked,
    TooManyRedirects,
    IntegrityMismatch,
    SchemeDenied,
    DecompressionBomb,
    Protocol(String),
}

impl HttpError {
    pub(crate) fn from_hyper(e: &hyper::Error) -> HttpError {
        if e.is_timeout() {
            HttpError::Timeout
        } else if e.is_parse() || e.is_parse_status() {
            HttpError::Protocol("malformed response".into())
        } else if e.is_incomplete_message() {
            HttpError::Protocol("response ended early".into())
        } else if e.is_canceled() {
            HttpError::Closed
        } else {
            HttpError::ConnectionError
        }
    }

    /// The WIT case name (1.1 spelling).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            HttpError::Denied(_) => "capability-denied",
            HttpError::InvalidRequest(_) => "invalid-request",
            HttpError::DnsError => "dns-error",
            HttpError::AirlockRejected => "airlock-rejected",
            HttpError::TlsError => "tls-error",
            HttpError::Timeout => "timeout",
            HttpError::ConnectionError => "connection-error",
            HttpError::BodyTooLarge => "body-too-large",
            HttpError::Closed => "closed",
            HttpError::Quota => "quota",
            HttpError::RedirectBlocked => "redirect-blocked",
            HttpError::TooManyRedirects => "too-many-redirects",
            HttpError::IntegrityMismatch => "integrity-mismatch",
            HttpError::SchemeDenied => "scheme-denied",
            HttpError::DecompressionBomb => "decompression-bomb",
            HttpError::Protocol(_) => "protocol",
        }
    }

    /// Text for an io `error` resource (a body stream that failed).
    pub(crate) fn guest_text(&self) -> String {
        match self {
            HttpError::Protocol(text) => format!("protocol: {text}"),
            other => other.name().to_string(),
        }
    }
}

impl AuditCase for HttpError {
    fn case(&self) -> String {
        match self {
            HttpError::Denied(reason) => format!("capability-denied ({reason})"),
            HttpError::InvalidRequest(why) => format!("invalid-request ({why})"),
            HttpError::Protocol(text) => format!("protocol({text})"),
            other => other.name().to_string(),
        }
    }

    fn is_denial(&self) -> bool {
        matches!(
            self,
            HttpError::Denied(_) | HttpError::AirlockRejected | HttpError::SchemeDenied
        )
    }
}
