//! The job record, its status, patches, and how each field is stored.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_cache_core::codec::Format;
use palisade_cache_core::{Codec, Error};

/// The raw stored fields of one record: hash field name → bytes.
pub type FieldMap = BTreeMap<String, Bytes>;

/// The lifecycle of a job.
///
/// ```text
/// Queued ──► Running ──► Completed
///   │           └──────► Failed
///   └──────────────────► Failed   (the hand-off to a queue failed)
/// ```
///
/// # Behavior
///
/// - Exactly the four edges above are allowed ([`JobStatus::can_become`]); `Completed`
///   and `Failed` are terminal and never change.
/// - Stored and parsed as `queued`, `running`, `completed`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum JobStatus {
    /// Accepted, not started.
    Queued,
    /// A worker runs it.
    Running,
    /// Finished successfully (terminal).
    Completed,
    /// Finished with an error, or never handed to a queue (terminal).
    Failed,
}

impl JobStatus {
    /// All statuses.
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    /// Whether the status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }

    /// Whether `self → to` is an edge of the lifecycle.
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Queued, Running) | (Running, Completed) | (Running, Failed) | (Queued, Failed)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::invalid_input(format!("unknown job status {s:?}")))
    }
}

/// A job record.
///
/// # Behavior
///
/// - `created_at` and `updated_at` are set by the store (server time in Redis) on
///   create; every applied update, transition and heartbeat moves `updated_at`
///   (`heartbeat_at` for a heartbeat); a transition into a terminal status sets
///   `finished_at`. Values given for them in [`JobStore::create`](crate::JobStore::create) are ignored.
/// - `version` is set by the store: 1 on create, and one more at every applied update,
///   transition and heartbeat; a value given in [`JobStore::create`](crate::JobStore::create) is ignored.
/// - `presumed_dead` is computed when the record is read: a `Running` job whose last
///   sign of life (`heartbeat_at`, else `updated_at`) is older than the store's
///   `heartbeat_timeout`, by the store's clock (the Redis server's in Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRecord {
    /// The lifecycle status.
    pub status: JobStatus,
    /// Progress, in whatever unit the application uses (e.g. percent).
    pub progress: Option<u32>,
    /// The result payload.
    pub result: Option<Bytes>,
    /// Why the job failed.
    pub error: Option<String>,
    /// How many times it was attempted.
    pub attempts: u32,
    /// When it was created (set by the store).
    pub created_at: Option<SystemTime>,
    /// When it last changed (set by the store).
    pub updated_at: Option<SystemTime>,
    /// When its worker last reported in.
    pub heartbeat_at: Option<SystemTime>,
    /// When it reached a terminal status.
    pub finished_at: Option<SystemTime>,
    /// Application fields.
    pub fields: BTreeMap<String, Bytes>,
    /// Computed at read time (see `# Behavior`).
    pub presumed_dead: bool,
    /// How many writes the record has seen, set by the store: 1 after `create`, one
    /// more at every applied update, transition and heartbeat (0 for a record written
    /// before versions were kept). [`JobStore::watch`](crate::JobStore::watch) counts
    /// the changes it did not deliver one by one with it.
    pub version: u64,
}

impl JobRecord {
    /// A record with `status` and nothing else.
    pub fn new(status: JobStatus) -> Self {
        JobRecord {
            status,
            progress: None,
            result: None,
            error: None,
            attempts: 0,
            created_at: None,
            updated_at: None,
            heartbeat_at: None,
            finished_at: None,
            fields: BTreeMap::new(),
            presumed_dead: false,
            version: 0,
        }
    }

    /// A queued record.
    pub fn queued() -> Self {
        JobRecord::new(JobStatus::Queued)
    }

    /// Adds an application field.
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// Sets the attempts counter.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// An application field.
    pub fn field(&self, name: &str) -> Option<&Bytes> {
        self.fields.get(name)
    }
}

/// The fields one update writes; fields not in the patch are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Patch {
    /// New progress.
    pub progress: Option<u32>,
    /// New result.
    pub result: Option<Bytes>,
    /// New error text.
    pub error: Option<String>,
    /// New attempts counter.
    pub attempts: Option<u32>,
    /// Application fields to write.
    pub fields: BTreeMap<String, Bytes>,
}

