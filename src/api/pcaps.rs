//! Handlers of the PCAPs routes.
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;

use super::auth::{Authorized, ReadAccess, WriteAccess};
use super::envelope::{code, ok, ok_noted, ApiError};
use super::{blocking, AppState};
use crate::captures::manager::{Download, ManagerError};
use crate::captures::model::{is_id, Capture, CaptureType, Status};
use crate::captures::request::parse_create;
use crate::fleet::NodeInfo;
use crate::upload::buckets::{is_permanent, store_reason};
use crate::upload::destination::Destination;
use crate::upload::objects::{capture_objects, open_merge, ObjectsError};
use crate::upload::FileEntry;
use futures_util::TryStreamExt;

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::RateLimited { retry_after, .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED, e.to_string())
                    .no_retry()
                    .header(header::RETRY_AFTER, &retry_after.to_string())
            }
            ManagerError::NotFound => ApiError::not_found("capture not found"),
            ManagerError::Invalid { field, message } => ApiError::invalid(format!("{field}: {message}")),
            ManagerError::NotDownloadable(m) => ApiError::invalid(m),
            ManagerError::DiskFull => ApiError::disk_full(),
            // The fleet lost etcd quorum: nothing was decided, a retry soon is right.
            ManagerError::CoordinationDown(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, m)
                .retry()
                .header(header::RETRY_AFTER, "2"),
            ManagerError::Gone(m) => ApiError::new(StatusCode::GONE, code::NOT_FOUND, m),
            ManagerError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, code::CONFLICT, e.to_string()).no_retry(),
            // 503, not 500: the SDKs retry 5xx by themselves; a full appliance is worth a later
            // retry by the caller, not an immediate one.
            ManagerError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, m)
                .no_retry()
                .header(header::RETRY_AFTER, "10"),
            ManagerError::StartFailed(_) => ApiError::internal(e.to_string()).no_retry(),
            ManagerError::Store(e) => e.into(),
            ManagerError::Internal(m) => ApiError::internal(m),
        }
    }
}

fn check_id(pcap_id: &str) -> Result<(), ApiError> {
    if is_id(pcap_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("capture {pcap_id:?} not found (ids are 32 lowercase hex characters)")))
    }
}

/// The account's capture `pcap_id`: 404 for a malformed id, an unknown capture or another
/// account's.
pub(super) async fn capture_of(s: &AppState, account: &str, pcap_id: &str) -> Result<Capture, ApiError> {
    check_id(pcap_id)?;
    let (m, acct, id) = (s.manager.clone(), account.to_string(), pcap_id.to_string());
    blocking(move || m.get(&acct, &id)).await
}

pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE, "body: request body is too large")
        } else {
            ApiError::invalid(format!("body: {}", r.body_text()))
        }
    })
}

pub async fn create(
    State(s): State<AppState>,
    Authorized(account): WriteAccess,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req = parse_create(&body, Utc::now(), s.full_time_limit_max)
        .map_err(|e| ApiError::invalid(format!("{}: {}", e.field, e.message)))?;
    // A full capture waits up to 5 s for its writer's acknowledgement.
    let c = blocking(move || s.manager.create(&account, req, Utc::now())).await?;
    Ok(ok(c.to_api()))
}

pub async fn list(State(s): State<AppState>, Authorized(account): ReadAccess) -> Result<Response, ApiError> {
    let caps = blocking(move || s.manager.list(&account)).await?;
    Ok(ok(Value::Array(caps.iter().map(|c| c.to_api()).collect())))
}

