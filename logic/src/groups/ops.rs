//! The group operations behind the management API: create / import, profile reads and
//! changes, membership, roles, mutes, ownership, dissolving, and the joined-groups
//! list. Each runs under the group's lock (see the module docs of `groups`).

use crate::error::ServiceError;
use tern_storage::{AppId, GroupId, GroupMemberRecord, GroupRecord, Seq, UserId};

use super::{
    commit, errors, joined, roles, types, Actor, Change, GroupState, JoinedRecord, MAX_ALIAS_CHARS, MAX_MEMBERS,
    MAX_NAME_CHARS, MAX_PHOTO_CHARS, MAX_TEXT_CHARS,
};
use crate::user_cache::UserState;
use crate::{now_ms, Logic};

/// A group's profile as given to create / import.
#[derive(Debug, Clone, Default)]
pub struct GroupInput {
    /// Absent: one is generated.
    pub group_id: Option<GroupId>,
    pub group_type: u8,
    pub group_name: String,
    pub owner_id: Option<UserId>,
    pub mute: bool,
    pub apply_join_type: u8,
    pub introduction: String,
    pub notification: String,
    pub photo: String,
    pub max_member_count: u32,
    pub extra: String,
    /// Import only: the original create time.
    pub create_time_ms: Option<u64>,
}

/// A member as given to create / add / import.
#[derive(Debug, Clone)]
pub struct MemberInput {
    pub member_id: UserId,
    pub role: u8,
    pub alias: String,
    pub join_type: String,
    /// Import only: the original join time.
    pub join_time_ms: Option<u64>,
    /// Import only: muted until (ms since the epoch).
    pub mute_until_ms: u64,
    pub extra: String,
}

impl MemberInput {
    /// A plain member.
    pub fn plain(member_id: UserId) -> Self {
        Self {
            member_id,
            role: roles::MEMBER,
            alias: String::new(),
            join_type: String::new(),
            join_time_ms: None,
            mute_until_ms: 0,
            extra: String::new(),
        }
    }
}

/// Changes of a group's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    pub group_name: Option<String>,
    pub introduction: Option<String>,
    pub notification: Option<String>,
    pub photo: Option<String>,
    pub apply_join_type: Option<u8>,
    pub mute: Option<bool>,
    pub max_member_count: Option<u32>,
    pub extra: Option<String>,
}

/// Changes of one member; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MemberChange {
    pub role: Option<u8>,
    pub alias: Option<String>,
    pub extra: Option<String>,
}

/// Per-item results of a batch, in request order.
pub type ItemResults = Vec<(UserId, Result<(), ServiceError>)>;

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.chars().count() > max {
        return Err(ServiceError::invalid(field, format!("longer than {max} characters")));
    }
    Ok(())
}

fn check_profile(
    name: &str,
    intro: &str,
    notice: &str,
    photo: &str,
    extra: &str,
    max: u32,
) -> Result<(), ServiceError> {
    check_len("groupName", name, MAX_NAME_CHARS)?;
    check_len("introduction", intro, MAX_TEXT_CHARS)?;
    check_len("notification", notice, MAX_TEXT_CHARS)?;
    check_len("photo", photo, MAX_PHOTO_CHARS)?;
    check_len("extra", extra, MAX_TEXT_CHARS)?;
    if max > MAX_MEMBERS {
        return Err(ServiceError::invalid("maxMemberCount", format!("at most {MAX_MEMBERS}")));
    }
    Ok(())
}

fn check_member_input(m: &MemberInput) -> Result<(), ServiceError> {
    check_len("alias", &m.alias, MAX_ALIAS_CHARS)?;
    check_len("joinType", &m.join_type, MAX_ALIAS_CHARS)?;
    check_len("extra", &m.extra, MAX_TEXT_CHARS)?;
    if m.role > roles::ADMIN {
        return Err(ServiceError::invalid("role", "must be 0 (member) or 1 (admin); the owner is ownerId"));
    }
    Ok(())
}

/// The state of an existing group, or 40000.
fn existing<'a>(slot: &'a mut Option<GroupState>, group: &GroupId) -> Result<&'a mut GroupState, ServiceError> {
    slot.as_mut().ok_or_else(|| ServiceError::refused(errors::NO_SUCH_GROUP, format!("no such group: {group}")))
}

