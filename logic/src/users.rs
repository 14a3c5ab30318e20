//! The user service: importing, deleting, reading and changing user profiles, profile
//! sync, online status and the login check. These are the business rules behind the
//! `/v1/user/...` management calls (and anything else that changes a profile).
//!
//! Rules kept here:
//! - every profile field is validated against the limits below before anything is
//!   written; lengths count characters (Unicode scalar values), not bytes, because
//!   nick names are very often not ASCII;
//! - a profile change writes the new [`UserRecord`] and a `Profile` log entry (the changed
//!   fields) in one durable batch, then notifies the user's online devices; an import or
//!   modification that changes nothing writes nothing and bumps no seq (idempotent);
//! - deletion is soft and final: a deleted user keeps its data (others' history still
//!   names it), cannot log in, cannot be modified, and cannot be re-imported (20002);
//! - read-modify-write of one user's record is serialized by [`UserLocks`]
//!   (`Logic::user_locks`), so two concurrent changes of one user never lose an update.
//!
//! This module must never know about HTTP (no status codes, no JSON field paths of a
//! request, no axum types) and never encode wire frames itself beyond calling
//! `tern_schema::encode`.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_schema::client::{self, KickReason};
use tern_schema::encode;
use tern_storage::{AppId, Seq, StoreError, SyncKind, UserId, UserRecord, WriteBatch};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::error::ServiceError;
use crate::sessions::Session;
use crate::{now_ms, Logic};

/// Longest `nickName`, in characters: a display name, shown in one line.
pub const MAX_NICK_NAME_CHARS: usize = 64;
/// Longest `photo` (an avatar URL), in characters: long CDN URLs with tokens fit.
pub const MAX_PHOTO_CHARS: usize = 512;
/// Longest `selfSignature`, in characters: a status line, not a document.
pub const MAX_SELF_SIGNATURE_CHARS: usize = 256;
/// Longest `location`, in characters.
pub const MAX_LOCATION_CHARS: usize = 128;
/// Longest `birthDay`, in characters: a date in any common notation.
pub const MAX_BIRTH_DAY_CHARS: usize = 32;
/// Longest `extra`, in characters: room for a small business JSON document while
/// keeping a full batch of profiles far below the HTTP body limit.
pub const MAX_EXTRA_CHARS: usize = 4096;
/// `friendAllowType` of a newly imported user that does not say: 1 (anyone may add),
/// the original system's default.
pub const DEFAULT_FRIEND_ALLOW_TYPE: u8 = 1;
/// Number of lock stripes of [`UserLocks`]: enough that unrelated users rarely share one
/// under a realistic number of concurrent management calls, small enough to allocate
/// eagerly (a few tens of KiB).
const LOCK_STRIPES: usize = 1024;

/// API code: a batch call carries more items than allowed (the original's "import over
/// limit", used by every user batch call).
pub const BATCH_TOO_LARGE: u32 = 20000;

/// Profile fields a caller may set. `None` means "not given": import leaves the stored
/// value (or the default, for a new user), modify leaves it unchanged.
///
/// Serialized (camelCase, absent fields omitted) this is also the body of a `Profile`
/// log entry, so the encoding is stable: add fields, never rename them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfilePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_sex: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_day: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signature: Option<String>,
    /// 1 anyone may add, 2 needs approval, 3 nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friend_allow_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_add_friend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_flag: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_flag: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
}

/// The API names of the settable profile fields, in documentation order.
pub const PROFILE_FIELDS: [&str; 11] = [
    "nickName",
    "photo",
    "userSex",
    "birthDay",
    "location",
    "selfSignature",
    "friendAllowType",
    "disableAddFriend",
    "silentFlag",
    "forbiddenFlag",
    "extra",
];

fn check_len(field: &str, value: &Option<String>, max: usize) -> Result<(), ServiceError> {
    match value {
        Some(v) if v.chars().count() > max => {
            Err(ServiceError::invalid(field, format!("longer than {max} characters")))
        }
        _ => Ok(()),
    }
}

