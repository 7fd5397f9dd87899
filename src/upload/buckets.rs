//! Object stores for destinations, built from the appliance's own config (never from requests):
//! S3 (any S3-compatible endpoint) and GCS, behind object_store's one API.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::destination::{Destination, Scheme};
use crate::config::{literal_or_env, UploadConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoresError {
    #[error("destination_conf: {scheme} destinations are not configured on this appliance (no [upload.{section}] in its config)")]
    NotConfigured { scheme: &'static str, section: &'static str },
    #[error("destination_conf: cannot use the bucket: {0}")]
    Build(String),
}

/// Builds (and caches) one client per bucket.
pub struct Buckets {
    cfg: UploadConfig,
    cache: Mutex<HashMap<Destination, Arc<dyn ObjectStore>>>,
}

impl Buckets {
    pub fn new(cfg: UploadConfig) -> Self {
        Buckets { cfg, cache: Mutex::new(HashMap::new()) }
    }

    pub fn config(&self) -> &UploadConfig {
        &self.cfg
    }

    fn client_options(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(Duration::from_secs(self.cfg.request_timeout_secs))
    }

    /// Short in-client retries: the upload queue does the long back-off itself.
    fn retry(&self) -> RetryConfig {
        RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(10), ..Default::default() }
    }

    pub fn for_destination(&self, d: &Destination) -> Result<Arc<dyn ObjectStore>, StoresError> {
        let key = Destination { dir: String::new(), ..d.clone() };
        if let Some(s) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(s));
        }
        let store: Arc<dyn ObjectStore> = match d.scheme {
            Scheme::S3 => {
                let c = self.cfg.s3.as_ref().ok_or(StoresError::NotConfigured { scheme: "s3://", section: "s3" })?;
                let region = d.region.clone().unwrap_or_else(|| c.region.clone());
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&d.bucket)
                    .with_region(region)
                    .with_virtual_hosted_style_request(false)
                    .with_retry(self.retry());
                let allow_http = c.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
                b = b.with_client_options(self.client_options(allow_http));
                if let Some(e) = &c.endpoint {
                    b = b.with_endpoint(e);
                }
                let id = literal_or_env("upload.s3.access_key_id", &c.access_key_id, &c.access_key_id_env)
                    .map_err(|e| StoresError::Build(e.to_string()))?;
                let secret =
                    literal_or_env("upload.s3.secret_access_key", &c.secret_access_key, &c.secret_access_key_env)
                        .map_err(|e| StoresError::Build(e.to_string()))?;
                if let (Some(id), Some(secret)) = (id, secret) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                Arc::new(b.build().map_err(|e| StoresError::Build(e.to_string()))?)
            }
            Scheme::Gs => {
                let c = self.cfg.gcs.as_ref().ok_or(StoresError::NotConfigured { scheme: "gs://", section: "gcs" })?;
                let mut b = GoogleCloudStorageBuilder::new().with_bucket_name(&d.bucket).with_retry(self.retry());
                let allow_http = c.base_url.as_deref().is_some_and(|u| u.starts_with("http://"));
                b = b.with_client_options(self.client_options(allow_http));
                if let Some(u) = &c.base_url {
                    b = b.with_base_url(u);
                }
                if let Some(p) = &c.service_account_key_path {
                    b = b.with_service_account_path(p.to_string_lossy());
                }
                if let Some(var) = &c.bearer_token_env {
                    let t = literal_or_env("upload.gcs.bearer_token", &None, &Some(var.clone()))
                        .map_err(|e| StoresError::Build(e.to_string()))?
                        .unwrap_or_default();
                    b = b.with_bearer_token(t);
                }
                Arc::new(b.build().map_err(|e| StoresError::Build(e.to_string()))?)
            }
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::clone(&store));
        Ok(store)
    }
}

/// S3 error codes that no retry will cure; object_store reports some of them generically.
const PERMANENT_CODES: &[&str] =
    &["NoSuchBucket", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "Forbidden"];

/// Whether an error will not go away by retrying (credentials, permissions, a missing bucket).
pub fn is_permanent(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::NotFound { .. } | E::InvalidPath { .. } => true,
        E::Generic { source, .. } => {
            let s = source.to_string();
            PERMANENT_CODES.iter().chain(&["404 Not Found", "400 Bad Request"]).any(|m| s.contains(m))
        }
        _ => false,
    }
}

/// The store's own words for a failure (its error code first when it gave one), one line.
pub fn store_reason(e: &object_store::Error) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or(&s).to_string();
    match PERMANENT_CODES.iter().find(|c| s.contains(*c)) {
        Some(code) => format!("{code} ({first})"),
        None => first,
    }
}
