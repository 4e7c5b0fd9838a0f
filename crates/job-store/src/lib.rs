#![doc = include_str!("../README.md")]

pub mod model;
pub mod op;
pub mod recovery;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use model::{FieldMap, JobRecord, JobStatus, Patch};
pub use recovery::{JobFallback, RecoveryReport, replay};
pub use store::{
    JobBackend, JobEvent, JobStats, JobStore, JobStoreConfig, JobWatch, Outcome, RawChange, RawOutcome, StoredRecord,
    WaitOutcome,
};
