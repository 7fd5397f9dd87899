//! The capture record: what the API returns (Cloudflare's PCAP object) and what the store keeps.
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::filter::FilterV1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureType {
    Simple,
    Full,
}

/// Cloudflare's status enum. pcapd uses: simple `pending → conversion_running → success |
/// failed`; full `pending → running → conversion_pending → success | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unknown,
    Success,
    Pending,
    Running,
    ConversionPending,
    ConversionRunning,
    Complete,
    Failed,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Success => "success",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::ConversionPending => "conversion_pending",
            Status::ConversionRunning => "conversion_running",
            Status::Complete => "complete",
            Status::Failed => "failed",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Status::Success | Status::Complete | Status::Failed)
    }
}

/// One capture as stored (serialised whole into the store's `body` column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub id: String,
    pub account: String,
    #[serde(rename = "type")]
    pub kind: CaptureType,
    pub system: String,
    pub status: Status,
    pub submitted: DateTime<Utc>,
    pub time_limit: u64,
    pub filter: FilterJson,
    /// A tcpdump expression ANDed with `filter` (pcapd extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_expression: Option<String>,
    #[serde(default)]
    pub offset_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub packet_limit: Option<u64>,
    #[serde(default)]
    pub byte_limit: Option<u64>,
    #[serde(default)]
    pub colo_name: Option<String>,
    #[serde(default)]
    pub destination_conf: Option<String>,
    #[serde(default)]
    pub packets_captured: Option<u64>,
    #[serde(default)]
    pub stop_requested: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// Sampling rate the simple capture's samples were taken at (1 in N).
    #[serde(default)]
    pub sample_one_in: Option<u32>,
    /// Fleet mode: the node that holds the result (a simple capture's file) or coordinates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Fleet mode, full captures: each node's part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// One node's part of a full capture run by a fleet (shown as `nodes`, a pcapd extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub node: String,
    pub status: PartStatus,
    #[serde(default)]
    pub packets_captured: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Where a node's part of a full capture stands. `Lost`: its node left the fleet (died) while
/// the part ran, and it was given up after a grace period (it may still upload later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartStatus {
    Pending,
    Running,
    Uploading,
    Success,
    Failed,
    Lost,
}

impl PartStatus {
    pub const ALL: [PartStatus; 6] = [
        PartStatus::Pending,
        PartStatus::Running,
        PartStatus::Uploading,
        PartStatus::Success,
        PartStatus::Failed,
        PartStatus::Lost,
    ];

    /// The part of a node's local record of the capture.
    pub fn of(s: Status) -> PartStatus {
        match s {
            Status::Pending | Status::Unknown => PartStatus::Pending,
            Status::Running => PartStatus::Running,
            Status::ConversionPending | Status::ConversionRunning => PartStatus::Uploading,
            Status::Success | Status::Complete => PartStatus::Success,
            Status::Failed => PartStatus::Failed,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, PartStatus::Success | PartStatus::Failed | PartStatus::Lost)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PartStatus::Pending => "pending",
            PartStatus::Running => "running",
            PartStatus::Uploading => "uploading",
            PartStatus::Success => "success",
            PartStatus::Failed => "failed",
            PartStatus::Lost => "lost",
        }
    }
}

/// filter_v1 as the JSON object the user gave (after validation), stored and echoed verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FilterJson(pub Map<String, Value>);

impl FilterJson {
    pub fn from_filter(f: &FilterV1) -> Self {
        match serde_json::to_value(f) {
            Ok(Value::Object(m)) => FilterJson(m),
            _ => FilterJson::default(),
        }
    }

    /// The validated filter (the stored JSON was validated on the way in).
    pub fn filter(&self) -> FilterV1 {
        FilterV1::from_json(&Value::Object(self.0.clone())).unwrap_or_default()
    }
}