/// Each user's state: refuses missing (20001) and deleted (20002) ones per item.
async fn user_states(logic: &Logic, app: AppId, ids: &[UserId]) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
    let states = logic.user_cache.states(&*logic.store, app, ids).await?;
    Ok(ids
        .iter()
        .zip(states)
        .map(|(id, s)| match s {
            UserState::Missing => Err(ServiceError::UserNotFound(id.clone())),
            UserState::Deleted => Err(ServiceError::UserDeleted(id.clone())),
            UserState::Active | UserState::Muted | UserState::Disabled => Ok(()),
        })
        .collect())
}

async fn require_user(logic: &Logic, app: AppId, id: &UserId) -> Result<(), ServiceError> {
    user_states(logic, app, std::slice::from_ref(id)).await?.remove(0)
}

/// Creates (or, with `import`, imports: given times kept, nobody notified) a group
/// with its owner and initial members. Returns the group id and per-member results.
pub async fn create(
    logic: &Logic,
    app: AppId,
    input: GroupInput,
    members: Vec<MemberInput>,
    import: bool,
) -> Result<(GroupId, ItemResults), ServiceError> {
    check_profile(
        &input.group_name,
        &input.introduction,
        &input.notification,
        &input.photo,
        &input.extra,
        input.max_member_count,
    )?;
    if input.group_type == 0 || input.group_type > types::COMMUNITY {
        return Err(ServiceError::invalid(
            "groupType",
            "must be 1 (private), 2 (public), 3 (meeting) or 4 (community)",
        ));
    }
    if input.group_type == types::PUBLIC && input.owner_id.is_none() {
        return Err(ServiceError::refused(errors::PUBLIC_NEEDS_OWNER, "a public group needs an owner (ownerId)"));
    }
    for (i, m) in members.iter().enumerate() {
        check_member_input(m).map_err(|e| match e {
            ServiceError::Invalid { field, reason } => {
                ServiceError::invalid(&format!("memberList[{i}].{field}"), reason)
            }
            e => e,
        })?;
    }
    if let Some(owner) = &input.owner_id {
        require_user(logic, app, owner).await?;
    }
    let now = now_ms();
    let id = match input.group_id {
        Some(id) => id,
        None => GroupId::new(format!("g{:x}", logic.messaging.keys.next(now)))
            .map_err(|e| ServiceError::invalid("groupId", e.to_string()))?,
    };
    let mut slot = logic.groups.lock(logic, app, &id).await?;
    if slot.is_some() {
        return Err(ServiceError::refused(errors::GROUP_EXISTS, format!("group {id} exists already")));
    }
    let created = if import { input.create_time_ms.unwrap_or(now) } else { now };
    let mut rec = GroupRecord::new(id.clone(), created);
    rec.updated_ms = now;
    rec.group_type = input.group_type;
    rec.group_name = input.group_name;
    rec.owner_id = input.owner_id.clone();
    rec.mute = input.mute;
    rec.apply_join_type = input.apply_join_type;
    rec.introduction = input.introduction;
    rec.notification = input.notification;
    rec.photo = input.photo;
    rec.max_member_count = input.max_member_count;
    rec.extra = input.extra;
    let max = if rec.max_member_count == 0 { super::DEFAULT_MAX_MEMBERS } else { rec.max_member_count };

    let mut ch = Change { notify: !import, ..Change::default() };
    if let Some(owner) = &input.owner_id {
        let mut m = GroupMemberRecord::new(owner.clone(), created, Seq::ZERO);
        m.role = roles::OWNER;
        ch.puts.push(m);
    }
    let ids: Vec<UserId> = members.iter().map(|m| m.member_id.clone()).collect();
    let states = user_states(logic, app, &ids).await?;
    let mut results = Vec::with_capacity(members.len());
    for (m, state) in members.into_iter().zip(states) {
        let r = state.and_then(|()| {
            if ch.puts.iter().any(|p| p.member_id == m.member_id) {
                return Err(ServiceError::refused(
                    errors::ALREADY_MEMBER,
                    format!("{} is a member already", m.member_id),
                ));
            }
            if ch.puts.len() as u64 >= u64::from(max) {
                return Err(ServiceError::refused(errors::GROUP_FULL, format!("the group is full ({max} members)")));
            }
            Ok(())
        });
        if r.is_ok() {
            ch.puts.push(member_record(&m, created, Seq::ZERO, import));
        }
        results.push((m.member_id, r));
    }
    rec.member_count = ch.puts.len() as u32;
    ch.joined = ch.puts.iter().map(|m| (m.member_id.clone(), JoinedRecord::member(&rec, m, now))).collect();
    ch.group = Some(rec);
    commit(logic, app, &mut slot, ch).await?;
    Ok((id, results))
}