impl Patch {
    /// An empty patch.
    pub fn new() -> Self {
        Patch::default()
    }
    /// Sets progress.
    pub fn progress(mut self, p: u32) -> Self {
        self.progress = Some(p);
        self
    }
    /// Sets the result.
    pub fn result(mut self, r: impl Into<Bytes>) -> Self {
        self.result = Some(r.into());
        self
    }
    /// Sets the error text.
    pub fn error(mut self, e: impl Into<String>) -> Self {
        self.error = Some(e.into());
        self
    }
    /// Sets the attempts counter.
    pub fn attempts(mut self, a: u32) -> Self {
        self.attempts = Some(a);
        self
    }
    /// Sets an application field.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }
    /// Whether the patch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.progress.is_none()
            && self.result.is_none()
            && self.error.is_none()
            && self.attempts.is_none()
            && self.fields.is_empty()
    }
}

/// Hash field names.
pub mod field {
    /// The status, as text.
    pub const STATUS: &str = "status";
    /// Progress (envelope u32).
    pub const PROGRESS: &str = "progress";
    /// Result (envelope bytes).
    pub const RESULT: &str = "result";
    /// Error text (envelope string).
    pub const ERROR: &str = "error";
    /// Attempts (envelope u32).
    pub const ATTEMPTS: &str = "attempts";
    /// Creation time, decimal milliseconds since the epoch.
    pub const CREATED_AT: &str = "created_at";
    /// Last change, decimal milliseconds.
    pub const UPDATED_AT: &str = "updated_at";
    /// Last heartbeat, decimal milliseconds.
    pub const HEARTBEAT_AT: &str = "heartbeat_at";
    /// Terminal transition time, decimal milliseconds.
    pub const FINISHED_AT: &str = "finished_at";
    /// The record's TTL in milliseconds (internal: what updates refresh to).
    pub const TTL_MS: &str = "ttl_ms";
    /// The number of writes, decimal (set by the store).
    pub const VERSION: &str = "version";
    /// Prefix of application fields.
    pub const USER_PREFIX: &str = "f:";
}

/// The codec of every enveloped field (schema 1, postcard). Fields are read in either
/// format; [`JobStoreConfig::field_format`](crate::JobStoreConfig::field_format) picks the one
/// written.
pub const FIELD_CODEC: Codec = Codec::new(1);

/// The codec that writes fields in `format` (schema 1).
pub fn field_codec(format: Format) -> Codec {
    match format {
        Format::Json => Codec::json(1),
        _ => FIELD_CODEC,
    }
}

/// The stored `version` of a record's fields: 0 when absent or not a number (a record
/// written before versions were kept, or by another tool).
pub fn stored_version(fields: &FieldMap) -> u64 {
    fields
        .get(field::VERSION)
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Milliseconds since the epoch, as stored.
pub fn millis_text(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .to_string()
}

/// Writes enveloped fields in one format.
struct Writer {
    codec: Codec,
    out: FieldMap,
}

impl Writer {
    fn put<T: serde::Serialize + ?Sized>(&mut self, name: &str, v: &T) -> Result<(), Error> {
        let bytes = self.codec.encode(v, &format!("field `{name}`"))?;
        self.out.insert(name.to_owned(), Bytes::from(bytes));
        Ok(())
    }

    /// Bytes: in JSON, UTF-8 bytes are a string (what another language wants to read),
    /// other bytes an array of numbers; postcard stores them as they are.
    fn put_bytes(&mut self, name: &str, v: &[u8]) -> Result<(), Error> {
        match (self.codec.format(), std::str::from_utf8(v)) {
            (Format::Json, Ok(text)) => self.put(name, text),
            _ => self.put(name, v),
        }
    }
}

/// The stored fields of a patch (application fields prefixed with `f:`), enveloped in
/// `format`.
pub fn encode_patch(p: &Patch, format: Format) -> Result<FieldMap, Error> {
    let mut w = Writer {
        codec: field_codec(format),
        out: FieldMap::new(),
    };
    if let Some(v) = p.progress {
        w.put(field::PROGRESS, &v)?;
    }
    if let Some(v) = &p.result {
        w.put_bytes(field::RESULT, v)?;
    }
    if let Some(v) = &p.error {
        w.put(field::ERROR, v.as_str())?;
    }
    if let Some(v) = p.attempts {
        w.put(field::ATTEMPTS, &v)?;
    }
    for (k, v) in &p.fields {
        w.put_bytes(&format!("{}{k}", field::USER_PREFIX), v)?;
    }
    Ok(w.out)
}

/// The stored fields of a new record (timestamps are the store's to set), enveloped in
/// `format`.
pub fn encode_record(r: &JobRecord, format: Format) -> Result<FieldMap, Error> {
    let patch = Patch {
        progress: r.progress,
        result: r.result.clone(),
        error: r.error.clone(),
        attempts: Some(r.attempts),
        fields: r.fields.clone(),
    };
    let mut out = encode_patch(&patch, format)?;
    out.insert(
        field::STATUS.to_owned(),
        Bytes::from_static(r.status.as_str().as_bytes()),
    );
    Ok(out)
}

fn codec_err(name: &str, why: impl Into<palisade_cache_core::BoxError>) -> Error {
    Error::codec(format!("job field `{name}`"), why)
}

fn text(name: &str, raw: &Bytes) -> Result<String, Error> {
    if Format::of(raw).is_some() {
        return FIELD_CODEC.decode::<String>(raw, &format!("job field `{name}`"));
    }
    String::from_utf8(raw.to_vec()).map_err(|e| codec_err(name, e))
}

fn number<T: serde::de::DeserializeOwned + FromStr>(name: &str, raw: &Bytes) -> Result<T, Error>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    if Format::of(raw).is_some() {
        return FIELD_CODEC.decode::<T>(raw, &format!("job field `{name}`"));
    }
    let s = std::str::from_utf8(raw).map_err(|e| codec_err(name, e))?;
    s.trim().parse::<T>().map_err(|e| codec_err(name, e))
}

