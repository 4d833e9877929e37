//! Why a probe could not run: the one error type of every probe.
use std::path::PathBuf;

use crate::detect::InvalidConfig;

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The source exists but says nothing usable.
    #[error("{what}: {reason}")]
    Unusable {
        /// What was read.
        what: String,
        /// Why it is of no use.
        reason: String,
    },
    /// The baseline store failed.
    #[error("baseline store: {0}")]
    Store(#[from] sled::Error),
    /// The `[detect]` settings are out of range.
    #[error("invalid config: {0}")]
    Config(#[from] InvalidConfig),
}
