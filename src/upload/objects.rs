//! A full capture's objects read back from its bucket: listed (`<dir>/<id>/<node>-<seq>/
//! pcap_<id>.pcap`, the keys the uploader writes) and read as streams for the merged download.
//!
//! Each object is read in ranged GETs of a bounded chunk, one at a time as the merge needs it:
//! no request lives longer than one chunk (a client's request timeout covers a whole body, so
//! one long GET per object would cut off a slow or long download), and the merge's memory is
//! the chunks it holds, one per object, within [`MERGE_MEMORY`].
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::destination::Destination;
use crate::pcap::merge::{ByteStream, Merge, MergeError};

/// GETs in flight at once while the merge opens its inputs.
const OPEN_AT_ONCE: usize = 8;
/// What the merge's read chunks may hold together (one chunk per object). A reader holds its
/// chunk, its buffer and a record at once: the merge's memory is about three times this
/// (`cargo bench --bench merge`: +100 MB peak RSS for 8 objects).
pub const MERGE_MEMORY: u64 = 32 << 20;
/// Chunk bounds (a record longer than a chunk spans several).
const MIN_CHUNK: u64 = 64 << 10;
const MAX_CHUNK: u64 = 4 << 20;
/// More objects than this cannot be merged within [`MERGE_MEMORY`].
pub const MAX_MERGE_OBJECTS: usize = (MERGE_MEMORY / MIN_CHUNK) as usize;

/// One object of a capture: the node that wrote it, its file number there, its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaptureObject {
    pub node: String,
    pub seq: u32,
    pub key: ObjectPath,
    /// Its size when listed: what the merge reads.
    pub size: u64,
}

impl CaptureObject {
    /// The object named by `key` if it is one of capture `id`'s under `prefix` (`<dir>/<id>/`).
    fn parse(prefix: &str, id: &str, key: &ObjectPath, size: u64) -> Option<CaptureObject> {
        let rest = key.as_ref().strip_prefix(prefix)?;
        let (part, name) = rest.split_once('/')?;
        if name != format!("pcap_{id}.pcap") {
            return None;
        }
        let (node, seq) = part.rsplit_once('-')?;
        Some(CaptureObject { node: node.to_string(), seq: seq.parse().ok()?, key: key.clone(), size })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("the bucket: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("the capture has {0} objects; at most {MAX_MERGE_OBJECTS} merge into one download: download them one by one (GET .../files lists them)")]
    TooMany(usize),
}

/// Capture `id`'s objects in `dest`, in merge order (node, then file number).
pub async fn capture_objects(
    store: &dyn ObjectStore,
    dest: &Destination,
    id: &str,
) -> Result<Vec<CaptureObject>, object_store::Error> {
    let prefix = dest.key(&format!("{id}/"));
    // Parsed as the uploader parses the keys it writes: raw, never percent-encoded (a `~` or
    // a non-ASCII letter in the directory would otherwise list nothing).
    let list_prefix = ObjectPath::parse(dest.key(id))
        .map_err(|e| object_store::Error::Generic { store: "pcapd", source: Box::new(e) })?;
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&list_prefix)).try_collect().await?;
    let mut objects: Vec<CaptureObject> =
        metas.iter().filter_map(|m| CaptureObject::parse(&prefix, id, &m.location, m.size)).collect();
    objects.sort();
    Ok(objects)
}

/// Opens the objects for the merge (the first chunk of each, a few at once), within
/// [`MERGE_MEMORY`].
pub async fn open_merge(store: Arc<dyn ObjectStore>, objects: &[CaptureObject]) -> Result<Merge, ObjectsError> {
    if objects.len() > MAX_MERGE_OBJECTS {
        return Err(ObjectsError::TooMany(objects.len()));
    }
    let chunk = (MERGE_MEMORY / objects.len().max(1) as u64).clamp(MIN_CHUNK, MAX_CHUNK);
    open_merge_in_chunks(store, objects, chunk).await
}

async fn open_merge_in_chunks(
    store: Arc<dyn ObjectStore>,
    objects: &[CaptureObject],
    chunk: u64,
) -> Result<Merge, ObjectsError> {
    let inputs: Vec<(String, ByteStream)> =
        objects.iter().map(|o| (o.key.to_string(), ranged(Arc::clone(&store), o.clone(), chunk))).collect();
    Ok(Merge::open_buffered(inputs, OPEN_AT_ONCE).await?)
}

