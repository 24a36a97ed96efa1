//! One memory-mapped data file: an `.npy` array or a tensor of a `.safetensors` file.

use crate::data::npy::parse_npy_header;
use crate::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// Stored element type of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// f32.
    F32,
    /// f64.
    F64,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F16 | Elem::BF16 => 2,
            Elem::F32 => 4,
            Elem::F64 => 8,
        }
    }

    /// Converts little-endian bytes to f32 into `out` (same number of elements).
    pub fn convert(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Elem::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Elem::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Elem::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes(b.try_into().unwrap());
                }
            }
            Elem::F64 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    *o = f64::from_le_bytes(b.try_into().unwrap()) as f32;
                }
            }
        }
    }
}

/// Where a source's bytes live.
enum Storage {
    /// Only while the header is parsed: files are then read with `pread` ([`Storage::File`]).
    Map(Mmap),
    /// A file read with positioned reads, which return errors (not SIGBUS) when it shrinks.
    File(FileBytes),
    Static(&'static [u8]),
    Owned(Vec<u8>),
    /// Memory owned by the caller of [`Source::from_raw`] (a numpy array).
    Borrowed(RawBytes),
}

/// An open data file and what it was when opened, to tell when it changes under a job.
struct FileBytes {
    file: std::fs::File,
    len: u64,
    #[cfg(unix)]
    ino: (u64, u64),
}

/// A pointer and length to memory that the caller of [`Source::from_raw`] keeps alive and
/// unchanged while the source lives.
struct RawBytes {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory is only read, and `Source::from_raw`'s caller guarantees it outlives the
// source and does not change (read-only from every thread, as a `&[u8]` is).
unsafe impl Send for RawBytes {}
unsafe impl Sync for RawBytes {}

impl std::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Map(m) => m,
            Storage::File(_) => unreachable!("file sources are read with pread"),
            Storage::Static(s) => s,
            Storage::Owned(v) => v,
            // SAFETY: see `RawBytes`.
            Storage::Borrowed(r) => unsafe { std::slice::from_raw_parts(r.ptr, r.len) },
        }
    }
}

/// A memory-mapped `rows x d` matrix in a file (or in bytes built into the program).
pub struct Source {
    /// The file (or the name of the built-in data).
    pub path: PathBuf,
    map: Storage,
    offset: usize,
    /// Element type.
    pub elem: Elem,
    /// Rows.
    pub rows: usize,
    /// Row dimension.
    pub d: usize,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({}, {:?}, {} x {})", self.path.display(), self.elem, self.rows, self.d)
    }
}