pub async fn get_one(
    State(s): State<AppState>,
    Authorized(account): ReadAccess,
    Path((_, pcap_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(ok(capture_of(&s, &account, &pcap_id).await?.to_api()))
}

pub async fn download(
    State(s): State<AppState>,
    Authorized(account): ReadAccess,
    Path((_, pcap_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = capture_of(&s, &account, &pcap_id).await?;
    if c.kind == CaptureType::Full {
        return merged_download(&s, &c).await;
    }
    let (id, acct, manager) = (pcap_id.clone(), account.clone(), s.manager.clone());
    let body = match blocking(move || manager.download(&acct, &id)).await? {
        Download::File(bytes) => Body::from(bytes),
        Download::OnNode(node) => from_node(&s, &node, &account, &pcap_id).await?,
    };
    Ok(pcap_response(&pcap_id, body))
}

fn pcap_response(pcap_id: &str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/vnd.tcpdump.pcap".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"pcap_{pcap_id}.pcap\"")),
        ],
        body,
    )
        .into_response()
}

/// Bytes of merged output per body chunk.
const MERGE_CHUNK: usize = 256 << 10;

/// A finished full capture as ONE pcap: its objects read from the bucket (from any node: they
/// are all there once it is `success`) and merged by timestamp as they stream
/// (`pcap::merge`: memory bounded by the number of objects, not their size). Before that: 409
/// while it runs or uploads, 400 once failed. A failure after the first byte aborts the body,
/// so the client never sees a short file end cleanly.
async fn merged_download(s: &AppState, c: &Capture) -> Result<Response, ApiError> {
    match c.status {
        Status::Success => {}
        Status::Failed => {
            let why = c.error_message.as_deref().unwrap_or("unknown error");
            return Err(ApiError::invalid(format!("capture failed: {why}")));
        }
        other => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                code::CONFLICT,
                format!(
                    "capture is {}; its merged download is available once its status is success \
                     (the objects uploaded so far: GET .../pcaps/{}/files)",
                    other.as_str(),
                    c.id
                ),
            )
            .no_retry())
        }
    }
    Ok(pcap_response(&c.id, merged_body(s, c).await?))
}

/// A full capture's objects from its bucket, merged by timestamp, as a body (whatever its
/// status: the caller decides whether its objects are all there).
pub(super) async fn merged_body(s: &AppState, c: &Capture) -> Result<Body, ApiError> {
    let dest = Destination::parse(c.destination_conf.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::internal(format!("the capture's destination_conf: {}", e.0)))?;
    let store = s.stores.for_destination(&dest).map_err(|e| ApiError::internal(e.to_string()))?;
    let objects = capture_objects(store.as_ref(), &dest, &c.id).await.map_err(|e| bucket_error(&e))?;
    let merge = open_merge(store, &objects).await.map_err(|e| match e {
        ObjectsError::Store(e) => bucket_error(&e),
        e @ (ObjectsError::Merge(_) | ObjectsError::TooMany(_)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code::INVALID, e.to_string()).no_retry()
        }
    })?;
    let id = c.id.clone();
    let stream = merge.into_stream(MERGE_CHUNK).map_err(move |e| {
        tracing::warn!("capture {id}: merged download aborted: {e}");
        std::io::Error::other(e)
    });
    Ok(Body::from_stream(stream))
}

/// The bucket could not be read: worth a retry unless the store refused for good.
fn bucket_error(e: &object_store::Error) -> ApiError {
    let why = format!("reading the capture's objects from its bucket failed: {}", store_reason(e));
    if is_permanent(e) {
        ApiError::new(StatusCode::BAD_GATEWAY, code::UNAVAILABLE, why).no_retry()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, why).retry().header(header::RETRY_AFTER, "10")
    }
}

