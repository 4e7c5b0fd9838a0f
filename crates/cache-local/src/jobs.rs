//! The job store in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_cache_core::supervisor::RecoveryContext;
use palisade_cache_core::{BoxFuture, Error, Fallback, Provenance, Run, SharedClock, SystemClock, Tagged};
use palisade_job_store::model::{field, millis_text, stored_version};
use palisade_job_store::{
    FieldMap, JobBackend, JobFallback, JobStatus, RawChange, RawOutcome, RecoveryReport, StoredRecord, op,
};

use crate::sweep::Swept;

struct Rec {
    fields: FieldMap,
    expires_at: Instant,
    ttl: Duration,
}

struct Inner {
    map: Mutex<Swept<HashMap<String, Rec>>>,
    clock: SharedClock,
    provenance: Provenance,
    /// The report of the last recovery, as the fallback of degraded mode.
    report: Mutex<Option<RecoveryReport>>,
    /// Told at every write and delete; each waiting [`op::Changed`] then looks again.
    changes: tokio::sync::Notify,
    /// key → the [`op::Changed`] calls waiting on it.
    watchers: Mutex<HashMap<String, u64>>,
}

/// Counts one waiting [`op::Changed`] call on a key while it lives.
struct Watching<'a> {
    watchers: &'a Mutex<HashMap<String, u64>>,
    key: &'a str,
}

impl<'a> Watching<'a> {
    fn new(watchers: &'a Mutex<HashMap<String, u64>>, key: &'a str) -> Self {
        *watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default() += 1;
        Watching { watchers, key }
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut map = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(self.key);
            }
        }
    }
}

/// The in-memory job store. Cheap to clone; clones share the records.
///
/// # Behavior
///
/// Implements every sentence of [`JobBackend`](palisade_job_store::JobBackend)'s `# Behavior`; answers are tagged
/// [`Provenance::Local`]. See the crate docs for reclamation.
#[derive(Clone)]
pub struct LocalJobStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJobStore")
            .field("records", &self.lock().len())
            .finish()
    }
}

impl Default for LocalJobStore {
    fn default() -> Self {
        LocalJobStore::new(SystemClock::shared())
    }
}

fn bytes_of(s: String) -> Bytes {
    Bytes::from(s.into_bytes())
}

impl LocalJobStore {
    /// A store whose TTLs and timestamps follow `clock`.
    pub fn new(clock: SharedClock) -> Self {
        LocalJobStore {
            inner: Arc::new(Inner {
                map: Mutex::new(Swept::new(HashMap::new())),
                clock,
                provenance: Provenance::Local,
                report: Mutex::new(None),
                changes: tokio::sync::Notify::new(),
                watchers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Swept<HashMap<String, Rec>>> {
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tag<T>(&self, v: T) -> Tagged<T> {
        Tagged::new(v, self.inner.provenance)
    }

    fn now_text(&self) -> Bytes {
        bytes_of(millis_text(self.inner.clock.system_time()))
    }

    /// Locks the map; this operation may also sweep expired records (see [`Swept`]).
    fn map(&self) -> MutexGuard<'_, Swept<HashMap<String, Rec>>> {
        let mut map = self.lock();
        if map.due() {
            let now = self.inner.clock.now();
            map.retain(|_, r| r.expires_at > now);
            let remaining = map.len();
            map.swept(remaining);
        }
        map
    }

    /// The live record under `key`, removing it if it expired.
    fn live<'m>(&self, map: &'m mut HashMap<String, Rec>, key: &str) -> Option<&'m mut Rec> {
        let now = self.inner.clock.now();
        if map.get(key).is_some_and(|r| r.expires_at <= now) {
            map.remove(key);
        }
        map.get_mut(key)
    }

    /// The number of live records.
    pub fn len(&self) -> usize {
        let now = self.inner.clock.now();
        self.lock().values().filter(|r| r.expires_at > now).count()
    }

    /// Whether no live record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many watches wait for a change of the record under the encoded `key`.
    pub fn watchers(&self, key: &str) -> u64 {
        let map = self.inner.watchers.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or(0)
    }

    /// The number of records held, expired ones not yet reclaimed included.
    pub fn held(&self) -> usize {
        self.lock().len()
    }
}

impl Rec {
    /// The version after `before`: every write that takes effect moves it on.
    fn version_after(&mut self, before: u64) {
        self.fields.insert(
            field::VERSION.to_owned(),
            bytes_of(before.saturating_add(1).to_string()),
        );
    }

    /// Ends a write at `now`: the next version and a fresh expiry (a record's TTL
    /// runs from its last write).
    fn written(&mut self, now: Instant) {
        self.version_after(stored_version(&self.fields));
        // `self.ttl` passed `check_ttl` at create (≤ 10 years): this cannot overflow.
        self.expires_at = now + self.ttl;
    }
}

impl LocalJobStore {
    /// Releases the map's lock, then wakes every waiting [`op::Changed`].
    fn publish(&self, map: MutexGuard<'_, Swept<HashMap<String, Rec>>>) {
        drop(map);
        self.inner.changes.notify_waiters();
    }
}

fn cas<'r>(rec: Option<&'r mut Rec>, expect: &[u8]) -> Result<&'r mut Rec, RawOutcome> {
    let Some(rec) = rec else {
        return Err(RawOutcome::NotFound);
    };
    match rec.fields.get(field::STATUS) {
        Some(s) if &s[..] == expect => Ok(rec),
        other => Err(RawOutcome::Refused(other.cloned())),
    }
}

