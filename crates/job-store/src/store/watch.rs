//! Waiting for a job: [`JobStore::watch`] and [`JobStore::wait_for`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::Stream;
use palisade_cache_core::limits::{MAX_LEASE, check_duration};
use palisade_cache_core::{Error, Provenance, Tagged};
use tokio::time::Instant;

use super::{JobBackend, JobStore, RawChange, StoredRecord};
use crate::model::{self, FieldMap, JobRecord, JobStatus, field};
use crate::op;

/// One item of [`JobStore::watch`].
// One item per change, after a network round trip: moving 200 bytes costs nothing
// next to it, and a boxed record would cost every user a `*`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobEvent {
    /// The record: first as it was when the watch began, then after each change.
    Record {
        /// The record as read.
        record: JobRecord,
        /// Changes since the previous item that were not delivered one by one (they
        /// came while the previous one was read): their effect is in `record`. 0 for
        /// the first item and whenever the watcher kept up.
        missed: u64,
        /// The stored fields whose value differs from the previous item's, sorted
        /// (application fields as `f:<name>`; `updated_at`, `version` and `ttl_ms`,
        /// which every write sets, left out); every field for the first item. A
        /// heartbeat in the same millisecond as the one before changes none.
        changed: Vec<String>,
        /// Who answered: in degraded mode a watch goes on against the fallback
        /// ([`Provenance::LocalDegraded`]).
        provenance: Provenance,
    },
    /// There is no record: it was deleted, it expired, or it never existed. The last
    /// item.
    Gone,
}

/// The answer of [`JobStore::wait_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitOutcome {
    /// The record reached one of the statuses waited for; here it is.
    Reached(JobRecord),
    /// The record reached a terminal status that is not one of them: it never will.
    Never(JobRecord),
    /// The timeout passed first; the record as last read.
    TimedOut(JobRecord),
    /// There is no record: deleted, expired, or never created.
    Gone,
}

/// A watch on one record: [`JobStore::watch`] as a `Stream`, or [`JobWatch::next`]
/// called in a loop.
#[derive(Debug)]
pub struct JobWatch<B> {
    store: JobStore<B>,
    key: Result<String, Option<Error>>,
    /// The last record delivered (`None` before the first).
    seen: Option<(FieldMap, u64)>,
    done: bool,
    provenance: Provenance,
}

/// What one step of a watch found.
#[allow(clippy::large_enum_variant)] // as `JobEvent`
enum Step {
    Event(JobEvent),
    Quiet,
}

impl<B: JobBackend> JobWatch<B> {
    fn new(store: JobStore<B>, id: &str) -> Self {
        JobWatch {
            key: store.key(id).map_err(Some),
            store,
            seen: None,
            done: false,
            provenance: Provenance::Distributed,
        }
    }

