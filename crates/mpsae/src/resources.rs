//! Memory and disk planned before allocating or writing: an impossible configuration is refused
//! with the numbers, instead of failing in the allocator or leaving a half-written file.

use crate::{Error, Result};
use std::path::Path;

/// Bytes of memory this machine can still give (Linux `MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Free bytes on the file system holding `dir` (for this user), if known.
pub fn available_disk(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// `n` bytes in GiB, for messages.
pub fn gib(n: u64) -> String {
    format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
}

/// What a training run holds at once, by part.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// `(what, bytes)`.
    pub parts: Vec<(&'static str, u64)>,
}

impl MemoryPlan {
    /// The memory of training a `c x d` dictionary with `k` steps on batches of `batch` rows,
    /// `shards` gradient micro-shards, `threads` workers, a Gram matrix of `gram_entry` bytes
    /// per entry when it fits `memory_budget` (the planner never holds one that does not).
    #[allow(clippy::too_many_arguments)]
    pub fn training(
        c: usize,
        d: usize,
        k: usize,
        batch: usize,
        shards: usize,
        threads: usize,
        gram_entry: usize,
        memory_budget: usize,
    ) -> MemoryPlan {
        let (c, d, k, n) = (c as u64, d as u64, k as u64, batch as u64);
        let cd = c.saturating_mul(d).saturating_mul(4);
        let gram = c.saturating_mul(c).saturating_mul(gram_entry as u64);
        MemoryPlan {
            parts: vec![
                // W, the scaled and the masked dictionary, dL/dD and the shard accumulators.
                ("dictionary, its copies and gradients", cd.saturating_mul(3 + shards as u64)),
                ("Adam state", cd.saturating_mul(2)),
                ("Gram matrix", if gram <= memory_budget as u64 { gram } else { 0 }),
                ("batch buffers", n * d * 4 * 6 + n * k * 12 + (threads as u64) * 256 * c * 4),
            ],
        }
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.parts.iter().fold(0u64, |a, (_, b)| a.saturating_add(*b))
    }

    /// Refuses the plan when it needs more than the memory available (when that is known).
    pub fn check(&self, what: &str) -> Result<()> {
        let need = self.total();
        match available_memory() {
            Some(have) if need > have => {
                let parts: Vec<String> = self
                    .parts
                    .iter()
                    .filter(|(_, b)| *b > 0)
                    .map(|(n, b)| format!("{n} {}", gib(*b)))
                    .collect();
                Err(Error::invalid(
                    "size",
                    format!(
                        "{what} needs about {} of memory ({}) but this machine has {} available: use fewer concepts or a smaller batch",
                        gib(need),
                        parts.join(", "),
                        gib(have)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Refuses to write `bytes` into `dir` when its file system has less room (when known).
pub fn check_disk(dir: &Path, bytes: u64, what: &str) -> Result<()> {
    match available_disk(dir) {
        Some(free) if bytes > free => Err(Error::file(
            dir,
            format!("not enough disk space for {what}: it needs {} and {} are free", gib(bytes), gib(free)),
        )),
        _ => Ok(()),
    }
}
