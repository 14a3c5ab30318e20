//! Tern storage: the backend-neutral [`Store`] trait, its value types, the embedded
//! (fjall) backend and the conformance suite every backend must pass.
//!
//! Logic owns the business rules and calls storage through `Arc<dyn Store>`; storage
//! knows nothing about messages, friendships or the wire format — log payloads and
//! dedup values are opaque bytes encoded by logic.
//!
//! **Architecture invariant:** the types and trait here mention neither fjall nor CQL;
//! only [`embedded`] knows fjall and only [`scylla`] knows CQL (its schema lives in
//! `storage/cql/`).
//! Every backend passes [`conformance`], so logic can rely on the trait's documented
//! behaviour and nothing else.

pub mod conformance;
pub mod embedded;
mod error;
pub mod scylla;
mod store;
mod types;

pub use embedded::{Durability, EmbeddedConfig, EmbeddedStore, FlushPolicy, RecoveryReport};
pub use error::StoreError;
pub use scylla::{MigrationReport, ScyllaConfig, ScyllaStore};
pub use store::{
    check_dedup_key, check_device_id, GuardOutcome, GuardedBatch, Store, WriteBatch, WriteOp, MAX_DEDUP_KEY_LEN,
    MAX_DEVICE_ID_LEN, MAX_VALUE_LEN,
};
pub use types::{
    AppId, AppRecord, DedupRecord, InvalidUserId, LogEntry, MessageLocator, Seq, SyncKind, UserId, UserRecord,
};