impl ProfilePatch {
    /// Whether no field is given.
    pub fn is_empty(&self) -> bool {
        *self == ProfilePatch::default()
    }

    /// Checks every given field against its limit.
    pub fn validate(&self) -> Result<(), ServiceError> {
        check_len("nickName", &self.nick_name, MAX_NICK_NAME_CHARS)?;
        check_len("photo", &self.photo, MAX_PHOTO_CHARS)?;
        check_len("birthDay", &self.birth_day, MAX_BIRTH_DAY_CHARS)?;
        check_len("location", &self.location, MAX_LOCATION_CHARS)?;
        check_len("selfSignature", &self.self_signature, MAX_SELF_SIGNATURE_CHARS)?;
        check_len("extra", &self.extra, MAX_EXTRA_CHARS)?;
        if let Some(s) = self.user_sex.filter(|s| *s > 2) {
            return Err(ServiceError::invalid(
                "userSex",
                format!("must be 0 (unknown), 1 (male) or 2 (female), not {s}"),
            ));
        }
        if let Some(t) = self.friend_allow_type.filter(|t| !(1..=3).contains(t)) {
            return Err(ServiceError::invalid(
                "friendAllowType",
                format!("must be 1 (anyone), 2 (needs approval) or 3 (nobody), not {t}"),
            ));
        }
        Ok(())
    }

    /// Every field of `rec`, as a patch (the first log entry of a new user carries the
    /// whole profile so a sync from zero sees it).
    pub fn full(rec: &UserRecord) -> Self {
        Self {
            nick_name: Some(rec.nick_name.clone()),
            photo: Some(rec.photo.clone()),
            user_sex: Some(rec.user_sex),
            birth_day: Some(rec.birth_day.clone()),
            location: Some(rec.location.clone()),
            self_signature: Some(rec.self_signature.clone()),
            friend_allow_type: Some(rec.friend_allow_type),
            disable_add_friend: Some(rec.disable_add_friend),
            silent_flag: Some(rec.silent_flag),
            forbidden_flag: Some(rec.forbidden_flag),
            extra: Some(rec.extra.clone()),
        }
    }

    /// The given fields whose value differs from `rec`.
    pub fn diff(&self, rec: &UserRecord) -> Self {
        fn changed<T: PartialEq + Clone>(new: &Option<T>, old: &T) -> Option<T> {
            new.as_ref().filter(|n| *n != old).cloned()
        }
        Self {
            nick_name: changed(&self.nick_name, &rec.nick_name),
            photo: changed(&self.photo, &rec.photo),
            user_sex: changed(&self.user_sex, &rec.user_sex),
            birth_day: changed(&self.birth_day, &rec.birth_day),
            location: changed(&self.location, &rec.location),
            self_signature: changed(&self.self_signature, &rec.self_signature),
            friend_allow_type: changed(&self.friend_allow_type, &rec.friend_allow_type),
            disable_add_friend: changed(&self.disable_add_friend, &rec.disable_add_friend),
            silent_flag: changed(&self.silent_flag, &rec.silent_flag),
            forbidden_flag: changed(&self.forbidden_flag, &rec.forbidden_flag),
            extra: changed(&self.extra, &rec.extra),
        }
    }

    /// Writes the given fields into `rec`.
    pub fn apply(&self, rec: &mut UserRecord) {
        fn set<T: Clone>(new: &Option<T>, old: &mut T) {
            if let Some(n) = new {
                *old = n.clone();
            }
        }
        set(&self.nick_name, &mut rec.nick_name);
        set(&self.photo, &mut rec.photo);
        set(&self.user_sex, &mut rec.user_sex);
        set(&self.birth_day, &mut rec.birth_day);
        set(&self.location, &mut rec.location);
        set(&self.self_signature, &mut rec.self_signature);
        set(&self.friend_allow_type, &mut rec.friend_allow_type);
        set(&self.disable_add_friend, &mut rec.disable_add_friend);
        set(&self.silent_flag, &mut rec.silent_flag);
        set(&self.forbidden_flag, &mut rec.forbidden_flag);
        set(&self.extra, &mut rec.extra);
    }

