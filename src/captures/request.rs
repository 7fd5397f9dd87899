//! Validation of `POST /pcaps` bodies: strict, every error names its field.
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::filter::{type_name, FilterV1};

pub const SYSTEM: &str = "magic-transit";
pub const TIME_LIMIT_MAX: u64 = 300;
pub const PACKET_LIMIT_MAX: u64 = 10_000;
pub const BYTE_LIMIT_MAX: u64 = 1_000_000_000;
/// How far back a simple capture may look.
pub const LOOK_BACK: Duration = Duration::hours(24);
/// Clock skew tolerated for an `offset_time` "in the future".
const FUTURE_SKEW: Duration = Duration::seconds(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> RequestError {
    RequestError { field: field.to_string(), message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimpleRequest {
    pub time_limit: u64,
    pub packet_limit: u64,
    /// The end of the look-back window (default: the request time).
    pub offset_time: Option<DateTime<Utc>>,
    pub filter: FilterV1,
    /// A tcpdump expression (pcapd extension), ANDed with `filter`; validated by libpcap.
    pub expression: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FullRequest {
    pub time_limit: u64,
    pub packet_limit: Option<u64>,
    pub byte_limit: Option<u64>,
    pub colo_name: String,
    pub destination_conf: String,
    pub filter: FilterV1,
    pub expression: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreateRequest {
    Simple(SimpleRequest),
    Full(FullRequest),
}

/// A whole JSON number in `min..=max` (`60` and `60.0` pass; `60.5`, `"60"` do not).
fn integer(o: &Map<String, Value>, field: &str, min: u64, max: u64) -> Result<Option<u64>, RequestError> {
    let Some(v) = o.get(field) else { return Ok(None) };
    let range = || err(field, format!("must be between {min} and {max}"));
    let n = match v {
        Value::Number(n) => n,
        Value::Null => return Err(err(field, format!("must be a number between {min} and {max}, got null"))),
        other => return Err(err(field, format!("must be a number between {min} and {max}, got {}", type_name(other)))),
    };
    let value = if let Some(u) = n.as_u64() {
        u
    } else if n.as_i64().is_some() {
        return Err(range());
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(err(field, format!("must be a whole number, got {n}")));
        }
        if f < 0.0 || f > u64::MAX as f64 {
            return Err(range());
        }
        f as u64
    };
    if value < min || value > max {
        return Err(range());
    }
    Ok(Some(value))
}

fn string<'a>(o: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, RequestError> {
    match o.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(err(field, format!("must be a string, got {}", type_name(other)))),
    }
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, RequestError> {
    v.ok_or_else(|| err(field, "is required"))
}

const COMMON: &[&str] = &["system", "type", "time_limit", "filter_v1", "filter_expression"];
const SIMPLE_ONLY: &[&str] = &["packet_limit", "offset_time"];
const FULL_ONLY: &[&str] = &["packet_limit", "byte_limit", "colo_name", "destination_conf"];

/// Parses a JSON body. A number JSON allows but no f64 holds (`1e400`, 5,000 digits) is an
/// error of its field (`time_limit`, `filter_v1.source_port`), not "malformed JSON".
pub fn parse_json(body: &[u8]) -> Result<Value, RequestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: Value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.to_string().starts_with("number out of range") && path != "." {
            err(&path, "is out of range (the number is too large)")
        } else {
            err("body", format!("malformed JSON: {inner}"))
        }
    })?;
    de.end().map_err(|e| err("body", format!("malformed JSON: {e}")))?;
    Ok(v)
}