fn member_record(m: &MemberInput, now: u64, join_seq: Seq, import: bool) -> GroupMemberRecord {
    let join_time = if import { m.join_time_ms.unwrap_or(now) } else { now };
    let mut r = GroupMemberRecord::new(m.member_id.clone(), join_time, join_seq);
    r.role = m.role;
    r.alias = m.alias.clone();
    r.join_type = m.join_type.clone();
    r.extra = m.extra.clone();
    r.mute_until_ms = if import { m.mute_until_ms } else { 0 };
    r
}

/// A group's record and its timeline's newest seq (destroyed groups too).
pub async fn get(logic: &Logic, app: AppId, group: &GroupId) -> Result<(GroupRecord, Seq), ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    Ok((s.rec.clone(), s.committed()))
}

/// A page of a group's members after `after`, in the store's order; `true` when it is
/// the last page.
pub async fn members_page(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    after: Option<&UserId>,
    limit: usize,
) -> Result<(Vec<GroupMemberRecord>, bool), ServiceError> {
    {
        let mut slot = logic.groups.lock(logic, app, group).await?;
        existing(&mut slot, group)?;
    }
    // One more than asked tells whether a next page exists.
    let mut page = logic.store.list_group_members(app, group, after, limit + 1).await?;
    let completed = page.len() <= limit;
    page.truncate(limit);
    Ok((page, completed))
}

/// Most store pages one getAll call scans for groups of the asked type.
const MAX_SCAN_PAGES: usize = 16;

/// A page of the app's live groups (optionally of some types), after group `after` in
/// the store's order. Returns the page and the cursor of the next one (`None`: done).
pub async fn get_all(
    logic: &Logic,
    app: AppId,
    group_types: &[u8],
    after: Option<GroupId>,
    limit: usize,
) -> Result<(Vec<GroupRecord>, Option<GroupId>), ServiceError> {
    let mut out = Vec::with_capacity(limit);
    let mut cursor = after;
    for _ in 0..MAX_SCAN_PAGES {
        let page = logic.store.list_groups(app, cursor.as_ref(), limit).await?;
        let done = page.len() < limit;
        for g in page {
            cursor = Some(g.group_id.clone());
            if !g.destroyed && (group_types.is_empty() || group_types.contains(&g.group_type)) {
                out.push(g);
                if out.len() == limit {
                    return Ok((out, cursor));
                }
            }
        }
        if done {
            return Ok((out, None));
        }
    }
    // Scanned enough for one call: hand the caller the cursor to go on.
    Ok((out, cursor))
}

/// Changes a group's profile (owner or admin) and tells every member.
pub async fn update(
    logic: &Logic,
    app: AppId,
    actor: &Actor,
    group: &GroupId,
    patch: GroupPatch,
) -> Result<(), ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    s.require(actor, roles::ADMIN)?;
    let mut rec = s.rec.clone();
    if let Some(v) = patch.group_name {
        rec.group_name = v;
    }
    if let Some(v) = patch.introduction {
        rec.introduction = v;
    }
    if let Some(v) = patch.notification {
        rec.notification = v;
    }
    if let Some(v) = patch.photo {
        rec.photo = v;
    }
    if let Some(v) = patch.apply_join_type {
        rec.apply_join_type = v;
    }
    if let Some(v) = patch.mute {
        rec.mute = v;
    }
    if let Some(v) = patch.max_member_count {
        rec.max_member_count = v;
    }
    if let Some(v) = patch.extra {
        rec.extra = v;
    }
    check_profile(&rec.group_name, &rec.introduction, &rec.notification, &rec.photo, &rec.extra, rec.max_member_count)?;
    let now = now_ms();
    rec.updated_ms = now;
    let joined = s.members.values().map(|m| (m.member_id.clone(), JoinedRecord::member(&rec, m, now))).collect();
    commit(logic, app, &mut slot, Change { group: Some(rec), joined, notify: true, ..Change::default() }).await
}

