//! The operations of the job-store contract. In degraded mode each runs on the
//! outage's own fallback key (`<outage>#<key>`), and during a hand-over a call on a
//! record still on its way to Redis waits for it.

use std::time::Duration;

use palisade_cache_core::keyed_op;

use crate::model::{FieldMap, JobStatus};
use crate::store::{RawChange, RawOutcome, StoredRecord};

keyed_op! {
    /// Creates (replaces, or with `if_absent` only creates) a record.
    Create -> bool, "jobs.create" {
        /// The storage key.
        key,
        /// The encoded fields.
        fields: FieldMap,
        /// The record's TTL.
        ttl: Duration,
        /// Write nothing (and answer `false`) when a live record exists.
        if_absent: bool,
    }
    handover key
}
keyed_op! {
    /// Writes fields into an existing record.
    Update -> bool, "jobs.update" {
        /// The storage key.
        key,
        /// The encoded fields.
        fields: FieldMap,
    }
    handover key
}
keyed_op! {
    /// Whether a live record is there.
    Exists -> bool, "jobs.exists" {
        /// The storage key.
        key
    }
    handover key
}
keyed_op! {
    /// Every field of the live record, and the backend's time.
    Get -> Option<StoredRecord>, "jobs.get" {
        /// The storage key.
        key
    }
    handover key
}
keyed_op! {
    /// Compare-and-set of the status, with fields.
    Transition -> RawOutcome, "jobs.transition" {
        /// The storage key.
        key,
        /// The status the record must have.
        from: JobStatus,
        /// The status it moves to.
        to: JobStatus,
        /// The encoded fields written in the same step.
        fields: FieldMap,
    }
    handover key
}
keyed_op! {
    /// A running job's sign of life.
    Heartbeat -> RawOutcome, "jobs.heartbeat" {
        /// The storage key.
        key
    }
    handover key
}
keyed_op! {
    /// Removes the record.
    Delete -> bool, "jobs.delete" {
        /// The storage key.
        key
    }
    handover key
}
keyed_op! {
    /// Waits until the record's version is above `after` or the record is gone, at
    /// most `within` (a backend may return earlier, with
    /// [`RawChange::Unchanged`](crate::RawChange::Unchanged)).
    Changed -> RawChange, "jobs.changed" {
        /// The storage key.
        key,
        /// The version the caller has seen.
        after: u64,
        /// The longest wait.
        within: Duration,
    }
    handover key
}
