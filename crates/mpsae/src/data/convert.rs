//! Element conversions from stored dtypes to f32.

use safetensors::tensor::Dtype;

/// Little-endian bytes of `dtype` to f32 values. Errors name the unsupported dtype.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let f = |size: usize| {
        if bytes.len() % size != 0 {
            Err(format!("{} bytes is not a whole number of {dtype:?} values", bytes.len()))
        } else {
            Ok(bytes.chunks_exact(size))
        }
    };
    Ok(match dtype {
        Dtype::F32 => f(4)?.map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        Dtype::F16 => f(2)?.map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        Dtype::BF16 => f(2)?.map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        Dtype::F64 => f(8)?.map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        Dtype::I64 => f(8)?.map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
        other => return Err(format!("unsupported dtype {other:?} (use f32, f16, bf16 or f64)")),
    })
}
