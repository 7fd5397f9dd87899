//! Credentials from the config: `Authorization: Bearer <token>` or `X-Auth-Email` + `X-Auth-Key`,
//! each bound to accounts with read or write permission. Secrets are compared in constant time,
//! and every configured credential is compared, so timing does not tell which one matched.
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::envelope::ApiError;
use super::AppState;
use crate::config::{AccountConfig, ConfigError, Permission, Secret};

struct Cred {
    secret: Secret,
    account: String,
    permission: Permission,
}

pub struct Auth {
    creds: Vec<Cred>,
    /// Account id → its name from the config.
    names: Vec<(String, Option<String>)>,
}

/// What a request presented.
enum Presented<'a> {
    Token(&'a [u8]),
    EmailKey(&'a [u8], &'a [u8]),
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

impl Auth {
    pub fn from_config(accounts: &[AccountConfig]) -> Result<Auth, ConfigError> {
        let mut creds = Vec::new();
        for (i, a) in accounts.iter().enumerate() {
            for (j, c) in a.credentials.iter().enumerate() {
                creds.push(Cred {
                    secret: c.secret(&format!("account[{i}].credential[{j}]"))?,
                    account: a.id.clone(),
                    permission: c.permission,
                });
            }
        }
        Ok(Auth { creds, names: accounts.iter().map(|a| (a.id.clone(), a.name.clone())).collect() })
    }

    /// Checks that the request may act on `account` with `need`.
    pub fn authorize(&self, headers: &HeaderMap, account: &str, need: Permission) -> Result<(), ApiError> {
        let grants = self.grants(headers)?;
        let best = grants.iter().filter(|(a, _)| a == account).map(|(_, p)| *p).max();
        match best {
            Some(p) if p >= need => Ok(()),
            Some(_) => Err(ApiError::auth(StatusCode::FORBIDDEN, "this credential is read-only")),
            None if !grants.is_empty() => {
                Err(ApiError::auth(StatusCode::FORBIDDEN, "this credential has no access to this account"))
            }
            None => Err(ApiError::auth(StatusCode::FORBIDDEN, "invalid credentials")),
        }
    }

    /// The accounts (id, name) the request's credential may read, in config order.
    pub fn accounts(&self, headers: &HeaderMap) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let grants = self.grants(headers)?;
        if grants.is_empty() {
            return Err(ApiError::auth(StatusCode::FORBIDDEN, "invalid credentials"));
        }
        Ok(self.names.iter().filter(|(id, _)| grants.iter().any(|(a, _)| a == id)).cloned().collect())
    }

    /// Every (account, permission) the presented credential matches; 401 when none is presented.
    fn grants(&self, headers: &HeaderMap) -> Result<Vec<(String, Permission)>, ApiError> {
        let h = |name: &str| headers.get(name).map(|v| v.as_bytes()).filter(|v| !v.is_empty());
        let bearer = h("authorization").and_then(|v| {
            let s = std::str::from_utf8(v).ok()?;
            let (scheme, token) = s.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().as_bytes())
        });
        // Cloudflare's SDKs send only the email/key pair when both kinds are configured.
        let presented = match (h("x-auth-email"), h("x-auth-key"), bearer) {
            (Some(e), Some(k), _) => Presented::EmailKey(e, k),
            (_, _, Some(t)) if !t.is_empty() => Presented::Token(t),
            (Some(_), None, None) => return Err(ApiError::auth(StatusCode::UNAUTHORIZED, "X-Auth-Key is missing")),
            (None, Some(_), None) => return Err(ApiError::auth(StatusCode::UNAUTHORIZED, "X-Auth-Email is missing")),
            _ => {
                return Err(ApiError::auth(
                    StatusCode::UNAUTHORIZED,
                    "no credentials: send Authorization: Bearer <token>, or X-Auth-Email and X-Auth-Key",
                ))
            }
        };
        let mut grants = Vec::new();
        for c in &self.creds {
            let m = match (&c.secret, &presented) {
                (Secret::Token(t), Presented::Token(p)) => ct_eq(t.as_bytes(), p),
                (Secret::EmailKey { email, key }, Presented::EmailKey(e, k)) => {
                    // Both halves are always compared (`&` not `&&`).
                    ct_eq(email.to_ascii_lowercase().as_bytes(), &e.to_ascii_lowercase()) & ct_eq(key.as_bytes(), k)
                }
                _ => false,
            };
            if m {
                grants.push((c.account.clone(), c.permission));
            }
        }
        Ok(grants)
    }

    /// True when no credential is configured (the API then refuses every request).
    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }
}