/// A capture file held by another node of the fleet, streamed through as it arrives.
pub(super) async fn from_node(s: &AppState, node: &str, account: &str, id: &str) -> Result<Body, ApiError> {
    let fleet = s.fleet.as_ref().ok_or_else(|| ApiError::internal("not in fleet mode"))?;
    let not_now = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            format!("the capture's file is on node {node}, which {why}; retry later"),
        )
        .retry()
        .header(header::RETRY_AFTER, "10")
    };
    let Some(info) = fleet.live_nodes().iter().find(|n| n.name == node).cloned() else {
        return Err(not_now("is not live now".into()));
    };
    let path = crate::fleet::records::file_path(account, id);
    let resp = fleet
        .call(&info, reqwest::Method::GET, &path, None)
        .await
        .map_err(|e| not_now(format!("cannot be reached ({e})")))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        // The file is gone there: the holder's answer. Anything else (its clock outside the
        // signature window, an error of its own) is the fleet's trouble, not the caller's.
        return Err(match status {
            404 => ApiError::not_found(format!("node {node}: {msg}")),
            410 => ApiError::new(StatusCode::GONE, code::NOT_FOUND, format!("node {node}: {msg}")),
            _ => not_now(format!("answered {status} ({msg})")),
        });
    }
    Ok(Body::from_stream(resp.bytes_stream()))
}

/// `GET .../pcaps/{pcap_id}/files` (pcapd extension): the objects of a full capture, each with
/// its node, key, size, packets and upload state; `[]` for a simple capture (it has no objects:
/// its file is the download). In a fleet the nodes of the capture's parts are asked for theirs
/// (their spool and upload queue are theirs); a node that does not answer is named in
/// `messages` and its files are missing from the list.
pub async fn files(
    State(s): State<AppState>,
    Authorized(account): ReadAccess,
    Path((_, pcap_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = capture_of(&s, &account, &pcap_id).await?;
    if c.kind == CaptureType::Simple {
        return Ok(ok(Value::Array(Vec::new())));
    }
    let mut all = local_files(&s, &c.id).await?;
    let mut notes = Vec::new();
    if let Some(fleet) = &s.fleet {
        let live = fleet.live_nodes();
        let path = crate::fleet::records::files_path(&account, &c.id);
        let asks = c.parts.iter().filter(|p| p.node != fleet.name()).map(|p| {
            let info = live.iter().find(|n| n.name == p.node).cloned();
            let (node, path) = (p.node.clone(), path.clone());
            async move {
                let Some(info) = info else { return (node, Err("is not live now".to_string())) };
                (node, node_files(fleet, &info, &path).await)
            }
        });
        for (node, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(entries) => all.extend(entries),
                Err(why) => notes.push(format!("node {node} {why}: its files are not listed")),
            }
        }
    }
    all.sort_by(|a, b| (&a.node, a.seq).cmp(&(&b.node, b.seq)));
    let result = serde_json::to_value(all).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(ok_noted(result, &notes))
}

/// How long one node may take to list its files.
const FILES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Another node's files of a capture (its internal route), or why not.
async fn node_files(fleet: &crate::fleet::Fleet, info: &NodeInfo, path: &str) -> Result<Vec<FileEntry>, String> {
    let call = fleet.call(info, reqwest::Method::GET, path, None);
    let resp = match tokio::time::timeout(FILES_TIMEOUT, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("cannot be reached ({e})")),
        Err(_) => return Err(format!("did not answer within {} s", FILES_TIMEOUT.as_secs())),
    };
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("answered {status}, then failed ({e})"))?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("answered {status} with no JSON ({e})"))?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    serde_json::from_value(body["result"].clone()).map_err(|e| format!("answered a list that does not parse ({e})"))
}

/// This node's files of capture `id` (none when it runs no full captures).
pub(super) async fn local_files(s: &AppState, id: &str) -> Result<Vec<FileEntry>, ApiError> {
    let Some(full) = s.manager.full_runtime().cloned() else { return Ok(Vec::new()) };
    let in_flight = s.uploads.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    let id = id.to_string();
    blocking(move || full.files(&id, in_flight)).await
}

pub async fn stop(
    State(s): State<AppState>,
    Authorized(account): WriteAccess,
    Path((_, pcap_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&pcap_id)?;
    // `stop` may wait on the gate a full capture's creation holds.
    let c = blocking(move || s.manager.stop(&account, &pcap_id)).await?;
    Ok(ok(c.to_api()))
}
