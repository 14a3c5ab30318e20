//! The one error type every backend returns.
//!
//! Callers must be able to tell "retry later" (I/O, backend) from "this data is bad"
//! (corrupt) from "you asked for something impossible" (invalid argument) from "we are
//! shutting down" (closed). Variants carry text rather than engine error types so the
//! type stays backend-neutral and `Clone`: one failed group commit answers many waiters.

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk or network below the backend failed; the operation may be retried.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The backend failed for another reason (engine poisoned, driver error, …).
    #[error("storage backend error: {0}")]
    Backend(String),
    /// Stored bytes could not be decoded. Never retried: a human must look.
    #[error("corrupt data in storage: {what}")]
    Corrupt {
        /// What could not be decoded, and where.
        what: String,
    },
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// The request itself is invalid (e.g. an oversized or empty key).
    #[error("invalid storage request: {0}")]
    InvalidArgument(String),
    /// The stored schema does not match this build (e.g. the CQL keyspace is missing or
    /// older than the code: the message says to run `tern migrate`). Not retried.
    #[error("storage schema mismatch: {0}")]
    Schema(String),
    /// The data cannot be written here right now, for a reason that passes (its slot is
    /// moving to or from this node): retry soon. Never retried in place; a client
    /// request failing with it is refused with 80009.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Shorthand for [`StoreError::Corrupt`].
    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt { what: what.into() }
    }
}
