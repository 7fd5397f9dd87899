//! Criterion benches of the per-packet work: parse + filter_v1 match (target: >= 30 Mpps per
//! core on 64-byte packets), PCAP record encoding (target: >= 2 GB/s) and the RX core's push of
//! a record into the writer's ring.
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use pcapd::dataplane::handoff::ring;
use pcapd::dataplane::lease::LeaseTag;
use pcapd::filter::FilterV1;
use pcapd::pcap::format::encode_record;
use pcapd::pcap::Precision;
use pcapd::wire;

/// A 64-byte Ethernet/IPv4/UDP frame (the smallest common frame) with varying addresses.
fn udp64(i: u32) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 50, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&(0x0a00_0000 | (i & 0xff)).to_be_bytes());
    f.extend_from_slice(&(0xc0a8_0000 | (i >> 8 & 0xff)).to_be_bytes());
    f.extend_from_slice(&((1024 + i % 5000) as u16).to_be_bytes());
    f.extend_from_slice(&(if i.is_multiple_of(10) { 443u16 } else { 53 }).to_be_bytes());
    f.resize(64, 0);
    f
}

fn parse_and_match(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..1024).map(udp64).collect();
    let mut g = c.benchmark_group("parse+match");
    g.throughput(Throughput::Elements(frames.len() as u64));
    for (name, json) in [
        ("match-all", "{}"),
        ("dport-10pct", r#"{"destination_port":443,"protocol":17}"#),
        ("v4-src", r#"{"source_address":"10.0.0.7"}"#),
    ] {
        let m = FilterV1::from_json_str(json).unwrap().compile();
        g.bench_with_input(BenchmarkId::from_parameter(name), &frames, |b, frames| {
            b.iter(|| {
                let mut hits = 0u32;
                // As the RX loop does: the plain-IPv4 fast path, else the general parser.
                for f in frames {
                    let f = black_box(f);
                    hits += u32::from(match wire::PlainV4::of(f) {
                        Some(h) => m.matches_plain_v4(&h),
                        None => m.matches(&wire::parse_general(f)),
                    });
                }
                hits
            })
        });
    }
    g.finish();
}

fn pcap_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("pcap-encode");
    for size in [64usize, 512, 1500] {
        let pkt = vec![0xabu8; size];
        let n = 4096;
        g.throughput(Throughput::Bytes(((size + 16) * n) as u64));
        let mut out = Vec::with_capacity((size + 16) * n);
        g.bench_with_input(BenchmarkId::from_parameter(size), &pkt, |b, pkt| {
            b.iter(|| {
                out.clear();
                for i in 0..n {
                    encode_record(
                        &mut out,
                        Precision::Nanos,
                        i as u64,
                        size as u32,
                        size as u32,
                        std::iter::once(&pkt[..]),
                    );
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// RX's side of the hand-off: records pushed into an SPSC ring, published per burst of 32 (the
/// consumer drains in the same thread between batches, so this is the producer's cost alone).
fn handoff_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff-push");
    for size in [64usize, 576, 1500] {
        let pkt = vec![0xabu8; size];
        let n = 4096;
        g.throughput(Throughput::Elements(n as u64));
        let (mut tx, mut rx) = ring(16 << 20);
        g.bench_with_input(BenchmarkId::from_parameter(size), &pkt, |b, pkt| {
            b.iter(|| {
                for i in 0..n {
                    assert!(tx.push(
                        LeaseTag::from_raw(1),
                        (i as u32, 0),
                        size as u32,
                        size as u32,
                        std::iter::once(&pkt[..])
                    ));
                    if i % 32 == 31 {
                        tx.publish();
                    }
                }
                tx.publish();
                while rx.drain(usize::MAX, |runs| runs.map(|r| r.count).sum::<u64>()) > 0 {}
            })
        });
    }
    g.finish();
}

/// Per-packet stamps of a burst of 32 (what RX does for each burst since issue 14) against one
/// stamp for the whole burst (before): the record header's seconds/nanoseconds of each packet.
fn burst_stamps(c: &mut Criterion) {
    use pcapd::dataplane::clock::{BurstStamps, Spread};
    use pcapd::pcap::format::Stamp;
    let mut g = c.benchmark_group("burst-stamps");
    g.throughput(Throughput::Elements(32));
    let mut now = 1_796_000_000_000_000_000u64;
    let mut stamps = BurstStamps::default();
    g.bench_function("per-packet", |b| {
        b.iter(|| {
            now += 3_000;
            let s = stamps.burst(black_box(now), 32);
            let mut each = [0u64; 32];
            s.fill(&mut each);
            black_box(&mut each);
            each.iter().map(|&t| Stamp::new(t).parts(Precision::Nanos).1).fold(0u32, u32::wrapping_add)
        })
    });
    g.bench_function("per-burst", |b| {
        b.iter(|| {
            now += 3_000;
            let s = Spread::fixed(black_box(now));
            let mut each = [Stamp::new(s.at(0)); 32];
            black_box(&mut each);
            each.iter().map(|t| t.parts(Precision::Nanos).1).fold(0u32, u32::wrapping_add)
        })
    });
    g.finish();
}

/// N captures at once (issue 14): each packet matched against N filter_v1 filters as the RX
/// core does (`MatcherSet`: one lookup per group of filters of one shape), against asking each
/// filter in turn. The filters are of three shapes (destination address; destination address and
/// port; protocol and source port), with distinct values, as many accounts' captures would be.
fn many_captures(c: &mut Criterion) {
    use pcapd::filter::{Matcher, MatcherSet};
    let frames: Vec<Vec<u8>> = (0..1024).map(udp64).collect();
    let filter = |i: usize| -> Matcher {
        let json = match i % 3 {
            0 => format!(r#"{{"destination_address":"192.168.{}.0"}}"#, i),
            1 => format!(r#"{{"destination_address":"192.168.{}.0","destination_port":443}}"#, i),
            _ => format!(r#"{{"protocol":17,"source_port":{}}}"#, 1024 + i),
        };
        FilterV1::from_json_str(&json).unwrap().compile()
    };
    let mut g = c.benchmark_group("many-captures");
    g.throughput(Throughput::Elements(frames.len() as u64));
    for n in [1usize, 4, 16, 64] {
        let each: Vec<Matcher> = (0..n).map(filter).collect();
        let set = MatcherSet::new(&each);
        g.bench_with_input(BenchmarkId::new("set", n), &frames, |b, frames| {
            b.iter(|| {
                let mut hits = 0u64;
                for f in frames {
                    let f = black_box(f);
                    hits ^= match wire::PlainV4::of(f) {
                        Some(h) => set.matches_plain_v4(&h),
                        None => set.matches(&wire::parse_general(f)),
                    };
                }
                hits
            })
        });
        g.bench_with_input(BenchmarkId::new("each", n), &frames, |b, frames| {
            b.iter(|| {
                let mut hits = 0u64;
                for f in frames {
                    let f = black_box(f);
                    hits ^= match wire::PlainV4::of(f) {
                        Some(h) => {
                            each.iter().enumerate().fold(0, |a, (i, m)| a | u64::from(m.matches_plain_v4(&h)) << i)
                        }
                        None => {
                            let k = wire::parse_general(f);
                            each.iter().enumerate().fold(0, |a, (i, m)| a | u64::from(m.matches(&k)) << i)
                        }
                    };
                }
                hits
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse_and_match, pcap_encode, handoff_push, burst_stamps, many_captures);
criterion_main!(benches);
