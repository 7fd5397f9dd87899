//! Node-to-node authentication. The caller signs `METHOD\nPATH\nUNIX_SECONDS` (PATH with its
//! query, as sent) with HMAC-SHA256 under the fleet secret and sends three headers:
//! `x-pcapd-node` (its name, for logs), `x-pcapd-time` (the UNIX seconds it signed) and
//! `x-pcapd-signature` (the MAC in lowercase hex). The receiver recomputes the MAC, compares in
//! constant time, and refuses a time more than [`REPLAY_WINDOW_SECS`] from its own clock, so a
//! captured request cannot be replayed later. Nodes therefore need synchronised clocks (NTP).
//!
//! Missing headers are 401; a malformed header, a wrong signature or a time outside the window
//! is 403 (as Cloudflare's API: no credentials vs. wrong credentials).
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const NODE_HEADER: &str = "x-pcapd-node";
pub const TIME_HEADER: &str = "x-pcapd-time";
pub const SIGNATURE_HEADER: &str = "x-pcapd-signature";
/// Largest difference between a request's signed time and the receiver's clock (seconds).
pub const REPLAY_WINDOW_SECS: i64 = 30;

/// The fleet secret. Cheap to clone; `Debug` does not print it.
#[derive(Clone)]
pub struct FleetSecret(Arc<[u8]>);

impl FleetSecret {
    pub fn new(secret: &[u8]) -> FleetSecret {
        FleetSecret(Arc::from(secret))
    }

    fn mac(&self, method: &str, path: &str, unix_secs: i64) -> HmacSha256 {
        // HMAC takes keys of any length (long ones are hashed first): this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(signed_text(method, path, unix_secs).as_bytes());
        mac
    }
}

impl std::fmt::Debug for FleetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetSecret(..)")
    }
}

/// What is signed.
fn signed_text(method: &str, path: &str, unix_secs: i64) -> String {
    format!("{}\n{path}\n{unix_secs}", method.to_ascii_uppercase())
}

/// The signature of a request: lowercase hex HMAC-SHA256.
pub fn sign(secret: &FleetSecret, method: &str, path: &str, unix_secs: i64) -> String {
    hex(&secret.mac(method, path, unix_secs).finalize().into_bytes())
}

/// Why a node-to-node request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("node-to-node call without the {0} header")]
    Missing(&'static str),
    #[error("node-to-node call with a malformed {0} header")]
    Malformed(&'static str),
    #[error(
        "node-to-node call signed at {signed}, {skew_secs} s from this node's clock (window {REPLAY_WINDOW_SECS} s)"
    )]
    OutsideWindow { signed: i64, skew_secs: i64 },
    #[error("node-to-node call with a wrong signature")]
    BadSignature,
}

impl AuthError {
    /// 401 without credentials, 403 with wrong ones.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// Checks a request's signature headers against `method` and `path` (with its query) at
/// `now_secs`; returns the caller's node name.
pub fn verify(
    secret: &FleetSecret,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    now_secs: i64,
) -> Result<String, AuthError> {
    let get = |name: &'static str| -> Result<&str, AuthError> {
        let v = headers.get(name).ok_or(AuthError::Missing(name))?;
        v.to_str().map_err(|_| AuthError::Malformed(name))
    };
    let node = get(NODE_HEADER)?;
    let time = get(TIME_HEADER)?;
    let signature = get(SIGNATURE_HEADER)?;
    let signed: i64 = time.trim().parse().map_err(|_| AuthError::Malformed(TIME_HEADER))?;
    let given = unhex(signature.trim()).ok_or(AuthError::Malformed(SIGNATURE_HEADER))?;
    // The signature first: an unsigned request learns nothing about the receiver's clock.
    secret.mac(method, path, signed).verify_slice(&given).map_err(|_| AuthError::BadSignature)?;
    let skew_secs = now_secs.saturating_sub(signed);
    if skew_secs.saturating_abs() > REPLAY_WINDOW_SECS {
        return Err(AuthError::OutsideWindow { signed, skew_secs });
    }
    Ok(node.to_string())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// RFC 4231 test case 2: the MAC itself against a published vector.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn headers(node: &str, time: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NODE_HEADER, HeaderValue::from_str(node).unwrap());
        h.insert(TIME_HEADER, HeaderValue::from_str(time).unwrap());
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn a_signed_request_verifies_and_anything_else_is_refused() {
        let s = FleetSecret::new(b"0123456789abcdef");
        let now = 1_700_000_000;
        let sig = sign(&s, "GET", "/internal/v1/node", now);
        assert_eq!(sig.len(), 64);
        let h = headers("n1", &now.to_string(), &sig);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h, now + 30).unwrap(), "n1");
        assert_eq!(verify(&s, "get", "/internal/v1/node", &h, now - 30).unwrap(), "n1");
        // Another method, path, query, secret or time: the signature no longer matches.
        assert_eq!(verify(&s, "POST", "/internal/v1/node", &h, now), Err(AuthError::BadSignature));
        assert_eq!(verify(&s, "GET", "/internal/v1/nodes", &h, now), Err(AuthError::BadSignature));
        assert_eq!(verify(&s, "GET", "/internal/v1/node?x=1", &h, now), Err(AuthError::BadSignature));
        let other = FleetSecret::new(b"0123456789abcdeX");
        assert_eq!(verify(&other, "GET", "/internal/v1/node", &h, now), Err(AuthError::BadSignature));
        let h2 = headers("n1", &(now + 1).to_string(), &sig);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h2, now), Err(AuthError::BadSignature));
        // Replay window.
        let e = verify(&s, "GET", "/internal/v1/node", &h, now + 31).unwrap_err();
        assert_eq!(e, AuthError::OutsideWindow { signed: now, skew_secs: 31 });
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(verify(&s, "GET", "/internal/v1/node", &h, now - 31).is_err());
        // Missing and malformed headers.
        let mut h3 = h.clone();
        h3.remove(SIGNATURE_HEADER);
        let e = verify(&s, "GET", "/internal/v1/node", &h3, now).unwrap_err();
        assert_eq!((e.clone(), e.status()), (AuthError::Missing(SIGNATURE_HEADER), StatusCode::UNAUTHORIZED));
        let h4 = headers("n1", "soon", &sig);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h4, now), Err(AuthError::Malformed(TIME_HEADER)));
        let h5 = headers("n1", &now.to_string(), "zz");
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h5, now), Err(AuthError::Malformed(SIGNATURE_HEADER)));
        let h6 = headers("n1", &now.to_string(), &sig[..62]);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h6, now), Err(AuthError::BadSignature));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 0xab, 0xff])), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("é1"), None);
        assert_eq!(format!("{:?}", FleetSecret::new(b"hush")), "FleetSecret(..)");
    }
}
