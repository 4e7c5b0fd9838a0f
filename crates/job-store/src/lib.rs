#![doc = include_str!("../README.md")]

pub mod failover;
pub mod model;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use failover::{JobFailover, JobFallback, RecoveryReport, StrictJobs};
pub use model::{FieldMap, JobRecord, JobStatus, Patch};
pub use store::{JobBackend, JobStore, JobStoreConfig, Outcome, RawOutcome, StoredRecord};
