//! `GET /client/v4/accounts/{account_id}/pcaps/{pcap_id}/summary` (a pcapd extension): what a
//! finished capture holds, computed on the appliance from the capture's pcap byte stream
//! (`pcap::summary`): its first packets decoded, packets over time, protocols and top talkers.
//!
//! The stream comes from one function, [`pcap_stream`]: a simple capture's file as `download`
//! finds it (read here, or streamed through from the fleet node that holds it). Full captures
//! live in their bucket; until the merged download of their objects exists, their summary is a
//! 501 envelope saying so.
use std::io::{self, Read};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::auth::{Authorized, ReadAccess};
use super::envelope::{code, ok, ApiError};
use super::{blocking, AppState};
use crate::captures::manager::Download;
use crate::captures::model::{Capture, CaptureType, Status};
use crate::pcap::reader::ReadError;
use crate::pcap::summary::{summarize, Limits};

/// A capture's pcap bytes: whole in memory (a simple capture's file: at most 10,000 records
/// of 160 bytes) or a body arriving from elsewhere, read as it arrives.
pub(super) enum PcapStream {
    Local(Vec<u8>),
    Remote(Body),
}

/// The capture's pcap byte stream, the same bytes `GET .../download` serves.
pub(super) async fn pcap_stream(s: &AppState, account: &str, c: &Capture) -> Result<PcapStream, ApiError> {
    if c.kind == CaptureType::Full {
        // Its objects, merged by timestamp straight from the bucket (as the download).
        return Ok(PcapStream::Remote(super::pcaps::merged_body(s, c).await?));
    }
    let (acct, id, manager) = (account.to_string(), c.id.clone(), s.manager.clone());
    match blocking(move || manager.download(&acct, &id)).await? {
        Download::File(bytes) => Ok(PcapStream::Local(bytes)),
        Download::OnNode(node) => Ok(PcapStream::Remote(super::pcaps::from_node(s, &node, account, &c.id).await?)),
    }
}

/// A blocking `Read` over a body arriving on the runtime (for the summarizer, which runs on a
/// blocking thread). Created on the runtime: the bridge keeps its handle.
fn reader_of(body: Body) -> impl Read + Send + 'static {
    use futures_util::TryStreamExt;
    let stream = body.into_data_stream().map_err(io::Error::other);
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream))
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            // The bytes were coming from another node and stopped.
            ReadError::Io(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                format!("reading the capture's file failed: {e}; retry later"),
            )
            .retry(),
            e => ApiError::internal(format!("the capture's file cannot be read: {e}")),
        }
    }
}

pub async fn summary(
    State(s): State<AppState>,
    Authorized(account): ReadAccess,
    Path((_, pcap_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = super::pcaps::capture_of(&s, &account, &pcap_id).await?;
    if !c.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            code::CONFLICT,
            format!("capture is {}; its summary is available once it has finished", c.status.as_str()),
        )
        .no_retry());
    }
    if c.status == Status::Failed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            code::CONFLICT,
            format!(
                "capture failed ({}); it has no file to summarize",
                c.error_message.as_deref().unwrap_or("no reason given")
            ),
        )
        .no_retry());
    }
    let limits = Limits::default();
    let summary = match pcap_stream(&s, &account, &c).await? {
        PcapStream::Local(bytes) => blocking(move || summarize(&bytes[..], limits)).await?,
        PcapStream::Remote(body) => {
            let reader = reader_of(body);
            blocking(move || summarize(reader, limits)).await?
        }
    };
    let mut v = serde_json::to_value(summary).map_err(|e| ApiError::internal(e.to_string()))?;
    v["pcap_id"] = json!(pcap_id);
    Ok(ok(v))
}