impl Run<op::Create> for LocalJobStore {
    async fn run(&self, op: &op::Create) -> Result<Tagged<bool>, Error> {
        let (key, fields, ttl, if_absent) = (op.key.as_str(), &op.fields, op.ttl, op.if_absent);
        palisade_cache_core::limits::check_ttl(ttl)?;
        let expires_at = self
            .inner
            .clock
            .now()
            .checked_add(ttl)
            .ok_or_else(|| Error::invalid_input("the TTL reaches past the clock's range"))?;
        let mut map = self.map();
        if if_absent && self.live(&mut map, key).is_some() {
            return Ok(self.tag(false));
        }
        let now = self.now_text();
        let before = self.live(&mut map, key).map_or(0, |r| stored_version(&r.fields));
        let mut stored = FieldMap::new();
        stored.insert(field::CREATED_AT.to_owned(), now.clone());
        stored.insert(field::UPDATED_AT.to_owned(), now);
        stored.insert(
            field::TTL_MS.to_owned(),
            bytes_of(ttl.as_nanos().div_ceil(1_000_000).to_string()),
        );
        // Given fields win over the defaults (a replay keeps its timestamps).
        stored.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut rec = Rec {
            fields: stored,
            expires_at,
            ttl,
        };
        rec.version_after(before);
        map.insert(key.to_owned(), rec);
        self.publish(map);
        Ok(self.tag(true))
    }
}

impl Run<op::Update> for LocalJobStore {
    async fn run(&self, op: &op::Update) -> Result<Tagged<bool>, Error> {
        let (key, fields) = (op.key.as_str(), &op.fields);
        let now_text = self.now_text();
        let now = self.inner.clock.now();
        let mut map = self.map();
        let Some(rec) = self.live(&mut map, key) else {
            return Ok(self.tag(false));
        };
        rec.fields.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        rec.fields.insert(field::UPDATED_AT.to_owned(), now_text);
        rec.written(now);
        self.publish(map);
        Ok(self.tag(true))
    }
}

impl Run<op::Exists> for LocalJobStore {
    async fn run(&self, op: &op::Exists) -> Result<Tagged<bool>, Error> {
        let key = op.key.as_str();
        let mut map = self.map();
        Ok(self.tag(self.live(&mut map, key).is_some()))
    }
}

impl Run<op::Get> for LocalJobStore {
    async fn run(&self, op: &op::Get) -> Result<Tagged<Option<StoredRecord>>, Error> {
        let key = op.key.as_str();
        let mut map = self.map();
        let now = self.inner.clock.system_time();
        let rec = self
            .live(&mut map, key)
            .map(|r| StoredRecord::new(r.fields.clone(), now));
        Ok(self.tag(rec))
    }
}

impl Run<op::Transition> for LocalJobStore {
    async fn run(&self, op: &op::Transition) -> Result<Tagged<RawOutcome>, Error> {
        let (key, from, to, fields) = (op.key.as_str(), op.from, op.to, &op.fields);
        let now_text = self.now_text();
        let now = self.inner.clock.now();
        let mut map = self.map();
        let rec = match cas(self.live(&mut map, key), from.as_str().as_bytes()) {
            Ok(rec) => rec,
            Err(outcome) => return Ok(self.tag(outcome)),
        };
        rec.fields.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        rec.fields
            .insert(field::STATUS.to_owned(), Bytes::from_static(to.as_str().as_bytes()));
        if to.is_terminal() {
            rec.fields.insert(field::FINISHED_AT.to_owned(), now_text.clone());
        }
        rec.fields.insert(field::UPDATED_AT.to_owned(), now_text);
        rec.written(now);
        self.publish(map);
        Ok(self.tag(RawOutcome::Applied))
    }
}

