//! Packets for the differential tests (`difftest.rs`): the fixture frames, and generated ones
//! (synthesised headers with the values the corpus asks about, mutated fixture frames),
//! deterministic for a seed; and the segments a packet is cut into for chained mbufs.
use crate::dpdk::MBUF_DEFAULT_BUF_SIZE;

/// Data bytes of one mbuf of the test pool (the default 2 KiB room).
const SEG_ROOM: usize = MBUF_DEFAULT_BUF_SIZE as usize - 128;

/// xorshift64*: deterministic packets without a dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        out.extend((0..n).map(|_| self.byte()));
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
}

fn fixture_frames() -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/frames.pcap");
    let bytes = std::fs::read(path).unwrap();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for rec in crate::pcap::format::records(&bytes[24..]) {
        let data = rec[16..].to_vec();
        if !out.contains(&data) {
            out.push(data);
        }
    }
    out
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=29 => 0,
        30..=69 => rng.below(64),
        70..=95 => 64 + rng.below(1500),
        _ => 1500 + rng.below(7500),
    }
}

const PORTS: &[u16] = &[80, 443, 53, 22, 8080, 999, 1000, 1500, 2000, 2001, 1023, 1024, 5353, 0];

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(75) {
        rng.pick(PORTS)
    } else {
        rng.u16()
    }
}

fn l4(rng: &mut Rng, proto: u8, f: &mut Vec<u8>) {
    let start = f.len();
    match proto {
        6 => {
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend_from_slice(&port(rng).to_be_bytes());
            rng.fill(f, 8);
            let doff = rng.pick(&[5u8, 5, 5, 8, 15, 2]);
            f.push(doff << 4);
            f.push(rng.pick(&[0x02, 0x12, 0x10, 0x18, 0x11, 0x08, 0x01, 0x04]) | (rng.byte() & rng.byte()));
            rng.fill(f, 6);
            let opts = (usize::from(doff) * 4).saturating_sub(20);
            rng.fill(f, opts);
        }
        17 => {
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend_from_slice(&port(rng).to_be_bytes());
            rng.fill(f, 4);
            if rng.chance(40) {
                f.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        1 | 58 => {
            let types: &[u8] = if proto == 1 { &[0, 8, 8, 3, 11, 5, 13] } else { &[128, 129, 135, 136, 1] };
            f.push(if rng.chance(85) { rng.pick(types) } else { rng.byte() });
            rng.fill(f, 7);
        }
        _ => rng.fill(f, 8),
    }
    let n = payload_len(rng);
    rng.fill(f, n);
    debug_assert!(f.len() >= start);
}

const V4: &[[u8; 4]] = &[
    [10, 0, 0, 1],
    [10, 0, 0, 2],
    [1, 2, 3, 4],
    [5, 6, 7, 8],
    [192, 168, 1, 1],
    [224, 0, 0, 251],
    [255, 255, 255, 255],
    [10, 200, 3, 4],
];

fn ipv4(rng: &mut Rng, f: &mut Vec<u8>) {
    let ihl = rng.pick(&[5u8, 5, 5, 5, 5, 6, 7, 15, 4]);
    let proto = if rng.chance(90) { rng.pick(&[6u8, 6, 6, 17, 17, 17, 1, 1, 132, 47, 58]) } else { rng.byte() };
    let start = f.len();
    f.push(0x40 | ihl);
    f.push(rng.byte());
    f.extend_from_slice(&[0, 0]); // total length, set below
    f.extend_from_slice(&rng.u16().to_be_bytes());
    let frag: u16 = match rng.below(10) {
        0..=4 => 0,
        5 | 6 => 0x4000,
        7 => 0x2000,
        8 => 0x2000 | (rng.u16() & 0x1fff),
        _ => rng.u16() & 0x1fff,
    };
    f.extend_from_slice(&frag.to_be_bytes());
    f.push(rng.byte());
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    for _ in 0..2 {
        let a = if rng.chance(85) { rng.pick(V4) } else { (rng.next() as u32).to_be_bytes() };
        f.extend_from_slice(&a);
    }
    rng.fill(f, (usize::from(ihl) * 4).saturating_sub(20));
    l4(rng, proto, f);
    let total = if rng.chance(90) { (f.len() - start) as u16 } else { rng.u16() };
    f[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
}

fn ipv6_addr(rng: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    match rng.below(6) {
        0 | 1 => a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]),
        2 => a[..2].copy_from_slice(&[0xff, 0x02]),
        3 => a[..2].copy_from_slice(&[0xfe, 0x80]),
        _ => a.iter_mut().for_each(|b| *b = rng.byte()),
    }
    a[15] = rng.pick(&[1, 2, 1, 2, 99]);
    a
}

fn ipv6(rng: &mut Rng, f: &mut Vec<u8>) {
    let start = f.len();
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0]);
    let mut nh = if rng.chance(90) { rng.pick(&[6u8, 6, 17, 17, 58, 0, 44, 43, 60, 132]) } else { rng.byte() };
    f.push(nh);
    f.push(64);
    f.extend_from_slice(&ipv6_addr(rng));
    f.extend_from_slice(&ipv6_addr(rng));
    // Up to two extension headers.
    for _ in 0..2 {
        if !matches!(nh, 0 | 43 | 44 | 60) {
            break;
        }
        let next = rng.pick(&[6u8, 17, 58, 60]);
        if nh == 44 {
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&(if rng.chance(50) { 1u16 } else { rng.u16() & 0xfff9 }).to_be_bytes());
            rng.fill(f, 4);
        } else {
            f.extend_from_slice(&[next, 0]);
            rng.fill(f, 6);
        }
        nh = next;
    }
    l4(rng, nh, f);
    let plen = if rng.chance(90) { (f.len() - start - 40) as u16 } else { rng.u16() };
    f[start + 4..start + 6].copy_from_slice(&plen.to_be_bytes());
}