    /// API names of the given fields.
    pub fn field_names(&self) -> Vec<&'static str> {
        let given = [
            self.nick_name.is_some(),
            self.photo.is_some(),
            self.user_sex.is_some(),
            self.birth_day.is_some(),
            self.location.is_some(),
            self.self_signature.is_some(),
            self.friend_allow_type.is_some(),
            self.disable_add_friend.is_some(),
            self.silent_flag.is_some(),
            self.forbidden_flag.is_some(),
            self.extra.is_some(),
        ];
        PROFILE_FIELDS.iter().zip(given).filter(|(_, g)| *g).map(|(n, _)| *n).collect()
    }
}

/// The payload of one `Profile` log entry: whose profile changed and how. JSON,
/// camelCase; unknown keys are ignored when reading so fields can be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileChange {
    pub user_id: UserId,
    #[serde(flatten)]
    pub fields: ProfilePatch,
    /// The user was deleted by this change (a tombstone for syncing devices).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One entry of a profile sync answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSyncEntry {
    pub seq: Seq,
    pub time_ms: u64,
    pub change: ProfileChange,
}

/// A page of profile changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSync {
    /// The committed profile seq of the user (nothing at or below it can appear later).
    pub max_seq: Seq,
    /// Whether this page reaches `max_seq`.
    pub completed: bool,
    pub entries: Vec<ProfileSyncEntry>,
}

/// Result of [`Users::modify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modified {
    /// The profile seq of this change; the current committed seq if nothing changed.
    pub seq: Seq,
    /// API names of the fields that actually changed (empty: nothing to write).
    pub changed: Vec<&'static str>,
}

/// One item of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportItem {
    pub user_id: UserId,
    pub fields: ProfilePatch,
    /// The original system's password: stored as a hash (see [`crate::password`]).
    pub password: Option<String>,
}

/// Per-user serialization of read-modify-write, as a fixed set of lock stripes: a user
/// maps to one stripe; batches take their stripes in ascending order, so no two callers
/// can deadlock. Unrelated users sharing a stripe only wait for each other briefly.
pub struct UserLocks {
    stripes: Box<[Mutex<()>]>,
}