impl Run<op::Heartbeat> for LocalJobStore {
    async fn run(&self, op: &op::Heartbeat) -> Result<Tagged<RawOutcome>, Error> {
        let key = op.key.as_str();
        let now_text = self.now_text();
        let now = self.inner.clock.now();
        let mut map = self.map();
        let rec = match cas(self.live(&mut map, key), JobStatus::Running.as_str().as_bytes()) {
            Ok(rec) => rec,
            Err(outcome) => return Ok(self.tag(outcome)),
        };
        rec.fields.insert(field::HEARTBEAT_AT.to_owned(), now_text);
        rec.written(now);
        self.publish(map);
        Ok(self.tag(RawOutcome::Applied))
    }
}

impl Run<op::Delete> for LocalJobStore {
    async fn run(&self, op: &op::Delete) -> Result<Tagged<bool>, Error> {
        let key = op.key.as_str();
        let mut map = self.map();
        let was = self.live(&mut map, key).is_some();
        map.remove(key);
        if was {
            self.publish(map);
        }
        Ok(self.tag(was))
    }
}

impl Run<op::Changed> for LocalJobStore {
    async fn run(&self, op: &op::Changed) -> Result<Tagged<RawChange>, Error> {
        let key = op.key.as_str();
        // `within` is the caller's bound (a re-check period, at most a day): capped
        // again here so the deadline cannot overflow.
        let deadline = tokio::time::Instant::now() + op.within.min(palisade_cache_core::limits::MAX_LEASE);
        let mut watching = None;
        loop {
            // Registered before the look, so a write between the two is not missed.
            let notified = self.inner.changes.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let expires_in = {
                let mut map = self.map();
                let now = self.inner.clock.system_time();
                let clock_now = self.inner.clock.now();
                match self.live(&mut map, key) {
                    None => return Ok(self.tag(RawChange::Gone)),
                    Some(r) if stored_version(&r.fields) != op.after => {
                        return Ok(self.tag(RawChange::Changed(StoredRecord::new(r.fields.clone(), now))));
                    }
                    Some(r) => r.expires_at.saturating_duration_since(clock_now).clamp(
                        palisade_cache_core::limits::MIN_DURATION,
                        palisade_cache_core::limits::MAX_LEASE,
                    ),
                }
            };
            watching.get_or_insert_with(|| Watching::new(&self.inner.watchers, key));
            // Expiry is not a write: the wait ends when the record would expire, to
            // look again.
            let until = deadline.min(tokio::time::Instant::now() + expires_in);
            if tokio::time::timeout_at(until, notified).await.is_err() && until >= deadline {
                return Ok(self.tag(RawChange::Unchanged));
            }
        }
    }
}

/// As the fallback of degraded mode, the local job store replays its records into
/// Redis when it is back (create-if-absent, reported per id): see
/// [`palisade_job_store::recovery`].
impl<P: JobBackend> Fallback<P> for LocalJobStore {
    fn recover<'a>(&'a self, primary: &'a P, ctx: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(palisade_job_store::replay(primary, self, ctx))
    }
}

impl JobFallback for LocalJobStore {
    fn keep_report(&self, report: RecoveryReport) {
        *self.inner.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    fn last_recovery(&self) -> Option<RecoveryReport> {
        self.inner.report.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn drain(&self) -> Vec<(String, FieldMap, Duration)> {
        let now = self.inner.clock.now();
        self.lock()
            .drain()
            .filter(|(_, r)| r.expires_at > now)
            .map(|(k, r)| (k, r.fields, r.expires_at - now))
            .collect()
    }

    fn restore(&self, records: Vec<(String, FieldMap, Duration)>) {
        let now = self.inner.clock.now();
        let mut map = self.lock();
        for (key, fields, left) in records {
            // The record's own TTL is in its fields; `left` is what remained of it.
            let ttl = fields
                .get(field::TTL_MS)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .map_or(left, Duration::from_millis);
            map.insert(
                key,
                Rec {
                    fields,
                    // `left` came from a live record's deadline: no overflow.
                    expires_at: now + left,
                    ttl,
                },
            );
        }
    }
}