fn synthesised(rng: &mut Rng) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    let dst: [u8; 6] = match rng.below(8) {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb],
        2 => [0x33, 0x33, 0, 0, 0, 1],
        3 => [2, 0, 0, 0, 0, 2],
        4 => [2, 0, 0, 0, 0, 1],
        5 => [0, 0x1b, 0x21, 1, 2, 3],
        6 => [0xff, 0xff, 0xff, 0xff, 0, 0],
        _ => std::array::from_fn(|_| rng.byte()),
    };
    f.extend_from_slice(&dst);
    let src: [u8; 6] =
        if rng.chance(60) { [2, 0, 0, 0, 0, rng.pick(&[1, 2])] } else { std::array::from_fn(|_| rng.byte()) };
    f.extend_from_slice(&src);
    let tci =
        |rng: &mut Rng| (rng.pick(&[100u16, 200, 300, 1, 2, 4095]) | (u16::from(rng.byte() & 0xe0) << 8)).to_be_bytes();
    match rng.below(10) {
        0..=6 => {}
        7 | 8 => {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci(rng));
        }
        _ => {
            f.extend_from_slice(&[0x88, 0xa8]);
            f.extend_from_slice(&tci(rng));
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci(rng));
        }
    }
    match rng.below(20) {
        0..=10 => {
            f.extend_from_slice(&[0x08, 0x00]);
            ipv4(rng, &mut f);
        }
        11..=15 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            ipv6(rng, &mut f);
        }
        16 => {
            f.extend_from_slice(&[0x08, 0x06]);
            rng.fill(&mut f, 28);
        }
        _ => {
            f.extend_from_slice(&rng.u16().to_be_bytes());
            let n = payload_len(rng);
            rng.fill(&mut f, n);
        }
    }
    if rng.chance(10) {
        let keep = rng.below(f.len() + 1);
        f.truncate(keep);
    }
    f
}

fn mutated(rng: &mut Rng, fixtures: &[Vec<u8>]) -> Vec<u8> {
    let mut f = fixtures[rng.below(fixtures.len())].clone();
    if f.is_empty() {
        return f;
    }
    for _ in 0..1 + rng.below(4) {
        let window = if rng.chance(80) { 80 } else { usize::MAX };
        let at = rng.below(f.len().min(window));
        f[at] = rng.byte();
    }
    if rng.chance(20) {
        let keep = rng.below(f.len() + 1);
        f.truncate(keep);
    } else if rng.chance(10) {
        let n = rng.below(2000);
        rng.fill(&mut f, n);
    }
    f
}

/// The fixture frames, then `n` generated packets (deterministic for a given `seed`).
pub(super) fn packets(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let fixtures = fixture_frames();
    let mut rng = Rng(seed | 1);
    let mut out = fixtures.clone();
    for _ in 0..n {
        out.push(if rng.chance(70) { synthesised(&mut rng) } else { mutated(&mut rng, &fixtures) });
    }
    out
}

/// Segments of a packet: the fewest mbufs (`split` false), or cut at 1 to 3 random places.
pub(super) fn segments<'a>(data: &'a [u8], split: bool, rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut cuts = vec![0, data.len()];
    if split && data.len() >= 2 {
        for _ in 0..1 + rng.below(3) {
            cuts.push(1 + rng.below(data.len() - 1));
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut segs = Vec::new();
    for w in cuts.windows(2) {
        segs.extend(data[w[0]..w[1]].chunks(SEG_ROOM));
    }
    if segs.is_empty() {
        segs.push(&data[..0]);
    }
    segs
}