/// The account a request's path names (`{account_id}`), extracted only once the presented
/// credential may act on it: read (`WRITE = false`) or write. Handlers name it as `ReadAccess`
/// or `WriteAccess` and so cannot forget the check. Runs before the body is looked at, so 401/403
/// come before any 400 about the body.
pub struct Authorized<const WRITE: bool>(pub String);

pub type ReadAccess = Authorized<false>;
pub type WriteAccess = Authorized<true>;

impl<const WRITE: bool> FromRequestParts<AppState> for Authorized<WRITE> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::invalid(format!("path: {}", e.body_text())))?;
        let account = params
            .into_iter()
            .find_map(|(k, v)| (k == "account_id").then_some(v))
            .ok_or_else(|| ApiError::internal("route without {account_id}"))?;
        let need = if WRITE { Permission::Write } else { Permission::Read };
        s.auth.authorize(&parts.headers, &account, need)?;
        Ok(Authorized(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredentialConfig;

    fn cred(token: Option<&str>, email: Option<&str>, key: Option<&str>, permission: Permission) -> CredentialConfig {
        CredentialConfig {
            token: token.map(Into::into),
            token_env: None,
            email: email.map(Into::into),
            key: key.map(Into::into),
            key_env: None,
            permission,
        }
    }

    fn auth() -> Auth {
        Auth::from_config(&[
            AccountConfig {
                id: "a".repeat(32),
                name: None,
                credentials: vec![
                    cred(Some("writer"), None, None, Permission::Write),
                    cred(Some("reader"), None, None, Permission::Read),
                    cred(None, Some("Ops@Example.com"), Some("k1"), Permission::Write),
                ],
            },
            AccountConfig {
                id: "b".repeat(32),
                name: None,
                credentials: vec![cred(Some("other"), None, None, Permission::Write)],
            },
        ])
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn decisions() {
        let a = auth();
        let acct = "a".repeat(32);
        let st = |hs: &[(&'static str, &str)], need| a.authorize(&headers(hs), &acct, need).map_err(|e| e.status);
        assert_eq!(st(&[("authorization", "Bearer writer")], Permission::Write), Ok(()));
        assert_eq!(st(&[("authorization", "bearer reader")], Permission::Read), Ok(()));
        assert_eq!(st(&[("authorization", "Bearer reader")], Permission::Write), Err(StatusCode::FORBIDDEN));
        assert_eq!(st(&[("authorization", "Bearer nope")], Permission::Read), Err(StatusCode::FORBIDDEN));
        assert_eq!(st(&[("authorization", "Bearer other")], Permission::Read), Err(StatusCode::FORBIDDEN));
        assert_eq!(st(&[], Permission::Read), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(st(&[("x-auth-email", "ops@example.com"), ("x-auth-key", "k1")], Permission::Write), Ok(()));
        assert_eq!(
            st(&[("x-auth-email", "ops@example.com"), ("x-auth-key", "k2")], Permission::Read),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(st(&[("x-auth-email", "ops@example.com")], Permission::Read), Err(StatusCode::UNAUTHORIZED));
        // Email/key wins when both kinds are sent (as the SDK does).
        let both = [("authorization", "Bearer writer"), ("x-auth-email", "ops@example.com"), ("x-auth-key", "bad")];
        assert_eq!(st(&both, Permission::Read), Err(StatusCode::FORBIDDEN));
    }
}
