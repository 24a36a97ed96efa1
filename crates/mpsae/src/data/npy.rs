//! The NPY format (versions 1 to 3): header parsing and an f32 writer.

use crate::data::Elem;
use crate::io::atomic::write_atomic;
use crate::{Error, Result};
use std::path::Path;

/// What an NPY header says.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    /// Element type.
    pub elem: Elem,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte offset of the data.
    pub data_offset: usize,
}

/// Parses the header of an NPY file held in `bytes`. Errors say what is wrong (not NPY, truncated
/// header, unsupported dtype, Fortran order, bad shape).
pub fn parse_npy_header(bytes: &[u8]) -> std::result::Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an NPY file (bad magic bytes)".into());
    }
    let major = bytes[6];
    let (len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated NPY header".into());
            }
            (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12)
        }
        v => return Err(format!("unsupported NPY version {v}")),
    };
    let end = start.checked_add(len).ok_or("NPY header length overflows")?;
    if end > bytes.len() {
        return Err(format!(
            "truncated NPY header: it says {len} bytes, the file has {}",
            bytes.len() - start
        ));
    }
    let text = std::str::from_utf8(&bytes[start..end]).map_err(|_| "NPY header is not text")?;
    let field = |name: &str| -> std::result::Result<&str, String> {
        let key = format!("'{name}':");
        let i = text.find(&key).ok_or(format!("NPY header has no '{name}'"))?;
        Ok(text[i + key.len()..].trim_start())
    };
    let descr = field("descr")?;
    let descr =
        descr.strip_prefix('\'').and_then(|s| s.split('\'').next()).ok_or("NPY header: bad 'descr'")?;
    let elem = match descr {
        "<f2" | "=f2" => Elem::F16,
        "<f4" | "=f4" => Elem::F32,
        "<f8" | "=f8" => Elem::F64,
        other => {
            return Err(format!(
                "unsupported dtype '{other}' (use little-endian float16, float32 or float64)"
            ))
        }
    };
    let fortran = field("fortran_order")?;
    if fortran.starts_with("True") {
        return Err("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)".into());
    }
    if !fortran.starts_with("False") {
        return Err("NPY header: bad 'fortran_order'".into());
    }
    let shape = field("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("NPY header: bad 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("NPY header: bad dimension '{s}' in shape")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(NpyHeader { elem, shape, data_offset: end })
}

/// The bytes of an NPY 1.0 header for an array of dtype `descr` (e.g. `<f4`) and `shape`, padded
/// so that the data starts on a 64-byte boundary.
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// Writes an `n x d` f32 matrix as an NPY 1.0 file (atomically).
pub fn write_npy_f32(path: &Path, data: &[f32], n: usize, d: usize) -> Result<()> {
    if data.len() != n * d {
        return Err(Error::Shape(format!("{} values is not {n} x {d}", data.len())));
    }
    let mut bytes = npy_header("<f4", &[n, d]);
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_headers_and_rejects_lies() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<f2', 'fortran_order': False, 'shape': (4096, 384), }          \n";
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        let p = parse_npy_header(&b).unwrap();
        assert_eq!((p.elem, p.shape, p.data_offset), (Elem::F16, vec![4096, 384], 10 + h.len()));
        assert!(parse_npy_header(b"\x93NUMPY\x01\x00\xff\x00{").unwrap_err().contains("truncated"));
        assert!(parse_npy_header(b"PK\x03\x04 not npy").unwrap_err().contains("magic"));
        let bad = b.iter().map(|&c| if c == b'<' { b'>' } else { c }).collect::<Vec<_>>();
        assert!(parse_npy_header(&bad).unwrap_err().contains("unsupported dtype"));
    }
}
