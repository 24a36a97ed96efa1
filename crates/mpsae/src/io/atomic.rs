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

/// Writes the folder `dir` whole or not at all: refused when `dir` holds anything unless `force`
/// (the message names `--force`/`force=True`), `write` fills a temporary folder beside it, which
/// then takes `dir`'s place (an old `dir` is removed only once the new one is complete; a failure
/// leaves it as it was and removes the temporary folder).
pub fn write_folder(dir: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::file(dir, "is a file, not a folder"));
    }
    let occupied = std::fs::read_dir(dir).map(|mut e| e.next().is_some()).unwrap_or(false);
    if occupied && !force {
        return Err(Error::file(
            dir,
            "is not empty: give another folder, or replace it with --force (force=True)",
        ));
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "folder".into());
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old{}", std::process::id()));
    let had = dir.exists();
    if had {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        if had {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(dir, e));
    }
    if had {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}