impl Default for UserLocks {
    fn default() -> Self {
        Self { stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl UserLocks {
    fn stripe(app: AppId, user: &UserId) -> usize {
        crate::slots::shard_of_id(app, user.as_str(), LOCK_STRIPES)
    }

    /// Locks one user.
    pub async fn lock(&self, app: AppId, user: &UserId) -> MutexGuard<'_, ()> {
        self.stripes[Self::stripe(app, user)].lock().await
    }

    /// Locks several users (in ascending stripe order, each stripe once).
    pub async fn lock_all<'a>(&self, app: AppId, users: impl Iterator<Item = &'a UserId>) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = users.map(|u| Self::stripe(app, u)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

/// A profile write waiting to be committed: the new record and, when something visible
/// changed, the log entry describing it.
struct Pending {
    record: UserRecord,
    change: Option<ProfileChange>,
}

/// The user service: a handle on the logic node (the router creates one), holding no
/// state of its own — the per-user locks live in [`Logic::user_locks`], so any writer of
/// user records (HTTP or link) serializes on the same ones.
pub struct Users {
    logic: Arc<Logic>,
}

impl Users {
    pub fn new(logic: Arc<Logic>) -> Self {
        Self { logic }
    }

    pub fn logic(&self) -> &Arc<Logic> {
        &self.logic
    }

    /// Refuses a batch of `len` items if it is over the configured limit.
    pub fn check_batch(&self, len: usize) -> Result<(), ServiceError> {
        let max = self.logic.config.http.max_batch;
        if len > max {
            return Err(ServiceError::BatchTooLarge { len, max });
        }
        Ok(())
    }

    /// Creates or updates users. Answers per item, in input order: a bad item never
    /// fails the others. Only store failures and an over-limit batch fail the call.
    pub async fn import(
        &self,
        app: AppId,
        items: Vec<ImportItem>,
    ) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        self.check_batch(items.len())?;
        let mut results: Vec<Result<(), ServiceError>> = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashMap::new();
        let admins = self.logic.apps.get(app).map(|a| a.admins.clone()).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let r = match seen.insert(item.user_id.clone(), i) {
                // Two items for one user in one batch would race inside the batch;
                // refuse the later one so the result does not depend on item order.
                Some(_) => Err(ServiceError::invalid("userId", "appears more than once in this batch")),
                // A user's login signature has the admin signature's format: a user
                // named like an admin would hold a working admin credential.
                None if admins.iter().any(|a| a == item.user_id.as_str()) => {
                    Err(ServiceError::invalid("userId", "is an admin identifier of this app; admins cannot be users"))
                }
                None => item.fields.validate(),
            };
            results.push(r);
        }
        let valid: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_ok()).collect();
        if valid.is_empty() {
            return Ok(results);
        }
        // Hashed before any lock is taken: hashing is slow on purpose.
        let hashes = crate::password::hash_all(valid.iter().map(|i| items[*i].password.clone()).collect())
            .await
            .map_err(|e| ServiceError::Store(StoreError::Backend(e)))?;
        let _guards = self.logic.user_locks.lock_all(app, valid.iter().map(|i| &items[*i].user_id)).await;
        let ids: Vec<UserId> = valid.iter().map(|i| items[*i].user_id.clone()).collect();
        let current = self.logic.store.get_users(app, &ids).await?;
        let now = now_ms();
        let mut pending = Vec::new();
        let mut disabled = Vec::new();
        for ((i, cur), hash) in valid.into_iter().zip(current).zip(hashes) {
            let item = &items[i];
            match cur {
                Some(rec) if rec.deleted => results[i] = Err(ServiceError::UserDeleted(item.user_id.clone())),
                Some(mut rec) => {
                    let diff = item.fields.diff(&rec);
                    if diff.forbidden_flag == Some(true) {
                        disabled.push(rec.user_id.clone());
                    }
                    let change = (!diff.is_empty()).then(|| {
                        diff.apply(&mut rec);
                        ProfileChange { user_id: rec.user_id.clone(), fields: diff, deleted: false }
                    });
                    // A new password is a record change but nothing a sync shows.
                    if let Some(h) = hash {
                        rec.password_hash = h;
                    }
                    if change.is_some() || item.password.is_some() {
                        rec.updated_ms = now;
                        pending.push(Pending { record: rec, change });
                    }
                }
                None => {
                    let mut rec = UserRecord::new(item.user_id.clone(), now);
                    rec.friend_allow_type = DEFAULT_FRIEND_ALLOW_TYPE;
                    rec.password_hash = hash.unwrap_or_default();
                    item.fields.apply(&mut rec);
                    let change = ProfileChange {
                        user_id: rec.user_id.clone(),
                        fields: ProfilePatch::full(&rec),
                        deleted: false,
                    };
                    pending.push(Pending { record: rec, change: Some(change) });
                }
            }
        }
        let committed = self.commit(app, pending).await?;
        for (user, seq) in committed {
            self.notify_profile(app, &user, seq);
        }
        for user in disabled {
            self.kick_disabled(app, &user);
        }
        Ok(results)
    }

    /// Ends the sessions of a user that has just been disabled (`forbiddenFlag`): a
    /// disabled user may not log in, so it may not stay logged in either.
    fn kick_disabled(&self, app: AppId, user: &UserId) {
        let n = self.logic.sessions.kick_user(app, user, KickReason::UserDisabled, "this user was disabled");
        if n > 0 {
            tracing::info!(app = app.0, user = %user, sessions = n, "kicked the sessions of a disabled user");
        }
    }

