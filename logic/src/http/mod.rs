//! The HTTP management API: business servers call `POST /v1/...` with JSON bodies (see
//! `api.md` in the shared docs); operators use `GET /healthz`, `GET /metrics`,
//! `GET /openapi.json` and `GET /docs`.
//!
//! [`router`] builds the whole API. Every answer is the envelope of [`error`]; every
//! request runs in a tracing span carrying the app id (and the user id where one
//! applies) and is counted in `tern_http_requests_total{path,code}` and timed in
//! `tern_http_request_seconds{path}` (`path` is the route template, never the raw URI,
//! so label cardinality stays bounded). Each endpoint is declared once, in its module's
//! `routes()` ([`endpoints`]): route, OpenAPI operation, own error codes and alias
//! paths together. [`openapi`] completes utoipa's document (error responses, the common
//! body fields, aliases, security schemes); `/docs` renders it as one self-contained
//! HTML page.
//!
//! This module must never hold business rules (they live in the services, e.g.
//! `crate::users`), and never let a framework default (plain-text 404/405/413 or JSON
//! rejections) reach a caller in place of the envelope.

pub mod auth;
pub mod blacklist;
pub mod common;
pub mod conversations;
pub mod demo;
pub mod docs;
pub mod endpoints;
pub mod error;
pub mod extract;
pub mod friend_requests;
pub mod friendship;
pub mod groups;
pub mod messages;
pub mod users;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::{json, Value};
use tern_schema::codes;
use tracing::Instrument;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::routes;

use self::endpoints::{EndpointMeta, Endpoints};
use self::error::{ApiCode, ApiError, ApiOk, Envelope, ErrorEnvelope, CODES};
use self::extract::Common;
use crate::users::Users;
use crate::Logic;

/// What every handler shares.
pub struct ApiState {
    pub logic: Arc<Logic>,
    pub users: Users,
    /// `http.max_body_bytes`, for the 90002 message.
    pub max_body_bytes: usize,
    /// `http.body_timeout_ms`.
    pub body_timeout: std::time::Duration,
    metrics: Option<PrometheusHandle>,
    openapi_json: String,
    docs_html: String,
    ready: Ready,
}

/// What `/healthz` reports about the start once the API is up.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    /// Milliseconds from process start to ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_after_ms: Option<u64>,
    /// What opening the store recovered (embedded store only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_recovery: Option<StoreRecovery>,
}

/// What opening the embedded store had to recover.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreRecovery {
    /// How long opening the store took.
    pub took_ms: u64,
    /// Journal files found (0 for a new store).
    pub journal_files: u64,
    /// Journal bytes read.
    pub journal_bytes: u64,
    /// Bytes not yet in table files that were replayed into memory: 0 after a clean
    /// shutdown, bounded by `storage.max_unflushed_bytes` after a crash.
    pub replayed_bytes: u64,
    /// The same in words, as the start-up banner prints it.
    pub summary: String,
}

/// Builds the management API over `logic`. `metrics` renders `/metrics` (the binary
/// installs the recorder; without a handle `/metrics` answers 90004).
pub fn router(logic: Arc<Logic>, metrics: Option<PrometheusHandle>) -> Router {
    router_ready(logic, metrics, Ready::default())
}

/// [`router`], with what `/healthz` says about the start.
pub fn router_ready(logic: Arc<Logic>, metrics: Option<PrometheusHandle>, ready: Ready) -> Router {
    let doc = openapi();
    let max_body_bytes = logic.config.http.max_body_bytes;
    let body_timeout = std::time::Duration::from_millis(logic.config.http.body_timeout_ms);
    let state = Arc::new(ApiState {
        users: Users::new(logic.clone()),
        logic,
        max_body_bytes,
        body_timeout,
        metrics,
        // Rendered once: the document cannot change while the process runs.
        openapi_json: serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into()),
        docs_html: docs::render(&doc),
        ready,
    });
    let (router, ..) = endpoints().into_parts();
    router
        .merge(demo::routes(&state)) // the web chat page: not part of the documented API
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Span, counter and latency histogram around every request.
async fn observe(req: Request, next: Next) -> Response {
    // Route templates only: raw URIs would make label cardinality unbounded.
    let path = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %path,
        app_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let code = resp.extensions().get::<ApiCode>().map_or(u32::from(resp.status().as_u16()), |c| c.0);
    span.in_scope(|| {
        tracing::debug!(code, status = resp.status().as_u16(), elapsed_ms = elapsed.as_millis() as u64, "answered")
    });
    metrics::counter!("tern_http_requests_total", "path" => path.clone(), "code" => code.to_string()).increment(1);
    metrics::histogram!("tern_http_request_seconds", "path" => path).record(elapsed.as_secs_f64());
    resp
}

