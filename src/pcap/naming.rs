//! tcpdump's savefile names for `-w OUT` with `-C`, `-G` and `-W` (tcpdump.c `MakeFilename`),
//! so a ring of files or a strftime-named series looks as a tcpdump user expects. Pure: the
//! sink asks for a name when it opens a file, with the file's count and the time.
//!
//! - `-G` only: the name is `OUT` passed through strftime(3) at open time (no pattern: every
//!   file has the same name and replaces the one before).
//! - `-C`: files after the first get a count: `OUT`, `OUT1`, `OUT2`, …; with `-W N` the count
//!   is zero-padded to the digits of N-1 from the first file on (`OUT0`, `OUT1`, …) and wraps
//!   after N files (the ring: the file of the same name is overwritten).
//! - `-G` with `-C`: the count starts again at each time rotation.
//! - `-G` with `-W N` and no `-C`: N files, then the capture ends (`max_files`).
use std::fmt::Display;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpdumpNames {
    template: String,
    /// `-G`: the template is a strftime pattern, formatted when a file is opened.
    strftime: bool,
    /// `-C`: files carry a count after the name.
    counted: bool,
    /// `-W`: the number of files.
    files: Option<u32>,
    /// Digits of the count: enough for `files - 1` (tcpdump's `WflagChars`), else none.
    digits: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("-w {0:?}: not a valid strftime(3) pattern (with -G the name is formatted by strftime)")]
    BadPattern(String),
    #[error("-W 0: the number of files must be at least 1")]
    NoFiles,
    #[error("-W needs -C or -G (it limits the files they create)")]
    FilesWithoutRotation,
}

impl TcpdumpNames {
    /// `rotate_seconds`: `-G` was given; `counted`: `-C` was given; `files`: `-W`.
    pub fn new(template: &str, rotate_seconds: bool, counted: bool, files: Option<u32>) -> Result<Self, NamingError> {
        if files == Some(0) {
            return Err(NamingError::NoFiles);
        }
        if files.is_some() && !rotate_seconds && !counted {
            return Err(NamingError::FilesWithoutRotation);
        }
        if rotate_seconds && StrftimeItems::new(template).any(|i| matches!(i, Item::Error)) {
            return Err(NamingError::BadPattern(template.to_string()));
        }
        let digits = files.map_or(0, |n| {
            let (mut x, mut c) = (n - 1, 0);
            while x > 0 {
                c += 1;
                x /= 10;
            }
            c
        });
        Ok(TcpdumpNames { template: template.to_string(), strftime: rotate_seconds, counted, files, digits })
    }

    /// The name of a file with count `count`, opened at `opened` (local time for tcpdump).
    pub fn name<Tz: TimeZone>(&self, count: u32, opened: &DateTime<Tz>) -> String
    where
        Tz::Offset: Display,
    {
        let base = if self.strftime {
            // Checked in `new`: every item is valid, so formatting cannot fail.
            opened.format_with_items(StrftimeItems::new(&self.template)).to_string()
        } else {
            self.template.clone()
        };
        if !self.counted || (count == 0 && self.digits == 0) {
            base
        } else {
            format!("{base}{count:0width$}", width = self.digits)
        }
    }

    /// The count of the file that follows file `count` when it filled up (`-C`): the next one,
    /// back to 0 after the last file of a `-W` ring.
    pub fn after_full(&self, count: u32) -> u32 {
        let next = count.saturating_add(1);
        match self.files {
            Some(n) if self.counted && next >= n => 0,
            _ => next,
        }
    }

    /// `-G` with `-W N` and no `-C`: at most N files (the capture then ends, as tcpdump exits).
    pub fn max_files(&self) -> Option<u32> {
        if self.strftime && !self.counted {
            self.files
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 9, 14, 5, 7).unwrap()
    }

    fn names(n: &TcpdumpNames, how_many: usize) -> Vec<String> {
        let mut count = 0;
        let mut out = Vec::new();
        for _ in 0..how_many {
            out.push(n.name(count, &at()));
            count = n.after_full(count);
        }
        out
    }

    #[test]
    fn size_rotation_names_as_tcpdump() {
        let c = TcpdumpNames::new("out", false, true, None).unwrap();
        assert_eq!(names(&c, 4), ["out", "out1", "out2", "out3"]);
        let ring = TcpdumpNames::new("out", false, true, Some(3)).unwrap();
        assert_eq!(names(&ring, 5), ["out0", "out1", "out2", "out0", "out1"]);
        let ring = TcpdumpNames::new("o.pcap", false, true, Some(11)).unwrap();
        assert_eq!(names(&ring, 12)[10..], ["o.pcap10", "o.pcap00"]);
        let ring = TcpdumpNames::new("o", false, true, Some(100)).unwrap();
        assert_eq!(ring.name(7, &at()), "o07", "digits of 99");
        let one = TcpdumpNames::new("o", false, true, Some(1)).unwrap();
        assert_eq!(names(&one, 3), ["o", "o", "o"], "-W 1: no digits, one file");
    }

    #[test]
    fn time_rotation_formats_the_name() {
        let g = TcpdumpNames::new("cap-%Y%m%d-%H%M%S.pcap", true, false, None).unwrap();
        assert_eq!(g.name(0, &at()), "cap-20240309-140507.pcap");
        assert_eq!(g.max_files(), None);
        let gc = TcpdumpNames::new("c-%H", true, true, Some(3)).unwrap();
        assert_eq!(gc.name(0, &at()), "c-140");
        assert_eq!(gc.name(2, &at()), "c-142");
        assert_eq!(gc.max_files(), None, "with -C, -W is a ring");
        let gw = TcpdumpNames::new("plain", true, false, Some(4)).unwrap();
        assert_eq!((gw.name(0, &at()), gw.max_files()), ("plain".to_string(), Some(4)));
        // Without -G a % is just a character.
        assert_eq!(TcpdumpNames::new("a%Q", false, true, None).unwrap().name(0, &at()), "a%Q");
    }

    #[test]
    fn bad_combinations() {
        assert_eq!(TcpdumpNames::new("a%Q", true, false, None), Err(NamingError::BadPattern("a%Q".into())));
        assert_eq!(TcpdumpNames::new("a", false, true, Some(0)), Err(NamingError::NoFiles));
        assert_eq!(TcpdumpNames::new("a", false, false, Some(2)), Err(NamingError::FilesWithoutRotation));
    }
}
