//! `sync`: store K messages for one user across C conversations (C peers send to it,
//! pipelined), then log that user in on a brand-new device and pull the whole Message
//! timeline page by page; report the time from connect to the last page and messages/s.
//! Runs in the coordinator process: it needs only C + 1 connections.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures_util::future::join_all;
use tern_schema::client::{Body, ClientType, ElemType, SyncKind};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, encode};

use crate::client::{Client, ClientError, LoginOutcome, LoginRequest};
use crate::harness::config::{OutputArgs, SyncPlan, TargetSpec};
use crate::harness::hist::per_second;
use crate::harness::report::{RunResult, SyncResult};
use crate::harness::schedule::{encode_payload, mono_us, wall_ms, Stamp};
use crate::harness::setup::user_sign;
use crate::harness::{bar, finish, prepare, HarnessError};

/// How often one message is retried when refused (rate limits) before it counts as failed.
const MAX_ATTEMPTS: u32 = 50;
/// Wait for any single answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// User index of the syncing user; peers are 1..=C.
const TARGET_USER: u32 = 0;

fn protocol(what: &str, e: ClientError) -> HarnessError {
    HarnessError::Failed(format!("{what}: {e}"))
}

async fn login(t: &TargetSpec, user: u32, device: &str) -> Result<Client, HarnessError> {
    let addr = t.addrs.first().map(String::as_str).unwrap_or("127.0.0.1:9000");
    let mut c = Client::connect(t.transport, addr).await.map_err(|e| protocol("connect", e))?;
    let user_id = t.user_id(user);
    let req = LoginRequest {
        app_id: t.app_id,
        user_sign: user_sign(t, &user_id),
        user_id,
        client_type: ClientType::Linux,
        device_id: device.to_owned(),
        request_id: c.next_request_id(),
    };
    match c.login(&req).await.map_err(|e| protocol("login", e))? {
        LoginOutcome::Ok(_) => Ok(c),
        other => Err(HarnessError::Failed(format!("login of {} refused: {other:?}", req.user_id))),
    }
}

/// One peer sends `count` messages to the target, `window` in flight. Returns how many
/// were stored and how many failed for good.
async fn fill(
    t: &TargetSpec,
    peer: u32,
    first_index: u64,
    count: u64,
    plan: &SyncPlan,
) -> Result<(u64, u64), HarnessError> {
    let mut c = login(t, peer, "fill").await?;
    let to = t.user_id(TARGET_USER);
    let mut queue: VecDeque<(u64, u32)> = (first_index..first_index + count).map(|i| (i, 0)).collect();
    let mut in_flight = std::collections::HashMap::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    while !queue.is_empty() || !in_flight.is_empty() {
        while in_flight.len() < plan.fill_window as usize {
            let Some((i, attempt)) = queue.pop_front() else { break };
            let rid = c.next_request_id();
            let text = encode_payload(Stamp { run: 0, index: i, due_us: 0 }, plan.payload);
            let elems = [ElemParts { elem_type: ElemType::Text, text: &text, ..Default::default() }];
            c.send(&message::send(rid, &format!("s{i}"), &to, &elems, wall_ms()))
                .await
                .map_err(|e| protocol("send", e))?;
            in_flight.insert(rid, (i, attempt));
        }
        let f = match c.recv_timeout(REPLY_TIMEOUT).await.map_err(|e| protocol("fill", e))? {
            Some(f) => f,
            None => {
                return Err(HarnessError::Failed(format!(
                    "no answer to {} sends in {REPLY_TIMEOUT:?}",
                    in_flight.len()
                )))
            }
        };
        let code = match f.body_type() {
            Body::SendAck => f.frame().body_as_send_ack().map_or(0, |a| a.code()),
            Body::Error => f.frame().body_as_error().map_or(0, |e| e.code()),
            _ => continue,
        };
        let Some((i, attempt)) = in_flight.remove(&f.request_id()) else { continue };
        if code == codes::OK {
            ok += 1;
        } else if attempt + 1 < MAX_ATTEMPTS {
            // Refused (most likely the per-connection send rate): back off and resend
            // with the same client message id, so a late success is not stored twice.
            tokio::time::sleep(Duration::from_millis(20)).await;
            queue.push_back((i, attempt + 1));
        } else {
            failed += 1;
        }
    }
    let rid = c.next_request_id();
    let _ = c.send(&encode::logout(rid)).await;
    Ok((ok, failed))
}

