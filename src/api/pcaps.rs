//! Handlers of the PCAPs routes.
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;

use super::auth::{Authorized, ReadAccess, WriteAccess};
use super::envelope::{code, ok, ApiError};
use super::{blocking, AppState};
use crate::captures::manager::{Download, ManagerError};
use crate::captures::model::is_id;
use crate::captures::request::parse_create;

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
    check_id(&pcap_id)?;
    let c = blocking(move || s.manager.get(&account, &pcap_id)).await?;
    Ok(ok(c.to_api()))
}

pub async fn download(
    State(s): State<AppState>,
    Authorized(account): ReadAccess,
    Path((_, pcap_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&pcap_id)?;
    let (id, acct, manager) = (pcap_id.clone(), account.clone(), s.manager.clone());
    let body = match blocking(move || manager.download(&acct, &id)).await? {
        Download::File(bytes) => Body::from(bytes),
        Download::OnNode(node) => from_node(&s, &node, &account, &pcap_id).await?,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.tcpdump.pcap".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"pcap_{pcap_id}.pcap\"")),
        ],
        body,
    )
        .into_response())
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
