//! The lock of a run folder: one writer at a time.
//!
//! An advisory lock file, `run.lock`, created exclusively (`O_EXCL`), holding the owner's pid and
//! host. A second writer is refused with a message naming the owner; a lock whose process is gone
//! (same host, no such pid) is stale and taken over, with a note.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the lock in a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// A held lock; released (the file removed) when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// Set when a stale lock was taken over: who held it.
    pub took_over: Option<String>,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl RunLock {
    /// Takes the lock of the run folder `dir` (which must exist).
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let me = format!("{} {}", std::process::id(), host());
        let mut took_over = None;
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(me.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock { path, took_over });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut parts = owner.split_whitespace();
                    let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
                    let owner_host = parts.next().unwrap_or("").to_string();
                    let stale = match pid {
                        Some(p) => owner_host == host() && !alive(p),
                        None => true,
                    };
                    if !stale {
                        return Err(Error::file(
                            dir,
                            format!(
                                "is in use by another mpsae process (pid {}, host {owner_host}); wait for it \
                                 to finish, or remove {} if it is gone",
                                pid.map_or("?".into(), |p| p.to_string()),
                                path.display()
                            ),
                        ));
                    }
                    took_over = Some(owner.trim().to_string());
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::file(&path, "could not be taken (another process keeps creating it)"))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