async fn no_such_endpoint(uri: axum::http::Uri) -> ApiError {
    ApiError::NoSuchEndpoint(uri.path().to_string())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Answer of `/healthz` once ready.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// "ready". (While starting, `/healthz` answers HTTP 503 with code 90006 and
    /// `data` = `{"status": "starting", "step": "...", "elapsedMs": n}`.)
    pub status: String,
    /// Client sessions online on this logic node.
    pub sessions_online: usize,
    #[serde(flatten)]
    pub ready: Ready,
}

/// Readiness: 200 and "ready" once the API serves; 503 with code 90006 and the
/// start-up step and elapsed time while the store is still being recovered.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Ready", body = Envelope<Health>),
        (status = 503, description = "Starting (code 90006; data: status, step, elapsedMs)")))]
pub async fn healthz(State(state): State<Arc<ApiState>>) -> ApiOk<Health> {
    ApiOk(Health { status: "ready".into(), sessions_online: state.logic.sessions.len(), ready: state.ready.clone() })
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics_text(State(state): State<Arc<ApiState>>) -> Response {
    match &state.metrics {
        Some(handle) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::NoSuchEndpoint("/metrics (no metrics recorder is installed)".into()).into_response(),
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi_json(State(state): State<Arc<ApiState>>) -> Response {
    ([(CONTENT_TYPE, "application/json")], state.openapi_json.clone()).into_response()
}

/// Browsable documentation of this API (one self-contained HTML page, no scripts).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
pub async fn docs_page(State(state): State<Arc<ApiState>>) -> Html<String> {
    Html(state.docs_html.clone())
}

/// The document's frame: info, tags and the shared components. Paths come from the
/// endpoint modules' `routes()`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tern management API"),
    components(schemas(ErrorEnvelope, Common)),
    tags(
        (name = "users", description = "Users: import, delete, login, profiles, profile sync, online status."),
        (name = "messages", description = "1:1 messages: server-side send, inbox sync, history, get by key, recall."),
        (name = "friendship", description = "Friend lists, with incremental sync."),
        (name = "blacklist", description = "The blacklist, with incremental sync."),
        (name = "friend requests", description = "Friend requests: list, mark read, approve or reject."),
        (name = "groups", description = "Groups: profiles, members, roles, mutes, ownership, joined groups, group messages."),
        (name = "conversations", description = "Conversation lists (1:1 and group) with exact unread counts, sync, pin, mute, delete."),
        (name = "operations", description = "Health, metrics and this documentation."),
    )
)]
struct ApiDoc;

/// Introduction of the document: the conventions every call follows.
const INTRO: &str = "\
Every management call is `POST /v1/<path>` with a JSON body and the query parameters `appId`, \
`identifier` (an admin of the app) and `userSign` (that admin's *admin* signature, `tern sig --admin`; a \
user's login signature never authorizes an admin call). Signatures in the original system's UserSig \
format are accepted too. Unknown body fields are refused (90001), so typos never pass silently; integer \
fields accept integral floats such as `50.0`.\n\n\
Every body may also carry the original system's common fields `appId` (if given, it must equal the \
query's), `operater` (the acting user: calls that take `fromId` use it when `fromId` is absent), \
`clientType` (0 webApi, 1 web, 2 ios, 3 android, 4 windows, 5 mac, 6 linux) and `imei`.\n\n\
Every answer is the envelope `{\"code\": 200, \"msg\": \"success\", \"data\": ...}`; on failure `code` \
is one of the error codes below, `msg` says what went wrong (for 90001 it starts with the field's path, \
e.g. `userData[3].nickName`) and `data` is null. The HTTP status follows the error class.\n\n\
Batch calls answer per item (`successId` / `errorId`); only a missing list or one over the batch limit \
fails the whole call. Sync calls take `lastSequence` and `maxLimit` and answer `{maxSequence, completed, \
dataList}`.\n\n\
A `messageKey` (server message id) and a friend request `id` are answered as decimal strings: they use \
all 64 bits, and JavaScript numbers lose precision above 2^53. Calls accept them as strings or numbers.\n\n\
The original system's controller paths answer as aliases of Tern's (each alias is listed below with \
`x-alias-of`). Where Tern answers differently on purpose:\n\n\
| call | the original | Tern | why |\n\
|---|---|---|---|\n\
| every call | generic failure code 500, parameter errors as code 0 | a documented code per error, 90001 names the field | callers can act on the code |\n\
| admin signature | any UserSig of an admin identifier | also Tern's admin signatures, which a login signature never is | a user's login signature must not be an admin credential |\n\
| queryUserOnlineStatus | map userId → `{session, customText, customStatus}` | `statusList` of `{userId, online, devices}` | one shape for every batch call |\n\
| getUserInfo | `{userDataItem, failUser}` | `{userDataItem, errorId}` with a code per failed id | per-item codes |\n\
| login | RouteInfo `{ip, port}`, no signature | the user's signature required; `{userId, tcp, ws, ip, port}` | a login needs proof; every address is listed |\n\
| send | `{messageKey, messageTime}` | also `messageSequence`; `messageKey` as a decimal string | 64-bit keys lose precision in JavaScript |\n\
| deleteAllFriend, checkFriend | per-friend rows | `{successId, errorId}` / `{resultList, errorId}` | one shape for every batch call |\n\
| password | stored | stored as a salted Argon2id hash, never returned | clients authenticate by signature; a plain password must never be readable |\n\
| getJoinedGroup | `{totalCount, groupList}` of groups | the same, each group with the user's `role` and `joinTime` | one call shows the membership |\n\
| addMember, importGroupMember, member/remove | per-member rows `{memberId, result, resultMessage}` | `{successId, errorId}` with a code per refused member | one shape for every batch call |\n\
| updateConversation | `isTop`, `isMute` as 0/1 | booleans; also `extra` | one type for flags |\n\
| deleteConversation | resets pin and mute only | removes the record (a tombstone in sync), history kept or cleared (`clearHistory`), or `onlyNotify` | issue 12 |\n\
| syncConversationList | records only | the same, plus tombstones; /conversation/get adds last message and exact unread counts | one call shows the list |";

/// `[{code, status, meaning}]` for the document's `x-error-codes` extensions.
fn code_list(codes: &[u32]) -> Value {
    codes
        .iter()
        .filter_map(|c| error::code_info(*c))
        .map(|i| json!({"code": i.code, "status": i.status, "meaning": i.meaning}))
        .collect()
}

/// Every endpoint: its module's `routes()` in turn, then the operations endpoints.
pub fn endpoints() -> Endpoints {
    let e = Endpoints::new(ApiDoc::openapi());
    let e = users::routes(e);
    let e = messages::routes(e);
    let e = friendship::routes(e);
    let e = blacklist::routes(e);
    let e = friend_requests::routes(e);
    let e = groups::routes(e);
    let e = conversations::routes(e);
    e.add(routes!(healthz), &[], &[]).add(routes!(metrics_text), &[], &[]).add(routes!(openapi_json), &[], &[]).add(
        routes!(docs_page),
        &[],
        &[],
    )
}

/// Codes every `/v1` call can answer, besides its own (see [`path_errors`]).
const COMMON_ERRORS: &[u32] = &[
    codes::SIGN_MISSING,
    codes::SIGN_BAD_APP,
    error::NO_OPERATOR,
    codes::SIGN_WRONG,
    codes::SIGN_EXPIRED,
    error::OPERATOR_MISMATCH,
    codes::SIGN_MALFORMED,
    codes::BAD_PARAMETER,
    error::BODY_TOO_LARGE,
    error::BODY_TIMEOUT,
    codes::INTERNAL,
];

/// The OpenAPI document: utoipa's, from every endpoint's declaration, completed with
/// what annotations cannot say. Each `/v1` operation gets its error codes as responses
/// (grouped by HTTP status) and as `x-error-codes` (failing the whole call) and
/// `x-item-error-codes` (single items of a batch); its request body gets the common
/// fields of the original system (inline, so `additionalProperties: false` still holds);
/// it names the query signature as its security requirement; alias paths get a copy of
/// their endpoint's operation. The error table goes into the description.
pub fn openapi() -> Value {
    let (_, doc, meta, _) = endpoints().into_parts();
    complete(serde_json::to_value(doc).unwrap_or_else(|_| json!({})), &meta)
}

/// The paths the router serves (every documented one, aliases included).
pub fn served_paths() -> Vec<String> {
    endpoints().into_parts().3
}

fn complete(mut doc: Value, meta: &[EndpointMeta]) -> Value {
    integer_formats(&mut doc);
    let mut table = String::from("\n\n| code | HTTP | meaning |\n|---|---|---|\n");
    for c in CODES {
        table.push_str(&format!("| {} | {} | {} |\n", c.code, c.status, c.meaning));
    }
    doc["info"]["description"] = Value::String(format!("{INTRO}{table}"));
    doc["components"]["securitySchemes"] = json!({
        "appId": {"type": "apiKey", "in": "query", "name": "appId", "description": "The app (tenant) id."},
        "identifier": {"type": "apiKey", "in": "query", "name": "identifier",
            "description": "Who acts: an admin identifier of the app (login: the user id)."},
        "userSign": {"type": "apiKey", "in": "query", "name": "userSign",
            "description": "The identifier's signature: an admin signature (`tern sig --admin`) for management calls, \
    the user's login signature (`tern sig`) for login; or a UserSig in the original system's format."},
    });
    strict_components(&mut doc);
    let common = doc.pointer("/components/schemas/Common/properties").cloned().unwrap_or_else(|| json!({}));
    let schemas = doc.pointer("/components/schemas").cloned().unwrap_or_else(|| json!({}));
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for m in meta.iter().filter(|m| m.path.starts_with("/v1/")) {
        let Some(op) = paths.get_mut(&m.path).and_then(|i| i.get_mut("post")).and_then(Value::as_object_mut) else {
            continue;
        };
        let mut codes: Vec<u32> = COMMON_ERRORS.iter().chain(m.codes).copied().collect();
        codes.sort_unstable();
        codes.dedup();
        let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
        for info in codes.iter().filter_map(|c| error::code_info(*c)) {
            by_status.entry(info.status).or_default().push(format!("- {}: {}", info.code, info.meaning));
        }
        let responses = op.entry("responses").or_insert_with(|| json!({}));
        for (status, lines) in by_status {
            responses[status.to_string()] = json!({
                "description": lines.join("\n"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
            });
        }
        op.insert("x-error-codes".into(), code_list(&codes));
        if !m.item_codes.is_empty() {
            op.insert("x-item-error-codes".into(), code_list(m.item_codes));
        }
        op.insert("security".into(), json!([{"appId": [], "identifier": [], "userSign": []}]));
        if let Some(body) = op.get_mut("requestBody").and_then(|b| b.pointer_mut("/content/application~1json/schema")) {
            *body = with_common(body, &schemas, &common);
            strict_body(body);
            let optional = empty_body_is_valid(body);
            if let Some(rb) = op.get_mut("requestBody") {
                rb["required"] = json!(!optional);
            }
        }
        if !m.aliases.is_empty() {
            op.insert("x-aliases".into(), json!(m.aliases));
        }
    }
    for m in meta {
        let Some(item) = paths.get(&m.path).cloned() else { continue };
        for alias in &m.aliases {
            let mut item = item.clone();
            if let Some(op) = item.get_mut("post").and_then(Value::as_object_mut) {
                let id = op.get("operationId").and_then(Value::as_str).unwrap_or("op").to_string();
                let name = alias.rsplit('/').next().unwrap_or(alias);
                op.insert("operationId".into(), json!(format!("{id}_as_{name}")));
                let summary = op.get("summary").and_then(Value::as_str).unwrap_or("").to_string();
                op.insert("summary".into(), json!(format!("{summary} (the original system's path for {})", m.path)));
                op.remove("x-aliases");
                op.insert("x-alias-of".into(), json!(m.path));
            }
            paths.insert((*alias).to_string(), item);
        }
    }
    doc
}

/// The pattern of a user id (`tern_storage::UserId`).
const USER_ID_PATTERN: &str = "^[A-Za-z0-9_.@-]{1,64}$";

/// What the services enforce on a request field, by its API name, as JSON Schema: the
/// limits live in the services (`crate::users`, `crate::friends`, `crate::messages`)
/// and are restated here so the document is as strict as the server. Applied to request
/// bodies and the objects they nest, never to items of a batch list (a bad item there
/// is a per-item error in a 200 answer, not a refused call).
fn field_rule(name: &str, schema: &Value) -> Option<Value> {
    let is_string =
        schema.get("type").is_some_and(|t| t == "string" || t.as_array().is_some_and(|a| a.contains(&json!("string"))));
    let is_array =
        schema.get("type").is_some_and(|t| t == "array" || t.as_array().is_some_and(|a| a.contains(&json!("array"))));
    let max_len = |n: u32| Some(json!({"maxLength": n}));
    let batch = Some(json!({"maxItems": crate::config::DEFAULT_MAX_BATCH}));
    match name {
        // Group ids follow the user-id rules (`tern_storage::GroupId`).
        "fromId" | "toId" | "operater" | "userId" | "groupId" | "afterGroupId" | "memberId" | "afterMemberId"
        | "ownerId" | "newOwnerId"
            if is_string =>
        {
            Some(json!({"pattern": USER_ID_PATTERN, "minLength": 1, "maxLength": 64}))
        }
        "userId" | "userIds" | "toIds" | "userList" | "messageKeys" | "userData" | "memberIds" if is_array => batch,
        // `{type}_{fromId}_{toId}` (`conversations::record::parse_conversation_id`).
        "conversationId" if is_string => {
            Some(json!({"pattern": "^[12]_[A-Za-z0-9_.@-]{1,64}_[A-Za-z0-9_.@-]{1,64}$", "maxLength": 131}))
        }
        "maxMemberCount" => Some(json!({"maximum": 1_000_000})),
        "nickName" | "remark" => max_len(64),
        "photo" => max_len(512),
        "birthDay" | "addSource" => max_len(32),
        "location" => max_len(128),
        "selfSignature" | "addWording" => max_len(256),
        "extra" => max_len(4096),
        "password" => max_len(128),
        // Bytes on the server; characters here (equal for ASCII ids).
        "messageId" => Some(json!({"minLength": 1, "maxLength": 64})),
        "fields" => {
            let mut names: Vec<&str> = users::PROFILE_VIEW_FIELDS.to_vec();
            names.push("userId");
            Some(json!({"items": {"type": "string", "enum": names}}))
        }
        _ => None,
    }
}

/// Applies [`field_rule`] to an object schema's properties.
fn apply_field_rules(schema: &mut Value) {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, prop) in props.iter_mut() {
            if let (Some(rule), Some(obj)) = (field_rule(name, prop), prop.as_object_mut()) {
                if let Some(rule) = rule.as_object() {
                    obj.extend(rule.clone());
                }
            }
        }
    }
}

