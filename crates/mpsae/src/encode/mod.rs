//! Encoding whole datasets with a trained model, in eval mode: the one encode pass
//! ([`pass`]), the codes file of `mpsae encode` ([`codes_file`]) and the metrics of `mpsae eval`
//! ([`evaluate`]).

pub mod codes_file;
pub mod evaluate;
pub mod pass;

pub use codes_file::{encode_dataset, CodesFormat, EncodeSummary};
pub use evaluate::{evaluate, EvalOptions, EvalReport};
pub use pass::{encode_batches, EncodedBatch, PassOptions};