    /// The next item, or `None` once the watch ended (after a terminal status, after
    /// [`JobEvent::Gone`], after an error). Waits as long as the record stays as it is.
    pub async fn next(&mut self) -> Option<Result<JobEvent, Error>> {
        loop {
            let recheck = self.store.config.watch_recheck;
            match self.step(recheck).await? {
                Ok(Step::Event(e)) => return Some(Ok(e)),
                Ok(Step::Quiet) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The provenance of the last answer read.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// One look or one wait of at most `within`; `None` once the watch ended.
    async fn step(&mut self, within: Duration) -> Option<Result<Step, Error>> {
        if self.done {
            return None;
        }
        let key = match &mut self.key {
            Ok(k) => k.clone(),
            Err(e) => {
                self.done = true;
                return e.take().map(Err);
            }
        };
        let r = self.look(key, within).await;
        self.done = match &r {
            Ok(Step::Quiet) => false,
            Ok(Step::Event(JobEvent::Record { record, .. })) => record.status.is_terminal(),
            Ok(Step::Event(JobEvent::Gone)) | Err(_) => true,
        };
        Some(self.store.counters.errors.watch(r))
    }

    async fn look(&mut self, key: String, within: Duration) -> Result<Step, Error> {
        let stored = match &self.seen {
            None => {
                let got = self.store.run(op::Get::new(key)).await?;
                self.provenance = got.provenance;
                got.value
            }
            Some((_, version)) => {
                let got = self.store.run(op::Changed::new(key, *version, within)).await?;
                let seen_on = std::mem::replace(&mut self.provenance, got.provenance);
                match got.value {
                    RawChange::Changed(s) => Some(s),
                    // The degraded fallback does not hold a record read from Redis: its
                    // absence there says nothing. Wait, and ask again.
                    RawChange::Gone
                        if got.provenance == Provenance::LocalDegraded && seen_on != Provenance::LocalDegraded =>
                    {
                        self.provenance = seen_on;
                        tokio::time::sleep(within).await;
                        self.store.counters.watch_rechecks.fetch_add(1, Ordering::Relaxed);
                        return Ok(Step::Quiet);
                    }
                    RawChange::Gone => None,
                    RawChange::Unchanged => {
                        self.store.counters.watch_rechecks.fetch_add(1, Ordering::Relaxed);
                        return Ok(Step::Quiet);
                    }
                }
            }
        };
        let Some(StoredRecord { fields, now }) = stored else {
            return Ok(Step::Event(JobEvent::Gone));
        };
        let record = model::decode_record(&fields, now, self.store.config.heartbeat_timeout)?;
        let (missed, changed) = match &self.seen {
            None => (0, changed_fields(&FieldMap::new(), &fields)),
            Some((before, version)) => (
                record.version.saturating_sub(*version).saturating_sub(1),
                changed_fields(before, &fields),
            ),
        };
        self.seen = Some((fields, record.version));
        Ok(Step::Event(JobEvent::Record {
            record,
            missed,
            changed,
            provenance: self.provenance,
        }))
    }
}

/// The stored fields whose value differs between `before` and `after` (or that only
/// one has), without the bookkeeping ones.
fn changed_fields(before: &FieldMap, after: &FieldMap) -> Vec<String> {
    let mut names: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| ![field::VERSION, field::TTL_MS, field::UPDATED_AT].contains(&k.as_str()))
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

impl<B: JobBackend> JobStore<B> {
    /// The changes of the record `id`, as they happen.
    ///
    /// # Behavior
    ///
    /// - The first item is the record as it is ([`JobEvent::Record`], every field in
    ///   `changed`); then one item per change of status or field, each with the whole
    ///   record and the names of the fields that changed.
    /// - The stream ends after the item of a terminal status (`completed`, `failed`),
    ///   and with [`JobEvent::Gone`] when the record is deleted, expires or never
    ///   existed.
    /// - No change is missed between the first read and the wait that follows: a write
    ///   made meanwhile is delivered. A watcher that falls behind (changes made while
    ///   it read the previous one, or while the stream was not polled) is told: its
    ///   next item carries the record as it is and `missed`, the number of changes not
    ///   delivered one by one.
    /// - Woken by the writes themselves (a write on one node wakes a watcher on
    ///   another); a wake-up lost on the way costs at most the re-check period
    ///   ([`JobStoreConfig::watch_recheck`](crate::JobStoreConfig::watch_recheck)),
    ///   counted in [`JobStats::watch_rechecks`](crate::JobStats::watch_rechecks).
    /// - An error ends the stream after it is yielded; an invalid id is
    ///   [`Error::InvalidInput`] as the first and only item.
    /// - Degraded mode: during an outage the watch goes on against the fallback (items
    ///   tagged [`Provenance::LocalDegraded`]). A record read from Redis is not on the
    ///   fallback, and its absence there ends nothing: the watch asks again every
    ///   re-check period until Redis answers and then goes on from the version it saw.
    pub fn watch(&self, id: &str) -> impl Stream<Item = Result<JobEvent, Error>> + Send + 'static
    where
        B: 'static,
    {
        futures_util::stream::unfold(self.watcher(id), |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
    }

    /// [`JobStore::watch`] as a value whose [`JobWatch::next`] gives the items.
    pub fn watcher(&self, id: &str) -> JobWatch<B> {
        JobWatch::new(self.clone(), id)
    }

    /// Waits until the record `id` has one of `statuses`, at most `timeout`.
    ///
    /// # Behavior
    ///
    /// - Returns [`WaitOutcome::Reached`] with the record as soon as its status is one
    ///   of `statuses` (at once when it already is), woken by the transition itself.
    /// - [`WaitOutcome::Never`] as soon as the record is in a terminal status that is
    ///   not one of them; [`WaitOutcome::Gone`] when there is no record (or it goes
    ///   away while waited for).
    /// - [`WaitOutcome::TimedOut`] with the record as last read once `timeout` has
    ///   passed: never later than `timeout` plus the command deadline.
    /// - An empty `statuses`, a `timeout` over one day or an invalid id is
    ///   [`Error::InvalidInput`] before any I/O.
    pub async fn wait_for(
        &self,
        id: &str,
        statuses: &[JobStatus],
        timeout: Duration,
    ) -> Result<Tagged<WaitOutcome>, Error> {
        let started = Instant::now();
        if statuses.is_empty() {
            return Err(Error::invalid_input("wait for at least one status"));
        }
        check_duration("a wait", timeout, Duration::ZERO, MAX_LEASE)?;
        let mut w = self.watcher(id);
        let mut last = None;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let within = left.min(self.config.watch_recheck).max(Duration::from_millis(1));
            let step = w.step(within).await;
            let tag = |v| Tagged::new(v, w.provenance());
            let Some(step) = step else {
                // Not reached: every end of a watch is answered below.
                return Ok(tag(last.map_or(WaitOutcome::Gone, WaitOutcome::TimedOut)));
            };
            let step = step?;
            match step {
                Step::Event(JobEvent::Gone) => return Ok(tag(WaitOutcome::Gone)),
                Step::Event(JobEvent::Record { record, .. }) => {
                    if statuses.contains(&record.status) {
                        return Ok(tag(WaitOutcome::Reached(record)));
                    }
                    if record.status.is_terminal() {
                        return Ok(tag(WaitOutcome::Never(record)));
                    }
                    last = Some(record);
                }
                Step::Quiet => {}
            }
            if started.elapsed() >= timeout {
                if let Some(record) = last {
                    return Ok(tag(WaitOutcome::TimedOut(record)));
                }
            }
        }
    }
}
