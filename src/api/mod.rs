//! The admin API: Cloudflare's `/client/v4/accounts/{account_id}/pcaps` routes, `/metrics`,
//! `/healthz`, `/readyz`. axum on hyper; every response is Cloudflare's envelope, including
//! 404 (unknown route), 405 (wrong method), 413 (body too large), and 414 / 431 (URI or headers
//! too long: see `head_limit`). `/metrics` may require its own bearer token.
//! `GET /client/v4/openapi.json` is the OpenAPI 3.1 document of all of it (`openapi.json`,
//! checked in and compiled in), open like `/healthz`: it describes the API, not any account.
//!
//! The runtime has two async workers, and `/healthz` must answer while captures are being
//! created or listed. So no handler blocks one: SQLite (one mutex, `synchronous=FULL`), file
//! reads and the manager's waits run through [`blocking`] on tokio's blocking pool; only
//! object-store calls, which are async, run on the workers themselves.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

pub mod auth;
pub mod envelope;
pub mod head_limit;
mod internal;
pub mod metrics;
mod ownership;
mod pcaps;
mod status;
mod summary;
pub mod throttle;
mod web;

use crate::captures::manager::Manager;
use auth::Auth;
use envelope::{code, ApiError};
use metrics::{ApiMetrics, DataPlaneView};

/// Everything handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<Manager>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<ApiMetrics>,
    pub dataplane: Option<DataPlaneView>,
    pub ready: Arc<AtomicBool>,
    pub full_time_limit_max: u64,
    pub stores: Arc<crate::upload::buckets::Buckets>,
    pub ownerships: Arc<dyn crate::upload::ownership::OwnershipRecords>,
    pub uploads: Arc<crate::upload::uploader::UploadStats>,
    /// The data dir and the free space new captures need (for /readyz).
    pub data_dir: Option<(std::path::PathBuf, u64)>,
    /// Who may read `/metrics` and what it shows.
    pub metrics_access: MetricsAccess,
    /// `POST /pcaps/ownership` per account.
    pub ownership_throttle: Arc<throttle::Throttle>,
    /// Fleet membership (`[fleet]`); `None` for a single appliance. With it the signed
    /// `/internal/...` routes exist.
    pub fleet: Option<crate::fleet::Fleet>,
}

/// `[api] metrics_token` and `metrics_per_capture`.
#[derive(Clone, Default)]
pub struct MetricsAccess {
    /// `/metrics` requires `Authorization: Bearer <token>` when set.
    pub token: Option<Arc<str>>,
    /// Series per running capture (capture ids and their counters).
    pub per_capture: bool,
}

impl MetricsAccess {
    fn check(&self, headers: &header::HeaderMap) -> Result<(), ApiError> {
        let Some(want) = &self.token else { return Ok(()) };
        let Some(given) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::auth(
                StatusCode::UNAUTHORIZED,
                "/metrics needs Authorization: Bearer <metrics token>",
            ));
        };
        let token = given
            .to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().as_bytes())
            .unwrap_or_default();
        if token.len() == want.len() && bool::from(subtle::ConstantTimeEq::ct_eq(token, want.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::auth(StatusCode::FORBIDDEN, "invalid metrics token"))
        }
    }
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let pcaps = "/client/v4/accounts/{account_id}/pcaps";
    let internal = if state.fleet.is_some() { internal::routes() } else { Router::new() };
    Router::new()
        .route(pcaps, get(pcaps::list).post(pcaps::create))
        .route(&format!("{pcaps}/ownership"), get(ownership::list).post(ownership::create))
        .route(&format!("{pcaps}/ownership/validate"), post(ownership::validate))
        .route(&format!("{pcaps}/ownership/{{ownership_id}}"), delete(ownership::delete))
        .route(&format!("{pcaps}/{{pcap_id}}"), get(pcaps::get_one))
        .route(&format!("{pcaps}/{{pcap_id}}/download"), get(pcaps::download))
        .route(&format!("{pcaps}/{{pcap_id}}/files"), get(pcaps::files))
        .route(&format!("{pcaps}/{{pcap_id}}/stop"), put(pcaps::stop))
        .route(&format!("{pcaps}/{{pcap_id}}/summary"), get(summary::summary))
        .route("/client/v4/pcapd/status", get(status::status))
        .route("/client/v4/pcapd/colos", get(status::colos))
        .route("/client/v4/accounts", get(web::accounts))
        .route("/client/v4/openapi.json", get(openapi))
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/app.css", get(web::app_css))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(internal)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), internal::require_node_signature))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(middleware::from_fn(head_limit::limit_head))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown`, every connection behind the request-head
/// guard (so 414 and 431 carry the envelope too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(head_limit::GuardedListener(listener), router).with_graceful_shutdown(shutdown).await
}

/// Runs `f` (SQLite, file I/O, waits on the manager) on tokio's blocking pool, off the async
/// workers. A panic in `f` becomes a 500 envelope, like any other internal error.
pub(crate) async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(ApiError::internal(format!("the request's worker failed: {e}"))),
    }
}

/// The document, maintained by hand beside the routes (tests/opskit.rs validates it, checks
/// that every documented operation is routed, and runs schemathesis against it).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code::NO_ROUTE, "No route for the URI")
}

async fn wrong_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, code::METHOD, "Method not allowed for this route")
}

/// 200 `ready`, or 503 with one line per reason (starting or stopping, a full data disk).
async fn readyz(State(s): State<AppState>) -> Response {
    let mut why = Vec::new();
    if !s.ready.load(Relaxed) {
        why.push("not ready: starting or shutting down".to_string());
    }
    if let Some((dir, keep)) = &s.data_dir {
        if let Ok(free) = crate::datadir::free_bytes(dir) {
            if free < *keep {
                why.push(format!(
                    "not ready: data dir {}: {free} bytes free, below the {keep} kept free; new captures are refused",
                    dir.display()
                ));
            }
        }
    }
    if let Some(t) = s.dataplane.as_ref().and_then(|d| d.samples.disk_full_since_ns()) {
        let since = chrono::DateTime::from_timestamp_nanos(t as i64).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        why.push(format!("not ready: the sample store drops samples since {since}: the data disk is full"));
    }
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n").into_response()
    }
}

async fn metrics_text(State(s): State<AppState>, headers: header::HeaderMap) -> Result<Response, ApiError> {
    s.metrics_access.check(&headers)?;
    // The full captures' counters sit behind the lock a capture's start holds while it waits
    // for its writer (up to 5 s).
    let body = blocking(move || {
        let mut body = metrics::render(s.dataplane.as_ref(), &s.metrics, s.manager.running());
        let full = s.manager.full_runtime().map(|f| f.counters()).unwrap_or_default();
        metrics::render_uploads(&mut body, &s.uploads, full, s.metrics_access.per_capture);
        if let Some(f) = &s.fleet {
            metrics::render_fleet(&mut body, f.stats());
        }
        Ok::<_, ApiError>(body)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

async fn record_metrics(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    s.metrics.record(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

/// Marks the API ready/not ready (readyz).
pub fn set_ready(flag: &AtomicBool, ready: bool) {
    flag.store(ready, Relaxed);
}
