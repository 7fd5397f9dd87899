//! When to start a new file: one pure policy function, so it is tested without files or clocks.

/// Rotation limits; `None` disables a limit. With every limit off, one file is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotatePolicy {
    pub max_bytes: Option<u64>,
    pub max_seconds: Option<u64>,
    pub max_packets: Option<u64>,
    /// tcpdump's `-C`: close the file once it holds more than N bytes, checked before each
    /// record (so, as in tcpdump, the record that crosses N stays in the file).
    pub over_bytes: Option<u64>,
}

impl RotatePolicy {
    pub fn is_enabled(&self) -> bool {
        self.max_bytes.is_some()
            || self.max_seconds.is_some()
            || self.max_packets.is_some()
            || self.over_bytes.is_some()
    }
}

/// Why a file is closed: tcpdump numbers files differently after a time rotation (`-G`: the
/// count starts again) than after a size rotation (`-C`: the count goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Age,
    Size,
}

/// What the current file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileState {
    /// Bytes in the file, header included.
    pub bytes: u64,
    pub packets: u64,
    /// Wall-clock ns when the file received its first record.
    pub first_record_ns: u64,
}

/// Should the current file be closed before writing a record of `next_record_bytes` (or, with
/// `None`, on an idle tick)? A file always takes at least one record, so a record bigger than
/// `max_bytes` still lands in a file of its own rather than looping.
pub fn should_rotate(p: &RotatePolicy, f: &FileState, next_record_bytes: Option<u64>, now_ns: u64) -> bool {
    rotate_reason(p, f, next_record_bytes, now_ns).is_some()
}

/// As `should_rotate`, saying why (age first: tcpdump checks `-G` before `-C`).
pub fn rotate_reason(p: &RotatePolicy, f: &FileState, next_record_bytes: Option<u64>, now_ns: u64) -> Option<Reason> {
    if f.packets == 0 {
        return None;
    }
    if let Some(max) = p.max_seconds {
        if now_ns.saturating_sub(f.first_record_ns) >= max.saturating_mul(1_000_000_000) {
            return Some(Reason::Age);
        }
    }
    let next = next_record_bytes?;
    let full = p.max_packets.is_some_and(|max| f.packets >= max)
        || p.max_bytes.is_some_and(|max| f.bytes + next > max)
        || p.over_bytes.is_some_and(|max| f.bytes > max);
    full.then_some(Reason::Size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn state(bytes: u64, packets: u64, first: u64) -> FileState {
        FileState { bytes, packets, first_record_ns: first }
    }

    #[test]
    fn off_never_rotates() {
        let p = RotatePolicy::default();
        assert!(!p.is_enabled());
        assert!(!should_rotate(&p, &state(u64::MAX / 2, u64::MAX / 2, 0), Some(1 << 20), u64::MAX));
    }

    #[test]
    fn packets_bytes_and_seconds() {
        let p = RotatePolicy { max_packets: Some(10), ..Default::default() };
        assert!(!should_rotate(&p, &state(100, 9, 0), Some(10), 0));
        assert!(should_rotate(&p, &state(100, 10, 0), Some(10), 0));
        let p = RotatePolicy { max_bytes: Some(1000), ..Default::default() };
        assert!(!should_rotate(&p, &state(900, 5, 0), Some(100), 0));
        assert!(should_rotate(&p, &state(900, 5, 0), Some(101), 0));
        let p = RotatePolicy { max_seconds: Some(2), ..Default::default() };
        assert!(!should_rotate(&p, &state(900, 5, 10 * S), Some(1), 12 * S - 1));
        assert!(should_rotate(&p, &state(900, 5, 10 * S), Some(1), 12 * S));
        assert!(should_rotate(&p, &state(900, 5, 10 * S), None, 12 * S), "idle tick closes old files");
    }

    #[test]
    fn over_bytes_is_tcpdumps_rule_and_age_comes_first() {
        // tcpdump -C: the file is closed before a record once it is already larger than N.
        let p = RotatePolicy { over_bytes: Some(1000), ..Default::default() };
        assert_eq!(rotate_reason(&p, &state(1000, 5, 0), Some(9000), 0), None, "exactly N: not larger");
        assert_eq!(rotate_reason(&p, &state(1001, 5, 0), Some(1), 0), Some(Reason::Size));
        assert_eq!(rotate_reason(&p, &state(1001, 5, 0), None, 0), None, "idle ticks rotate by age only");
        let p = RotatePolicy { over_bytes: Some(1000), max_seconds: Some(1), ..Default::default() };
        assert_eq!(rotate_reason(&p, &state(5000, 5, 0), Some(1), S), Some(Reason::Age));
        assert!(p.is_enabled());
    }

    #[test]
    fn empty_file_always_takes_a_record() {
        let p = RotatePolicy { max_bytes: Some(10), max_packets: Some(1), max_seconds: Some(0), over_bytes: Some(1) };
        assert!(!should_rotate(&p, &state(24, 0, 0), Some(9000), u64::MAX));
    }
}
