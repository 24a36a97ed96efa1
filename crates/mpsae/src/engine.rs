//! How the model runs its kernels: threads, pursuit strategy, memory budget and Gram precision.
//!
//! These are the backend's [`Settings`](mpsae_kernels::backend::Settings); the strategy the CPU
//! backend runs when none is forced is chosen by its planner
//! (`mpsae_kernels::backend::cpu::planner`).

/// Execution settings of a model (not part of its configuration: they change speed, not results
/// beyond float rounding).
pub type Engine = mpsae_kernels::backend::Settings;
