//! Where an owner's writes go: the local half of the router a multi-node deployment
//! needs.
//!
//! Every write logic makes passes through [`Routed`], a [`Store`] in front of the real
//! one that checks each op's owner ([`WriteOp::owner_id`]: the user or group whose slot
//! holds the data) against this node's [`SlotOwnership`] before handing the batch on.
//! A batch with an op for a slot this node does not own is refused whole with
//! [`StoreError::Unavailable`] (80009 to a client, not retried in place) and nothing of
//! it is written: a node that gave a slot up writes none of its data, whichever service
//! asks (a friendship's other side, a profile, a conversation record, a device ack, a
//! group's members), not only what allocates seqs. Cross-owner work whose owners are
//! all here still merges into one batch. When a second logic node exists, this is the
//! one place a write for another node's slot is forwarded to it instead of refused.
//!
//! Reads pass through: stored data is durable whoever owns it, and the in-memory state
//! of a slot given up is dropped with it (`owners::drop_slot`).

use std::sync::Arc;

use async_trait::async_trait;
use tern_storage::{
    AppId, AppRecord, Conversation, ConversationRecord, DedupRecord, DeviceAck, GroupId, GroupMemberRecord,
    GroupRecord, GuardOutcome, GuardedBatch, LogEntry, MessageLocator, Owner, Read, ReadAnswer, Seq, Store, StoreError,
    SyncKind, UserId, UserRecord, WriteBatch,
};

use crate::slots::{slot_of_id, SlotOwnership};

/// The store logic writes through: refuses writes for slots this node does not own.
pub struct Routed {
    inner: Arc<dyn Store>,
    ownership: Arc<SlotOwnership>,
}

impl Routed {
    pub fn new(inner: Arc<dyn Store>, ownership: Arc<SlotOwnership>) -> Self {
        Self { inner, ownership }
    }

    /// Refuses `batch` if any of its ops writes data of a slot not owned here.
    fn check(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        // Ops of one owner come in runs (a timeline entry and its index entry): hash
        // each run once.
        let mut last: Option<(AppId, &str)> = None;
        for op in batch.ops() {
            let Some(owner) = op.owner_id() else { continue };
            if last == Some(owner) {
                continue;
            }
            let slot = slot_of_id(owner.0, owner.1);
            if !self.ownership.owns(slot) {
                return Err(StoreError::Unavailable(format!(
                    "this node does not own slot {} ({}) now",
                    slot.0, owner.1
                )));
            }
            last = Some(owner);
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Routed {
    async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.check(&batch)?;
        self.inner.write(batch).await
    }

    async fn write_guarded(&self, writes: Vec<GuardedBatch>, now_ms: u64) -> Result<Vec<GuardOutcome>, StoreError> {
        for w in &writes {
            self.check(&w.batch)?;
        }
        self.inner.write_guarded(writes, now_ms).await
    }

    async fn read_many(&self, reads: Vec<Read>) -> Result<Vec<Result<ReadAnswer, StoreError>>, StoreError> {
        self.inner.read_many(reads).await
    }

    async fn get_users(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Option<UserRecord>>, StoreError> {
        self.inner.get_users(app, ids).await
    }

    async fn read_log(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.inner.read_log(app, owner, kind, after, limit).await
    }

    async fn read_log_back(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.inner.read_log_back(app, owner, kind, before, limit).await
    }

    async fn get_log_entry(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        seq: Seq,
    ) -> Result<Option<LogEntry>, StoreError> {
        self.inner.get_log_entry(app, owner, kind, seq).await
    }

    async fn seq_bounds(&self, app: AppId, owner: &Owner) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        self.inner.seq_bounds(app, owner).await
    }

    async fn get_dedup(&self, key: &str, now_ms: u64) -> Result<Option<DedupRecord>, StoreError> {
        self.inner.get_dedup(key, now_ms).await
    }

    async fn get_app(&self, app: AppId) -> Result<Option<AppRecord>, StoreError> {
        self.inner.get_app(app).await
    }

    async fn get_device_acks(&self, app: AppId, user: &UserId, device_id: &str) -> Result<Vec<DeviceAck>, StoreError> {
        self.inner.get_device_acks(app, user, device_id).await
    }

    async fn get_message_index(&self, app: AppId, message_key: u64) -> Result<Option<MessageLocator>, StoreError> {
        self.inner.get_message_index(app, message_key).await
    }

    async fn read_conv_back(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, StoreError> {
        self.inner.read_conv_back(app, user, conversation, before, limit).await
    }

    async fn get_read_marks(&self, app: AppId, user: &UserId) -> Result<Vec<(Conversation, Seq)>, StoreError> {
        self.inner.get_read_marks(app, user).await
    }

    async fn get_conversation(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        self.inner.get_conversation(app, user, conversation).await
    }

    async fn list_conversations(
        &self,
        app: AppId,
        user: &UserId,
        after: Option<&Conversation>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner.list_conversations(app, user, after, limit).await
    }

    async fn get_group(&self, app: AppId, group: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.inner.get_group(app, group).await
    }

    async fn list_groups(
        &self,
        app: AppId,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<GroupRecord>, StoreError> {
        self.inner.list_groups(app, after, limit).await
    }

    async fn get_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        members: &[UserId],
    ) -> Result<Vec<Option<GroupMemberRecord>>, StoreError> {
        self.inner.get_group_members(app, group, members).await
    }

    async fn list_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<GroupMemberRecord>, StoreError> {
        self.inner.list_group_members(app, group, after, limit).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{slot_of, Slot, SLOTS};
    use tern_storage::{DedupRecord, GuardedBatch};
    use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore};

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// A read mark of `id`: a write keyed by that user.
    fn mark(batch: &mut WriteBatch, app: AppId, id: &str) {
        batch.put_read_mark(app, uid(id), Conversation::Single(uid("carol")), Seq(1));
    }

    async fn marked(store: &Arc<dyn Store>, app: AppId) -> [bool; 2] {
        let has = |id: &'static str| async move { !store.get_read_marks(app, &uid(id)).await.unwrap().is_empty() };
        [has("alice").await, has("bob").await]
    }

    /// A batch touching one slot not owned here is refused whole (nothing of it is
    /// written), guarded writes too; batches of owned slots pass, and pass again
    /// once a released slot is taken back.
    #[tokio::test]
    async fn refuses_whole_batches_that_touch_a_slot_not_owned() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let app = AppId(1);
        let (mine, theirs) = (slot_of(app, &uid("alice")), slot_of(app, &uid("bob")));
        assert_ne!(mine, theirs);
        let ownership = Arc::new(SlotOwnership::only([mine, Slot((theirs.0 + 1) % SLOTS)]));
        let routed = Routed::new(inner.clone(), ownership.clone());

        let mut both = WriteBatch::new();
        mark(&mut both, app, "alice");
        mark(&mut both, app, "bob");
        let err = routed.write(both.clone()).await.unwrap_err();
        assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("bob")), "{err:?}");
        let guard = DedupRecord { key: "alice/1".into(), value: bytes::Bytes::from_static(b"x"), expires_ms: u64::MAX };
        let guarded = vec![GuardedBatch { guard, batch: both.clone() }];
        assert!(matches!(routed.write_guarded(guarded, 0).await, Err(StoreError::Unavailable(_))));
        assert_eq!(marked(&inner, app).await, [false, false], "nothing of a refused batch is written");

        let mut alone = WriteBatch::new();
        mark(&mut alone, app, "alice");
        routed.write(alone).await.unwrap();
        ownership.take(theirs);
        routed.write(both).await.unwrap();
        assert_eq!(marked(&inner, app).await, [true, true]);
    }
}