/// A branch of `anyOf`/`oneOf`: `name` is present and not null.
fn present(name: &str, ty: &str) -> Value {
    json!({"required": [name], "properties": {name: {"type": ty}}})
}

/// A request body, completed: field rules, and the choices the server insists on that
/// per-field schemas cannot say (`fromId` or `operater`; exactly one list name).
fn strict_body(body: &mut Value) {
    apply_field_rules(body);
    let props: Vec<String> =
        body.get("properties").and_then(Value::as_object).map_or_else(Vec::new, |p| p.keys().cloned().collect());
    let has = |n: &str| props.iter().any(|p| p == n);
    let required = |n: &str| body.get("required").and_then(Value::as_array).is_some_and(|r| r.contains(&json!(n)));
    let mut all_of = Vec::new();
    if has("fromId") && has("operater") && !required("fromId") {
        all_of.push(json!({"anyOf": [present("fromId", "string"), present("operater", "string")]}));
    }
    if has("userList") {
        all_of.push(json!({"oneOf": [present("userIds", "array"), present("userList", "array")]}));
    } else if has("userIds") && has("userId") && !required("userIds") {
        all_of.push(json!({"oneOf": [present("userIds", "array"), present("userId", "array")]}));
    }
    if has("nickName") && has("silentFlag") {
        // modifyUserInfo: at least one profile field or a password.
        let typed: Vec<Value> = crate::users::PROFILE_FIELDS
            .iter()
            .chain(std::iter::once(&"password"))
            .map(|f: &&str| {
                let f: &str = f;
                let ty = body["properties"][f]["type"]
                    .as_array()
                    .and_then(|t| t.first())
                    .cloned()
                    .unwrap_or(json!("string"));
                json!({"required": [f], "properties": {f: {"type": ty}}})
            })
            .collect();
        all_of.push(json!({ "anyOf": typed }));
    }
    if has("deleteAll") {
        all_of.push(json!({"oneOf": [
            present("toId", "string"),
            present("toIds", "array"),
            {"required": ["deleteAll"], "properties": {"deleteAll": {"const": true}}},
        ]}));
    }
    if !all_of.is_empty() {
        body["allOf"] = Value::Array(all_of);
    }
}

