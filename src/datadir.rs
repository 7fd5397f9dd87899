//! The data directory's rules, in one place: one pcapd per data dir (`pcapd.lock`, flocked for
//! the process lifetime and holding the holder's pid), no symlink is ever followed under it
//! (files are opened with `O_NOFOLLOW` and listed with `symlink_metadata`), and how much room
//! its file system has left (`statvfs`).
//!
//! The data dir itself may be a symlink (an operator's choice made in the config); only what is
//! found inside it is distrusted.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the lock file inside the data dir.
pub const LOCK_FILE: &str = "pcapd.lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock: the caller must not touch the data dir.
    #[error("data dir {} is in use by another pcapd ({}, lock {})", dir.display(), pid_text(*pid), lock.display())]
    InUse { dir: PathBuf, pid: Option<u32>, lock: PathBuf },
    #[error("data dir lock {}: {op}: {source}", lock.display())]
    Lock { lock: PathBuf, op: &'static str, source: io::Error },
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"))
}

/// Exclusive use of a data dir, held until dropped (the kernel releases the flock when the
/// process dies, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes `<dir>/pcapd.lock` with `flock(LOCK_EX | LOCK_NB)` and writes this process's pid
    /// into it. Fails with `InUse`, naming the holder's pid, when another process has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let lock = dir.join(LOCK_FILE);
        let err = |op: &'static str| {
            let lock = lock.clone();
            move |source| DataDirError::Lock { lock, op, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock)
            .map_err(err("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DataDirError::InUse { dir: dir.to_path_buf(), pid: holder_pid(&mut file), lock })
            }
            Err(TryLockError::Error(e)) => return Err(err("flock")(e)),
        }
        file.set_len(0).map_err(err("truncate"))?;
        file.seek(SeekFrom::Start(0)).map_err(err("seek"))?;
        // The flock is the lock; the pid only tells others who holds it. On a full disk (pcapd
        // is about to give old samples back) the lock still holds without it.
        let written = file.write_all(format!("{}\n", std::process::id()).as_bytes()).and_then(|()| file.sync_all());
        match written {
            Ok(()) => {}
            Err(e) if is_disk_full(&e) => tracing::warn!("{}: pid not written: {e}", lock.display()),
            Err(e) => return Err(err("write")(e)),
        }
        Ok(DataDirLock { _file: file, path: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid written in a lock file someone else holds. The holder writes it right after taking
/// the lock, so an empty file is read again a few times before giving up.
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut s = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut s).is_ok() {
            if let Ok(pid) = s.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Options that never follow a symlink at the last path component (`O_NOFOLLOW`): opening a
/// symlink fails with `ELOOP` instead of reaching its target.
pub fn nofollow() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    o
}

/// Opens an existing file for reading without following a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    nofollow().read(true).open(path)
}

/// Creates `dir` (and its parents) if missing and checks that it is a directory itself, not a
/// symlink to one: directories under the data dir are never reached through a link.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    match EntryKind::of(dir)? {
        EntryKind::Dir => Ok(()),
        kind => Err(io::Error::other(format!(
            "{} is {}, not a directory (pcapd follows no symlink under its data dir)",
            dir.display(),
            kind.as_str()
        ))),
    }
}

/// What a directory entry is, judged without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl EntryKind {
    pub fn of(path: &Path) -> io::Result<EntryKind> {
        let t = std::fs::symlink_metadata(path)?.file_type();
        Ok(if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_file() {
            EntryKind::File
        } else if t.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::Other
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "a regular file",
            EntryKind::Dir => "a directory",
            EntryKind::Symlink => "a symlink",
            EntryKind::Other => "not a regular file",
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path` (`f_bavail`).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated string that outlives the call and `st` points to writable
    // memory of the size of a `statvfs`, which the call fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct (and it was zeroed before).
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether an I/O error means the file system is full (ENOSPC, or EDQUOT for a quota).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) || e.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_pid_and_a_dropped_lock_frees_the_dir() {
        let d = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(d.path()).unwrap();
        assert_eq!(std::fs::read_to_string(held.path()).unwrap().trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open conflicts even here.
        let e = DataDirLock::acquire(d.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DataDirError::InUse { pid: Some(p), .. } if p == std::process::id()), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains(&d.path().join(LOCK_FILE).display().to_string()), "{msg}");
        drop(held);
        DataDirLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn a_symlinked_lock_file_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(DataDirLock::acquire(d.path()), Err(DataDirError::Lock { op: "open", .. })));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn free_bytes_of_a_real_dir() {
        let d = tempfile::tempdir().unwrap();
        assert!(free_bytes(d.path()).unwrap() > 0);
        assert!(free_bytes(&d.path().join("missing")).is_err());
        assert!(is_disk_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
