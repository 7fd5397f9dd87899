//! The Captures web page, served from assets compiled into the binary (no CDN, no build step),
//! and `GET /client/v4/accounts` (Cloudflare's accounts list), which the page uses to sign in.
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::envelope::{ok, ApiError};
use super::AppState;

const INDEX: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");

/// The page loads nothing but itself.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub async fn accounts(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let list = s.auth.accounts(&headers)?;
    Ok(ok(Value::Array(
        list.into_iter().map(|(id, name)| json!({"id": id, "name": name.unwrap_or_default()})).collect(),
    )))
}
