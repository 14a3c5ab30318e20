//! Group state eviction and pipelined group sends (issue 11), over a real embedded
//! store: random rounds of concurrent group sends (several senders, several sends in
//! flight per group) interleaved with evictions of idle groups — by the
//! `messages.max_loaded_groups` bound and by explicit passes — after which every member
//! has received, by push, exactly the acked messages of each of its groups in seq
//! order, and pulls list the same.

mod support;

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tern_logic::groups::{self, GroupSend};
use tern_logic::LogicConfig;
use tern_schema::client::ElemType;
use tern_schema::message::ElemParts;
use tern_storage::{AppId, GroupId, Seq, UserId};

use support::{app_config, APP};

const USERS: usize = 6;
const GROUPS: usize = 4;

fn user(i: usize) -> String {
    format!("u{i}")
}

/// Members of group `g`: four users, overlapping with the other groups.
fn members(g: usize) -> Vec<usize> {
    (0..4).map(|k| (g + k) % USERS).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_converge_to_the_acked_messages_across_evictions() {
    let mut config = LogicConfig::default();
    // Two of four groups fit: every round evicts by the bound too.
    config.messages.max_loaded_groups = 2;
    let h = support::Harness::new(config, vec![app_config(APP, json!({}))], None);
    let data: Vec<Value> = (0..USERS).map(|i| json!({"userId": user(i)})).collect();
    h.ok("/user/importUser", json!({ "userData": data })).await;
    for g in 0..GROUPS {
        let list: Vec<Value> = members(g).iter().map(|&u| json!({"memberId": user(u)})).collect();
        h.ok("/group/createGroup", json!({"groupId": format!("g{g}"), "groupType": 1, "memberList": list})).await;
    }
    // One device per user, on slot 10 + user.
    let devices: Vec<(String, String)> = (0..USERS).map(|i| (user(i), format!("d{i}"))).collect();
    let refs: Vec<(&str, &str)> = devices.iter().map(|(u, d)| (u.as_str(), d.as_str())).collect();
    let mut rx = h.online(&refs, 100_000);

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Acked (seq, text) per group.
    let mut acked: Vec<Vec<(u64, String)>> = vec![Vec::new(); GROUPS];
    let mut evictions = 0;
    for round in 0..40 {
        // A burst of concurrent sends: random groups, random members, several per group.
        let mut tasks = Vec::new();
        for k in 0..rng.gen_range(1..12) {
            let g = rng.gen_range(0..GROUPS);
            let from = members(g)[rng.gen_range(0..4)];
            let logic = h.logic.clone();
            let text = format!("r{round}k{k}");
            tasks.push(tokio::spawn(async move {
                let req = GroupSend {
                    app: AppId(APP),
                    group: GroupId::new(format!("g{g}")).unwrap(),
                    from: UserId::new(user(from)).unwrap(),
                    client_msg_id: &text,
                    elems: vec![ElemParts { elem_type: ElemType::Text, text: &text, ..Default::default() }],
                    client_time_ms: 1,
                    from_device: "",
                    origin: None,
                    extras: Default::default(),
                };
                let r = groups::send(&logic, req).await;
                (g, text.clone(), r)
            }));
        }
        if rng.gen_bool(0.5) {
            // An explicit pass while sends are in flight: busy groups must stay.
            evictions += h.logic.groups.evict(rng.gen_range(0..GROUPS));
        }
        for t in tasks {
            let (g, text, r) = t.await.unwrap();
            let a = r.unwrap_or_else(|e| panic!("send to g{g} refused: {e}"));
            acked[g].push((a.seq.0, text));
        }
        if rng.gen_bool(0.3) {
            evictions += h.logic.groups.evict(0);
            assert_eq!(h.logic.groups.loaded(), 0, "every group was idle");
        }
    }
    assert!(evictions > 0, "the test evicted nothing");
    assert!(h.logic.groups.loaded() <= GROUPS);
    for a in &mut acked {
        a.sort();
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0), "seqs are unique: {a:?}");
    }

    // What every device was pushed: (group, seq, text), in arrival order.
    let mut pushed: HashMap<usize, BTreeMap<String, Vec<(u64, String)>>> = HashMap::new();
    for p in support::drain_pushes(&mut rx) {
        let u = (p.conn_slot - 10) as usize;
        pushed.entry(u).or_default().entry(p.to_id).or_default().push((p.seq, p.text));
    }
    for (g, want) in acked.iter().enumerate() {
        let gid = format!("g{g}");
        for u in members(g) {
            let got = pushed.get(&u).and_then(|m| m.get(&gid)).cloned().unwrap_or_default();
            assert_eq!(&got, want, "{} pushed {gid} in seq order, exactly the acked messages", user(u));
            let (items, _, completed) = groups::pull(
                &h.logic,
                AppId(APP),
                &GroupId::new(gid.clone()).unwrap(),
                &UserId::new(user(u)).unwrap(),
                Seq::ZERO,
                1_000,
            )
            .await
            .unwrap();
            let pulled: Vec<(u64, String)> =
                items.iter().filter_map(|i| i.parts().map(|p| (p.seq, p.elems[0].text.to_string()))).collect();
            assert!(completed);
            assert_eq!(&pulled, want, "{} pulls {gid}", user(u));
        }
    }
}

