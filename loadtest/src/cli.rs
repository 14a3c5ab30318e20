//! `tern client`: log in as one user, print every frame, keep the session alive.
//!
//! Output is line-oriented so scripts and end-to-end tests can read it: each line is
//! `HH:MM:SS.mmm D TEXT` (UTC), where `D` is `<` for a frame received (TEXT is
//! [`describe`](crate::describe::describe)'s line), `>` for a frame sent, and `*` for a
//! status line of this program. Exit status: 0 after the duration ends or on Ctrl-C
//! (having sent Logout); non-zero, with the reason on stderr, when login is rejected,
//! the server kicks or closes the session, or the connection fails.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tern_schema::client::{Body, ClientType, SyncKind};
use tern_schema::{encode, sig};
use tokio::time::{sleep_until, Instant};

use crate::client::{Client, ClientError, LoginOutcome, LoginRequest, OwnedFrame, Transport};

/// How long to wait for the TCP/WebSocket connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the answer to a Pull.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// After Logout, how long to wait for the server to close before closing ourselves.
const LOGOUT_GRACE: Duration = Duration::from_secs(2);
/// Ping interval if the LoginAck names none (0): the design's usual 30 s.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(30);
/// Lifetime of a signature minted from `--secret`.
const MINTED_SIGN_TTL_SECS: u64 = 24 * 3600;

/// Device kinds accepted by `--client-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliClientType {
    Ios,
    Android,
    Web,
    Windows,
    Mac,
    Linux,
}

impl From<CliClientType> for ClientType {
    fn from(t: CliClientType) -> Self {
        match t {
            CliClientType::Ios => ClientType::Ios,
            CliClientType::Android => ClientType::Android,
            CliClientType::Web => ClientType::Web,
            CliClientType::Windows => ClientType::Windows,
            CliClientType::Mac => ClientType::Mac,
            CliClientType::Linux => ClientType::Linux,
        }
    }
}

/// Arguments of `tern client`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// User id to log in as.
    #[arg(long)]
    pub user: String,
    /// App id.
    #[arg(long, env = "TERN_APP_ID", default_value_t = 10_000)]
    pub app_id: u32,
    /// User signature (`tern sig`). Takes precedence over --secret.
    #[arg(long)]
    pub sign: Option<String>,
    /// App secret: mint a 24 h signature locally instead of passing --sign.
    #[arg(long, env = "TERN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Device id [default: cli-<random hex>].
    #[arg(long)]
    pub device_id: Option<String>,
    /// Kind of device to log in as.
    #[arg(long, value_enum, default_value_t = CliClientType::Linux)]
    pub client_type: CliClientType,
    /// `tcp` or `ws`.
    #[arg(long, default_value = "tcp")]
    pub transport: Transport,
    /// Server address [default: 127.0.0.1:9000 for tcp, 127.0.0.1:19000 for ws].
    #[arg(long)]
    pub addr: Option<String>,
    /// Seconds to stay connected; 0 = until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// After login, pull the Message timeline from this device's acked seq to the max.
    #[arg(long)]
    pub pull: bool,
    /// Page size of --pull.
    #[arg(long, default_value_t = 100)]
    pub pull_limit: u32,
    /// Acknowledge received messages (PushAck up to the highest seq seen).
    #[arg(long)]
    pub ack: bool,
}

/// Runs `tern client`, printing to stdout.
pub async fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    run_client_to(args, std::io::stdout()).await
}

