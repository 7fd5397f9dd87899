//! Node-to-node routes under `/internal/...`, present only in fleet mode (`[fleet]`). Every
//! request under `/internal` (unknown paths included) must carry a valid signature
//! (`fleet::auth`): 401 without one, 403 with a wrong one or a time outside the replay window,
//! both in Cloudflare's envelope. Without `[fleet]` the prefix is an ordinary unknown route (404).
//!
//! To add a route: one `.route(...)` line in [`routes`] and a handler taking
//! `State<AppState>` (its `fleet` is always `Some` here, see [`fleet`]). Callers use
//! `Fleet::call(node, method, path, body)`, which signs with the same secret.
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::envelope::{code, ok, ApiError};
use super::{blocking, AppState};
use crate::captures::full::FullRuntime;
use crate::captures::manager::{Download, ManagerError, SampleRequest};
use crate::captures::model::is_id;
use crate::fleet::{self, Fleet};

/// The internal routes (merged into the API router when `state.fleet` is set).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(fleet::clock::NODE_PATH, get(node))
        .route(fleet::gather::SAMPLES_PATH, post(samples))
        .route(fleet::full::PARTS_PATH, post(part_start))
        .route(fleet::full::STOP_PATH, post(part_stop))
        .route(fleet::records::FILE_ROUTE, get(file))
        .route(fleet::records::FILES_ROUTE, get(files))
}

/// Whether `path` belongs to the internal routes.
fn is_internal(path: &str) -> bool {
    path == "/internal" || path.starts_with("/internal/")
}

/// The fleet handle of an internal handler (always set: the routes exist only in fleet mode).
pub(crate) fn fleet(s: &AppState) -> Result<&Fleet, ApiError> {
    s.fleet.as_ref().ok_or_else(|| ApiError::internal("not in fleet mode"))
}

/// Longest body of a node-to-node request (they are small JSON documents).
const MAX_INTERNAL_BODY: usize = 1 << 20;

/// Middleware on the whole router: requests under `/internal` must be signed by a fleet node,
/// body included, and are accepted once.
pub(crate) async fn require_node_signature(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(f) = s.fleet.as_ref().filter(|_| is_internal(req.uri().path())) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.as_str().to_string());
    // Without the signature's headers nothing is read.
    let headers = [fleet::auth::NODE_HEADER, fleet::auth::TIME_HEADER, fleet::auth::NONCE_HEADER];
    if let Some(missing) =
        headers.into_iter().chain([fleet::auth::SIGNATURE_HEADER]).find(|h| !parts.headers.contains_key(*h))
    {
        let e = fleet::auth::AuthError::Missing(missing);
        return ApiError::auth(e.status(), &e.to_string()).into_response();
    }
    let body = match axum::body::to_bytes(body, MAX_INTERNAL_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let msg = format!("body: a node-to-node request body is at most {MAX_INTERNAL_BODY} bytes");
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE, msg).into_response();
        }
    };
    let now = fleet::unix_secs();
    let checked = fleet::auth::verify(f.secret(), parts.method.as_str(), &path, &parts.headers, &body, now)
        .and_then(|signed| f.nonces().first_use(&signed.nonce, signed.time, now));
    match checked {
        Ok(()) => next.run(Request::from_parts(parts, axum::body::Body::from(body))).await,
        Err(e) => {
            tracing::warn!("{} {path}: {e}", parts.method);
            ApiError::auth(e.status(), &e.to_string()).into_response()
        }
    }
}

/// `GET /internal/v1/node`: this node's name, colos and clock (UNIX ms), for peers to check
/// membership and measure clock offsets.
async fn node(State(s): State<AppState>) -> Result<Response, ApiError> {
    let f = fleet(&s)?;
    let me = f.me();
    let clock_unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Ok(ok(json!({
        "name": me.name,
        "colos": me.colos,
        "advertise": me.advertise,
        "pid": me.pid,
        "started_unix_ms": me.started_unix_ms,
        "clock_unix_ms": clock_unix_ms,
    })))
}

