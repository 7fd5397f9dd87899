//! The sections only `pcapd run` uses: the admin API, the node, the sample store, limits,
//! accounts and their credentials, and bucket uploads. Checked by `Config::validate`.
use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, Config, ConfigError};

/// Where full captures go: the appliance's own bucket credentials (never from requests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Credentials and endpoint for `s3://` destinations.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Credentials and endpoint for `gs://` destinations.
    #[serde(default)]
    pub gcs: Option<GcsConfig>,
    /// Files larger than this are uploaded in parts (bytes).
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: u64,
    /// Size of each part of a multipart upload (bytes, at least 5 MiB).
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// First and largest wait between retries of an upload while the store is unreachable.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Time limit of one request to the store (seconds).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            s3: None,
            gcs: None,
            multipart_threshold: default_multipart_threshold(),
            part_size: default_part_size(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            request_timeout_secs: default_request_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region used when a destination has no `?region=`.
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    /// Another GCS endpoint (tests point it at an emulator).
    #[serde(default)]
    pub base_url: Option<String>,
    /// A service-account key file.
    #[serde(default)]
    pub service_account_key_path: Option<PathBuf>,
    /// Environment variable holding an OAuth bearer token (instead of a key file).
    #[serde(default)]
    pub bearer_token_env: Option<String>,
}

fn default_multipart_threshold() -> u64 {
    16 << 20
}
fn default_part_size() -> u64 {
    8 << 20
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_request_timeout() -> u64 {
    30
}
fn default_region() -> String {
    "us-east-1".to_string()
}

/// A value given literally or through an environment variable (`field` / `field_env`).
pub fn literal_or_env(
    field: &str,
    literal: &Option<String>,
    env: &Option<String>,
) -> Result<Option<String>, ConfigError> {
    match (literal, env) {
        (Some(_), Some(_)) => Err(invalid(field, format!("give {field} or {field}_env, not both"))),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(var)) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| invalid(format!("{field}_env"), format!("environment variable {var} is not set"))),
        (None, None) => Ok(None),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the admin API (Cloudflare's `/client/v4` routes, /metrics, /healthz, /readyz).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted (bytes); larger bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A bearer token `/metrics` requires (`Authorization: Bearer ...`); open when absent.
    #[serde(default)]
    pub metrics_token: Option<String>,
    #[serde(default)]
    pub metrics_token_env: Option<String>,
    /// Series per running capture (its id and counters) in `/metrics`. Off by default: capture
    /// ids and their packet counts are the accounts' business, not the scraper's.
    #[serde(default)]
    pub metrics_per_capture: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            metrics_token: None,
            metrics_token_env: None,
            metrics_per_capture: false,
        }
    }
}

