//! A simple capture's query against a full sample store: 24 hours of samples (>= 1 GiB in
//! 60-second segments) and a 300-second window whose filter keeps 10,000 packets.
//! Target: well under 1 s (the request-to-success budget of a simple capture).
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion};

use pcapd::filter::FilterV1;
use pcapd::pcap::format::{encode_record, file_header, Precision};
use pcapd::samples::query::query;

const NS: u64 = 1_000_000_000;
const SEGMENT_SECS: u64 = 60;
const DAY_SECS: u64 = 86_400;
/// 72 samples/s of 160 bytes for a day is 1.09 GiB with headers.
const PER_SECOND: u64 = 72;

fn frame(i: u64) -> [u8; 160] {
    let mut f = [0u8; 160];
    f[12] = 0x08;
    f[14] = 0x45;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
    f[30..34].copy_from_slice(&[192, 168, 0, 1]);
    let dport: u16 = if i.is_multiple_of(10) { 443 } else { 53 };
    f[34..36].copy_from_slice(&1024u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

fn fill(dir: &std::path::Path, start_secs: u64, secs: u64) -> u64 {
    let mut total = 0;
    let mut i = 0u64;
    let mut buf = Vec::with_capacity(2 << 20);
    for seg in (start_secs..start_secs + secs).step_by(SEGMENT_SECS as usize) {
        buf.clear();
        buf.extend_from_slice(&file_header(Precision::Nanos, 160));
        for s in seg..seg + SEGMENT_SECS {
            for k in 0..PER_SECOND {
                let f = frame(i);
                encode_record(
                    &mut buf,
                    Precision::Nanos,
                    s * NS + k * (NS / PER_SECOND),
                    1500,
                    160,
                    std::iter::once(&f[..]),
                );
                i += 1;
            }
        }
        let mut file = std::fs::File::create(dir.join(format!("{seg:012}.pcap"))).unwrap();
        file.write_all(&buf).unwrap();
        total += buf.len() as u64;
    }
    total
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("PCAPD_BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let start = 1_700_000_000 / SEGMENT_SECS * SEGMENT_SECS;
    // `cargo bench` passes --bench: fill a whole day. Under `cargo test` (one quick run to check
    // the bench works) an hour is enough.
    let full = std::env::args().any(|a| a == "--bench");
    let secs = if full { DAY_SECS } else { 3600 };
    let bytes = fill(dir.path(), start + DAY_SECS - secs, secs);
    eprintln!("sample store: {:.2} GiB in {} segments", bytes as f64 / (1u64 << 30) as f64, secs / SEGMENT_SECS);
    assert!(!full || bytes >= 1 << 30);
    // A 300 s window at the end of the day holds 21,600 samples, 90 % of them to port 53:
    // the capture takes the earliest 10,000, the largest simple capture.
    let filter = FilterV1::from_json_str(r#"{"destination_port":53,"protocol":17}"#).unwrap().compile();
    let end = (start + DAY_SECS - 1) * NS;
    let mut g = c.benchmark_group("simple-capture-query");
    g.sample_size(10);
    g.bench_function("24h-store-300s-window-10000-packets", |b| {
        b.iter(|| {
            let (got, st) = query(dir.path(), SEGMENT_SECS, end - 300 * NS, end, &filter, None, 10_000).unwrap();
            assert_eq!(got.len(), 10_000);
            assert!(st.segments_read <= 8, "{st:?}");
            got.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