/// Object `o` as a stream of ranged GETs of `chunk` bytes, each sent when the previous one
/// has been taken. An object shorter than listed fails the stream (it changed under us).
fn ranged(store: Arc<dyn ObjectStore>, o: CaptureObject, chunk: u64) -> ByteStream {
    futures_util::stream::try_unfold(0u64, move |at| {
        let (store, o) = (Arc::clone(&store), o.clone());
        async move {
            if at >= o.size {
                return Ok(None);
            }
            let got = store
                .get_range(&o.key, at..(at + chunk).min(o.size))
                .await
                .map_err(|e| super::buckets::store_reason(&e))?;
            if got.is_empty() {
                return Err(format!("it ended at byte {at} of the {} listed", o.size));
            }
            let next = at + got.len() as u64;
            Ok(Some((got, next)))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_captures_own_objects_in_node_then_file_order() {
        let id = "0123456789abcdef0123456789abcdef";
        let prefix = format!("site/{id}/");
        let p = |k: &str| CaptureObject::parse(&prefix, id, &ObjectPath::from(k), 0);
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

    use crate::pcap::format::{self, Precision};
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// A nanosecond pcap of `n` records of 100 bytes at `ts0`, `ts0 + step`, ...
    fn pcap(n: u64, ts0: u64, step: u64) -> Vec<u8> {
        let mut v = format::file_header_with(Precision::Nanos, 65_535, format::LINKTYPE_ETHERNET).to_vec();
        for i in 0..n {
            v.extend_from_slice(&format::record_header(Precision::Nanos, ts0 + i * step, 100, 100));
            v.extend(std::iter::repeat_n(i as u8, 100));
        }
        v
    }

    fn put(store: &InMemory, key: &str, bytes: Vec<u8>) {
        block_on(store.put(&ObjectPath::parse(key).unwrap(), PutPayload::from(bytes))).unwrap();
    }

    #[test]
    fn regression_a_directory_with_characters_a_path_would_encode_lists_its_objects() {
        // The uploader writes raw keys; listing under a percent-encoded prefix found nothing and
        // the merged download was an empty pcap.
        for dir in ["caps~x", "r\u{e9}seau", "a b"] {
            let store = InMemory::new();
            put(&store, &format!("{dir}/{ID}/n1-0/pcap_{ID}.pcap"), pcap(1, 0, 1));
            let dest = Destination::parse(&format!("s3://bkt/{dir}?region=us-east-1")).unwrap();
            let got = block_on(capture_objects(&store, &dest, ID)).unwrap();
            assert_eq!(got.len(), 1, "{dir}: {got:?}");
            assert_eq!((got[0].node.as_str(), got[0].seq, got[0].size), ("n1", 0, pcap(1, 0, 1).len() as u64));
        }
    }

    #[test]
    fn regression_objects_are_read_in_ranged_chunks_and_merge_as_whole_reads_do() {
        // One GET per object for the whole download ran into the client's request timeout
        // (it covers the body): now each object is read in ranges of a bounded chunk.
        let store = Arc::new(InMemory::new());
        let dest = Destination::parse("s3://bkt/site?region=us-east-1").unwrap();
        let (a, b) = (pcap(300, 0, 2), pcap(200, 1, 3));
        put(&store, &format!("site/{ID}/n1-0/pcap_{ID}.pcap"), a.clone());
        put(&store, &format!("site/{ID}/n2-0/pcap_{ID}.pcap"), b.clone());
        let objects = block_on(capture_objects(store.as_ref(), &dest, ID)).unwrap();
        let drain = |m: Merge| {
            block_on(async move {
                let mut m = m;
                let mut out = Vec::new();
                while let Some(c) = m.next_chunk(4096).await.unwrap() {
                    out.extend_from_slice(&c);
                }
                out
            })
        };
        // Chunks smaller than a record, and larger than an object.
        for chunk in [7, 116, 1000, 1 << 20] {
            let merged = drain(block_on(open_merge_in_chunks(store.clone(), &objects, chunk)).unwrap());
            let whole: Vec<(String, ByteStream)> = [a.clone(), b.clone()]
                .into_iter()
                .map(|v| ("x".to_string(), futures_util::stream::iter([Ok(bytes::Bytes::from(v))]).boxed()))
                .collect();
            let want = drain(block_on(Merge::open(whole)).unwrap());
            assert_eq!(merged, want, "chunk {chunk}");
            assert_eq!(merged.len(), a.len() + b.len() - 24);
        }
        // An object shorter than listed (it changed under us) fails the merge.
        let mut short = objects.clone();
        short[0].size += 10;
        let r = block_on(async {
            let mut m = open_merge_in_chunks(store.clone(), &short, 1000).await?;
            while m.next_chunk(4096).await?.is_some() {}
            Ok::<_, ObjectsError>(())
        });
        assert!(r.is_err(), "a short object must not end the merge cleanly");
    }

    #[test]
    fn more_objects_than_the_merge_memory_holds_are_refused_before_any_read() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let objects: Vec<CaptureObject> = (0..=MAX_MERGE_OBJECTS as u32)
            .map(|seq| CaptureObject { node: "n".into(), seq, key: ObjectPath::from(format!("k{seq}")), size: 1 })
            .collect();
        match block_on(open_merge(store, &objects)) {
            Err(ObjectsError::TooMany(n)) => assert_eq!(n, MAX_MERGE_OBJECTS + 1),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
