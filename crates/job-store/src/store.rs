//! The job-store contract: [`JobBackend`] for implementors, [`JobStore`] for users.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use palisade_cache_core::{
    Error, ErrorCounters, Format, Namespace, Op, Provenance, Run, StatusSnapshot, Tagged, on_behalf_of,
};

use crate::model::{self, FieldMap, JobRecord, JobStatus, Patch};
use crate::op;

mod watch;
pub use watch::{JobEvent, JobWatch, WaitOutcome};

/// What a record looked like when the backend read it, with the backend's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The raw fields.
    pub fields: FieldMap,
    /// The backend's time at the read (the Redis server's `TIME` in Redis).
    pub now: SystemTime,
}

impl StoredRecord {
    /// A stored record.
    pub fn new(fields: FieldMap, now: SystemTime) -> Self {
        StoredRecord { fields, now }
    }
}

/// The outcome of a compare-and-set (transition, heartbeat) at the backend level.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawOutcome {
    /// Applied.
    Applied,
    /// No record under the key.
    NotFound,
    /// The status did not match; here is the stored status (`None`: no status field).
    Refused(Option<Bytes>),
}

/// What [`op::Changed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawChange {
    /// The record, whose version is above the one the caller had seen.
    Changed(StoredRecord),
    /// There is no live record (deleted, expired, never created).
    Gone,
    /// Nothing changed within the wait.
    Unchanged,
}

palisade_cache_core::contract! {
/// What a job backend implements: [`Backend`](palisade_cache_core::Backend) and [`Run`](palisade_cache_core::Run) for every operation of
/// [`op`](crate::op). Keys arrive encoded and validated; fields arrive encoded.
///
/// # Behavior
///
/// - [`Create`](crate::op::Create) replaces any record under the key in one atomic
///   step: delete, write all fields plus `created_at`, `updated_at` and `ttl_ms`, set
///   the expiry. With `if_absent` it writes nothing and returns `false` when a live
///   record exists.
/// - [`Update`](crate::op::Update) writes the fields and `updated_at`, and refreshes
///   the expiry to the record's TTL, atomically and only if the record exists; returns
///   whether it did.
/// - [`Exists`](crate::op::Exists) says whether a live record is there.
/// - [`Get`](crate::op::Get) returns every field of the live record and the backend's
///   time.
/// - [`Transition`](crate::op::Transition) compares the stored status with `from`
///   and, if equal, writes `to`, the fields, `updated_at` (and `finished_at` when `to`
///   is terminal) and refreshes the expiry, in one atomic step.
/// - [`Heartbeat`](crate::op::Heartbeat) sets `heartbeat_at` (backend time) and
///   refreshes the expiry, only if the stored status is `running`.
/// - [`Delete`](crate::op::Delete) removes the record and says whether it was there.
/// - Every write that took effect (create, update, transition, heartbeat) sets the
///   stored `version` to one more than before (1 for a new record) in the same atomic
///   step, and wakes the [`Changed`](crate::op::Changed) calls waiting on the record; a
///   delete wakes them too.
/// - [`Changed`](crate::op::Changed) returns the record as soon as its version is
///   above `after` (at once if it already is), [`RawChange::Gone`] as soon as there is
///   no live record, and [`RawChange::Unchanged`] when `within` passed first (or
///   earlier, at the backend's longest block). A write made while the call starts is
///   never missed: it is either in the first look or wakes the call.
/// - Expired records behave as absent everywhere.
pub trait JobBackend:
        op::Create,
        op::Update,
        op::Exists,
        op::Get,
        op::Transition,
        op::Heartbeat,
        op::Delete,
        op::Changed;
}

/// The answer of [`JobStore::transition`] and [`JobStore::heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Applied.
    Applied,
    /// Refused: the record's status is `found`.
    Refused {
        /// The status the record had.
        found: JobStatus,
    },
    /// There is no record (never created, deleted, or expired).
    NotFound,
}