impl Source {
    /// Opens a data file: `.npy`, or `.safetensors` with the tensor `tensor` (or its only 2-D
    /// tensor). The layout is checked against the file size here; values are checked by
    /// [`crate::data::Dataset::open`].
    pub fn open(path: &Path, tensor: Option<&str>) -> Result<Source> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed by another process while mapped is the
        // user's race (documented), as with every mmap-based loader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut source = Source::from_storage(path, Storage::Map(map), tensor)?;
        // From here on the file is read with positioned reads: a file that shrinks or is replaced
        // under a running job gives an error naming it, never a SIGBUS (see `Source::check`).
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        let ino = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        source.map = Storage::File(FileBytes {
            file,
            len: meta.len(),
            #[cfg(unix)]
            ino,
        });
        Ok(source)
    }

    /// Checks that the file behind this source is still the one opened, at its size: an error
    /// names it and says what changed. Sources in memory always pass.
    pub fn check(&self) -> Result<()> {
        let Storage::File(f) = &self.map else { return Ok(()) };
        let now = f.file.metadata().map_err(|e| Error::io(&self.path, e))?;
        if now.len() != f.len {
            return Err(Error::file(
                &self.path,
                format!("changed while in use: it held {} bytes, now {} (rewritten or truncated by another process?)", f.len, now.len()),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(on_disk) = std::fs::metadata(&self.path) {
                if (on_disk.dev(), on_disk.ino()) != f.ino {
                    return Err(Error::file(
                        &self.path,
                        "was replaced by another file while in use (the run keeps reading the one it opened; restart or resume to use the new one)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A source over bytes built into the program (e.g. the demo data), named `name` (whose
    /// extension gives the format).
    pub fn from_static(name: &str, bytes: &'static [u8], tensor: Option<&str>) -> Result<Source> {
        Source::from_storage(Path::new(name), Storage::Static(bytes), tensor)
    }

    /// A source over bytes in memory, named `name` (whose extension gives the format).
    pub fn from_bytes(name: &str, bytes: Vec<u8>, tensor: Option<&str>) -> Result<Source> {
        Source::from_storage(Path::new(name), Storage::Owned(bytes), tensor)
    }

    /// A source over `rows x d` elements of type `elem` at `ptr` (little-endian, row-major,
    /// contiguous), named `name` in messages, without copying them.
    ///
    /// # Safety
    /// The `rows·d·elem.size()` bytes at `ptr` must stay valid and unchanged while the source
    /// (and any dataset built from it) lives.
    pub unsafe fn from_raw(name: &str, elem: Elem, ptr: *const u8, rows: usize, d: usize) -> Result<Source> {
        let path = PathBuf::from(name);
        if rows == 0 {
            return Err(Error::file(path, "has zero rows"));
        }
        if d == 0 {
            return Err(Error::file(path, "rows have dimension 0"));
        }
        let len = rows
            .checked_mul(d)
            .and_then(|v| v.checked_mul(elem.size()))
            .ok_or_else(|| Error::file(&path, "is too large"))?;
        Ok(Source { path, map: Storage::Borrowed(RawBytes { ptr, len }), offset: 0, elem, rows, d })
    }

    fn from_storage(path: &Path, map: Storage, tensor: Option<&str>) -> Result<Source> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let (elem, shape, offset, len) = match ext.as_str() {
            "npy" => {
                let h = parse_npy_header(&map).map_err(|m| Error::file(path, m))?;
                let len = map.len() - h.data_offset;
                (h.elem, h.shape, h.data_offset, len)
            }
            "safetensors" => safetensors_layout(path, &map, tensor)?,
            _ => return Err(Error::file(path, "unknown data format (expected .npy or .safetensors)")),
        };
        if shape.len() != 2 {
            return Err(Error::file(
                path,
                format!("array has shape {shape:?}; expected 2 dimensions (rows x d)"),
            ));
        }
        let (rows, d) = (shape[0], shape[1]);
        if rows == 0 {
            return Err(Error::file(path, "has zero rows"));
        }
        if d == 0 {
            return Err(Error::file(path, "rows have dimension 0"));
        }
        let need = rows
            .checked_mul(d)
            .and_then(|v| v.checked_mul(elem.size()))
            .ok_or_else(|| Error::file(path, format!("shape {shape:?} is too large")))?;
        if len < need {
            return Err(Error::file(
                path,
                format!("truncated: the header says {rows} x {d} {elem:?} ({need} bytes) but the file holds {len}"),
            ));
        }
        if len > need && ext == "npy" {
            return Err(Error::file(
                path,
                format!("{} bytes after the {rows} x {d} array: the header lies about its size", len - need),
            ));
        }
        Ok(Source { path: path.to_path_buf(), map, offset, elem, rows, d })
    }

    /// A cheap content fingerprint of the source's bytes (FNV-1a over its size, the first and
    /// last 64 KiB and 16 evenly spaced 4 KiB blocks): the same for the same file, different
    /// when it was rewritten with other rows, read in about a millisecond even for many GB.
    pub fn fingerprint(&self) -> Result<String> {
        let total = (self.rows * self.d * self.elem.size()) as u64;
        let mut spans: Vec<(u64, u64)> = vec![(0, total.min(65536)), (total.saturating_sub(65536), total)];
        for i in 1..=16u64 {
            let at = total / 17 * i;
            spans.push((at, (at + 4096).min(total)));
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h ^= x as u64;
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        };
        eat(&total.to_le_bytes());
        for (a, b) in spans {
            let (a, b) = (self.offset as u64 + a, self.offset as u64 + b);
            match &self.map {
                Storage::File(f) => {
                    let mut buf = vec![0u8; (b - a) as usize];
                    read_exact_at(&f.file, &mut buf, a).map_err(|e| Error::io(&self.path, e))?;
                    eat(&buf);
                }
                bytes => eat(&bytes[a as usize..b as usize]),
            }
        }
        Ok(format!("{h:016x}"))
    }

    /// Rows `start..start + count` as f32 into `out` (`count·d` values); an error names the file
    /// and the row when the file no longer holds them.
    pub fn read_rows(&self, start: usize, count: usize, out: &mut [f32]) -> Result<()> {
        let w = self.d * self.elem.size();
        let at = self.offset + start * w;
        match &self.map {
            Storage::File(f) => {
                let mut buf = vec![0u8; count * w];
                read_exact_at(&f.file, &mut buf, at as u64).map_err(|e| Error::Row {
                    path: self.path.clone(),
                    row: start,
                    message: format!("cannot be read ({e}): the file changed while in use"),
                })?;
                self.elem.convert(&buf, out);
            }
            bytes => self.elem.convert(&bytes[at..at + count * w], out),
        }
        Ok(())
    }

    /// Row `i` as f32 into `out` (`d` values).
    pub fn read_row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        self.read_rows(i, 1, out)
    }
}

fn safetensors_layout(
    path: &Path,
    map: &[u8],
    tensor: Option<&str>,
) -> Result<(Elem, Vec<usize>, usize, usize)> {
    let st = SafeTensors::deserialize(map)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file ({e})")))?;
    let names = st.names();
    let name = match tensor {
        Some(t) => {
            if !names.iter().any(|n| n.as_str() == t) {
                let mut all: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                all.sort();
                return Err(Error::file(path, format!("no tensor named '{t}' (it has: {})", all.join(", "))));
            }
            t.to_string()
        }
        None => {
            let two_d: Vec<String> =
                st.tensors().into_iter().filter(|(_, v)| v.shape().len() == 2).map(|(n, _)| n).collect();
            match two_d.as_slice() {
                [one] => one.clone(),
                [] => return Err(Error::file(path, "has no 2-D tensor to read rows from")),
                many => {
                    let mut many = many.to_vec();
                    many.sort();
                    return Err(Error::file(
                        path,
                        format!("has several 2-D tensors ({}); choose one by name", many.join(", ")),
                    ));
                }
            }
        }
    };
    let view = st.tensor(&name).map_err(|e| Error::file(path, format!("tensor '{name}': {e}")))?;
    let elem = match view.dtype() {
        Dtype::F16 => Elem::F16,
        Dtype::BF16 => Elem::BF16,
        Dtype::F32 => Elem::F32,
        Dtype::F64 => Elem::F64,
        other => {
            return Err(Error::file(
                path,
                format!("tensor '{name}' has unsupported dtype {other:?} (use f16, bf16 or f32)"),
            ))
        }
    };
    // The view borrows `map`; its data pointer gives the offset.
    let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
    Ok((elem, view.shape().to_vec(), offset, view.data().len()))
}

/// `pread` of exactly `buf.len()` bytes at `offset`.
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}
