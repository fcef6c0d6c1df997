//! The one error type of the library: a stable code plus a message with its
//! cause chain. The FFI layer turns it into `astrid_error_t` objects.

use std::fmt;

/// Stable error codes shared with the C API (`ASTRID_E_*`). Append only:
/// a code, once published, is never renumbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    InvalidArgument = -1,
    Utf8 = -2,
    Manifest = -3,
    Compile = -4,
    Link = -5,
    NotFound = -6,
    Denied = -7,
    Timeout = -8,
    Cancelled = -9,
    OutOfFuel = -10,
    ResourceLimit = -11,
    Trap = -12,
    Closed = -13,
    Reentrant = -14,
    Io = -15,
    Panic = -16,
    Internal = -17,
}

impl Code {
    /// Short lowercase name, used as the message prefix.
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid argument",
            Code::Utf8 => "invalid utf-8",
            Code::Manifest => "manifest error",
            Code::Compile => "compile error",
            Code::Link => "link error",
            Code::NotFound => "not found",
            Code::Denied => "denied",
            Code::Timeout => "timeout",
            Code::Cancelled => "cancelled",
            Code::OutOfFuel => "out of fuel",
            Code::ResourceLimit => "resource limit",
            Code::Trap => "guest trap",
            Code::Closed => "closed",
            Code::Reentrant => "reentrant call",
            Code::Io => "i/o error",
            Code::Panic => "panic",
            Code::Internal => "internal error",
        }
    }
}

/// An error with a code, a message and the messages of its causes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.full_message())]
pub struct Error {
    code: Code,
    message: String,
    causes: Vec<String>,
    /// The guest call that failed (0: not a call, or one that failed
    /// before it was given an id).
    call_id: u64,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            causes: Vec::new(),
            call_id: 0,
        }
    }

    /// Marks the error as the failure of call `id`.
    pub(crate) fn in_call(mut self, id: u64) -> Self {
        self.call_id = id;
        self
    }

    /// The id of the guest call that failed (the id its log lines and audit
    /// events carry); 0 for errors of no call, and for calls that failed
    /// before they started (cancelled, unloaded, no free instance in time).
    pub fn call_id(&self) -> u64 {
        self.call_id
    }

    /// Adds the text of a lower-level cause to the chain.
    pub fn caused_by(mut self, cause: impl fmt::Display) -> Self {
        self.causes.push(cause.to_string());
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn causes(&self) -> &[String] {
        &self.causes
    }

    /// `"<kind>: <message>: <cause>: <cause>"`, the text the C API hands out.
    pub fn full_message(&self) -> String {
        let mut text = format!("{}: {}", self.code.name(), self.message);
        for cause in &self.causes {
            text.push_str(": ");
            text.push_str(cause);
        }
        text
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(Code::InvalidArgument, message)
    }

    pub fn closed(message: impl Into<String>) -> Self {
        Error::new(Code::Closed, message)
    }

    pub fn manifest(message: impl Into<String>) -> Self {
        Error::new(Code::Manifest, message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