/// Limits and timing of a [`JobStore`], checked before any I/O, the same for every
/// backend.
///
/// | limit | default |
/// |---|---|
/// | id | 1 to 256 bytes |
/// | application field name | 1 to 128 bytes |
/// | one encoded field value | 512 KiB |
/// | fields in one write (create, update, transition) | 1,000 |
/// | bytes in one write (names and values) | 4 MiB |
/// | TTL | 1 ms to 10 years ([`palisade_cache_core::limits`]) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStoreConfig {
    /// The longest id, in bytes (default 256).
    pub max_id_len: usize,
    /// The longest application field name, in bytes (default 128).
    pub max_field_name_len: usize,
    /// The largest encoded field value, in bytes (default 512 KiB).
    pub max_field_len: usize,
    /// The most fields one write may carry (default 1,000).
    pub max_fields: usize,
    /// The most bytes (field names and values) one write may carry (default 4 MiB): a
    /// request larger than the server's buffers would close the connection, which is
    /// an outage, not bad input.
    pub max_write_len: usize,
    /// A running job without a heartbeat for longer than this is presumed dead
    /// (default 30 s).
    pub heartbeat_timeout: Duration,
    /// The format fields are written in (default postcard). [`Format::Json`] is for
    /// records other languages read: numbers and strings as JSON, UTF-8 bytes as a JSON
    /// string, other bytes as an array of numbers, each behind the three-byte envelope
    /// ([`palisade_cache_core::codec`]). Both formats are always read.
    pub field_format: Format,
    /// How long a watch ([`JobStore::watch`], [`JobStore::wait_for`]) waits for a
    /// wake-up before it looks at the record again (default 2 s): the most a lost
    /// wake-up costs.
    pub watch_recheck: Duration,
}

impl Default for JobStoreConfig {
    fn default() -> Self {
        JobStoreConfig {
            max_id_len: 256,
            max_field_name_len: 128,
            max_field_len: 512 * 1024,
            max_fields: 1_000,
            max_write_len: 4 * 1024 * 1024,
            heartbeat_timeout: Duration::from_secs(30),
            field_format: Format::Postcard,
            watch_recheck: JobStoreConfig::DEFAULT_WATCH_RECHECK,
        }
    }
}

impl JobStoreConfig {
    /// The default re-check period of a watch: 2 s.
    pub const DEFAULT_WATCH_RECHECK: Duration = Duration::from_secs(2);

    /// Sets the re-check period of a watch (at least 1 ms).
    pub fn with_watch_recheck(mut self, d: Duration) -> Self {
        self.watch_recheck = d.max(palisade_cache_core::limits::MIN_DURATION);
        self
    }

    /// Sets the heartbeat timeout.
    pub fn with_heartbeat_timeout(mut self, d: Duration) -> Self {
        self.heartbeat_timeout = d;
        self
    }

    /// Sets the format fields are written in.
    pub fn with_field_format(mut self, format: Format) -> Self {
        self.field_format = format;
        self
    }

    /// Sets the largest encoded field value.
    pub fn with_max_field_len(mut self, n: usize) -> Self {
        self.max_field_len = n;
        self
    }
}

/// A snapshot of a job store's counters and state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStats {
    /// Records created.
    pub created: u64,
    /// Updates that found their record.
    pub updated: u64,
    /// Transitions applied.
    pub transitions: u64,
    /// Records deleted.
    pub deleted: u64,
    /// Answers served by the degraded fallback.
    pub degraded: u64,
    /// Waits of a watch that ended without a change (each re-check period that
    /// passed in silence): many of them on a record that changes mean lost wake-ups.
    pub watch_rechecks: u64,
    /// Mode, health, errors by kind and the last error.
    pub status: StatusSnapshot,
}

#[derive(Debug, Default)]
struct Counters {
    created: AtomicU64,
    updated: AtomicU64,
    transitions: AtomicU64,
    deleted: AtomicU64,
    degraded: AtomicU64,
    watch_rechecks: AtomicU64,
    errors: ErrorCounters,
}

/// A tenant's job records over a backend. Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct JobStore<B> {
    backend: B,
    ns: Arc<Namespace>,
    tenant: Arc<str>,
    config: JobStoreConfig,
    counters: Arc<Counters>,
}

