//! The HTTP/1.1 client that carries callbacks to one app's business server: hyper's
//! pooled client (keep-alive connections reused per host), each request signed
//! ([`super::sign`]) and bounded in time as a whole — connect, send, answer — and in the
//! size of the answer it reads.
//!
//! Must never: wait without a deadline, or read an unbounded answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::sign;

/// Largest answer read from a business server: a rewritten message body is at most
/// `messages.max_body_bytes` (12 KiB by default) plus its JSON and base64 overhead.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Idle keep-alive connections kept per business server host.
const MAX_IDLE_PER_HOST: usize = 64;
/// An idle kept-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer unreadable: {0}")]
    Body(String),
}

impl CallError {
    /// The `result` label of `tern_callback_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Transport(_) => "error",
            CallError::Status(_) => "status",
            CallError::Body(_) => "error",
        }
    }
}

/// One app's client (its own connection pool: a slow business server holds only its
/// own app's connections).
#[derive(Clone)]
pub struct CallbackClient {
    http: Client<HttpConnector, Full<Bytes>>,
    secret: Bytes,
    app: u32,
}

impl CallbackClient {
    pub fn new(app: u32, secret: &str, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        Self { http, secret: Bytes::copy_from_slice(secret.as_bytes()), app }
    }

    /// POSTs `body` (JSON) to `url` with `?command=...&appId=...` added, signed; answers
    /// the body of a 2xx answer. The whole exchange ends within `timeout`.
    pub async fn post(&self, url: &str, command: &str, body: Bytes, timeout: Duration) -> Result<Bytes, CallError> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let uri: Uri = format!("{url}{sep}command={command}&appId={}", self.app)
            .parse()
            .map_err(|e| CallError::Transport(format!("bad URL: {e}")))?;
        let ts = crate::now_ms() / 1000;
        let signature = sign::sign(&self.secret, ts, &body);
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(sign::TIMESTAMP_HEADER, ts)
            .header(sign::SIGNATURE_HEADER, signature)
            .header("x-tern-app", self.app)
            .header("x-tern-command", command)
            .body(Full::new(body))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| CallError::Transport(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Body(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            Ok(body)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(timeout.as_millis() as u64)),
        }
    }
}
