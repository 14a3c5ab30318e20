//! The NATS peer (feature `nats`): the same p2p workload against nats-server, so Tern's
//! figures have a well-known neighbour measured on the same machine in the same run.
//!
//! Mapping: a user is a subject (`ternlt.<prefix>.u<N>`), a device is a connection
//! subscribed to its user's subject, a send is a publish from the sending device's
//! connection — the same connections, devices and senders as a Tern run. NATS core has no
//! ack (send→ack is not reported). JetStream: a file-storage stream captures the
//! subjects, and the PubAck is the ack (each device's connection also subscribes to its
//! own reply inbox); delivery is to the same core subscribers (NATS delivers a published
//! message to subscribers and to the stream independently, so delivery does not wait for
//! the store — Tern's does). The payload, schedule and latency method are the worker's.
//!
//! The devices speak the NATS text protocol themselves in the worker's event loop
//! ([`hello`], [`publish`], [`next`]), so both systems are driven by the same loop at the
//! same cost; `async-nats` only manages the stream from the coordinator.

use std::time::Duration;

use crate::harness::config::{TargetKind, TargetSpec};
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

/// What a device writes once connected: CONNECT (no echo, no verbose +OK), the
/// subscription to its user's subject (sid 1), the JetStream reply inbox (sid 2), and a
/// PING whose PONG says all of it was accepted.
pub fn hello(out: &mut Vec<u8>, subject: &str, inbox: Option<&str>) {
    out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"lang\":\"rust\",\
          \"version\":\"tern-loadtest\",\"protocol\":1,\"headers\":false}\r\n",
    );
    out.extend_from_slice(format!("SUB {subject} 1\r\n").as_bytes());
    if let Some(inbox) = inbox {
        out.extend_from_slice(format!("SUB {inbox}.* 2\r\n").as_bytes());
    }
    out.extend_from_slice(b"PING\r\n");
}

/// Appends a PUB of `payload` to `subject` (with a reply subject for JetStream's PubAck).
pub fn publish(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    use std::io::Write as _;
    let _ = match reply {
        Some(r) => write!(out, "PUB {subject} {r} {}\r\n", payload.len()),
        None => write!(out, "PUB {subject} {}\r\n", payload.len()),
    };
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// One protocol unit from the server, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsIn<'a> {
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Err(String),
    /// INFO, +OK and anything else a device does not act on.
    Other,
}

/// Longest control line accepted (INFO lines carry the server's JSON description).
const MAX_LINE: usize = 64 * 1024;
/// Largest message payload accepted.
const MAX_MSG: usize = 8 << 20;

/// Reads the next whole unit from `buf`: `Ok(None)` if more bytes are needed, else the
/// unit and the bytes it took; `Err` for input that is not the NATS protocol.
pub fn next(buf: &[u8]) -> Result<Option<(NatsIn<'_>, usize)>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_LINE { Err("NATS control line too long".into()) } else { Ok(None) };
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let op = words.next().unwrap_or_default();
    let item = if op.eq_ignore_ascii_case(b"MSG") {
        let args: Vec<&[u8]> = words.collect();
        let (subject, sid, len) = match args.as_slice() {
            [s, i, n] | [s, i, _, n] => (*s, *i, *n),
            _ => return Err(format!("bad MSG line {:?}", String::from_utf8_lossy(line))),
        };
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n <= MAX_MSG)
            .ok_or_else(|| format!("bad MSG size in {:?}", String::from_utf8_lossy(line)))?;
        let Some(payload) = buf.get(after..after + len) else { return Ok(None) };
        if buf.len() < after + len + 2 {
            return Ok(None);
        }
        return Ok(Some((NatsIn::Msg { subject, sid, payload }, after + len + 2)));
    } else if op.eq_ignore_ascii_case(b"PING") {
        NatsIn::Ping
    } else if op.eq_ignore_ascii_case(b"PONG") {
        NatsIn::Pong
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        NatsIn::Err(String::from_utf8_lossy(&line[4..]).trim().to_owned())
    } else {
        NatsIn::Other
    };
    Ok(Some((item, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_units_whole_or_not_at_all() {
        let buf = b"INFO {\"x\":1}\r\nPING\r\nMSG a.b 1 5\r\nhello\r\nMSG _INBOX.x.7 2 3\r\n{\"}\r\n-ERR 'bad'\r\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((item, n)) = next(&buf[pos..]).unwrap() {
            got.push(format!("{item:?}"));
            pos += n;
        }
        assert_eq!(pos, buf.len());
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(next(b"MSG a 1 5\r\nhel").unwrap(), None);
        assert_eq!(next(b"MSG a 1 5\r\nhello").unwrap(), None);
        assert!(next(b"MSG a\r\n").is_err());
        let (m, _) = next(b"MSG s 2 r 2\r\nhi\r\n").unwrap().unwrap();
        assert_eq!(m, NatsIn::Msg { subject: b"s", sid: b"2", payload: b"hi" });
    }

    #[test]
    fn writes_publishes() {
        let mut out = Vec::new();
        publish(&mut out, "s.u1", Some("_INBOX.a.7"), b"xy");
        publish(&mut out, "s.u2", None, b"z");
        assert_eq!(out, b"PUB s.u1 _INBOX.a.7 2\r\nxy\r\nPUB s.u2 1\r\nz\r\n");
        let mut h = Vec::new();
        hello(&mut h, "s.u1", Some("_INBOX.a"));
        assert!(h.ends_with(b"SUB s.u1 1\r\nSUB _INBOX.a.* 2\r\nPING\r\n"));
    }
}