impl ApiConfig {
    /// The token `/metrics` requires, resolved from the config or the environment.
    pub fn metrics_token(&self) -> Result<Option<String>, ConfigError> {
        literal_or_env("api.metrics_token", &self.metrics_token, &self.metrics_token_env)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This appliance's name (part of uploaded object names).
    #[serde(default = "default_node_name")]
    pub name: String,
    /// Colos (`colo_name` of full captures) this appliance captures for.
    #[serde(default)]
    pub colos: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { name: default_node_name(), colos: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplesConfig {
    /// Keep 1 packet in this many (per RX core).
    #[serde(default = "default_one_in")]
    pub one_in: u32,
    /// At most this many samples per second in total (shared evenly by the RX cores).
    #[serde(default = "default_max_per_second")]
    pub max_per_second: u64,
    /// Bytes kept of each sampled packet (Cloudflare's simple captures keep 160).
    #[serde(default = "default_sample_snaplen")]
    pub snaplen: u32,
    /// Length of one segment file (seconds).
    #[serde(default = "default_segment_seconds")]
    pub segment_seconds: u64,
    /// Samples are kept this long (the look-back of simple captures; 24 h by default)...
    #[serde(default = "default_retention")]
    pub retention_seconds: u64,
    /// ...or until the store holds this many bytes, whichever comes first (oldest go first).
    #[serde(default = "default_sample_bytes")]
    pub max_bytes: u64,
    /// Bytes the sample store leaves free on the data dir's file system (for the database,
    /// captures and spool): below it, the oldest segments are dropped early, then samples.
    #[serde(default = "default_sample_min_free")]
    pub min_free_bytes: u64,
    /// Samples each RX core may queue for the store before dropping.
    #[serde(default = "default_sample_ring")]
    pub ring_size: usize,
}

impl Default for SamplesConfig {
    fn default() -> Self {
        SamplesConfig {
            one_in: default_one_in(),
            max_per_second: default_max_per_second(),
            snaplen: default_sample_snaplen(),
            segment_seconds: default_segment_seconds(),
            retention_seconds: default_retention(),
            max_bytes: default_sample_bytes(),
            min_free_bytes: default_sample_min_free(),
            ring_size: default_sample_ring(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Seconds an account waits between two simple capture requests (Cloudflare: one a minute).
    #[serde(default = "default_simple_interval")]
    pub simple_interval_seconds: u64,
    /// Largest `time_limit` of a full capture (300 by default, at most 86400).
    #[serde(default = "default_full_time_limit_max")]
    pub full_time_limit_max: u64,
    /// Bucket-ownership registrations (`POST /pcaps/ownership`, each writes into a bucket) an
    /// account may make per minute; more get 429. 1 to 600.
    #[serde(default = "default_ownership_per_minute")]
    pub ownership_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            simple_interval_seconds: default_simple_interval(),
            full_time_limit_max: default_full_time_limit_max(),
            ownership_per_minute: default_ownership_per_minute(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account id: 32 lowercase hex characters.
    pub id: String,
    /// A name for people (shown by the web page).
    #[serde(default)]
    pub name: Option<String>,
    /// Who may use this account (`[[account.credential]]`).
    #[serde(default, rename = "credential")]
    pub credentials: Vec<CredentialConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// An API token (`Authorization: Bearer ...`), or the environment variable holding it.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// An email + API key pair (`X-Auth-Email` / `X-Auth-Key`); the key may come from `key_env`.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
    /// `"read"` (GET) or `"write"` (everything).
    pub permission: Permission,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
}

/// A credential with its secret resolved from the config or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Token(String),
    EmailKey { email: String, key: String },
}

impl CredentialConfig {
    /// Resolves the secret; the error names the missing piece (`field` is this entry's path).
    pub fn secret(&self, field: &str) -> Result<Secret, ConfigError> {
        let env = |var: &str, f: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(format!("{field}.{f}"), format!("environment variable {var} is not set")))
        };
        let token = match (&self.token, &self.token_env) {
            (Some(_), Some(_)) => return Err(invalid(field, "give token or token_env, not both")),
            (Some(t), None) => Some(t.clone()),
            (None, Some(v)) => Some(env(v, "token_env")?),
            (None, None) => None,
        };
        let key = match (&self.key, &self.key_env) {
            (Some(_), Some(_)) => return Err(invalid(field, "give key or key_env, not both")),
            (Some(k), None) => Some(k.clone()),
            (None, Some(v)) => Some(env(v, "key_env")?),
            (None, None) => None,
        };
        if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid(format!("{field}.token"), "must not be empty"));
        }
        match (token, &self.email, key) {
            (Some(t), None, None) => Ok(Secret::Token(t)),
            (None, Some(e), Some(k)) if !e.is_empty() && !k.is_empty() => {
                Ok(Secret::EmailKey { email: e.clone(), key: k })
            }
            (Some(_), _, _) => Err(invalid(field, "a credential is either a token or an email + key, not both")),
            _ => Err(invalid(field, "needs a non-empty token (or token_env), or an email with a key (or key_env)")),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_node_name() -> String {
    "pcapd".to_string()
}
fn default_one_in() -> u32 {
    100
}
fn default_max_per_second() -> u64 {
    10_000
}
fn default_sample_snaplen() -> u32 {
    160
}
fn default_segment_seconds() -> u64 {
    60
}
fn default_retention() -> u64 {
    86_400
}
fn default_sample_min_free() -> u64 {
    64 << 20
}
fn default_sample_bytes() -> u64 {
    1 << 30
}
fn default_sample_ring() -> usize {
    8192
}
fn default_simple_interval() -> u64 {
    60
}
fn default_full_time_limit_max() -> u64 {
    300
}
fn default_ownership_per_minute() -> u32 {
    10
}
/// Largest `limits.simple_interval_seconds`: a day (larger values overflow clock arithmetic).
pub const SIMPLE_INTERVAL_MAX: u64 = 86_400;
/// Smallest `samples.max_bytes`: room for a few segments.
pub const SAMPLES_MIN_BYTES: u64 = 1 << 20;

impl Config {
    /// Rules of the sections only `pcapd run` uses (called by `validate`).
    pub(super) fn validate_appliance(&self) -> Result<(), ConfigError> {
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("api.listen", format!("{:?} is not an address:port", self.api.listen)));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(invalid("api.max_body_bytes", "must be at least 1024"));
        }
        if self.api.metrics_token()?.is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid("api.metrics_token", "must not be empty (leave it out for an open /metrics)"));
        }
        if self.data.dir.as_os_str().is_empty() {
            return Err(invalid("data.dir", "must not be empty (give a directory, e.g. /var/lib/pcapd)"));
        }
        let sm = &self.samples;
        if sm.max_bytes < SAMPLES_MIN_BYTES {
            return Err(invalid(
                "samples.max_bytes",
                format!("{} is too small (at least {SAMPLES_MIN_BYTES}, 1 MiB)", sm.max_bytes),
            ));
        }
        if sm.one_in == 0 {
            return Err(invalid("samples.one_in", "must be at least 1"));
        }
        if sm.max_per_second == 0 {
            return Err(invalid("samples.max_per_second", "must be at least 1"));
        }
        if sm.snaplen == 0 || sm.snaplen as usize > crate::samples::MAX_SNAPLEN {
            return Err(invalid(
                "samples.snaplen",
                format!("{} is out of range (1 to {})", sm.snaplen, crate::samples::MAX_SNAPLEN),
            ));
        }
        if sm.segment_seconds == 0 || sm.segment_seconds > 3600 {
            return Err(invalid("samples.segment_seconds", "must be between 1 and 3600"));
        }
        if sm.retention_seconds < sm.segment_seconds {
            return Err(invalid("samples.retention_seconds", "must be at least samples.segment_seconds"));
        }
        if !sm.ring_size.is_power_of_two() || sm.ring_size < 64 {
            return Err(invalid("samples.ring_size", "must be a power of two, at least 64"));
        }
        if self.limits.simple_interval_seconds > SIMPLE_INTERVAL_MAX {
            return Err(invalid(
                "limits.simple_interval_seconds",
                format!("{} is out of range (0 to {SIMPLE_INTERVAL_MAX})", self.limits.simple_interval_seconds),
            ));
        }
        if !(1..=600).contains(&self.limits.ownership_per_minute) {
            return Err(invalid("limits.ownership_per_minute", "must be between 1 and 600"));
        }
        if !(1..=86_400).contains(&self.limits.full_time_limit_max) {
            return Err(invalid("limits.full_time_limit_max", "must be between 1 and 86400"));
        }
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok(&self.node.name) {
            return Err(invalid("node.name", "must be letters, digits, '-' or '_'"));
        }
        if let Some(c) = self.node.colos.iter().find(|c| !name_ok(c)) {
            return Err(invalid("node.colos", format!("{c:?} must be letters, digits, '-' or '_'")));
        }
        let u = &self.upload;
        if u.part_size < 5 << 20 {
            return Err(invalid("upload.part_size", "must be at least 5 MiB (5242880), the S3 minimum"));
        }
        if u.multipart_threshold < u.part_size {
            return Err(invalid("upload.multipart_threshold", "must be at least upload.part_size"));
        }
        if u.retry_initial_ms == 0 || u.retry_max_ms < u.retry_initial_ms {
            return Err(invalid(
                "upload.retry_max_ms",
                "retry_initial_ms must be >= 1 and retry_max_ms >= retry_initial_ms",
            ));
        }
        if u.request_timeout_secs == 0 {
            return Err(invalid("upload.request_timeout_secs", "must be at least 1"));
        }
        if let Some(s3) = &u.s3 {
            let id = literal_or_env("upload.s3.access_key_id", &s3.access_key_id, &s3.access_key_id_env)?;
            let secret =
                literal_or_env("upload.s3.secret_access_key", &s3.secret_access_key, &s3.secret_access_key_env)?;
            if id.is_some() != secret.is_some() {
                return Err(invalid("upload.s3", "give both access_key_id and secret_access_key, or neither"));
            }
            if let Some(e) = &s3.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(invalid("upload.s3.endpoint", format!("{e:?} is not an http(s) URL")));
                }
            }
        }
        if let Some(g) = &u.gcs {
            if let Some(var) = &g.bearer_token_env {
                literal_or_env("upload.gcs.bearer_token", &None, &Some(var.clone()))?;
            }
            if let Some(u) = &g.base_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(invalid("upload.gcs.base_url", format!("{u:?} is not an http(s) URL")));
                }
            }
        }
        let mut ids = HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            if a.id.len() != 32 || !a.id.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
                return Err(invalid(
                    format!("account[{i}].id"),
                    format!("{:?} is not 32 lowercase hex characters", a.id),
                ));
            }
            if !ids.insert(a.id.as_str()) {
                return Err(invalid(format!("account[{i}].id"), "is listed twice"));
            }
            for (j, c) in a.credentials.iter().enumerate() {
                c.secret(&format!("account[{i}].credential[{j}]"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[dpdk]\nrx_cores=[1]\n[[port]]\ndevice=\"net_null0\"\n";

    fn err(extra: &str) -> String {
        let c: Config = toml::from_str(&format!("{BASE}{extra}")).map_err(|e| e.to_string()).unwrap();
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn appliance_errors_name_the_field() {
        assert!(err("[api]\nlisten=\"nowhere\"\n").starts_with("api.listen:"));
        assert!(err("[samples]\none_in=0\n").starts_with("samples.one_in:"));
        assert!(err("[samples]\nsnaplen=9000\n").starts_with("samples.snaplen:"));
        assert!(err("[samples]\nsegment_seconds=60\nretention_seconds=10\n").starts_with("samples.retention_seconds:"));
        assert!(err("[limits]\nfull_time_limit_max=100000\n").starts_with("limits.full_time_limit_max:"));
        assert!(err("[node]\nname=\"a b\"\n").starts_with("node.name:"));
        assert!(err("[upload]\npart_size=1000\n").starts_with("upload.part_size:"));
        assert!(err("[upload.s3]\naccess_key_id=\"x\"\n").starts_with("upload.s3:"));
        assert!(err("[upload.s3]\nendpoint=\"ftp://x\"\n").starts_with("upload.s3.endpoint:"));
        assert!(err("[upload.s3]\naccess_key_id_env=\"PCAPD_SURELY_UNSET\"\nsecret_access_key=\"s\"\n")
            .starts_with("upload.s3.access_key_id_env: environment variable PCAPD_SURELY_UNSET is not set"));
        assert!(err("[[account]]\nid=\"ABC\"\n").starts_with("account[0].id:"));
        assert!(err(
            "[[account]]\nid=\"0123456789abcdef0123456789abcdef\"\n[[account.credential]]\npermission=\"read\"\n"
        )
        .starts_with("account[0].credential[0]: needs"));
        assert!(err("[[account]]\nid=\"0123456789abcdef0123456789abcdef\"\n[[account.credential]]\ntoken=\"t\"\nemail=\"e\"\nkey=\"k\"\npermission=\"write\"\n")
            .contains("not both"));
    }

    /// Regression: `data.dir = ""` passed check-config (it silently became the config's directory).
    #[test]
    fn empty_data_dir_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pcapd.toml");
        std::fs::write(&path, format!("{BASE}[data]\ndir=\"\"\n")).unwrap();
        let e = Config::read(&path).unwrap().validate().unwrap_err().to_string();
        assert!(e.starts_with("data.dir: must not be empty"), "{e}");
    }

    /// Regression: `samples.max_bytes = 0` passed check-config (a store that can keep nothing).
    #[test]
    fn zero_samples_max_bytes_is_rejected() {
        let e = err("[samples]\nmax_bytes=0\n");
        assert!(e.starts_with("samples.max_bytes: 0 is too small"), "{e}");
        assert!(err("[samples]\nmax_bytes=1000\n").starts_with("samples.max_bytes:"));
    }

    /// Regression: a missing GCS key file passed check-config (uploads failed hours later).
    #[test]
    fn missing_gcs_key_file_fails_check_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pcapd.toml");
        std::fs::write(&path, format!("{BASE}[upload.gcs]\nservice_account_key_path=\"no-such-key.json\"\n")).unwrap();
        let c = Config::read(&path).unwrap();
        c.validate().unwrap();
        let e = c.check_files().unwrap_err().to_string();
        let key = dir.path().join("no-such-key.json");
        assert_eq!(
            e,
            format!("upload.gcs.service_account_key_path: {}: No such file or directory (os error 2)", key.display())
        );
        std::fs::write(&key, "{}").unwrap();
        c.check_files().unwrap();
    }

    /// Regression: `simple_interval_seconds = 2^63` passed check-config (clock arithmetic
    /// overflows with such an interval).
    #[test]
    fn huge_simple_interval_is_rejected() {
        let e = err("[limits]\nsimple_interval_seconds=9223372036854775807\n");
        assert!(e.starts_with("limits.simple_interval_seconds: 9223372036854775807 is out of range"), "{e}");
        let c: Config = toml::from_str(&format!("{BASE}[limits]\nsimple_interval_seconds=0\n")).unwrap();
        c.validate().unwrap();
    }

    /// Regression: `token = ""` was reported as "a credential is either a token or an email +
    /// key, not both".
    #[test]
    fn empty_token_names_the_token_field() {
        let acct =
            "[[account]]\nid=\"0123456789abcdef0123456789abcdef\"\n[[account.credential]]\npermission=\"write\"\n";
        let e = err(&format!("{acct}token=\"\"\n"));
        assert_eq!(e, "account[0].credential[0].token: must not be empty");
        let e = err(&format!("{acct}token=\"  \"\n"));
        assert_eq!(e, "account[0].credential[0].token: must not be empty");
    }

    #[test]
    fn metrics_token_and_ownership_limit_are_checked() {
        assert!(err("[api]\nmetrics_token=\"\"\n").starts_with("api.metrics_token: must not be empty"));
        assert!(err("[limits]\nownership_per_minute=0\n").starts_with("limits.ownership_per_minute:"));
    }
}