/// Bytes as JSON writes them: a string, or an array of numbers.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonBytes {
    Text(String),
    Bytes(Vec<u8>),
}

fn bytes(name: &str, raw: &Bytes) -> Result<Bytes, Error> {
    let what = || format!("job field `{name}`");
    match Format::of(raw) {
        Some(Format::Json) => Ok(match FIELD_CODEC.decode::<JsonBytes>(raw, &what())? {
            JsonBytes::Text(t) => Bytes::from(t),
            JsonBytes::Bytes(b) => Bytes::from(b),
        }),
        Some(_) => FIELD_CODEC.decode::<Vec<u8>>(raw, &what()).map(Bytes::from),
        None => Ok(raw.clone()),
    }
}

fn time(name: &str, raw: &Bytes) -> Result<SystemTime, Error> {
    let ms: u64 = number(name, raw)?;
    Ok(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Decodes stored fields into a record. `now` and `heartbeat_timeout` decide
/// `presumed_dead`.
///
/// Each field accepts its envelope or a plain text form (what a script or another tool
/// writes); a field that is neither, an unknown status, or a missing status is
/// [`Error::Codec`] naming the field.
pub fn decode_record(fields: &FieldMap, now: SystemTime, heartbeat_timeout: Duration) -> Result<JobRecord, Error> {
    let status_raw = fields
        .get(field::STATUS)
        .ok_or_else(|| codec_err(field::STATUS, "the record has no status field"))?;
    let status_text = text(field::STATUS, status_raw)?;
    let status = status_text
        .parse::<JobStatus>()
        .map_err(|_| codec_err(field::STATUS, format!("unknown status {status_text:?}")))?;
    let mut r = JobRecord::new(status);
    for (name, raw) in fields {
        match name.as_str() {
            field::STATUS | field::TTL_MS => {}
            field::PROGRESS => r.progress = Some(number(name, raw)?),
            field::RESULT => r.result = Some(bytes(name, raw)?),
            field::ERROR => r.error = Some(text(name, raw)?),
            field::ATTEMPTS => r.attempts = number(name, raw)?,
            field::CREATED_AT => r.created_at = Some(time(name, raw)?),
            field::UPDATED_AT => r.updated_at = Some(time(name, raw)?),
            field::HEARTBEAT_AT => r.heartbeat_at = Some(time(name, raw)?),
            field::FINISHED_AT => r.finished_at = Some(time(name, raw)?),
            field::VERSION => r.version = number(name, raw)?,
            other => {
                if let Some(user) = other.strip_prefix(field::USER_PREFIX) {
                    r.fields.insert(user.to_owned(), bytes(name, raw)?);
                }
                // Unknown fields (a newer writer's) are ignored.
            }
        }
    }
    let last_sign = r.heartbeat_at.or(r.updated_at);
    r.presumed_dead = status == JobStatus::Running
        && last_sign.is_some_and(|t| now.duration_since(t).unwrap_or(Duration::ZERO) > heartbeat_timeout);
    Ok(r)
}
