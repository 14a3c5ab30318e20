//! Client frames that gateways forward to logic: Send, Pull, PushAck, ReadReceipt,
//! Recall. Each is answered (SendAck, PullResult, Error) on the originating connection;
//! nothing a client sends can leave it waiting without an answer or an error.

use std::sync::Arc;

use tern_schema::client::{Body, SyncKind as WireKind};
use tern_schema::link::ConnRef;
use tern_schema::message::{self, elems_of, SendAckParts};
use tern_schema::{codes, encode, frame};
use tern_storage::{Seq, UserId};
use tokio::sync::mpsc;

use crate::messages::{self as msg, Recaller, SendRequest};
use crate::Logic;

fn reply(tx: &mpsc::Sender<Vec<u8>>, conn: ConnRef, frame: &[u8]) {
    if tx.try_send(encode::link_deliver(&[conn], frame)).is_err() {
        metrics::counter!("tern_link_frames_dropped_total").increment(1);
    }
}

/// Handles one forwarded client frame (header included) from `conn`. Work that waits
/// for storage runs in its own task so one slow send never stalls the link reader.
pub async fn handle(logic: &Arc<Logic>, tx: &mpsc::Sender<Vec<u8>>, conn: ConnRef, bytes: &[u8]) {
    let f = match frame::parse_client_framed(bytes, crate::link::MAX_LINK_PAYLOAD) {
        Ok(f) => f,
        Err(e) => return reply(tx, conn, &encode::error(0, codes::MALFORMED_FRAME, &e.to_string())),
    };
    let rid = f.request_id();
    let Some((app, user, session)) = logic.sessions.session_of(&conn) else {
        // The session ended (kicked, logged out) while the frame was in flight.
        return reply(tx, conn, &encode::error(rid, codes::LOGIN_REQUIRED, "no session on this connection"));
    };
    match f.body_type() {
        Body::Send => {
            let s = f.body_as_send().expect("checked type");
            let to = match UserId::new(s.to_id().unwrap_or_default()) {
                Ok(u) => u,
                Err(e) => {
                    let ack = message::send_ack(
                        rid,
                        &SendAckParts {
                            client_msg_id: s.client_msg_id().unwrap_or_default(),
                            code: msg::errors::INVALID_MESSAGE,
                            message: &format!("to_id: {e}"),
                            ..Default::default()
                        },
                    );
                    return reply(tx, conn, &ack);
                }
            };
            // Owned copy: the send outlives this borrowed frame.
            let bytes = bytes.to_vec();
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let f = frame::parse_client_framed(&bytes, crate::link::MAX_LINK_PAYLOAD).expect("parsed above");
                let s = f.body_as_send().expect("checked type");
                let client_msg_id = s.client_msg_id().unwrap_or_default();
                let req = SendRequest {
                    app,
                    from: user,
                    to,
                    client_msg_id,
                    elems: elems_of(s.elems()),
                    client_time_ms: s.client_time_ms(),
                    from_device: &session.device_id,
                    origin: Some(conn),
                };
                let ack = match msg::send(&logic, req).await {
                    Ok(a) => message::send_ack(
                        rid,
                        &SendAckParts {
                            client_msg_id,
                            code: codes::OK,
                            message: "",
                            message_key: a.message_key,
                            seq: a.seq.0,
                            server_time_ms: a.server_time_ms,
                        },
                    ),
                    Err(r) => message::send_ack(
                        rid,
                        &SendAckParts { client_msg_id, code: r.code, message: &r.message, ..Default::default() },
                    ),
                };
                reply(&tx, conn, &ack);
            });
        }
        Body::Pull => {
            let p = f.body_as_pull().expect("checked type");
            if p.kind() != WireKind::Message {
                return reply(
                    tx,
                    conn,
                    &encode::error(
                        rid,
                        codes::INVALID_FIELD,
                        "kind: only Message can be pulled over TCP; use the HTTP sync calls",
                    ),
                );
            }
            let (after, limit) = (Seq(p.after_seq()), p.limit());
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = msg::pull_frame(&logic, app, &user, rid, after, limit).await;
                reply(&tx, conn, &frame);
            });
        }
        Body::PushAck => {
            let a = f.body_as_push_ack().expect("checked type");
            if a.kind() == WireKind::Message {
                msg::push_ack(logic, app, &user, &session.device_id, a.seq());
            }
        }
        Body::ReadReceipt => {
            let r = f.body_as_read_receipt().expect("checked type");
            let peer = match UserId::new(r.peer_id().unwrap_or_default()) {
                Ok(p) => p,
                Err(e) => return reply(tx, conn, &encode::error(rid, codes::INVALID_FIELD, &format!("peer_id: {e}"))),
            };
            let read_seq = r.read_seq();
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                if let Err(r) = msg::read_receipt(&logic, app, &user, &peer, read_seq, Some(&conn)).await {
                    reply(&tx, conn, &encode::error(rid, r.code, &r.message));
                }
            });
        }
        Body::Recall => {
            let key = f.body_as_recall().expect("checked type").message_key();
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = match msg::recall(&logic, app, key, Recaller::Sender(user)).await {
                    Ok(()) => encode::error(rid, codes::OK, "recalled"),
                    Err(r) => encode::error(rid, r.code, &r.message),
                };
                reply(&tx, conn, &frame);
            });
        }
        other => reply(
            tx,
            conn,
            &encode::error(rid, codes::UNEXPECTED_FRAME, &format!("{other:?} is not accepted from a client")),
        ),
    }
}
