//! One module per subcommand.

pub mod bench;
pub mod compare;
pub mod concepts;
pub mod encode;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod train;