/// Parses and validates a create request. `full_time_limit_max` is the configured maximum.
pub fn parse_create(body: &[u8], now: DateTime<Utc>, full_time_limit_max: u64) -> Result<CreateRequest, RequestError> {
    let v = parse_json(body)?;
    let Value::Object(o) = v else {
        return Err(err("body", format!("must be a JSON object, got {}", type_name(&v))));
    };
    let system = required(string(&o, "system")?, "system")?;
    if system != SYSTEM {
        return Err(err("system", format!("{system:?} is not supported (only \"magic-transit\")")));
    }
    let kind = required(string(&o, "type")?, "type")?;
    let allowed: &[&str] = match kind {
        "simple" => SIMPLE_ONLY,
        "full" => FULL_ONLY,
        other => return Err(err("type", format!("{other:?} is not a capture type (\"simple\" or \"full\")"))),
    };
    if let Some(k) = o.keys().find(|k| !COMMON.contains(&k.as_str()) && !allowed.contains(&k.as_str())) {
        let other_kind = SIMPLE_ONLY.contains(&k.as_str()) || FULL_ONLY.contains(&k.as_str());
        return Err(if other_kind {
            err(k, format!("is not allowed in a {kind} capture"))
        } else {
            err(k, "unknown field")
        });
    }
    let filter = match o.get("filter_v1") {
        None => FilterV1::default(),
        Some(f) => FilterV1::from_json(f).map_err(|e| err(&e.field, e.reason))?,
    };
    // A tcpdump expression (pcapd's extension): libpcap's own message when it does not compile;
    // a blank one is no expression.
    let expression = match string(&o, "filter_expression")? {
        Some(text) if !text.trim().is_empty() => {
            crate::bpf::Expression::compile(text).map_err(|e| err("filter_expression", e.to_string()))?;
            Some(text.to_string())
        }
        _ => None,
    };
    if kind == "simple" {
        let time_limit = required(integer(&o, "time_limit", 1, TIME_LIMIT_MAX)?, "time_limit")?;
        let packet_limit = required(integer(&o, "packet_limit", 1, PACKET_LIMIT_MAX)?, "packet_limit")?;
        let offset_time = match string(&o, "offset_time")? {
            None => None,
            Some(s) => {
                let t = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| {
                        err("offset_time", format!("{s:?} is not an RFC 3339 time (e.g. 2024-01-18T10:00:00Z)"))
                    })?
                    .with_timezone(&Utc);
                if t > now + FUTURE_SKEW {
                    return Err(err("offset_time", "is in the future"));
                }
                if t < now - LOOK_BACK {
                    return Err(err("offset_time", "is more than 24 hours ago (samples are kept for 24 hours)"));
                }
                Some(t)
            }
        };
        Ok(CreateRequest::Simple(SimpleRequest { time_limit, packet_limit, offset_time, filter, expression }))
    } else {
        let time_limit = required(integer(&o, "time_limit", 1, full_time_limit_max)?, "time_limit")?;
        let colo_name = required(string(&o, "colo_name")?, "colo_name")?;
        if colo_name.is_empty() {
            return Err(err("colo_name", "must not be empty"));
        }
        let destination_conf = required(string(&o, "destination_conf")?, "destination_conf")?;
        Ok(CreateRequest::Full(FullRequest {
            time_limit,
            packet_limit: integer(&o, "packet_limit", 1, PACKET_LIMIT_MAX)?,
            byte_limit: integer(&o, "byte_limit", 1, BYTE_LIMIT_MAX)?,
            colo_name: colo_name.to_string(),
            destination_conf: destination_conf.to_string(),
            filter,
            expression,
        }))
    }
}

