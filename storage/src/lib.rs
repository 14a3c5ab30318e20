//! Tern storage: the backend-neutral [`Store`] trait, its value types and the
//! conformance suite every engine must pass.
//!
//! Logic owns the business rules and calls storage through `Arc<dyn Store>`; storage
//! knows nothing about messages, friendships or the wire format — log payloads and
//! dedup values are opaque bytes encoded by logic.
//!
//! **Architecture invariant:** this crate mentions neither fjall nor CQL and depends on
//! no engine. The engines are crates of their own that implement [`Store`]:
//! `tern-storage-embedded` (fjall) and `tern-storage-scylla` (CQL). Logic depends on
//! this crate only, so it cannot name an engine: the compiler keeps the boundary. Only
//! the `tern` binary picks an engine. Every engine passes [`conformance`], so logic can
//! rely on the trait's documented behaviour and nothing else.

pub mod conformance;
mod error;
mod store;
mod types;

pub use error::StoreError;
pub use store::{
    check_dedup_key, check_device_id, GuardOutcome, GuardedBatch, Read, ReadAnswer, Store, WriteBatch, WriteOp,
    MAX_DEDUP_KEY_LEN, MAX_DEVICE_ID_LEN, MAX_GROUP_TEXT_LEN, MAX_LOCATOR_COPIES, MAX_VALUE_LEN,
};
pub use types::{
    AppId, AppRecord, Conversation, ConversationRecord, DedupRecord, DeviceAck, GroupId, GroupMemberRecord,
    GroupRecord, InvalidGroupId, InvalidUserId, LastMessage, LogEntry, MessageCopy, MessageLocator, Owner, Seq,
    SyncKind, UserId, UserRecord,
};
