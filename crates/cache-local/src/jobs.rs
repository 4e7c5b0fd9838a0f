//! The job store in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_cache_core::cache::BackendStatus;
use palisade_cache_core::{Error, Health, Mode, Provenance, SharedClock, SystemClock, Tagged};
use palisade_job_store::model::{field, millis_text};
use palisade_job_store::{FieldMap, JobBackend, JobFallback, JobStatus, RawOutcome, StoredRecord};

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
}

/// The in-memory job store. Cheap to clone; clones share the records.
///
/// # Behavior
///
/// Implements every sentence of [`JobBackend`]'s `# Behavior`; answers are tagged
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

    /// The number of records held, expired ones not yet reclaimed included.
    pub fn held(&self) -> usize {
        self.lock().len()
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

impl JobBackend for LocalJobStore {
    async fn create(
        &self,
        key: &str,
        fields: &FieldMap,
        ttl: Duration,
        if_absent: bool,
    ) -> Result<Tagged<bool>, Error> {
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
        let mut stored = FieldMap::new();
        stored.insert(field::CREATED_AT.to_owned(), now.clone());
        stored.insert(field::UPDATED_AT.to_owned(), now);
        stored.insert(
            field::TTL_MS.to_owned(),
            bytes_of(ttl.as_nanos().div_ceil(1_000_000).to_string()),
        );
        // Given fields win over the defaults (a replay keeps its timestamps).
        stored.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        map.insert(
            key.to_owned(),
            Rec {
                fields: stored,
                expires_at,
                ttl,
            },
        );
        Ok(self.tag(true))
    }

    async fn update(&self, key: &str, fields: &FieldMap) -> Result<Tagged<bool>, Error> {
        let now_text = self.now_text();
        let now = self.inner.clock.now();
        let mut map = self.map();
        let Some(rec) = self.live(&mut map, key) else {
            return Ok(self.tag(false));
        };
        rec.fields.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        rec.fields.insert(field::UPDATED_AT.to_owned(), now_text);
        // `rec.ttl` passed `check_ttl` at create (≤ 10 years): this cannot overflow.
        rec.expires_at = now + rec.ttl;
        Ok(self.tag(true))
    }

    async fn exists(&self, key: &str) -> Result<Tagged<bool>, Error> {
        let mut map = self.map();
        Ok(self.tag(self.live(&mut map, key).is_some()))
    }

    async fn get(&self, key: &str) -> Result<Tagged<Option<StoredRecord>>, Error> {
        let mut map = self.map();
        let now = self.inner.clock.system_time();
        let rec = self
            .live(&mut map, key)
            .map(|r| StoredRecord::new(r.fields.clone(), now));
        Ok(self.tag(rec))
    }

    async fn transition(
        &self,
        key: &str,
        from: JobStatus,
        to: JobStatus,
        fields: &FieldMap,
    ) -> Result<Tagged<RawOutcome>, Error> {
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
        // `rec.ttl` passed `check_ttl` at create (≤ 10 years): this cannot overflow.
        rec.expires_at = now + rec.ttl;
        Ok(self.tag(RawOutcome::Applied))
    }

    async fn heartbeat(&self, key: &str) -> Result<Tagged<RawOutcome>, Error> {
        let now_text = self.now_text();
        let now = self.inner.clock.now();
        let mut map = self.map();
        let rec = match cas(self.live(&mut map, key), JobStatus::Running.as_str().as_bytes()) {
            Ok(rec) => rec,
            Err(outcome) => return Ok(self.tag(outcome)),
        };
        rec.fields.insert(field::HEARTBEAT_AT.to_owned(), now_text);
        // `rec.ttl` passed `check_ttl` at create (≤ 10 years): this cannot overflow.
        rec.expires_at = now + rec.ttl;
        Ok(self.tag(RawOutcome::Applied))
    }

    async fn delete(&self, key: &str) -> Result<Tagged<bool>, Error> {
        let mut map = self.map();
        let was = self.live(&mut map, key).is_some();
        map.remove(key);
        Ok(self.tag(was))
    }

    async fn probe(&self) -> Result<(), Error> {
        Ok(())
    }

    fn status(&self) -> BackendStatus {
        BackendStatus::new(Mode::LocalOnly, Health::Healthy)
    }
}

impl JobFallback for LocalJobStore {
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
