//! What the subcommands share: the error type, thread pool, data and model loading.

use mpsae::data::{DataOptions, Dataset, NonFinite, Source};
use mpsae::kernels::bf16::Products;
use mpsae::kernels::gram::Precision;
use mpsae::kernels::pursuit::Strategy;
use mpsae::{MpSae, Settings};
use std::path::{Path, PathBuf};

/// The CLI's error: one line for the user.
pub type CliResult<T> = Result<T, String>;

/// Converts library errors to the CLI's one-line message.
pub fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The demo data built into the binary.
pub static DEMO_DATA: &[u8] = include_bytes!("../../../data/minilm_l3_demo.npy");
/// Its name in messages and configurations.
pub const DEMO_NAME: &str = "<embedded minilm_l3_demo.npy>";

/// Sets the rayon pool size.
pub fn init_threads(threads: Option<usize>) -> CliResult<()> {
    if let Some(t) = threads {
        if t == 0 {
            return Err("invalid --threads: must be at least 1".into());
        }
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().map_err(msg)?;
    }
    Ok(())
}

/// The data options of `encode` and `eval`.
#[derive(clap::Args)]
pub struct DataArgs {
    /// Activation files (.npy f16/f32/f64, .safetensors f16/bf16/f32), rows in file order.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Tensor to read from .safetensors data files (default: the file's only 2-D tensor).
    #[arg(long)]
    pub tensor: Option<String>,
    /// Leave out rows with NaN or infinite values (default: refuse the data).
    #[arg(long)]
    pub skip_nonfinite: bool,
}

impl DataArgs {
    /// Opens the files.
    pub fn open(&self) -> CliResult<Dataset> {
        open_data(&self.data, self.tensor.as_deref(), self.skip_nonfinite, false)
    }
}

/// Opens data files (or the demo data when `files` is empty and `allow_demo`).
pub fn open_data(
    files: &[PathBuf],
    tensor: Option<&str>,
    skip_nonfinite: bool,
    allow_demo: bool,
) -> CliResult<Dataset> {
    let opts = DataOptions {
        tensor: tensor.map(str::to_string),
        non_finite: if skip_nonfinite { NonFinite::Skip } else { NonFinite::Error },
    };
    if files.is_empty() {
        if !allow_demo {
            return Err("no --data file given".into());
        }
        let src = Source::from_static(DEMO_NAME.trim_matches(|c| c == '<' || c == '>'), DEMO_DATA, None)
            .map_err(msg)?;
        return Dataset::from_sources(vec![src], &opts).map_err(msg);
    }
    Dataset::open(files, &opts).map_err(msg)
}

/// Loads a model (from a run folder or a file), with its preprocessing and provenance.
pub fn load(p: &Path) -> CliResult<MpSae> {
    mpsae::io::load_model(p).map_err(msg)
}

/// How the kernels run: flattened into every command that runs a pursuit.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Pursuit strategy: auto (cost model), plain, gram, gram-picked.
    #[arg(long, default_value = "auto")]
    pub strategy: String,
    /// Storage of the Gram matrix: f16 (half the memory; near ties re-checked exactly, same
    /// picks) or f32.
    #[arg(long, default_value = "f16")]
    pub gram_precision: String,
    /// Operands of the dense products: auto (bf16 where the CPU has AVX-512 BF16), bf16 (twice the
    /// rate; near ties re-checked exactly, same picks) or f32.
    #[arg(long, default_value = "auto")]
    pub products: String,
}

impl EngineArgs {
    /// The engine these flags ask for (all threads of the pool).
    pub fn engine(&self) -> CliResult<Settings> {
        let gram_precision = match self.gram_precision.as_str() {
            "f16" => Precision::F16,
            "f32" => Precision::F32,
            other => return Err(format!("invalid --gram-precision '{other}': use f16 or f32")),
        };
        let products = Products::parse(&self.products)
            .ok_or_else(|| format!("invalid --products '{}': use auto, bf16 or f32", self.products))?;
        Ok(Settings {
            strategy: parse_strategy(&self.strategy)?,
            gram_precision,
            products,
            ..Settings::default()
        })
    }
}

/// Parses a `--strategy` value.
fn parse_strategy(s: &str) -> CliResult<Option<Strategy>> {
    Ok(match s {
        "auto" => None,
        "plain" => Some(Strategy::Plain),
        "gram" => Some(Strategy::Gram),
        "gram-picked" => Some(Strategy::GramPicked),
        other => return Err(format!("invalid --strategy '{other}': use auto, plain, gram or gram-picked")),
    })
}

/// Whether standard error is a terminal (progress bars, human-readable output).
pub fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Keeps freed batch-sized buffers in the heap instead of giving them back to the kernel.
///
/// A training step allocates and frees a few `batch x d` and `c x d` buffers (tens of MB). glibc
/// serves those with fresh `mmap`s by default, so every step page-faults them in again (zeroed by
/// the kernel) and unmaps them (TLB shootdowns on every core): measured here as 30-50 ms of a
/// 300-500 ms step at batch 4096. Raising the mmap threshold to its maximum (32 MiB) and never
/// trimming the heap keeps them mapped and reused; the step's peak is unchanged, since those
/// buffers are live at the same time anyway ([`release_free_memory`] hands the rest back).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Gives the heap's free memory back to the kernel (glibc), e.g. between benchmark points, so
/// that one point's buffers do not count in the next one's resident memory.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