/// Whether `{}` is a complete body (the server reads a missing body as `{}`).
fn empty_body_is_valid(body: &Value) -> bool {
    body.get("required").and_then(Value::as_array).is_none_or(Vec::is_empty) && body.get("allOf").is_none()
}

/// Components that requests nest as single objects get the field rules too; a message
/// element states which fields its type needs (the send path refuses an element
/// without them, 50000).
fn strict_components(doc: &mut Value) {
    let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for name in ["ToItem", "UpdateItem"] {
        if let Some(s) = schemas.get_mut(name) {
            apply_field_rules(s);
        }
    }
    if let Some(s) = schemas.get_mut("UpdateItem") {
        s["anyOf"] = json!([present("remark", "string"), present("extra", "string")]);
    }
    if let Some(elem) = schemas.get_mut("MessageElem") {
        let needs = |ty: &str, field: &str| json!({"properties": {"type": {"const": ty}, field: {"type": "string", "minLength": 1}}, "required": ["type", field]});
        elem["oneOf"] = json!([
            needs("text", "text"),
            needs("custom", "data"),
            needs("custom", "text"),
            needs("image", "url"),
            needs("file", "url"),
            needs("sound", "url"),
            needs("video", "url"),
            needs("location", "extra"),
        ]);
        // oneOf must pick one: a custom element with both data and text matches two.
        elem["anyOf"] = elem["oneOf"].take();
        if let Some(o) = elem.as_object_mut() {
            o.remove("oneOf");
        }
        elem["properties"]["data"]["pattern"] =
            json!("^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$");
    }
    if let Some(body) = schemas.get_mut("MessageBody") {
        if let Some(variants) = body.get_mut("oneOf").and_then(Value::as_array_mut) {
            for v in variants {
                match v.get("type").and_then(Value::as_str) {
                    Some("string") => v["minLength"] = json!(1),
                    Some("array") => {
                        v["minItems"] = json!(1);
                        v["maxItems"] = json!(32);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// utoipa writes unsigned formats as `u-int64`; the formats registry's names are
/// `uint64`, `uint32`, ... (and schemathesis reads those).
fn integer_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(f)) = map.get_mut("format") {
                if let Some(bits) = f.strip_prefix("u-int") {
                    *f = format!("uint{bits}");
                }
            }
            // The unsigned formats say the range; say it in plain JSON Schema too.
            let max = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(json!(u8::MAX)),
                Some("uint16") => Some(json!(u16::MAX)),
                Some("uint32") => Some(json!(u32::MAX)),
                Some("uint64") => Some(json!(u64::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                map.entry("maximum").or_insert(max);
            }
            map.values_mut().for_each(integer_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(integer_formats),
        _ => {}
    }
}

/// A request body schema with the common fields added, inline: `$ref`s are resolved so
/// that `additionalProperties: false` covers the added fields too.
fn with_common(body: &Value, schemas: &Value, common: &Value) -> Value {
    let mut schema = match body.get("$ref").and_then(Value::as_str) {
        Some(r) => schemas.get(r.trim_start_matches("#/components/schemas/")).cloned().unwrap_or_default(),
        None => body.clone(),
    };
    if let (Some(props), Some(common)) =
        (schema.get_mut("properties").and_then(Value::as_object_mut), common.as_object())
    {
        for (k, v) in common {
            props.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    schema["additionalProperties"] = json!(false);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_path_documents_its_errors() {
        let doc = openapi();
        let paths = doc["paths"].as_object().unwrap();
        let (_, _, meta, _) = endpoints().into_parts();
        for m in meta.iter().filter(|m| m.path.starts_with("/v1/")) {
            for p in std::iter::once(m.path.as_str()).chain(m.aliases.iter().copied()) {
                let op = &paths[p]["post"];
                assert!(op.is_object(), "{p} is not in the document");
                let codes = op["x-error-codes"].as_array().unwrap();
                assert!(codes.iter().any(|c| c["code"] == json!(60003)), "{p}");
                assert!(op["responses"]["401"].is_object(), "{p}");
                assert_eq!(
                    op["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"],
                    json!(false),
                    "{p}"
                );
                for c in m.codes.iter().chain(m.item_codes) {
                    assert!(error::code_info(*c).is_some(), "{p}: {c} is not in CODES");
                }
            }
        }
    }

    #[test]
    fn served_paths_are_the_documented_ones() {
        let doc = openapi();
        let mut documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
        let mut served = served_paths();
        documented.sort();
        served.sort();
        assert_eq!(served, documented);
    }
}