/// Whether a node serving `colo` takes a full capture asked for `colo_name`: the same colo, or
/// its region (`ORD` for `ord01` and `ord02`: the letters before the colo's number), ignoring
/// case.
pub fn serves(colo_name: &str, colo: &str) -> bool {
    let (want, have) = (colo_name.to_ascii_lowercase(), colo.to_ascii_lowercase());
    want == have
        || (!want.is_empty()
            && want.bytes().all(|b| b.is_ascii_alphabetic())
            && have.strip_prefix(want.as_str()).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colo_name_is_a_colo_or_its_region() {
        assert!(serves("ord01", "ord01") && serves("ORD01", "ord01") && serves("ord01", "ORD01"));
        assert!(serves("ORD", "ord01") && serves("ord", "ord02"));
        assert!(!serves("or", "ord01"), "a region is every letter before the number");
        assert!(!serves("ord0", "ord01"), "a region has no digits");
        assert!(!serves("ams", "ord01") && !serves("", "ord01") && !serves("ord01", "ord"));
        assert!(serves("lab", "lab1") && !serves("la", "lab1"));
    }
    use serde_json::json;

    fn parse(v: Value) -> Result<CreateRequest, RequestError> {
        parse_create(v.to_string().as_bytes(), Utc::now(), 300)
    }

    fn field(v: Value) -> String {
        parse(v).unwrap_err().field
    }

    /// Regression: `1e400` or a 5,000-digit number was "body: malformed JSON: number out of
    /// range", naming no field.
    #[test]
    fn out_of_range_numbers_name_the_field() {
        let digits = "9".repeat(5000);
        for field in ["time_limit", "packet_limit"] {
            for n in ["1e400", "-1e400", digits.as_str()] {
                let other = if field == "time_limit" { "packet_limit" } else { "time_limit" };
                let body = format!(r#"{{"system":"magic-transit","type":"simple","{other}":10,"{field}":{n}}}"#);
                let e = parse_create(body.as_bytes(), Utc::now(), 300).unwrap_err();
                assert_eq!(e.field, field, "{n}: {e}");
                assert!(e.message.contains("out of range"), "{e}");
            }
        }
        let body = br#"{"system":"magic-transit","type":"simple","time_limit":10,"packet_limit":10,"filter_v1":{"source_port":1e400}}"#;
        assert_eq!(parse_create(body, Utc::now(), 300).unwrap_err().field, "filter_v1.source_port");
        // Malformed JSON stays a body error.
        assert_eq!(parse_create(b"{\"system\":", Utc::now(), 300).unwrap_err().field, "body");
        assert_eq!(parse_create(b"{} x", Utc::now(), 300).unwrap_err().field, "body");
    }

    #[test]
    fn simple_ok_with_float_numbers_and_filter() {
        let r = parse(json!({"system":"magic-transit","type":"simple","time_limit":60.0,"packet_limit":100,
                             "filter_v1":{"protocol":6}}))
        .unwrap();
        let CreateRequest::Simple(s) = r else { panic!() };
        assert_eq!((s.time_limit, s.packet_limit, s.filter.protocol), (60, 100, Some(6)));
    }

    #[test]
    fn every_error_names_its_field() {
        let base = json!({"system":"magic-transit","type":"simple","time_limit":60,"packet_limit":100});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        assert_eq!(field(with("time_limit", json!(0))), "time_limit");
        assert_eq!(field(with("time_limit", json!(301))), "time_limit");
        assert_eq!(field(with("time_limit", json!(60.5))), "time_limit");
        assert_eq!(field(with("time_limit", json!("60"))), "time_limit");
        assert_eq!(field(with("packet_limit", json!(10001))), "packet_limit");
        assert_eq!(field(with("packet_limit", json!(-1))), "packet_limit");
        assert_eq!(field(with("system", json!("magic-wan"))), "system");
        assert_eq!(field(with("type", json!("partial"))), "type");
        assert_eq!(field(with("bogus", json!(1))), "bogus");
        assert_eq!(field(with("byte_limit", json!(1))), "byte_limit");
        assert_eq!(field(with("offset_time", json!("yesterday"))), "offset_time");
        let future = (Utc::now() + Duration::minutes(5)).to_rfc3339();
        assert_eq!(field(with("offset_time", json!(future))), "offset_time");
        let old = (Utc::now() - Duration::hours(25)).to_rfc3339();
        assert_eq!(field(with("offset_time", json!(old))), "offset_time");
        assert_eq!(field(with("filter_v1", json!({"source_address":"::ffff:1.2.3.4"}))), "filter_v1.source_address");
        assert_eq!(field(json!({"type":"simple"})), "system");
        assert_eq!(parse_create(b"{", Utc::now(), 300).unwrap_err().field, "body");
        assert_eq!(parse_create(b"[1]", Utc::now(), 300).unwrap_err().field, "body");
    }

    #[test]
    fn full_fields_and_configured_time_limit() {
        let body = json!({"system":"magic-transit","type":"full","time_limit":3600,"colo_name":"lab1",
                          "destination_conf":"s3://b/d?region=us-east-1","byte_limit":1000000000});
        assert_eq!(parse(body.clone()).unwrap_err().field, "time_limit");
        assert!(matches!(
            parse_create(body.to_string().as_bytes(), Utc::now(), 86400).unwrap(),
            CreateRequest::Full(_)
        ));
        let mut b = body;
        b["offset_time"] = json!(Utc::now().to_rfc3339());
        assert_eq!(parse_create(b.to_string().as_bytes(), Utc::now(), 86400).unwrap_err().field, "offset_time");
    }
}
