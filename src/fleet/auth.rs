//! Node-to-node authentication. The caller signs
//! `METHOD\nPATH\nUNIX_SECONDS\nNONCE\nSHA256_HEX(BODY)` (PATH with its query, as sent; NONCE
//! 32 random hex digits) with HMAC-SHA256 under the fleet secret and sends four headers:
//! `x-pcapd-node` (its name, for logs), `x-pcapd-time` (the UNIX seconds it signed),
//! `x-pcapd-nonce` and `x-pcapd-signature` (the MAC in lowercase hex). The receiver recomputes
//! the MAC over the body it received, compares in constant time, refuses a time more than
//! [`REPLAY_WINDOW_SECS`] from its own clock, and a nonce it has already accepted within that
//! window ([`Nonces`]): a captured request can neither carry another body nor be sent again.
//! Nodes therefore need synchronised clocks (NTP).
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
pub const NONCE_HEADER: &str = "x-pcapd-nonce";
/// Largest difference between a request's signed time and the receiver's clock (seconds).
pub const REPLAY_WINDOW_SECS: i64 = 30;

/// The fleet secret. Cheap to clone; `Debug` does not print it.
#[derive(Clone)]
pub struct FleetSecret(Arc<[u8]>);

impl FleetSecret {
    pub fn new(secret: &[u8]) -> FleetSecret {
        FleetSecret(Arc::from(secret))
    }

    fn mac(&self, method: &str, path: &str, unix_secs: i64, nonce: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length (long ones are hashed first): this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(signed_text(method, path, unix_secs, nonce, body).as_bytes());
        mac
    }
}

impl std::fmt::Debug for FleetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetSecret(..)")
    }
}

/// What is signed.
fn signed_text(method: &str, path: &str, unix_secs: i64, nonce: &str, body: &[u8]) -> String {
    use sha2::Digest;
    let digest = hex(&sha2::Sha256::digest(body));
    format!("{}\n{path}\n{unix_secs}\n{nonce}\n{digest}", method.to_ascii_uppercase())
}

/// The signature of a request: lowercase hex HMAC-SHA256.
pub fn sign(secret: &FleetSecret, method: &str, path: &str, unix_secs: i64, nonce: &str, body: &[u8]) -> String {
    hex(&secret.mac(method, path, unix_secs, nonce, body).finalize().into_bytes())
}

/// A fresh nonce: 32 random lowercase hex digits.
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The nonces accepted within the replay window: each request is accepted once.
#[derive(Default)]
pub struct Nonces(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl Nonces {
    /// Records `nonce` (signed at `signed`); refused when it was accepted before.
    pub fn first_use(&self, nonce: &str, signed: i64, now_secs: i64) -> Result<(), AuthError> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Older ones are refused by the window anyway.
        seen.retain(|_, t| now_secs.saturating_sub(*t).saturating_abs() <= REPLAY_WINDOW_SECS);
        if seen.insert(nonce.to_string(), signed).is_some() {
            return Err(AuthError::Replayed);
        }
        Ok(())
    }
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
    #[error("node-to-node call already received once (its nonce was used)")]
    Replayed,
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

/// A request whose signature verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    pub node: String,
    pub nonce: String,
    pub time: i64,
}

