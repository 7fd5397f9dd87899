//! `destination_conf`: `s3://<bucket>/<dir>?region=<region>` or `gs://<bucket>/<dir>`.
//! Anything else (other schemes, a missing bucket, embedded credentials, other query
//! parameters) is refused with a message naming the problem.
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    S3,
    Gs,
}

/// A parsed bucket destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub scheme: Scheme,
    pub bucket: String,
    /// Object key prefix, without leading or trailing '/'; may be empty.
    pub dir: String,
    /// S3 only: the bucket's region (`?region=`).
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination_conf: {0}")]
pub struct DestinationError(pub String);

fn bad(m: impl Into<String>) -> DestinationError {
    DestinationError(m.into())
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.' || c == b'_')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, DestinationError> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("s3://") {
            (Scheme::S3, r)
        } else if let Some(r) = s.strip_prefix("gs://") {
            (Scheme::Gs, r)
        } else {
            return Err(bad(format!("{s:?} is not s3://<bucket>/<dir>?region=<region> or gs://<bucket>/<dir>")));
        };
        if rest.contains('#') {
            return Err(bad("a fragment (#...) is not allowed"));
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let (bucket, dir) = path.split_once('/').unwrap_or((path, ""));
        if bucket.contains('@') || bucket.contains(':') {
            return Err(bad("credentials or ports in the URL are not allowed; the appliance uses its own credentials"));
        }
        if bucket.is_empty() {
            return Err(bad("the bucket name is missing"));
        }
        if !valid_bucket(bucket) {
            return Err(bad(format!("{bucket:?} is not a valid bucket name")));
        }
        let dir = dir.trim_matches('/');
        if dir.split('/').any(|seg| seg == "." || seg == "..") || dir.contains("//") {
            return Err(bad(format!("{dir:?} is not a valid directory")));
        }
        let mut region = None;
        if let Some(q) = query {
            for kv in q.split('&').filter(|kv| !kv.is_empty()) {
                match kv.split_once('=') {
                    Some(("region", r)) if scheme == Scheme::S3 && !r.is_empty() => {
                        if !r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                            return Err(bad(format!("{r:?} is not a region")));
                        }
                        region = Some(r.to_string());
                    }
                    _ => return Err(bad(format!("unsupported parameter {kv:?} (only region=, for s3://)"))),
                }
            }
        }
        Ok(Destination { scheme, bucket: bucket.to_string(), dir: dir.to_string(), region })
    }

    /// The key of `name` inside the destination's directory.
    pub fn key(&self, name: &str) -> String {
        if self.dir.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.dir)
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::S3 => "s3",
            Scheme::Gs => "gs",
        };
        write!(f, "{scheme}://{}/{}", self.bucket, self.dir)?;
        if let Some(r) = &self.region {
            write!(f, "?region={r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_ones() {
        let d = Destination::parse("s3://my-bucket/pcaps/site1?region=us-east-1").unwrap();
        assert_eq!(
            (d.scheme, d.bucket.as_str(), d.dir.as_str(), d.region.as_deref()),
            (Scheme::S3, "my-bucket", "pcaps/site1", Some("us-east-1"))
        );
        assert_eq!(d.key("x.txt"), "pcaps/site1/x.txt");
        let g = Destination::parse("gs://bucket_1/").unwrap();
        assert_eq!((g.scheme, g.dir.as_str(), g.key("x")), (Scheme::Gs, "", "x".to_string()));
    }

    #[test]
    fn bad_ones_say_why() {
        let e = |s: &str| Destination::parse(s).unwrap_err().0;
        assert!(e("http://bucket/dir").contains("is not s3://"));
        assert!(e("s3:///dir?region=x").contains("bucket name is missing"));
        assert!(e("s3://key:secret@bucket/dir").contains("credentials"));
        assert!(e("s3://Bad_Bucket!/d").contains("not a valid bucket name"));
        assert!(e("s3://bucket/d?region=us-east-1&x=1").contains("unsupported parameter"));
        assert!(e("gs://bucket/d?region=eu").contains("unsupported parameter"));
        assert!(e("s3://bucket/../d").contains("not a valid directory"));
        assert!(e("s3://bucket/d#frag").contains("fragment"));
    }
}