/// `POST /internal/v1/samples` (a JSON `SampleRequest`): this node's earliest `limit` samples in
/// the window that match `filter_v1`, as a nanosecond PCAP in this node's order (its part of a
/// simple capture another node assembles).
async fn samples(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: SampleRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("not a sample request: {e}")))?;
    let m = s.manager.clone();
    let (snaplen, found) = blocking(move || m.local_samples(&req).map(|v| (m.snaplen(), v))).await?;
    let bytes = fleet::gather::encode_pcap(snaplen, &found);
    Ok(([(header::CONTENT_TYPE, "application/vnd.tcpdump.pcap")], bytes).into_response())
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("not a {what}: {e}")))
}

fn full_runtime(s: &AppState) -> Result<std::sync::Arc<FullRuntime>, ApiError> {
    s.manager.full_runtime().cloned().ok_or_else(|| ApiError::internal("full captures are not available on this node"))
}

/// `POST /internal/v1/full/parts` (a `PartStart`): starts this node's part of a full capture
/// another node created; answers as a start does (409, 503, 500 with the reason).
async fn part_start(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: fleet::full::PartStart = json_body(&body, "part start")?;
    let (f, local) = (fleet(&s)?.clone(), full_runtime(&s)?);
    // Only a part of a capture the fleet holds, for this node: a request that names another
    // account's capture or bucket than its record does is refused.
    let c = &req.capture;
    if !is_id(&c.id) {
        return Err(ApiError::invalid(format!("capture id {:?} is not an id", c.id)));
    }
    let stored = f.capture(&c.account, &c.id).await.map_err(ApiError::from)?;
    let listed = stored.as_ref().is_some_and(|r| {
        r.parts.iter().any(|p| p.node == f.name())
            && r.destination_conf == c.destination_conf
            && r.filter == c.filter
            && r.filter_expression == c.filter_expression
    });
    if !listed {
        return Err(ApiError::not_found(format!(
            "capture {} has no part for node {} in the fleet's records",
            c.id,
            f.name()
        )));
    }
    let rt = tokio::runtime::Handle::current();
    let c = blocking(move || fleet::full::start_part(&f, &local, &rt, req).map_err(ManagerError::from)).await?;
    Ok(ok(c.to_api()))
}

/// `POST /internal/v1/full/stop` (a `PartStop`): stops this node's part, if it runs here.
async fn part_stop(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: fleet::full::PartStop = json_body(&body, "part stop")?;
    if !is_id(&req.id) {
        return Err(ApiError::invalid(format!("capture id {:?} is not an id", req.id)));
    }
    let local = full_runtime(&s)?;
    let stopped = blocking(move || Ok::<_, ApiError>(local.stop(&req.account, &req.id).is_some())).await?;
    Ok(ok(json!({ "stopped": stopped })))
}

/// `GET /internal/v1/captures/{account}/{id}/file`: a simple capture's file this node holds.
async fn file(State(s): State<AppState>, Path((account, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found(format!("capture {id:?} not found")));
    }
    let m = s.manager.clone();
    match blocking(move || m.download(&account, &id)).await? {
        Download::File(bytes) => Ok(([(header::CONTENT_TYPE, "application/vnd.tcpdump.pcap")], bytes).into_response()),
        Download::OnNode(node) => Err(ApiError::not_found(format!("the capture's file is on node {node}, not here"))),
    }
}

/// `GET /internal/v1/captures/{account}/{id}/files`: this node's files of a full capture (its
/// part of `GET .../pcaps/{id}/files` asked on another node), as a JSON array.
async fn files(State(s): State<AppState>, Path((_, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found(format!("capture {id:?} not found")));
    }
    let entries = super::pcaps::local_files(&s, &id).await?;
    Ok(ok(serde_json::to_value(entries).map_err(|e| ApiError::internal(e.to_string()))?))
}