pub async fn run_sync(plan: SyncPlan, out: &OutputArgs) -> Result<(), HarnessError> {
    let t = &plan.target;
    prepare(t, plan.conversations + 1, out.quiet).await?;
    let deadline = Duration::from_secs_f64(plan.timeout_secs);
    let res = tokio::time::timeout(deadline, measure(&plan, out.quiet))
        .await
        .map_err(|_| HarnessError::Failed(format!("sync did not finish within {:.0} s", plan.timeout_secs)))??;
    let complete = res.complete;
    let (distinct, want) = (res.distinct, res.messages - res.fill_failed);
    let result = RunResult::new("sync", t, &plan, |r| r.sync = Some(res));
    finish(&result, out)?;
    if !complete {
        return Err(HarnessError::Failed(format!("the new device pulled {distinct} distinct messages of {want}")));
    }
    Ok(())
}

async fn measure(plan: &SyncPlan, quiet: bool) -> Result<SyncResult, HarnessError> {
    let t = &plan.target;
    let pb = bar(quiet, "storing messages");
    pb.set_length(plan.messages);
    let c = u64::from(plan.conversations);
    let start = mono_us();
    let fills = (0..c).map(|k| {
        let (lo, hi) = (plan.messages * k / c, plan.messages * (k + 1) / c);
        fill(t, k as u32 + 1, lo, hi - lo, plan)
    });
    let mut stored = 0;
    let mut fill_failed = 0;
    for r in join_all(fills).await {
        let (ok, failed) = r?;
        stored += ok;
        fill_failed += failed;
    }
    let fill_secs = mono_us().saturating_sub(start) as f64 / 1e6;
    pb.set_position(stored);
    pb.finish_and_clear();

    // A brand-new device of the target user: it holds nothing and pulls from seq 0.
    let pb = bar(quiet, "syncing");
    pb.set_length(stored);
    let sync_start = mono_us();
    let device = format!("sync-{:08x}", rand::random::<u32>());
    let mut client = login(t, TARGET_USER, &device).await?;
    let login_ms = mono_us().saturating_sub(sync_start) as f64 / 1e3;
    let mut after = 0u64;
    let (mut pulled, mut pages) = (0u64, 0u64);
    let mut keys = HashSet::with_capacity(stored as usize);
    loop {
        let rid = client.next_request_id();
        client.send(&encode::pull(rid, SyncKind::Message, after, plan.page)).await.map_err(|e| protocol("pull", e))?;
        let (f, _) = client.recv_reply(rid, REPLY_TIMEOUT).await.map_err(|e| protocol("pull", e))?;
        let frame = f.frame();
        let Some(r) = frame.body_as_pull_result() else {
            return Err(HarnessError::Failed(format!("Pull answered with {}", f.describe())));
        };
        pages += 1;
        let mut last = after;
        for m in r.messages().iter().flatten() {
            pulled += 1;
            keys.insert(m.message_key());
            last = last.max(m.seq());
        }
        pb.set_position(keys.len() as u64);
        if r.completed() {
            break;
        }
        if last <= after {
            return Err(HarnessError::Failed(format!("Pull after {after} made no progress")));
        }
        after = last;
    }
    let sync_secs = mono_us().saturating_sub(sync_start) as f64 / 1e6;
    pb.finish_and_clear();
    let rid = client.next_request_id();
    let _ = client.send(&encode::logout(rid)).await;
    let distinct = keys.len() as u64;
    Ok(SyncResult {
        messages: plan.messages,
        conversations: plan.conversations,
        page: plan.page,
        fill_secs,
        fill_msgs_per_s: per_second(stored, fill_secs),
        fill_failed,
        login_ms,
        sync_secs,
        msgs_per_s: per_second(distinct, sync_secs),
        pulled,
        distinct,
        pages,
        complete: distinct == stored && fill_failed == 0,
    })
}