/// Runs `tern client`, printing to `out` (tests pass a buffer).
pub async fn run_client_to<W: Write + Send>(args: ClientArgs, out: W) -> anyhow::Result<()> {
    let mut p = Printer { out };
    let addr = args.addr.clone().unwrap_or_else(|| args.transport.default_addr().to_owned());
    let user_sign = match (&args.sign, &args.secret) {
        (Some(s), _) => s.clone(),
        (None, Some(secret)) => {
            let expiry = unix_now().as_secs() + MINTED_SIGN_TTL_SECS;
            sig::sign(secret.as_bytes(), args.app_id, &args.user, expiry)
        }
        (None, None) => bail!("a signature is needed: pass --sign, or --secret (or TERN_SECRET) to mint one"),
    };
    let device_id = args.device_id.clone().unwrap_or_else(|| format!("cli-{:08x}", rand::random::<u32>()));

    let mut client = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(args.transport, &addr))
        .await
        .map_err(|_| ClientError::Timeout)
        .and_then(|r| r)
        .with_context(|| format!("cannot connect to {addr} ({})", args.transport))?;
    p.status(&format!("connected {} {addr} from {}", args.transport, client.local_addr()))?;

    let req = LoginRequest {
        app_id: args.app_id,
        user_id: args.user.clone(),
        user_sign,
        client_type: args.client_type.into(),
        device_id,
        request_id: client.next_request_id(),
    };
    p.status(&format!(
        "login app={} user={} device={} type={:?}",
        req.app_id, req.user_id, req.device_id, req.client_type
    ))?;
    let info = match client.login(&req).await.context("login failed")? {
        LoginOutcome::Ok(info) => info,
        LoginOutcome::Rejected { code, message } => {
            p.line('<', &format!("Error code={code} {message:?}"))?;
            bail!("login rejected: code={code} {message:?}");
        }
        LoginOutcome::Kicked { reason, message } => {
            p.line('<', &format!("Kick reason={reason:?} {message:?}"))?;
            bail!("kicked during login: {reason:?} {message:?}");
        }
    };
    p.received(&info.frame)?;

    if args.pull {
        pull_messages(&mut client, &mut p, &args, info.acked_seq(SyncKind::Message), info.max_seq(SyncKind::Message))
            .await?;
    }

    let hb = match info.heartbeat_interval_ms {
        0 => FALLBACK_HEARTBEAT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + hb, hb);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = (args.duration > 0).then(|| Instant::now() + Duration::from_secs(args.duration));
    // Without a duration the sleep is never polled (the branch is disabled).
    let end = sleep_until(deadline.unwrap_or_else(Instant::now));
    tokio::pin!(end);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut kicked = None;

    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                p.status("interrupted")?;
                break;
            }
            () = &mut end, if deadline.is_some() => {
                p.status("duration elapsed")?;
                break;
            }
            _ = ticker.tick() => {
                let rid = client.next_request_id();
                let now_ms = u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX);
                p.send(&mut client, &encode::ping(rid, now_ms)).await?;
            }
            r = client.recv() => match r {
                Ok(f) => {
                    p.received(&f)?;
                    if f.body_type() == Body::Kick {
                        kicked = Some(f.describe());
                    }
                    if args.ack {
                        ack_messages(&mut client, &mut p, &f).await?;
                    }
                }
                Err(ClientError::Closed { reason }) => {
                    let reason = reason.unwrap_or_else(|| "no reason given".into());
                    p.status(&format!("closed by server: {reason}"))?;
                    match kicked {
                        Some(k) => bail!("session ended by the server: {k}"),
                        None => bail!("server closed the connection: {reason}"),
                    }
                }
                Err(e) => return Err(e).context("connection failed"),
            },
        }
    }

    let rid = client.next_request_id();
    p.send(&mut client, &encode::logout(rid)).await?;
    // The server closes after Logout; show what it still sends until then.
    let grace = Instant::now() + LOGOUT_GRACE;
    loop {
        match tokio::time::timeout_at(grace, client.recv()).await {
            Ok(Ok(f)) => p.received(&f)?,
            Ok(Err(ClientError::Closed { .. })) => {
                p.status("closed")?;
                break;
            }
            Ok(Err(e)) => {
                p.status(&format!("error after logout: {e}"))?;
                break;
            }
            Err(_) => {
                p.status("server did not close after logout; closing")?;
                break;
            }
        }
    }
    // Best effort: the session is over either way.
    let _ = client.close().await;
    Ok(())
}

