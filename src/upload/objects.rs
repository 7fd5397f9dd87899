//! A full capture's objects read back from its bucket: listed (`<dir>/<id>/<node>-<seq>/
//! pcap_<id>.pcap`, the keys the uploader writes) and opened as streams for the merged download.
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::destination::Destination;
use crate::pcap::merge::{ByteStream, Merge, MergeError};

/// GETs in flight at once while the merge opens its inputs.
const OPEN_AT_ONCE: usize = 8;

/// One object of a capture: the node that wrote it, its file number there, its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaptureObject {
    pub node: String,
    pub seq: u32,
    pub key: ObjectPath,
}

impl CaptureObject {
    /// The object named by `key` if it is one of capture `id`'s under `prefix` (`<dir>/<id>/`).
    fn parse(prefix: &str, id: &str, key: &ObjectPath) -> Option<CaptureObject> {
        let rest = key.as_ref().strip_prefix(prefix)?;
        let (part, name) = rest.split_once('/')?;
        if name != format!("pcap_{id}.pcap") {
            return None;
        }
        let (node, seq) = part.rsplit_once('-')?;
        Some(CaptureObject { node: node.to_string(), seq: seq.parse().ok()?, key: key.clone() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("the bucket: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// Capture `id`'s objects in `dest`, in merge order (node, then file number).
pub async fn capture_objects(
    store: &dyn ObjectStore,
    dest: &Destination,
    id: &str,
) -> Result<Vec<CaptureObject>, object_store::Error> {
    let prefix = dest.key(&format!("{id}/"));
    let list_prefix = ObjectPath::from(dest.key(id));
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&list_prefix)).try_collect().await?;
    let mut objects: Vec<CaptureObject> =
        metas.iter().filter_map(|m| CaptureObject::parse(&prefix, id, &m.location)).collect();
    objects.sort();
    Ok(objects)
}

/// Opens every object (a GET each, a few at once) and reads its header and first record.
pub async fn open_merge(store: Arc<dyn ObjectStore>, objects: &[CaptureObject]) -> Result<Merge, ObjectsError> {
    let opened: Vec<(String, ByteStream)> = futures_util::stream::iter(objects.iter().cloned())
        .map(|o| {
            let store = Arc::clone(&store);
            async move {
                let got = store.get(&o.key).await?;
                let stream: ByteStream = got.into_stream().map_err(|e| super::buckets::store_reason(&e)).boxed();
                Ok::<_, object_store::Error>((o.key.to_string(), stream))
            }
        })
        .buffered(OPEN_AT_ONCE)
        .try_collect()
        .await?;
    Ok(Merge::open(opened).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_captures_own_objects_in_node_then_file_order() {
        let id = "0123456789abcdef0123456789abcdef";
        let prefix = format!("site/{id}/");
        let p = |k: &str| CaptureObject::parse(&prefix, id, &ObjectPath::from(k));
        let mut got: Vec<CaptureObject> = [
            format!("site/{id}/lab-1-10/pcap_{id}.pcap"),
            format!("site/{id}/lab-1-2/pcap_{id}.pcap"),
            format!("site/{id}/a-0/pcap_{id}.pcap"),
        ]
        .iter()
        .filter_map(|k| p(k))
        .collect();
        got.sort();
        let names: Vec<(String, u32)> = got.iter().map(|o| (o.node.clone(), o.seq)).collect();
        assert_eq!(names, [("a".into(), 0), ("lab-1".into(), 2), ("lab-1".into(), 10)]);
        assert!(p(&format!("site/{id}/ownership-challenge-x.txt")).is_none());
        assert!(p(&format!("site/{id}/n-1/other.pcap")).is_none());
        assert!(p(&format!("site/{id}/n-x/pcap_{id}.pcap")).is_none());
        assert!(p(&format!("site/{id}0/n-1/pcap_{id}.pcap")).is_none());
    }
}
