//! Cloudflare's response envelope and error codes.
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Error codes (all >= 1000, as Cloudflare's SDKs expect).
pub mod code {
    pub const INVALID: u32 = 1000;
    pub const INTERNAL: u32 = 1002;
    pub const NOT_FOUND: u32 = 1003;
    pub const CONFLICT: u32 = 1009;
    pub const TOO_LARGE: u32 = 1013;
    pub const RATE_LIMITED: u32 = 1015;
    pub const UNAVAILABLE: u32 = 1016;
    pub const METHOD: u32 = 7001;
    pub const NO_ROUTE: u32 = 7003;
    pub const AUTH: u32 = 10000;
}

/// An error response: status, one error item, and extra headers.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), headers: Vec::new() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    pub fn auth(status: StatusCode, detail: &str) -> Self {
        Self::new(status, code::AUTH, format!("Authentication error: {detail}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
    }

    /// The data disk is full: 507 with `Retry-After`, and no automatic retry by the SDKs.
    pub fn disk_full() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            code::UNAVAILABLE,
            "the appliance's data disk is full; retry once space has been freed",
        )
        .no_retry()
        .header(header::RETRY_AFTER, "60")
    }

    /// Tells Cloudflare's SDKs not to retry (they retry 408/409/429/5xx otherwise).
    pub fn no_retry(mut self) -> Self {
        self.headers.push((HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false")));
        self
    }

    /// Tells Cloudflare's SDKs that a retry may succeed.
    pub fn retry(mut self) -> Self {
        self.headers.push((HeaderName::from_static("x-should-retry"), HeaderValue::from_static("true")));
        self
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "result": null,
            "success": false,
            "errors": [{"code": self.code, "message": self.message}],
            "messages": [],
        });
        let mut r = (self.status, Json(body)).into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

impl From<crate::db::StoreError> for ApiError {
    /// A full disk is 507 (with `Retry-After`, no automatic retry), never a 500.
    fn from(e: crate::db::StoreError) -> Self {
        if e.is_disk_full() {
            tracing::error!("{e}");
            return ApiError::disk_full();
        }
        if let crate::db::StoreError::Unavailable(_) = e {
            // A fleet without etcd quorum: nothing was written, a retry soon is right.
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, e.to_string())
                .retry()
                .header(header::RETRY_AFTER, "2");
        }
        ApiError::internal(e.to_string())
    }
}

/// A success envelope around `result`.
pub fn ok(result: Value) -> Response {
    Json(json!({"result": result, "success": true, "errors": [], "messages": []})).into_response()
}

/// A success envelope around `result` with notes in `messages` (what is missing from it).
pub fn ok_noted(result: Value, notes: &[String]) -> Response {
    let messages: Vec<Value> = notes.iter().map(|m| json!({"code": code::UNAVAILABLE, "message": m})).collect();
    Json(json!({"result": result, "success": true, "errors": [], "messages": messages})).into_response()
}