/// Pages through the Message timeline after `after` with Pull frames, printing each
/// answer (and whatever else arrives meanwhile).
async fn pull_messages<W: Write + Send>(
    client: &mut Client,
    p: &mut Printer<W>,
    args: &ClientArgs,
    mut after: u64,
    max_seq: u64,
) -> anyhow::Result<()> {
    p.status(&format!("pull Message after={after} max_seq={max_seq}"))?;
    loop {
        let rid = client.next_request_id();
        p.send(client, &encode::pull(rid, SyncKind::Message, after, args.pull_limit)).await?;
        let (reply, skipped) = client.recv_reply(rid, REPLY_TIMEOUT).await.context("no answer to Pull")?;
        for f in &skipped {
            p.received(f)?;
        }
        p.received(&reply)?;
        let frame = reply.frame();
        let Some(result) = frame.body_as_pull_result() else {
            match frame.body_as_error() {
                Some(e) => bail!("pull failed: code={} {:?}", e.code(), e.message().unwrap_or("")),
                None => bail!("unexpected answer to Pull: {}", reply.describe()),
            }
        };
        let last = result.messages().iter().flatten().map(|m| m.seq()).max();
        if args.ack {
            ack_messages(client, p, &reply).await?;
        }
        match last {
            _ if result.completed() => break,
            None => break,
            Some(last) if last <= after => bail!("Pull after {after} returned nothing newer (last seq {last})"),
            Some(last) => after = last,
        }
    }
    p.status("pull done")?;
    Ok(())
}

/// Sends a PushAck for the highest message seq in a Push or PullResult.
async fn ack_messages<W: Write + Send>(client: &mut Client, p: &mut Printer<W>, f: &OwnedFrame) -> anyhow::Result<()> {
    let frame = f.frame();
    let messages = match f.body_type() {
        Body::Push => frame.body_as_push().and_then(|b| b.messages()),
        Body::PullResult => frame.body_as_pull_result().and_then(|b| b.messages()),
        _ => None,
    };
    if let Some(seq) = messages.iter().flatten().map(|m| m.seq()).max() {
        let rid = client.next_request_id();
        p.send(client, &encode::push_ack(rid, SyncKind::Message, seq)).await?;
    }
    Ok(())
}

/// Writes the timestamped output lines.
struct Printer<W> {
    out: W,
}

impl<W: Write> Printer<W> {
    fn line(&mut self, dir: char, text: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{} {dir} {text}", timestamp(unix_now())).context("cannot write output")?;
        self.out.flush().context("cannot write output")
    }

    fn status(&mut self, text: &str) -> anyhow::Result<()> {
        self.line('*', text)
    }

    fn received(&mut self, f: &OwnedFrame) -> anyhow::Result<()> {
        self.line('<', &f.describe())
    }

    /// Sends `frame` and prints it.
    async fn send(&mut self, client: &mut Client, frame: &[u8]) -> anyhow::Result<()> {
        let text = match tern_schema::frame::parse_client_framed(frame, tern_schema::frame::MAX_PAYLOAD_LEN) {
            Ok(f) => crate::describe::describe(&f),
            Err(e) => format!("<unparsable frame: {e}>"),
        };
        client.send(frame).await.context("cannot send")?;
        self.line('>', &text)
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// `HH:MM:SS.mmm` of the UTC day.
fn timestamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, since_epoch.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        args: ClientArgs,
    }

    #[test]
    fn timestamp_format() {
        assert_eq!(timestamp(Duration::from_millis(86_400_000 + 3_723_045)), "01:02:03.045");
    }

    #[test]
    fn defaults_and_parsing() {
        let c = Cmd::try_parse_from(["x", "--user", "alice"]).unwrap().args;
        assert_eq!((c.transport, c.client_type, c.duration, c.pull), (Transport::Tcp, CliClientType::Linux, 0, false));
        assert_eq!(c.addr, None);
        let c =
            Cmd::try_parse_from(["x", "--user", "a", "--transport", "ws", "--client-type", "ios", "--duration", "3"])
                .unwrap()
                .args;
        assert_eq!((c.transport, ClientType::from(c.client_type), c.duration), (Transport::Ws, ClientType::Ios, 3));
        assert!(Cmd::try_parse_from(["x"]).is_err(), "--user is required");
        assert!(Cmd::try_parse_from(["x", "--user", "a", "--transport", "udp"]).is_err());
    }
}