/// The joined-groups views are bounded by `messages.max_joined_views`: random joins,
/// leaves and joined-group reads, interleaved with explicit eviction passes, never hold
/// more views than the bound (after each load) and always answer what a reference model
/// of the memberships says — an evicted view is folded again from the user's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_views_stay_bounded_and_reload_on_touch() {
    const BOUND: usize = 3;
    let mut config = LogicConfig::default();
    config.messages.max_joined_views = BOUND;
    let h = support::Harness::new(config, vec![app_config(APP, json!({}))], None);
    let data: Vec<Value> = (0..USERS).map(|i| json!({"userId": user(i)})).collect();
    h.ok("/user/importUser", json!({ "userData": data })).await;
    // Every group starts with user 0 (its owner); the model is who else is in it.
    let mut model: Vec<std::collections::BTreeSet<usize>> = Vec::new();
    for g in 0..GROUPS {
        h.ok("/group/createGroup", json!({"groupId": format!("g{g}"), "groupType": 1, "ownerId": user(0)})).await;
        model.push([0].into());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut evicted = 0;
    for _ in 0..120 {
        let (g, u) = (rng.gen_range(0..GROUPS), rng.gen_range(1..USERS));
        let body = |key: &str| json!({"groupId": format!("g{g}"), key: [{"memberId": user(u)}]});
        match rng.gen_range(0..4) {
            0 if !model[g].contains(&u) => {
                h.ok("/group/addMember", body("members")).await;
                model[g].insert(u);
            }
            1 if model[g].contains(&u) => {
                h.ok("/group/deleteMember", json!({"groupId": format!("g{g}"), "memberIds": [user(u)]})).await;
                model[g].remove(&u);
            }
            2 => evicted += h.logic.groups.evict_views(rng.gen_range(0..BOUND)),
            _ => {
                let j = h.ok("/group/getJoinedGroup", json!({"memberId": user(u), "limit": 100})).await;
                let got: Vec<String> = j["groupList"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g["groupId"].as_str().unwrap().to_string())
                    .collect();
                let want: Vec<String> =
                    (0..GROUPS).filter(|&g| model[g].contains(&u)).map(|g| format!("g{g}")).collect();
                assert_eq!(got, want, "{} is in exactly the model's groups", user(u));
                assert!(h.logic.groups.views_loaded() <= BOUND, "views loaded past the bound");
            }
        }
    }
    assert!(evicted > 0, "the test evicted no view explicitly");
    assert!(h.logic.groups.views_loaded() <= BOUND);
}