/// Adds members (`import`: with their given join times and mutes, nobody notified;
/// `silent`: nobody notified). In a private group any member may add; otherwise the
/// owner or an admin; making someone an admin takes the owner. Answers per member.
pub async fn add_members(
    logic: &Logic,
    app: AppId,
    actor: &Actor,
    group: &GroupId,
    members: Vec<MemberInput>,
    silent: bool,
    import: bool,
) -> Result<ItemResults, ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    let min = if s.rec.group_type == types::PRIVATE { roles::MEMBER } else { roles::ADMIN };
    let actor_role = s.require(actor, min)?;
    let ids: Vec<UserId> = members.iter().map(|m| m.member_id.clone()).collect();
    let states = user_states(logic, app, &ids).await?;
    let now = now_ms();
    let max = s.max_members();
    let mut rec = s.rec.clone();
    let mut ch = Change { notify: !(silent || import), ..Change::default() };
    let mut results = Vec::with_capacity(members.len());
    for (m, state) in members.into_iter().zip(states) {
        let r = state.and_then(|()| {
            check_member_input(&m)?;
            if s.members.contains_key(&m.member_id) || ch.puts.iter().any(|p| p.member_id == m.member_id) {
                return Err(ServiceError::refused(
                    errors::ALREADY_MEMBER,
                    format!("{} is a member already", m.member_id),
                ));
            }
            if m.role == roles::ADMIN && actor_role.is_some_and(|r| r < roles::OWNER) {
                return Err(ServiceError::refused(errors::OWNER_ONLY, "only the owner may make admins"));
            }
            if s.members.len() + ch.puts.len() >= max as usize {
                return Err(ServiceError::refused(errors::GROUP_FULL, format!("the group is full ({max} members)")));
            }
            Ok(())
        });
        if r.is_ok() {
            ch.puts.push(member_record(&m, now, s.last_seq, import));
        }
        results.push((m.member_id, r));
    }
    if ch.puts.is_empty() {
        return Ok(results);
    }
    rec.member_count = (s.members.len() + ch.puts.len()) as u32;
    rec.updated_ms = now;
    ch.joined = ch.puts.iter().map(|m| (m.member_id.clone(), JoinedRecord::member(&rec, m, now))).collect();
    ch.group = Some(rec);
    commit(logic, app, &mut slot, ch).await?;
    Ok(results)
}

/// Removes members. The owner and admins remove members (admins not other admins);
/// anyone may remove themselves (leave), except the owner (40010). Answers per member.
pub async fn remove_members(
    logic: &Logic,
    app: AppId,
    actor: &Actor,
    group: &GroupId,
    ids: Vec<UserId>,
) -> Result<ItemResults, ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    let actor_role = s.actor_role(actor)?;
    let now = now_ms();
    let mut ch = Change { notify: true, ..Change::default() };
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let r = match s.role_of(&id) {
            _ if ch.dels.contains(&id) => {
                Err(ServiceError::refused(errors::NOT_MEMBER, format!("{id} is not a member")))
            }
            None => Err(ServiceError::refused(errors::NOT_MEMBER, format!("{id} is not a member"))),
            Some(roles::OWNER) => {
                Err(ServiceError::refused(errors::OWNER_NOT_REMOVABLE, "the owner cannot be removed"))
            }
            Some(target) => match (actor, actor_role) {
                (Actor::User(me), _) if *me == id => Ok(()),
                (_, None) | (_, Some(roles::OWNER)) => Ok(()),
                (_, Some(roles::ADMIN)) if target == roles::MEMBER => Ok(()),
                _ => Err(ServiceError::refused(errors::ADMIN_ONLY, "only the owner may remove admins, admins members")),
            },
        };
        if r.is_ok() {
            ch.dels.push(id.clone());
        }
        results.push((id, r));
    }
    if ch.dels.is_empty() {
        return Ok(results);
    }
    let mut rec = s.rec.clone();
    rec.member_count = (s.members.len() - ch.dels.len()) as u32;
    rec.updated_ms = now;
    ch.joined = ch.dels.iter().map(|u| (u.clone(), JoinedRecord::left(&rec, now))).collect();
    ch.group = Some(rec);
    commit(logic, app, &mut slot, ch).await?;
    Ok(results)
}