    /// Soft-deletes users: marks them deleted (data stays), logs a tombstone in their
    /// profile log and kicks their online sessions. Deleting a deleted user succeeds.
    pub async fn delete(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        self.check_batch(ids.len())?;
        let _guards = self.logic.user_locks.lock_all(app, ids.iter()).await;
        let current = self.logic.store.get_users(app, ids).await?;
        let now = now_ms();
        let mut results = Vec::with_capacity(ids.len());
        let mut pending: Vec<Pending> = Vec::new();
        for (id, cur) in ids.iter().zip(current) {
            match cur {
                None => results.push(Err(ServiceError::UserNotFound(id.clone()))),
                Some(rec) if rec.deleted => results.push(Ok(())),
                // The same id twice in one call: the first occurrence deletes it.
                Some(_) if pending.iter().any(|p| p.record.user_id == *id) => results.push(Ok(())),
                Some(mut rec) => {
                    rec.deleted = true;
                    rec.updated_ms = now;
                    let change = ProfileChange { user_id: id.clone(), fields: ProfilePatch::default(), deleted: true };
                    pending.push(Pending { record: rec, change: Some(change) });
                    results.push(Ok(()));
                }
            }
        }
        let committed = self.commit(app, pending).await?;
        for (user, _) in committed {
            let n = self.logic.sessions.kick_user(app, &user, KickReason::UserDeleted, "this user was deleted");
            if n > 0 {
                tracing::info!(app = app.0, user = %user, sessions = n, "kicked the sessions of a deleted user");
            }
        }
        Ok(results)
    }