impl<B> std::fmt::Debug for JobStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore")
            .field("namespace", &self.ns)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<B: JobBackend> JobStore<B> {
    /// Job records of `namespace`'s tenant, over `backend`.
    pub fn new(backend: B, namespace: Namespace) -> Self {
        JobStore {
            backend,
            tenant: Arc::from(namespace.tenant()),
            ns: Arc::new(namespace),
            config: JobStoreConfig::default(),
            counters: Arc::default(),
        }
    }

    /// The same store (backend, counters, configuration) for another namespace of the
    /// tenant.
    pub fn namespace(&self, name: &str) -> Result<Self, Error> {
        Ok(self.with_ns(self.ns.sibling(name)?))
    }

    /// The same store (backend, counters, configuration) for another tenant.
    pub fn for_tenant(&self, tenant: &str) -> Result<Self, Error> {
        Ok(self.with_ns(self.ns.with_tenant(tenant)?))
    }

    /// The same backend, configuration and counters over `ns`.
    fn with_ns(&self, ns: Namespace) -> Self {
        JobStore {
            backend: self.backend.clone(),
            tenant: Arc::from(ns.tenant()),
            ns: Arc::new(ns),
            config: self.config,
            counters: Arc::clone(&self.counters),
        }
    }

    /// Counters and state.
    ///
    /// # Behavior
    ///
    /// - `created`, `updated`, `transitions` and `deleted` count writes that took
    ///   effect; `degraded` counts answers tagged `LocalDegraded`.
    /// - `status` holds the failures by kind and the last one (redacted), and the mode,
    ///   health and outage start from the backend's supervisor.
    /// - Clones and [`JobStore::namespace`] siblings share the counters.
    pub fn stats(&self) -> JobStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        JobStats {
            created: load(&c.created),
            updated: load(&c.updated),
            transitions: load(&c.transitions),
            deleted: load(&c.deleted),
            degraded: load(&c.degraded),
            watch_rechecks: load(&c.watch_rechecks),
            status: c.errors.snapshot(self.backend.status()),
        }
    }

    /// Runs `op` on the backend on behalf of the store's tenant, and counts its answer.
    async fn run<O: Op>(&self, op: O) -> Result<Tagged<O::Output>, Error>
    where
        B: Run<O>,
    {
        let r = on_behalf_of(&self.tenant, self.backend.run(&op)).await;
        if let Ok(t) = &r {
            if t.provenance == Provenance::LocalDegraded {
                self.counters.degraded.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Counts `r`'s error, or `n` when `r` took effect.
    fn count<T>(&self, r: Result<T, Error>, n: &AtomicU64, took_effect: impl FnOnce(&T) -> bool) -> Result<T, Error> {
        match &r {
            Ok(v) if took_effect(v) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => self.counters.errors.note(e),
        }
        r
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: JobStoreConfig) -> Self {
        self.config = config;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The namespace.
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }

    /// The storage key of `id` (checked).
    pub fn key(&self, id: &str) -> Result<String, Error> {
        if id.is_empty() {
            return Err(Error::invalid_input("the job id must not be empty"));
        }
        if id.len() > self.config.max_id_len {
            return Err(Error::invalid_input(format!(
                "the job id is {} bytes, the limit is {}",
                id.len(),
                self.config.max_id_len
            )));
        }
        self.ns.key(palisade_cache_core::Contract::Jobs, id)
    }

    fn check_fields(&self, fields: &FieldMap) -> Result<(), Error> {
        if fields.len() > self.config.max_fields {
            return Err(Error::invalid_input(format!(
                "a write carries {} fields, the limit is {}",
                fields.len(),
                self.config.max_fields
            )));
        }
        let bytes: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > self.config.max_write_len {
            return Err(Error::invalid_input(format!(
                "a write carries {bytes} bytes, the limit is {}",
                self.config.max_write_len
            )));
        }
        for (name, value) in fields {
            if let Some(user) = name.strip_prefix(model::field::USER_PREFIX) {
                if user.is_empty() || user.len() > self.config.max_field_name_len {
                    return Err(Error::invalid_input(format!(
                        "a field name must be 1 to {} bytes, got {}",
                        self.config.max_field_name_len,
                        user.len()
                    )));
                }
            }
            if value.len() > self.config.max_field_len {
                return Err(Error::invalid_input(format!(
                    "field `{name}` encodes to {} bytes, the limit is {}",
                    value.len(),
                    self.config.max_field_len
                )));
            }
        }
        Ok(())
    }

    fn check_ttl(ttl: Duration) -> Result<(), Error> {
        palisade_cache_core::limits::check_ttl(ttl)
    }

    fn decode_status(raw: Option<Bytes>) -> Result<JobStatus, Error> {
        let mut fields = FieldMap::new();
        if let Some(raw) = raw {
            fields.insert(model::field::STATUS.to_owned(), raw);
        }
        Ok(model::decode_record(&fields, SystemTime::UNIX_EPOCH, Duration::MAX)?.status)
    }

    fn outcome(raw: RawOutcome) -> Result<Outcome, Error> {
        Ok(match raw {
            RawOutcome::Applied => Outcome::Applied,
            RawOutcome::NotFound => Outcome::NotFound,
            RawOutcome::Refused(found) => Outcome::Refused {
                found: Self::decode_status(found)?,
            },
        })
    }

    /// Creates the record `id`, replacing any existing one.
    ///
    /// # Behavior
    ///
    /// - Atomic: the old record's fields never mix with the new one's.
    /// - Sets `created_at` and `updated_at` (store time) and expires after `ttl`.
    /// - An empty or oversized id, an empty or oversized field name, a field value, a
    ///   field count or a write over its limit ([`JobStoreConfig`]), or a TTL outside
    ///   1 ms to 10 years is [`Error::InvalidInput`] before any I/O.
    /// - A call that fails has written nothing: every input that could make the
    ///   backend fail half-way is checked before its first write.
    /// - A write at the field-count limit is accepted and stored whole, by `create`,
    ///   [`JobStore::update`] and [`JobStore::transition`] alike.
    pub async fn create(&self, id: &str, record: &JobRecord, ttl: Duration) -> Result<Tagged<()>, Error> {
        let r = async {
            let key = self.key(id)?;
            Self::check_ttl(ttl)?;
            let fields = model::encode_record(record, self.config.field_format)?;
            self.check_fields(&fields)?;
            Ok(self.run(op::Create::new(key, fields, ttl, false)).await?.map(drop))
        }
        .await;
        self.count(r, &self.counters.created, |_| true)
    }

    /// Creates the record `id` only if none exists.
    ///
    /// # Behavior
    ///
    /// - When a live record exists: [`Error::Conflict`], and the existing record is
    ///   unchanged. An expired record counts as absent.
    /// - Otherwise as [`JobStore::create`].
    pub async fn create_if_absent(&self, id: &str, record: &JobRecord, ttl: Duration) -> Result<Tagged<()>, Error> {
        let r = async {
            let key = self.key(id)?;
            Self::check_ttl(ttl)?;
            let fields = model::encode_record(record, self.config.field_format)?;
            self.check_fields(&fields)?;
            let created = self.run(op::Create::new(key, fields, ttl, true)).await?;
            if created.value {
                Ok(created.map(drop))
            } else {
                Err(Error::conflict(format!("job {id:?} already exists")))
            }
        }
        .await;
        self.count(r, &self.counters.created, |_| true)
    }

    /// Writes the patch's fields into the record `id`.
    ///
    /// # Behavior
    ///
    /// - Writes only the patch's fields, sets `updated_at`, and refreshes the expiry to
    ///   the record's TTL, in one atomic step; returns `true`.
    /// - Only if the record exists: after expiry or delete it writes nothing, creates
    ///   nothing, and returns `false` (no resurrection).
    /// - Concurrent updates of disjoint fields never lose each other's writes; on the
    ///   same field the last writer wins.
    /// - An empty patch writes nothing and refreshes nothing; it returns whether the
    ///   record exists.
    /// - The status cannot be patched: use [`JobStore::transition`].
    pub async fn update(&self, id: &str, patch: &Patch) -> Result<Tagged<bool>, Error> {
        let r = async {
            let key = self.key(id)?;
            if patch.is_empty() {
                return self.run(op::Exists::new(key)).await;
            }
            let fields = model::encode_patch(patch, self.config.field_format)?;
            self.check_fields(&fields)?;
            self.run(op::Update::new(key, fields)).await
        }
        .await;
        self.count(r, &self.counters.updated, |t| t.value && !patch.is_empty())
    }

    /// The whole record `id`, or `None`.
    ///
    /// # Behavior
    ///
    /// - Returns every field, decoded; fields stored as envelopes or as plain text
    ///   (what a script or another tool writes) both decode.
    /// - `None` when the record never existed, was deleted or expired.
    /// - A field that cannot be decoded, an unknown status, or a record without a
    ///   status is [`Error::Codec`] naming the field.
    /// - `presumed_dead` is set for a running job whose last heartbeat (or update) is
    ///   older than `heartbeat_timeout` by the store's clock.
    pub async fn get(&self, id: &str) -> Result<Tagged<Option<JobRecord>>, Error> {
        let r = async {
            let key = self.key(id)?;
            let stored = self.run(op::Get::new(key)).await?;
            let timeout = self.config.heartbeat_timeout;
            stored.try_map(|s| s.map(|s| model::decode_record(&s.fields, s.now, timeout)).transpose())
        }
        .await;
        self.counters.errors.watch(r)
    }

    /// Moves the record `id` from `from` to `to`, writing `patch` in the same step.
    ///
    /// # Behavior
    ///
    /// - Allowed edges: Queued→Running, Running→Completed, Running→Failed, Queued→Failed.
    ///   Any other pair is [`Error::InvalidInput`] before any I/O, so a terminal status
    ///   never changes.
    /// - Compare-and-set, atomic with the patch: applied only when the stored status is
    ///   `from`; otherwise [`Outcome::Refused`] with the status found, and nothing is
    ///   written. [`Outcome::NotFound`] when there is no record.
    /// - Sets `updated_at`, and `finished_at` when `to` is terminal; refreshes the expiry.
    pub async fn transition(
        &self,
        id: &str,
        from: JobStatus,
        to: JobStatus,
        patch: &Patch,
    ) -> Result<Tagged<Outcome>, Error> {
        let r = async {
            let key = self.key(id)?;
            if !from.can_become(to) {
                return Err(Error::invalid_input(format!(
                    "{from} → {to} is not a transition of the job lifecycle"
                )));
            }
            let fields = model::encode_patch(patch, self.config.field_format)?;
            self.check_fields(&fields)?;
            self.run(op::Transition::new(key, from, to, fields))
                .await?
                .try_map(Self::outcome)
        }
        .await;
        if let Ok(t) = &r {
            palisade_cache_core::observe::job_transition(from.as_str(), to.as_str(), t.value == Outcome::Applied);
        }
        self.count(r, &self.counters.transitions, |t| t.value == Outcome::Applied)
    }

    /// Records that the hand-off of a queued job to its queue failed: Queued→Failed with
    /// `reason` as the error (and `finished_at` as the time).
    pub async fn fail_enqueue(&self, id: &str, reason: &str) -> Result<Tagged<Outcome>, Error> {
        self.transition(id, JobStatus::Queued, JobStatus::Failed, &Patch::new().error(reason))
            .await
    }

    /// Records a sign of life from the worker of the running job `id`.
    ///
    /// # Behavior
    ///
    /// - Sets `heartbeat_at` to the store's time (the Redis server's) and refreshes the
    ///   expiry, only if the job is `Running`; otherwise [`Outcome::Refused`] with the
    ///   status found, or [`Outcome::NotFound`].
    pub async fn heartbeat(&self, id: &str) -> Result<Tagged<Outcome>, Error> {
        let r = async {
            let key = self.key(id)?;
            self.run(op::Heartbeat::new(key)).await?.try_map(Self::outcome)
        }
        .await;
        self.counters.errors.watch(r)
    }

    /// Deletes the record `id`.
    ///
    /// # Behavior
    ///
    /// - Returns whether a record was there; afterwards `get` returns `None` and
    ///   `update` applies nothing.
    pub async fn delete(&self, id: &str) -> Result<Tagged<bool>, Error> {
        let r = async { self.run(op::Delete::new(self.key(id)?)).await }.await;
        self.count(r, &self.counters.deleted, |t| t.value)
    }
}