/// Changes one member's role (owner only; not to or from owner), alias or extra
/// (the member themselves, or the owner / an admin for plain members).
pub async fn update_member(
    logic: &Logic,
    app: AppId,
    actor: &Actor,
    group: &GroupId,
    member: &UserId,
    change: MemberChange,
) -> Result<(), ServiceError> {
    let MemberChange { role, alias, extra } = change;
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    let actor_role = s.actor_role(actor)?;
    let Some(mut m) = s.members.get(member).cloned() else {
        return Err(ServiceError::refused(errors::NOT_MEMBER, format!("{member} is not a member")));
    };
    if let Some(r) = role {
        if r > roles::ADMIN {
            return Err(ServiceError::invalid("role", "must be 0 (member) or 1 (admin); transfer ownership instead"));
        }
        if actor_role.is_some_and(|a| a < roles::OWNER) {
            return Err(ServiceError::refused(errors::OWNER_ONLY, "only the owner may change roles"));
        }
        if m.role == roles::OWNER {
            return Err(ServiceError::invalid("role", "the owner's role changes only by changeGroupOwner"));
        }
        m.role = r;
    }
    if alias.is_some() || extra.is_some() {
        let myself = matches!(actor, Actor::User(u) if u == member);
        let allowed = myself
            || match actor_role {
                None | Some(roles::OWNER) => true,
                Some(roles::ADMIN) => m.role == roles::MEMBER,
                Some(_) => false,
            };
        if !allowed {
            return Err(ServiceError::refused(
                errors::ADMIN_ONLY,
                "only the member, the owner or an admin may do this",
            ));
        }
    }
    if let Some(a) = alias {
        check_len("alias", &a, MAX_ALIAS_CHARS)?;
        m.alias = a;
    }
    if let Some(x) = extra {
        check_len("extra", &x, MAX_TEXT_CHARS)?;
        m.extra = x;
    }
    let joined = vec![(m.member_id.clone(), JoinedRecord::member(&s.rec, &m, now_ms()))];
    commit(logic, app, &mut slot, Change { puts: vec![m], joined, notify: true, ..Change::default() }).await
}

/// Dissolves a group (owner only): every member gets a tombstone and is notified; the
/// record stays, marked destroyed (40018 from then on).
pub async fn destroy(logic: &Logic, app: AppId, actor: &Actor, group: &GroupId) -> Result<(), ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    s.require(actor, roles::OWNER)?;
    let now = now_ms();
    let mut rec = s.rec.clone();
    rec.destroyed = true;
    rec.member_count = 0;
    rec.updated_ms = now;
    let dels: Vec<UserId> = s.members.keys().cloned().collect();
    let joined = dels.iter().map(|u| (u.clone(), JoinedRecord::left(&rec, now))).collect();
    commit(logic, app, &mut slot, Change { group: Some(rec), dels, joined, notify: true, ..Change::default() }).await
}

/// Each user's role in the group (`None`: not a member).
pub async fn roles_of(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    ids: &[UserId],
) -> Result<Vec<Option<u8>>, ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    Ok(ids.iter().map(|u| s.role_of(u)).collect())
}

