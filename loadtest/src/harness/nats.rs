//! The NATS peer (feature `nats`): the same p2p workload against nats-server, so Tern's
//! figures have a well-known neighbour measured on the same machine in the same run.
//!
//! Mapping: a user is a subject (`ternlt.<prefix>.u<N>`), a device is a connection
//! subscribed to its user's subject, a send is a publish from the sending device's
//! connection. NATS core has no ack (send→ack is not reported). JetStream: a file-storage
//! stream captures the subjects, and the PubAck is the ack; delivery is to the same core
//! subscribers (NATS delivers a published message to subscribers and to the stream
//! independently, so delivery does not wait for the store — Tern's does). The payload,
//! schedule and latency method are the worker's, unchanged.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::harness::config::{TargetKind, TargetSpec};
use crate::harness::schedule::mono_us;
use crate::harness::worker::{Ctx, SendCmd};
use crate::harness::HarnessError;

/// Name of the stream the JetStream runs publish into.
pub const STREAM: &str = "TERNLT";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound on the stream's size, so a long run cannot fill the disk.
const STREAM_MAX_BYTES: i64 = 8 << 30;

fn connect_options() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(Duration::from_secs(30)))
        // A device never hears its own publishes (its user's subject is not the recipient's anyway).
        .no_echo()
        // Sends are scheduled by the harness; the client's own buffer must not drop them.
        .client_capacity(65_536)
        .subscription_capacity(65_536)
}

/// Creates a fresh JetStream stream (file storage) over the run's subjects.
pub async fn prepare_stream(t: &TargetSpec) -> Result<(), HarnessError> {
    if t.kind != TargetKind::Jetstream {
        return Ok(());
    }
    let addr = t.addrs.first().cloned().unwrap_or_else(|| "127.0.0.1:4222".into());
    let client = connect_options().connect(&addr).await.map_err(|e| HarnessError::Nats(format!("{addr}: {e}")))?;
    let js = async_nats::jetstream::new(client);
    // A stream left over from an earlier run would mix old messages in.
    let _ = js.delete_stream(STREAM).await;
    let prefix = t.subject(0);
    let wildcard = match prefix.rsplit_once('.') {
        Some((head, _)) => format!("{head}.>"),
        None => format!("{prefix}.>"),
    };
    js.create_stream(async_nats::jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![wildcard],
        storage: async_nats::jetstream::stream::StorageType::File,
        max_bytes: STREAM_MAX_BYTES,
        ..Default::default()
    })
    .await
    .map_err(|e| HarnessError::Nats(format!("create stream: {e}")))?;
    Ok(())
}

/// Removes the stream after a run.
pub async fn drop_stream(t: &TargetSpec) {
    if t.kind != TargetKind::Jetstream {
        return;
    }
    let addr = t.addrs.first().cloned().unwrap_or_else(|| "127.0.0.1:4222".into());
    if let Ok(client) = connect_options().connect(&addr).await {
        let _ = async_nats::jetstream::new(client).delete_stream(STREAM).await;
    }
}

/// One NATS device: connect, subscribe to the user's subject, then publish what the
/// scheduler hands over and record what arrives, until stopped.
pub(crate) async fn nats_device(
    ctx: Rc<Ctx>,
    local: usize,
    addr: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<SendCmd>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = mono_us();
    let (user, _) = ctx.who(local);
    let t = ctx.init.target.clone();
    let login = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let client = connect_options().connect(addr.to_string()).await.map_err(|e| format!("connect: {e}"))?;
        let sub = client.subscribe(t.subject(user)).await.map_err(|e| format!("subscribe: {e}"))?;
        client.flush().await.map_err(|e| format!("flush: {e}"))?;
        Ok::<_, String>((client, sub))
    })
    .await;
    drop(permit);
    let (client, mut sub) = match login {
        Ok(Ok(ok)) => {
            ctx.on_connect(started, Ok(()));
            ok
        }
        Ok(Err(reason)) => return ctx.on_connect(started, Err(reason)),
        Err(_) => return ctx.on_connect(started, Err("timeout".into())),
    };
    let js = (t.kind == TargetKind::Jetstream).then(|| async_nats::jetstream::new(client.clone()));
    let mut stop = ctx.stop.clone();
    let mut batch = Vec::with_capacity(64);
    let mut next_key = 1u32;
    let reason = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break "stopped".to_owned(),
            m = sub.next() => match m {
                Some(m) => ctx.on_delivery(local, &m.payload, false, mono_us()),
                None => break "subscription ended".to_owned(),
            },
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    break "queue closed".to_owned();
                }
                for cmd in batch.drain(..) {
                    let subject = t.subject(cmd.to);
                    let payload = Bytes::from(ctx.payload(&cmd));
                    match &js {
                        None => match client.publish(subject, payload).await {
                            Ok(()) => ctx.on_sent_unacked(&cmd),
                            Err(e) => ctx.on_unsent(&cmd, &format!("publish: {e}")),
                        },
                        Some(js) => {
                            let key = next_key;
                            next_key = next_key.wrapping_add(1).max(1);
                            match js.publish(subject, payload).await {
                                Ok(ack) => {
                                    ctx.on_sent(local, key, &cmd);
                                    let ctx2 = ctx.clone();
                                    tokio::task::spawn_local(async move {
                                        let outcome = ack.await.map(drop).map_err(|e| format!("PubAck: {:?}", e.kind()));
                                        ctx2.on_answer(local, key, outcome);
                                    });
                                }
                                Err(e) => ctx.on_unsent(&cmd, &format!("publish: {e}")),
                            }
                        }
                    }
                }
            }
        }
    };
    ctx.fail_queue(local, &mut rx, &reason);
    ctx.on_closed(&reason);
    drop(sub);
}