/// RFC 3339, UTC, microseconds, `Z`: `2021-12-20T17:29:20.641845Z`.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Capture {
    /// A new `pending` capture with a fresh id; the type's own fields start empty.
    pub fn new(
        account: &str,
        kind: CaptureType,
        submitted: DateTime<Utc>,
        time_limit: u64,
        filter: &FilterV1,
    ) -> Capture {
        Capture {
            id: new_id(),
            account: account.to_string(),
            kind,
            system: super::request::SYSTEM.to_string(),
            status: Status::Pending,
            submitted,
            time_limit,
            filter: FilterJson::from_filter(filter),
            filter_expression: None,
            offset_time: None,
            packet_limit: None,
            byte_limit: None,
            colo_name: None,
            destination_conf: None,
            packets_captured: None,
            stop_requested: None,
            error_message: None,
            sample_one_in: None,
            node: None,
            parts: Vec::new(),
        }
    }

    /// The API's PCAP object; absent optional fields are omitted, never null.
    pub fn to_api(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::from(self.id.clone()));
        m.insert("type".into(), json!(self.kind));
        m.insert("system".into(), Value::from(self.system.clone()));
        m.insert("status".into(), Value::from(self.status.as_str()));
        m.insert("submitted".into(), Value::from(rfc3339(&self.submitted)));
        m.insert("time_limit".into(), Value::from(self.time_limit));
        m.insert("filter_v1".into(), Value::Object(self.filter.0.clone()));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("filter_expression", self.filter_expression.clone().map(Value::from));
        put("offset_time", self.offset_time.as_ref().map(|t| Value::from(rfc3339(t))));
        put("packet_limit", self.packet_limit.map(Value::from));
        put("byte_limit", self.byte_limit.map(Value::from));
        put("colo_name", self.colo_name.clone().map(Value::from));
        put("destination_conf", self.destination_conf.clone().map(Value::from));
        put("packets_captured", self.packets_captured.map(Value::from));
        put("stop_requested", self.stop_requested.as_ref().map(|t| Value::from(rfc3339(t))));
        put("error_message", self.error_message.clone().map(Value::from));
        // pcapd extensions (fleet mode): which nodes ran a full capture, and how each did.
        if !self.parts.is_empty() {
            m.insert("nodes".into(), serde_json::to_value(&self.parts).unwrap_or(Value::Null));
        }
        Value::Object(m)
    }
}

/// A new random id: 32 lowercase hex characters.
impl Capture {
    /// Stands in for a stored record that cannot be read back (bad JSON, an unknown status):
    /// `failed`, saying so, with what can still be told from the row.
    pub fn unreadable(id: &str, account: &str, submitted: DateTime<Utc>, body: &str) -> Capture {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let kind = if v["type"] == "simple" { CaptureType::Simple } else { CaptureType::Full };
        let time_limit = v["time_limit"].as_u64().unwrap_or(0);
        Capture {
            id: id.to_string(),
            status: Status::Failed,
            error_message: Some(
                "this capture's stored record is corrupt and cannot be read; its data is not available".into(),
            ),
            ..Capture::new(account, kind, submitted, time_limit, &FilterV1::default())
        }
    }
}

pub fn new_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_object_omits_absent_fields() {
        let submitted = DateTime::parse_from_rfc3339("2021-12-20T17:29:20.641845Z").unwrap().with_timezone(&Utc);
        let c = Capture {
            status: Status::ConversionRunning,
            packet_limit: Some(100),
            sample_one_in: Some(100),
            ..Capture::new(&"a".repeat(32), CaptureType::Simple, submitted, 120, &FilterV1::default())
        };
        let v = c.to_api();
        assert_eq!(v["submitted"], "2021-12-20T17:29:20.641845Z");
        assert_eq!(v["status"], "conversion_running");
        assert_eq!(v["type"], "simple");
        assert_eq!(v["filter_v1"], json!({}));
        assert!(v.get("byte_limit").is_none() && v.get("error_message").is_none());
        assert!(is_id(&c.id));
        assert!(!is_id("ABCDEF0123456789abcdef0123456789"));
    }
}
