//! Handlers of the bucket-ownership routes.
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::auth::{Authorized, ReadAccess, WriteAccess};
use super::envelope::{code, ok, ApiError};
use super::pcaps::body_bytes;
use super::{blocking, AppState};
use crate::captures::model::is_id;
use crate::upload::ownership::{self, OwnershipError};

impl From<OwnershipError> for ApiError {
    fn from(e: OwnershipError) -> Self {
        match e {
            OwnershipError::Invalid(m) => ApiError::invalid(m),
            OwnershipError::NotFound => ApiError::not_found("ownership not found"),
            OwnershipError::Unwritable { ref destination, ref detail } => {
                tracing::warn!("ownership challenge for {destination}: {detail}");
                ApiError::invalid(e.to_string())
            }
            OwnershipError::Store(e) => e.into(),
        }
    }
}

/// A JSON object body with exactly these string fields (all required).
fn fields(body: &[u8], names: &[&str]) -> Result<Vec<String>, ApiError> {
    let v = crate::captures::request::parse_json(body).map_err(|e| ApiError::invalid(e.to_string()))?;
    let Value::Object(o) = v else { return Err(ApiError::invalid("body: must be a JSON object")) };
    if let Some(k) = o.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("{k}: unknown field")));
    }
    names
        .iter()
        .map(|n| match o.get(*n) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(ApiError::invalid(format!("{n}: must not be empty"))),
            Some(_) => Err(ApiError::invalid(format!("{n}: must be a string"))),
            None => Err(ApiError::invalid(format!("{n}: is required"))),
        })
        .collect()
}

pub async fn create(
    State(s): State<AppState>,
    Authorized(account): WriteAccess,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let f = fields(&body_bytes(body)?, &["destination_conf"])?;
    // Each registration writes into a bucket: an account gets a few a minute.
    s.ownership_throttle.take(&account, std::time::Instant::now()).map_err(|retry_after| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::RATE_LIMITED,
            format!("too many ownership registrations for this account; retry in {retry_after} s"),
        )
        .no_retry()
        .header(header::RETRY_AFTER, &retry_after.to_string())
    })?;
    // The bucket write stays on the async worker; only the record goes to the blocking pool.
    let o = ownership::write_challenge(&s.stores, &account, &f[0]).await?;
    let o = blocking(move || s.ownerships.put_ownership(&o).map(|()| o)).await?;
    Ok(ok(o.to_api()))
}

pub async fn list(State(s): State<AppState>, Authorized(account): ReadAccess) -> Result<Response, ApiError> {
    let all = blocking(move || s.ownerships.ownerships(&account)).await?;
    Ok(ok(Value::Array(all.iter().map(|o| o.to_api()).collect())))
}

pub async fn validate(
    State(s): State<AppState>,
    Authorized(account): WriteAccess,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let f = fields(&body_bytes(body)?, &["destination_conf", "ownership_challenge"])?;
    let o = blocking(move || ownership::validate(s.ownerships.as_ref(), &account, &f[0], &f[1])).await?;
    Ok(ok(o.to_api()))
}

pub async fn delete(
    State(s): State<AppState>,
    Authorized(account): WriteAccess,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !is_id(&id) || !blocking(move || s.ownerships.delete_ownership(&account, &id)).await? {
        return Err(OwnershipError::NotFound.into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