    /// Profiles of `ids`, in order (deleted users included, with `deleted` set).
    pub async fn get(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Result<UserRecord, ServiceError>>, ServiceError> {
        self.check_batch(ids.len())?;
        let found = self.logic.store.get_users(app, ids).await?;
        Ok(ids.iter().zip(found).map(|(id, r)| r.ok_or_else(|| ServiceError::UserNotFound(id.clone()))).collect())
    }

    /// One profile (deleted users included, with `deleted` set).
    pub async fn get_one(&self, app: AppId, id: &UserId) -> Result<UserRecord, ServiceError> {
        let found = self.logic.store.get_users(app, std::slice::from_ref(id)).await?;
        found.into_iter().next().flatten().ok_or_else(|| ServiceError::UserNotFound(id.clone()))
    }

    /// Changes the given fields of one user's profile. Fields equal to the stored value
    /// are not changes; if nothing changes, nothing is written and no seq is used.
    ///
    /// A `password` (the original system's) is stored as a new salted hash whenever given;
    /// it is reported in `changed` as `password` but never logged nor synced.
    pub async fn modify(
        &self,
        app: AppId,
        id: &UserId,
        fields: ProfilePatch,
        password: Option<String>,
    ) -> Result<Modified, ServiceError> {
        if fields.is_empty() && password.is_none() {
            return Err(ServiceError::invalid(
                "body",
                format!("no profile field given (expected at least one of {}, password)", PROFILE_FIELDS.join(", ")),
            ));
        }
        fields.validate()?;
        let hash = crate::password::hash_all(vec![password])
            .await
            .map_err(|e| ServiceError::Store(StoreError::Backend(e)))?
            .pop()
            .flatten();
        let _guard = self.logic.user_locks.lock(app, id).await;
        let mut rec = self.get_one(app, id).await?;
        if rec.deleted {
            return Err(ServiceError::UserDeleted(id.clone()));
        }
        let diff = fields.diff(&rec);
        let password_given = hash.is_some();
        if let Some(h) = hash {
            rec.password_hash = h;
            rec.updated_ms = now_ms();
            if diff.is_empty() {
                // Only the password: a record write, no log entry, no notification.
                let mut batch = WriteBatch::new();
                batch.put_user(app, rec);
                self.logic.write_retrying(batch).await?;
                let seq = self.logic.seqs.committed(app, id, SyncKind::Profile).await?;
                return Ok(Modified { seq, changed: vec!["password"] });
            }
        }
        if diff.is_empty() {
            let seq = self.logic.seqs.committed(app, id, SyncKind::Profile).await?;
            return Ok(Modified { seq, changed: Vec::new() });
        }
        let mut changed = diff.field_names();
        if password_given {
            changed.push("password");
        }
        let disabled = diff.forbidden_flag == Some(true);
        diff.apply(&mut rec);
        rec.updated_ms = now_ms();
        let change = ProfileChange { user_id: id.clone(), fields: diff, deleted: false };
        let payload = encode_change(&change)?;
        let state = crate::user_cache::UserState::of(&rec);
        let mut batch = WriteBatch::new();
        batch.put_user(app, rec);
        let seq = self.logic.append(app, id, SyncKind::Profile, payload, batch).await?;
        // The send path reads muting from the cache: it must see this change at once.
        self.logic.user_cache.written(app, [(id.clone(), state)]);
        self.notify_profile(app, id, seq);
        if disabled {
            self.kick_disabled(app, id);
        }
        self.fan_out_to_friends(app, &change, seq).await?;
        Ok(Modified { seq, changed })
    }

    /// Profile changes of `id` with seq > `after`, at most `limit` (default
    /// [`DEFAULT_PAGE_LIMIT`], capped at [`MAX_PAGE_LIMIT`]; 0 means the default).
    ///
    /// Friends' profile changes will arrive in this same log (see
    /// [`fan_out_to_friends`](Self::fan_out_to_friends)); each entry names whose profile
    /// changed, so this reader needs no change when friendships land.
    pub async fn sync(
        &self,
        app: AppId,
        id: &UserId,
        after: Seq,
        limit: Option<usize>,
    ) -> Result<ProfileSync, ServiceError> {
        let limit = match limit {
            None | Some(0) => DEFAULT_PAGE_LIMIT,
            Some(n) => n.min(MAX_PAGE_LIMIT),
        };
        // Unknown users have no log; say so rather than answer an empty page.
        self.get_one(app, id).await?;
        let (raw, max_seq, completed) = self.logic.read_synced(app, id, SyncKind::Profile, after, limit).await?;
        let mut entries = Vec::with_capacity(raw.len());
        for e in raw {
            let change: ProfileChange = serde_json::from_slice(&e.payload).map_err(|err| {
                StoreError::corrupt(format!("profile log entry {} of user {id} in app {app}: {err}", e.seq))
            })?;
            entries.push(ProfileSyncEntry { seq: e.seq, time_ms: e.time_ms, change });
        }
        Ok(ProfileSync { max_seq, completed, entries })
    }

    /// Online devices of each user (an empty list: offline). No store access: a user
    /// that does not exist simply has no sessions.
    pub fn online_status(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Vec<Session>>, ServiceError> {
        self.check_batch(ids.len())?;
        Ok(ids.iter().map(|id| self.logic.sessions.devices(app, id)).collect())
    }

    /// Whether `id` may log in: it exists, is not deleted and not disabled.
    pub async fn check_login(&self, app: AppId, id: &UserId) -> Result<UserRecord, ServiceError> {
        let rec = self.get_one(app, id).await?;
        if rec.deleted {
            return Err(ServiceError::UserDeleted(id.clone()));
        }
        if rec.forbidden_flag {
            return Err(ServiceError::disabled(id));
        }
        Ok(rec)
    }

    /// Tells every online device of `user` that its profile log reached `seq`.
    fn notify_profile(&self, app: AppId, user: &UserId, seq: Seq) {
        notify_profile(&self.logic, app, user, seq);
    }

    /// A profile change reaches the `Profile` logs of everyone who lists the user as a
    /// friend (write fan-out, as with 1:1 messages, so each friend's `syncUserData` stays
    /// one range read of their own log and keeps its sync invariant: every entry goes
    /// through `Logic::append_many`) and notifies their online devices. The targets are
    /// the who-lists-me index (`crate::friends::listed_by`, exact for one-way friends too)
    /// joined with the user's own friend list (the same users for two-way friendships; it
    /// also covers relations made before the index existed); big lists are written in
    /// several batches.
    async fn fan_out_to_friends(&self, app: AppId, change: &ProfileChange, _seq: Seq) -> Result<(), ServiceError> {
        /// Friends' log entries per store batch.
        const CHUNK: usize = 512;
        let mut friends = crate::friends::friend_ids(&self.logic, app, &change.user_id).await?;
        friends.extend(crate::friends::listed_by(&self.logic, app, &change.user_id).await?);
        friends.sort_unstable();
        friends.dedup();
        friends.retain(|f| *f != change.user_id);
        if friends.is_empty() {
            return Ok(());
        }
        let payload = encode_change(change)?;
        for chunk in friends.chunks(CHUNK) {
            let entries = chunk.iter().map(|f| (f.clone(), SyncKind::Profile, payload.clone())).collect();
            let seqs = self.logic.append_many(app, entries, WriteBatch::new()).await?;
            for (friend, seq) in chunk.iter().zip(seqs) {
                self.notify_profile(app, friend, seq);
            }
        }
        Ok(())
    }

    /// Writes every pending record, with a `Profile` log entry for each change, in one
    /// durable batch (one store write for a whole import instead of one per user).
    /// Returns the users whose profile log moved, with the new seq.
    async fn commit(&self, app: AppId, pending: Vec<Pending>) -> Result<Vec<(UserId, Seq)>, ServiceError> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = WriteBatch::with_capacity(pending.len() * 3);
        let mut entries = Vec::with_capacity(pending.len());
        for p in pending {
            if let Some(change) = &p.change {
                entries.push((p.record.user_id.clone(), SyncKind::Profile, encode_change(change)?));
            }
            batch.put_user(app, p.record);
        }
        let users: Vec<UserId> = entries.iter().map(|(u, ..)| u.clone()).collect();
        let states: Vec<(UserId, crate::user_cache::UserState)> = batch
            .ops()
            .iter()
            .filter_map(|op| match op {
                tern_storage::WriteOp::PutUser(_, r) => Some((r.user_id.clone(), crate::user_cache::UserState::of(r))),
                _ => None,
            })
            .collect();
        let seqs = self.logic.append_many(app, entries, batch).await;
        // Whether or not the write succeeded, the store may now hold these records: tell
        // the cache (a failed write leaves the old state, which a later read restores).
        match seqs {
            Ok(seqs) => {
                self.logic.user_cache.written(app, states);
                Ok(users.into_iter().zip(seqs).collect())
            }
            Err(e) => {
                self.logic.user_cache.written(app, std::iter::empty());
                Err(e.into())
            }
        }
    }
}

/// Tells every online device of `user` that its profile log reached `seq`.
fn notify_profile(logic: &Logic, app: AppId, user: &UserId, seq: Seq) {
    let frame = encode::sync_notify(client::SyncKind::Profile, seq.0);
    logic.sessions.send_to_user(app, user, &frame, None);
}

/// For each (owner, peer): the owner has just started listing the peer as a friend, so
/// the peer's current full profile is appended to the owner's `Profile` log (one batch)
/// and the owner's devices are told. Deleted or unknown peers are skipped.
pub(crate) async fn share_profiles(logic: &Logic, app: AppId, pairs: &[(UserId, UserId)]) -> Result<(), ServiceError> {
    let peers: Vec<UserId> = pairs.iter().map(|(_, p)| p.clone()).collect();
    let records = logic.store.get_users(app, &peers).await?;
    let mut entries = Vec::with_capacity(pairs.len());
    for ((owner, _), rec) in pairs.iter().zip(records) {
        let Some(rec) = rec.filter(|r| !r.deleted) else { continue };
        let change = ProfileChange { user_id: rec.user_id.clone(), fields: ProfilePatch::full(&rec), deleted: false };
        entries.push((owner.clone(), SyncKind::Profile, encode_change(&change)?));
    }
    if entries.is_empty() {
        return Ok(());
    }
    let owners: Vec<UserId> = entries.iter().map(|(o, ..)| o.clone()).collect();
    let seqs = logic.append_many(app, entries, WriteBatch::new()).await?;
    for (owner, seq) in owners.iter().zip(seqs) {
        notify_profile(logic, app, owner, seq);
    }
    Ok(())
}

fn encode_change(change: &ProfileChange) -> Result<Bytes, ServiceError> {
    // Serializing plain strings, numbers and bools cannot fail; map it anyway rather
    // than panic.
    serde_json::to_vec(change)
        .map(Bytes::from)
        .map_err(|e| ServiceError::Store(StoreError::Backend(format!("encoding a profile change: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> UserRecord {
        UserRecord::new(UserId::new("u1").unwrap(), 0)
    }

    fn check_invalid(patch: ProfilePatch, field: &str, reason_contains: &str) {
        match patch.validate() {
            Err(ServiceError::Invalid { field: f, reason }) => {
                assert_eq!(f, field);
                assert!(reason.contains(reason_contains), "{reason}");
            }
            other => panic!("expected {field} to be invalid, got {other:?}"),
        }
    }

    #[test]
    fn limits_count_characters() {
        let ok = ProfilePatch { nick_name: Some("名".repeat(64)), ..Default::default() };
        assert_eq!(ok.validate(), Ok(()));
        check_invalid(ProfilePatch { nick_name: Some("名".repeat(65)), ..Default::default() }, "nickName", "64");
        check_invalid(ProfilePatch { photo: Some("x".repeat(513)), ..Default::default() }, "photo", "512");
        check_invalid(
            ProfilePatch { self_signature: Some("x".repeat(257)), ..Default::default() },
            "selfSignature",
            "256",
        );
        check_invalid(ProfilePatch { location: Some("x".repeat(129)), ..Default::default() }, "location", "128");
        check_invalid(ProfilePatch { birth_day: Some("x".repeat(33)), ..Default::default() }, "birthDay", "32");
        check_invalid(ProfilePatch { extra: Some("x".repeat(4097)), ..Default::default() }, "extra", "4096");
        check_invalid(ProfilePatch { user_sex: Some(3), ..Default::default() }, "userSex", "not 3");
        check_invalid(ProfilePatch { friend_allow_type: Some(0), ..Default::default() }, "friendAllowType", "not 0");
        check_invalid(ProfilePatch { friend_allow_type: Some(4), ..Default::default() }, "friendAllowType", "not 4");
    }

    #[test]
    fn diff_keeps_only_real_changes() {
        let mut r = rec();
        r.nick_name = "a".into();
        let patch = ProfilePatch { nick_name: Some("a".into()), photo: Some("p".into()), ..Default::default() };
        let d = patch.diff(&r);
        assert_eq!(d, ProfilePatch { photo: Some("p".into()), ..Default::default() });
        assert_eq!(d.field_names(), vec!["photo"]);
        d.apply(&mut r);
        assert!(patch.diff(&r).is_empty());
    }

    #[test]
    fn change_encoding_is_flat_camel_case() {
        let c = ProfileChange {
            user_id: UserId::new("u1").unwrap(),
            fields: ProfilePatch { nick_name: Some("n".into()), user_sex: Some(1), ..Default::default() },
            deleted: false,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"userId":"u1","nickName":"n","userSex":1}"#);
        let back: ProfileChange = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let tomb: ProfileChange = serde_json::from_str(r#"{"userId":"u1","deleted":true,"future":1}"#).unwrap();
        assert!(tomb.deleted && tomb.fields.is_empty());
    }

    #[test]
    fn field_names_follow_the_api_list() {
        assert_eq!(ProfilePatch::full(&rec()).field_names(), PROFILE_FIELDS.to_vec());
    }
}
