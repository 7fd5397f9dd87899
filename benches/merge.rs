//! The merged download's engine (`pcap::merge` over object-store GET streams) against reading
//! the same objects alone: MB/s of each, and the process's RSS while merging (it must stay
//! bounded by the number of objects, not their size). Objects live in a LocalFileSystem store
//! (the same GET stream API as S3's), so the numbers are the merge's own cost.
//!
//! Run: `cargo bench --bench merge` (scripts/bench does). Objects are read as the download
//! reads them: ranged GETs of a chunk within the merge's memory budget (64 MiB / objects).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use pcapd::pcap::format;
use pcapd::upload::objects::{open_merge, CaptureObject};

const OBJECTS: usize = 8;
const MB_PER_OBJECT: usize = 64;
const PACKET: usize = 1000;

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok()).unwrap_or(0)
}

/// Runs `f`, sampling RSS meanwhile; returns (seconds, peak RSS kB).
async fn measured<F: std::future::Future<Output = u64>>(f: F) -> (f64, u64, u64) {
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                peak.fetch_max(rss_kb(), Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    let bytes = f.await;
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    sampler.join().unwrap();
    (secs, peak.load(Relaxed), bytes)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let per_object = MB_PER_OBJECT * 1_000_000 / (PACKET + 16);
    let mut objects = Vec::new();
    for o in 0..OBJECTS {
        let mut f = format::file_header(format::Precision::Nanos, 262_144).to_vec();
        for i in 0..per_object {
            // Interleaved in time: every object takes part in every stretch of the merge.
            let ts = 1_700_000_000_000_000_000 + (i * OBJECTS + o) as u64 * 1_000;
            f.extend_from_slice(&format::record_header(format::Precision::Nanos, ts, PACKET as u32, PACKET as u32));
            f.extend(std::iter::repeat_n(o as u8, PACKET));
        }
        let key = ObjectPath::from(format!("d/id/n-{o}/pcap_id.pcap"));
        std::fs::create_dir_all(dir.path().join(format!("d/id/n-{o}"))).unwrap();
        std::fs::write(dir.path().join(key.as_ref()), &f).unwrap();
        objects.push(CaptureObject { node: "n".into(), seq: o as u32, key, size: f.len() as u64 });
    }
    let total_mb = (OBJECTS * MB_PER_OBJECT) as f64;
    let base = rss_kb();
    let (read_s, read_peak, read_bytes) = measured(async {
        let mut n = 0u64;
        for o in &objects {
            let mut s = store.get(&o.key).await.unwrap().into_stream();
            while let Some(c) = s.next().await {
                n += c.unwrap().len() as u64;
            }
        }
        n
    })
    .await;
    let (merge_s, merge_peak, merged_bytes) = measured(async {
        let mut m = open_merge(Arc::clone(&store), &objects).await.unwrap();
        let mut n = 0u64;
        while let Some(b) = m.next_chunk(256 << 10).await.unwrap() {
            n += b.len() as u64;
        }
        n
    })
    .await;
    assert_eq!(merged_bytes, read_bytes - (OBJECTS as u64 - 1) * 24, "one header, every record");
    println!("{OBJECTS} objects, {total_mb:.0} MB, {PACKET}-byte packets; RSS before {} MB", base / 1024);
    println!(
        "read alone: {:.0} MB/s (peak RSS {} MB); merged: {:.0} MB/s (peak RSS {} MB, +{} MB over the start)",
        total_mb / read_s,
        read_peak / 1024,
        total_mb / merge_s,
        merge_peak / 1024,
        merge_peak.saturating_sub(base) / 1024
    );
}
