//! Atomic file writes: a reader sees the old file or the new one, never half of one.

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| Error::file(path, "is not a file path"))?;
    let tmp = dir.join(temporary_name(&name.to_string_lossy()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The temporary file name under which [`write_atomic`] writes `name` before the rename.
fn temporary_name(name: &str) -> String {
    format!(".{name}.tmp{}", std::process::id())
}

/// Whether a file name is one of [`write_atomic`]'s temporaries (left behind by a killed process).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp")
}