/// Mutes members until `until_ms` (0 unmutes): owner or admin; nobody mutes the owner,
/// admins do not mute admins. Answers per member.
pub async fn forbid(
    logic: &Logic,
    app: AppId,
    actor: &Actor,
    group: &GroupId,
    ids: Vec<UserId>,
    until_ms: u64,
) -> Result<ItemResults, ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    let actor_role = s.require(actor, roles::ADMIN)?;
    let mut ch = Change::default();
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let r = match s.members.get(&id) {
            None => Err(ServiceError::refused(errors::NOT_MEMBER, format!("{id} is not a member"))),
            Some(m) if m.role == roles::OWNER => {
                Err(ServiceError::refused(errors::ADMIN_ONLY, "the owner cannot be muted"))
            }
            Some(m) if m.role == roles::ADMIN && actor_role == Some(roles::ADMIN) => {
                Err(ServiceError::refused(errors::ADMIN_ONLY, "only the owner may mute admins"))
            }
            Some(m) => {
                let mut m = m.clone();
                m.mute_until_ms = until_ms;
                ch.puts.retain(|p| p.member_id != id);
                ch.puts.push(m);
                Ok(())
            }
        };
        results.push((id, r));
    }
    if !ch.puts.is_empty() {
        commit(logic, app, &mut slot, ch).await?;
    }
    Ok(results)
}

/// The members muted at `now`, with the end of their mute, by member id.
pub async fn muted(logic: &Logic, app: AppId, group: &GroupId) -> Result<Vec<(UserId, u64)>, ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    let now = now_ms();
    let mut out: Vec<(UserId, u64)> =
        s.members.values().filter(|m| m.mute_until_ms > now).map(|m| (m.member_id.clone(), m.mute_until_ms)).collect();
    out.sort_unstable();
    Ok(out)
}

/// Hands the group to another member (owner only); the old owner becomes a member.
pub async fn change_owner(
    logic: &Logic,
    app: AppId,
    actor: &Actor,
    group: &GroupId,
    new_owner: &UserId,
) -> Result<(), ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = existing(&mut slot, group)?;
    s.live()?;
    s.require(actor, roles::OWNER)?;
    let Some(mut next) = s.members.get(new_owner).cloned() else {
        return Err(ServiceError::refused(errors::NOT_MEMBER, format!("{new_owner} is not a member")));
    };
    if next.role == roles::OWNER {
        return Ok(());
    }
    let now = now_ms();
    let mut rec = s.rec.clone();
    let mut puts = Vec::with_capacity(2);
    if let Some(old) = rec.owner_id.as_ref().and_then(|o| s.members.get(o)) {
        let mut old = old.clone();
        old.role = roles::MEMBER;
        puts.push(old);
    }
    next.role = roles::OWNER;
    next.mute_until_ms = 0;
    puts.push(next);
    rec.owner_id = Some(new_owner.clone());
    rec.updated_ms = now;
    let joined = puts.iter().map(|m| (m.member_id.clone(), JoinedRecord::member(&rec, m, now))).collect();
    commit(logic, app, &mut slot, Change { group: Some(rec), puts, joined, notify: true, ..Change::default() }).await
}

/// The groups `user` belongs to (optionally of some types), in group id order: the
/// total and the page at `offset`, each group's record with the user's membership.
pub async fn joined_groups(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    group_types: &[u8],
    offset: usize,
    limit: usize,
) -> Result<(usize, Vec<(GroupRecord, JoinedRecord)>), ServiceError> {
    require_user(logic, app, user).await?;
    let all: Vec<_> = joined(logic, app, user)
        .await?
        .into_iter()
        .filter(|(_, r, _)| group_types.is_empty() || group_types.contains(&r.group_type))
        .collect();
    let total = all.len();
    let mut out = Vec::with_capacity(limit.min(total));
    for (g, r, _) in all.into_iter().skip(offset).take(limit) {
        if let Some(rec) = logic.store.get_group(app, &g).await? {
            out.push((rec, r));
        }
    }
    Ok((total, out))
}

/// A page of `user`'s joined-groups log after `after`: (entries, maxSequence, completed).
pub async fn sync_joined(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    after: Seq,
    limit: usize,
) -> Result<(Vec<(Seq, JoinedRecord)>, Seq, bool), ServiceError> {
    require_user(logic, app, user).await?;
    let (entries, max, completed) =
        logic.read_synced(app, user, tern_storage::SyncKind::GroupList, after, limit).await?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        out.push((e.seq, JoinedRecord::decode(&e.payload)?));
    }
    Ok((out, max, completed))
}