/// Checks a request's signature headers against `method`, `path` (with its query) and `body`
/// at `now_secs` (the nonce's first use is for the caller to check, [`Nonces`]).
pub fn verify(
    secret: &FleetSecret,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<Signed, AuthError> {
    let get = |name: &'static str| -> Result<&str, AuthError> {
        let v = headers.get(name).ok_or(AuthError::Missing(name))?;
        v.to_str().map_err(|_| AuthError::Malformed(name))
    };
    let node = get(NODE_HEADER)?;
    let time = get(TIME_HEADER)?;
    let signature = get(SIGNATURE_HEADER)?;
    let nonce = get(NONCE_HEADER)?.trim();
    let signed: i64 = time.trim().parse().map_err(|_| AuthError::Malformed(TIME_HEADER))?;
    let given = unhex(signature.trim()).ok_or(AuthError::Malformed(SIGNATURE_HEADER))?;
    if !(16..=64).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(NONCE_HEADER));
    }
    // The signature first: an unsigned request learns nothing about the receiver's clock.
    secret.mac(method, path, signed, nonce, body).verify_slice(&given).map_err(|_| AuthError::BadSignature)?;
    let skew_secs = now_secs.saturating_sub(signed);
    if skew_secs.saturating_abs() > REPLAY_WINDOW_SECS {
        return Err(AuthError::OutsideWindow { signed, skew_secs });
    }
    Ok(Signed { node: node.to_string(), nonce: nonce.to_string(), time: signed })
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

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    fn headers(node: &str, time: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NODE_HEADER, HeaderValue::from_str(node).unwrap());
        h.insert(TIME_HEADER, HeaderValue::from_str(time).unwrap());
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h.insert(NONCE_HEADER, HeaderValue::from_str(NONCE).unwrap());
        h
    }

    /// Written out by hand: the text signed for a GET without a body (SHA-256 of nothing).
    #[test]
    fn the_signed_text_covers_the_body() {
        assert_eq!(
            signed_text("get", "/p?q=1", 5, "ab", b""),
            "GET\n/p?q=1\n5\nab\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Regression: the signature covered method, path and time only, so a request seen on the
    /// wire could be sent again within 30 s with another body (a part start for another
    /// account's capture), or sent again as it was.
    #[test]
    fn a_signed_request_cannot_carry_another_body_or_be_sent_twice() {
        let s = FleetSecret::new(b"0123456789abcdef");
        let now = 1_700_000_000;
        let body = br#"{"limit":10}"#;
        let sig = sign(&s, "POST", "/internal/v1/samples", now, NONCE, body);
        let h = headers("n1", &now.to_string(), &sig);
        let ok = verify(&s, "POST", "/internal/v1/samples", &h, body, now).unwrap();
        assert_eq!(ok, Signed { node: "n1".into(), nonce: NONCE.into(), time: now });
        let other = br#"{"limit":99}"#;
        assert_eq!(verify(&s, "POST", "/internal/v1/samples", &h, other, now), Err(AuthError::BadSignature));
        let nonces = Nonces::default();
        assert_eq!(nonces.first_use(NONCE, now, now), Ok(()));
        assert_eq!(nonces.first_use(NONCE, now, now + 5), Err(AuthError::Replayed));
        assert_eq!(nonces.first_use("ff".repeat(16).as_str(), now, now + 5), Ok(()));
        // Forgotten once outside the window (the window refuses it by then).
        assert_eq!(nonces.first_use("ee".repeat(16).as_str(), now + 100, now + 100), Ok(()));
        assert_eq!(nonces.0.lock().unwrap().len(), 1);
        let mut bad = h.clone();
        bad.insert(NONCE_HEADER, HeaderValue::from_static("xyz"));
        assert_eq!(
            verify(&s, "POST", "/internal/v1/samples", &bad, body, now),
            Err(AuthError::Malformed(NONCE_HEADER))
        );
    }

    #[test]
    fn a_signed_request_verifies_and_anything_else_is_refused() {
        let s = FleetSecret::new(b"0123456789abcdef");
        let now = 1_700_000_000;
        let sig = sign(&s, "GET", "/internal/v1/node", now, NONCE, b"");
        assert_eq!(sig.len(), 64);
        let h = headers("n1", &now.to_string(), &sig);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h, b"", now + 30).unwrap().node, "n1");
        assert_eq!(verify(&s, "get", "/internal/v1/node", &h, b"", now - 30).unwrap().node, "n1");
        // Another method, path, query, secret or time: the signature no longer matches.
        assert_eq!(verify(&s, "POST", "/internal/v1/node", &h, b"", now), Err(AuthError::BadSignature));
        assert_eq!(verify(&s, "GET", "/internal/v1/nodes", &h, b"", now), Err(AuthError::BadSignature));
        assert_eq!(verify(&s, "GET", "/internal/v1/node?x=1", &h, b"", now), Err(AuthError::BadSignature));
        let other = FleetSecret::new(b"0123456789abcdeX");
        assert_eq!(verify(&other, "GET", "/internal/v1/node", &h, b"", now), Err(AuthError::BadSignature));
        let h2 = headers("n1", &(now + 1).to_string(), &sig);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h2, b"", now), Err(AuthError::BadSignature));
        // Replay window.
        let e = verify(&s, "GET", "/internal/v1/node", &h, b"", now + 31).unwrap_err();
        assert_eq!(e, AuthError::OutsideWindow { signed: now, skew_secs: 31 });
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(verify(&s, "GET", "/internal/v1/node", &h, b"", now - 31).is_err());
        // Missing and malformed headers.
        let mut h3 = h.clone();
        h3.remove(SIGNATURE_HEADER);
        let e = verify(&s, "GET", "/internal/v1/node", &h3, b"", now).unwrap_err();
        assert_eq!((e.clone(), e.status()), (AuthError::Missing(SIGNATURE_HEADER), StatusCode::UNAUTHORIZED));
        let h4 = headers("n1", "soon", &sig);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h4, b"", now), Err(AuthError::Malformed(TIME_HEADER)));
        let h5 = headers("n1", &now.to_string(), "zz");
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h5, b"", now), Err(AuthError::Malformed(SIGNATURE_HEADER)));
        let h6 = headers("n1", &now.to_string(), &sig[..62]);
        assert_eq!(verify(&s, "GET", "/internal/v1/node", &h6, b"", now), Err(AuthError::BadSignature));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 0xab, 0xff])), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("é1"), None);
        assert_eq!(format!("{:?}", FleetSecret::new(b"hush")), "FleetSecret(..)");
    }
}
