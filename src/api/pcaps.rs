//! Handlers of the PCAPs routes.
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;

use super::auth::{Authorized, ReadAccess, WriteAccess};
use super::envelope::{code, ok, ApiError};
use super::{blocking, AppState};
use crate::captures::manager::ManagerError;
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
    let id = pcap_id.clone();
    let bytes = blocking(move || s.manager.download(&account, &id)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.tcpdump.pcap".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"pcap_{pcap_id}.pcap\"")),
        ],
        bytes,
    )
        .into_response())
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
