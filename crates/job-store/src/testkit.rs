//! The job-store behaviour suite: one case per sentence of the `# Behavior` sections of
//! [`JobStore`], and a proptest model of the lifecycle. **Not API-stable.**
//!
//! A backend crate runs it with `palisade_job_store::job_suite!(make_fixture);` where
//! `make_fixture(test: &str)` returns a [`Fixture`] whose backend is a [`JobBackend`].
//! Real-time fixtures implement `advance` by sleeping (Redis TTLs are server time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use palisade_cache_core::testkit::Fixture;
use palisade_cache_core::{Backend, ErrorKind, Namespace, Provenance, Run};
use proptest::prelude::*;

use crate::model::{FIELD_CODEC, field};
use crate::{
    FieldMap, JobBackend, JobEvent, JobRecord, JobStatus, JobStore, JobStoreConfig, Outcome, Patch, WaitOutcome,
};

/// A long TTL: nothing expires during a case.
pub const LONG_TTL: Duration = Duration::from_secs(600);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A store over the fixture's backend under a prefix unique to this call.
pub fn store_for<F: Fixture<Backend: JobBackend>>(fx: &F) -> JobStore<F::Backend> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let ns = Namespace::new(&format!("{}-{n}", fx.prefix()), "tenant", "jobs").expect("namespace");
    JobStore::new(fx.backend(), ns)
}

fn status_of(r: &Option<JobRecord>) -> Option<JobStatus> {
    r.as_ref().map(|r| r.status)
}

async fn get<B: JobBackend>(s: &JobStore<B>, id: &str) -> Option<JobRecord> {
    s.get(id).await.unwrap().value
}

// ---- create -------------------------------------------------------------------------

/// `create` writes every field and the store's timestamps.
pub async fn create_writes_every_field_and_timestamps<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let mut r = JobRecord::queued()
        .with_field("owner", "api")
        .with_field("bin", vec![0u8, 255, 1])
        .with_attempts(2);
    r.progress = Some(7);
    r.error = Some("none yet".into());
    r.result = Some(Bytes::from_static(b"\x00raw"));
    let t = s.create("job-1", &r, LONG_TTL).await.unwrap();
    assert_eq!(t.provenance, fx.provenance());
    let got = get(&s, "job-1").await.unwrap();
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!((got.progress, got.attempts), (Some(7), 2));
    assert_eq!(got.error.as_deref(), Some("none yet"));
    assert_eq!(got.result.as_deref(), Some(&b"\x00raw"[..]));
    assert_eq!(got.field("owner").map(|b| &b[..]), Some(&b"api"[..]));
    assert_eq!(got.field("bin").map(|b| &b[..]), Some(&[0u8, 255, 1][..]));
    assert!(got.created_at.is_some() && got.created_at == got.updated_at);
    assert_eq!((got.heartbeat_at, got.finished_at), (None, None));
    assert!(!got.presumed_dead);
}

/// `create` replaces an existing record whole: no field of the old one survives.
pub async fn create_replaces_the_record_atomically<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create(
        "j",
        &JobRecord::queued().with_field("old", "1").with_field("both", "old"),
        LONG_TTL,
    )
    .await
    .unwrap();
    s.transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new().progress(50))
        .await
        .unwrap();
    s.create("j", &JobRecord::queued().with_field("both", "new"), LONG_TTL)
        .await
        .unwrap();
    let got = get(&s, "j").await.unwrap();
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!(got.progress, None);
    assert_eq!(got.field("old"), None);
    assert_eq!(got.field("both").map(|b| &b[..]), Some(&b"new"[..]));
}

/// A record expires after its TTL.
pub async fn records_expire_after_their_ttl<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let ttl = fx.short_ttl();
    s.create("short", &JobRecord::queued(), ttl).await.unwrap();
    s.create("long", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert!(get(&s, "short").await.is_some());
    fx.advance(ttl + ttl / 2).await;
    assert!(get(&s, "short").await.is_none());
    assert!(get(&s, "long").await.is_some());
}

/// A write at the field-count limit is accepted and stored whole, by `create`,
/// `update` and `transition` alike (a backend that builds one command per write must
/// not meet a limit of its own below the store's).
pub async fn a_write_at_the_field_limit_is_stored_whole<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let c = JobStoreConfig::default();
    let max = c.max_fields;
    // The record's own fields (its status, its attempts) count too.
    let own = crate::model::encode_record(&JobRecord::queued(), c.field_format)
        .unwrap()
        .len();
    let record = (own..max).fold(JobRecord::queued(), |r, i| r.with_field(format!("c{i}"), i.to_string()));
    s.create("j", &record, LONG_TTL).await.unwrap();
    let patch = |p: &str| (0..max).fold(Patch::new(), |acc, i| acc.field(format!("{p}{i}"), i.to_string()));
    assert!(s.update("j", &patch("u")).await.unwrap().value);
    let t = s
        .transition("j", JobStatus::Queued, JobStatus::Running, &patch("t"))
        .await
        .unwrap();
    assert_eq!(t.value, Outcome::Applied);
    let got = get(&s, "j").await.unwrap();
    assert_eq!(got.status, JobStatus::Running);
    for (p, from) in [("c", own), ("u", 0), ("t", 0)] {
        for i in from..max {
            let v = i.to_string();
            assert_eq!(
                got.field(&format!("{p}{i}")).map(|b| &b[..]),
                Some(v.as_bytes()),
                "{p}{i}"
            );
        }
    }
    assert_eq!(got.fields.len(), 3 * max - own);
}

/// Bad ids, field names, field sizes and TTLs are `InvalidInput` and write nothing.
pub async fn bad_input_is_invalid_input_and_writes_nothing<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx).with_config(JobStoreConfig::default().with_max_field_len(1024));
    let ok = JobRecord::queued();
    let long_id = "i".repeat(257);
    let cases = [
        s.create("", &ok, LONG_TTL).await,
        s.create(&long_id, &ok, LONG_TTL).await,
        s.create("j", &ok, Duration::ZERO).await,
        s.create("j", &JobRecord::queued().with_field("", "v"), LONG_TTL).await,
        s.create("j", &JobRecord::queued().with_field("n".repeat(129), "v"), LONG_TTL)
            .await,
        s.create("j", &JobRecord::queued().with_field("big", vec![0u8; 2000]), LONG_TTL)
            .await,
        s.create_if_absent("", &ok, LONG_TTL).await,
    ];
    for r in cases {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(
        s.update("", &Patch::new().progress(1)).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(s.get(&long_id).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(s.delete("").await.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(s.heartbeat("").await.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(get(&s, "j").await.is_none(), "nothing was written");
    s.create("j", &ok, LONG_TTL).await.unwrap();
    let big = Patch::new().result(vec![0u8; 2000]);
    assert_eq!(s.update("j", &big).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    let big = s.transition("j", JobStatus::Queued, JobStatus::Running, &big).await;
    assert_eq!(big.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        get(&s, "j").await.unwrap().status,
        JobStatus::Queued,
        "the refused transition wrote nothing"
    );
}

// ---- create_if_absent -------------------------------------------------------------------

/// `create_if_absent` fails with `Conflict` when the id exists and leaves it unchanged;
/// an expired or deleted record counts as absent.
pub async fn create_if_absent_conflicts_and_leaves_the_record<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create_if_absent("j", &JobRecord::queued().with_field("v", "first"), LONG_TTL)
        .await
        .unwrap();
    let e = s
        .create_if_absent("j", &JobRecord::queued().with_field("v", "second"), LONG_TTL)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        get(&s, "j").await.unwrap().field("v").map(|b| &b[..]),
        Some(&b"first"[..])
    );
    s.delete("j").await.unwrap();
    s.create_if_absent("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let ttl = fx.short_ttl();
    s.create_if_absent("e", &JobRecord::queued(), ttl).await.unwrap();
    fx.advance(ttl + ttl / 2).await;
    s.create_if_absent("e", &JobRecord::queued(), LONG_TTL).await.unwrap();
}

// ---- update -------------------------------------------------------------------------------

/// `update` writes only the patch's fields, sets `updated_at` and refreshes the TTL.
pub async fn update_writes_only_its_fields_and_refreshes_the_ttl<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let ttl = fx.short_ttl() * 2;
    s.create("j", &JobRecord::queued().with_field("keep", "k").with_attempts(3), ttl)
        .await
        .unwrap();
    let before = get(&s, "j").await.unwrap();
    fx.advance(ttl * 6 / 10).await;
    assert!(
        s.update("j", &Patch::new().progress(40).field("new", "n"))
            .await
            .unwrap()
            .value
    );
    let got = get(&s, "j").await.unwrap();
    assert_eq!((got.progress, got.attempts), (Some(40), 3));
    assert_eq!(got.field("keep").map(|b| &b[..]), Some(&b"k"[..]));
    assert_eq!(got.field("new").map(|b| &b[..]), Some(&b"n"[..]));
    assert_eq!(got.created_at, before.created_at);
    assert!(got.updated_at >= before.updated_at);
    fx.advance(ttl * 6 / 10).await;
    assert!(get(&s, "j").await.is_some(), "the update refreshed the TTL");
}

/// After expiry or delete, `update` writes nothing, creates nothing, returns false.
pub async fn update_never_resurrects<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    assert!(!s.update("never", &Patch::new().progress(1)).await.unwrap().value);
    assert!(get(&s, "never").await.is_none());
    let ttl = fx.short_ttl();
    s.create("expiring", &JobRecord::queued(), ttl).await.unwrap();
    fx.advance(ttl + ttl / 2).await;
    assert!(
        !s.update("expiring", &Patch::new().progress(1).field("x", "y"))
            .await
            .unwrap()
            .value
    );
    assert!(
        get(&s, "expiring").await.is_none(),
        "an update after expiry created nothing"
    );
    s.create("deleted", &JobRecord::queued(), LONG_TTL).await.unwrap();
    s.delete("deleted").await.unwrap();
    assert!(!s.update("deleted", &Patch::new().progress(1)).await.unwrap().value);
    assert!(get(&s, "deleted").await.is_none());
    let t = s
        .transition("deleted", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!(t.value, Outcome::NotFound);
    assert!(get(&s, "deleted").await.is_none());
}

/// Concurrent writers of disjoint fields never lose each other's writes.
pub async fn concurrent_writers_of_disjoint_fields_lose_nothing<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let writers: Vec<_> = ["api", "worker"]
        .into_iter()
        .map(|role| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let p = Patch::new()
                        .field(format!("{role}-{i}"), i.to_string())
                        .field(role, i.to_string());
                    assert!(s.update("j", &p).await.unwrap().value);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let got = get(&s, "j").await.unwrap();
    for role in ["api", "worker"] {
        for i in 0..1000 {
            assert_eq!(
                got.field(&format!("{role}-{i}")).map(|b| &b[..]),
                Some(i.to_string().as_bytes()),
                "{role}-{i} lost"
            );
        }
        assert_eq!(
            got.field(role).map(|b| &b[..]),
            Some(&b"999"[..]),
            "the last write of {role} wins"
        );
    }
    assert_eq!(got.fields.len(), 2002);
}

/// On the same field the last writer wins.
pub async fn the_last_writer_of_a_field_wins<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    for v in ["a", "b", "c"] {
        s.update("j", &Patch::new().field("f", v).error(v)).await.unwrap();
    }
    let got = get(&s, "j").await.unwrap();
    assert_eq!(got.field("f").map(|b| &b[..]), Some(&b"c"[..]));
    assert_eq!(got.error.as_deref(), Some("c"));
}

/// An empty patch writes nothing, refreshes nothing and says whether the record exists.
pub async fn an_empty_patch_writes_nothing_and_reports_existence<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    assert!(!s.update("j", &Patch::new()).await.unwrap().value);
    assert!(get(&s, "j").await.is_none());
    let ttl = fx.short_ttl() * 2;
    s.create("j", &JobRecord::queued(), ttl).await.unwrap();
    let before = get(&s, "j").await.unwrap();
    fx.advance(ttl * 6 / 10).await;
    assert!(s.update("j", &Patch::new()).await.unwrap().value);
    assert_eq!(
        get(&s, "j").await.unwrap().updated_at,
        before.updated_at,
        "nothing written"
    );
    fx.advance(ttl * 6 / 10).await;
    assert!(get(&s, "j").await.is_none(), "the TTL was not refreshed");
}

// ---- get ---------------------------------------------------------------------------------

/// Fields stored as envelopes or as plain text both decode.
pub async fn get_decodes_text_and_envelope_forms<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let key = s.key("raw").unwrap();
    let mut fields = FieldMap::new();
    let env = |v: &dyn erased::Enc| Bytes::from(v.enc());
    fields.insert(field::STATUS.into(), env(&"running".to_owned()));
    fields.insert(field::PROGRESS.into(), Bytes::from_static(b"42"));
    fields.insert(field::ATTEMPTS.into(), env(&3u32));
    fields.insert(field::ERROR.into(), Bytes::from_static(b"plain text"));
    fields.insert(field::RESULT.into(), env(&b"enveloped".to_vec()));
    fields.insert(
        format!("{}text", field::USER_PREFIX),
        Bytes::from_static(b"written by redis-cli"),
    );
    fields.insert(format!("{}env", field::USER_PREFIX), env(&b"enveloped".to_vec()));
    fields.insert("unknown-future-field".into(), Bytes::from_static(b"ignored"));
    s.backend()
        .run(&crate::op::Create::new(key.clone(), fields.clone(), LONG_TTL, false))
        .await
        .unwrap();
    let got = get(&s, "raw").await.unwrap();
    assert_eq!(got.status, JobStatus::Running);
    assert_eq!((got.progress, got.attempts), (Some(42), 3));
    assert_eq!(got.error.as_deref(), Some("plain text"));
    assert_eq!(got.result.as_deref(), Some(&b"enveloped"[..]));
    assert_eq!(got.field("text").map(|b| &b[..]), Some(&b"written by redis-cli"[..]));
    assert_eq!(got.field("env").map(|b| &b[..]), Some(&b"enveloped"[..]));
    assert_eq!(got.fields.len(), 2);
}

/// A store writing JSON fields and one writing postcard read each other's records; the
/// JSON fields are plain JSON behind the three-byte envelope (`0xA2`, schema 1):
/// numbers as numbers, strings as strings, UTF-8 bytes as a string, other bytes as an
/// array of numbers.
pub async fn json_fields_are_plain_json_and_read_back_in_either_format<F: Fixture<Backend: JobBackend>>(fx: &F) {
    use palisade_cache_core::Format;
    let postcard = store_for(fx);
    let json = postcard
        .clone()
        .with_config(crate::JobStoreConfig::default().with_field_format(Format::Json));
    let mut rec = JobRecord::queued();
    rec.progress = Some(42);
    rec.attempts = 2;
    rec.error = Some("boom".into());
    rec.result = Some(Bytes::from_static(br#"{"ok":true}"#));
    rec.fields.insert("text".into(), Bytes::from_static(b"hello"));
    rec.fields.insert("bin".into(), Bytes::from_static(&[0xff, 0]));
    json.create("j", &rec, LONG_TTL).await.unwrap();
    let raw = postcard
        .backend()
        .run(&crate::op::Get::new(postcard.key("j").unwrap()))
        .await
        .unwrap()
        .value
        .expect("the record");
    let envelope = |body: &[u8]| [&[0xA2, 1, 0][..], body].concat();
    for (name, body) in [
        (field::PROGRESS, &b"42"[..]),
        (field::ATTEMPTS, b"2"),
        (field::ERROR, br#""boom""#),
        (field::RESULT, br#""{\"ok\":true}""#),
        ("f:text", br#""hello""#),
        ("f:bin", b"[255,0]"),
    ] {
        assert_eq!(
            raw.fields.get(name).map(|b| &b[..]),
            Some(&envelope(body)[..]),
            "{name}"
        );
    }
    for reader in [&postcard, &json] {
        let got = get(reader, "j").await.unwrap();
        assert_eq!(
            (got.progress, got.attempts, got.error.as_deref()),
            (Some(42), 2, Some("boom"))
        );
        assert_eq!(got.result, rec.result);
        assert_eq!(got.fields, rec.fields);
    }
    // The postcard store writes postcard; the JSON store reads it.
    postcard.update("j", &Patch::new().progress(7)).await.unwrap();
    let raw = postcard
        .backend()
        .run(&crate::op::Get::new(postcard.key("j").unwrap()))
        .await
        .unwrap()
        .value
        .expect("the record");
    assert_eq!(raw.fields.get(field::PROGRESS).and_then(|b| b.first()), Some(&0xA1));
    assert_eq!(get(&json, "j").await.unwrap().progress, Some(7));
}

mod erased {
    pub(super) trait Enc {
        fn enc(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> Vec<u8> {
            super::FIELD_CODEC.encode(self, "test").unwrap()
        }
    }
}

/// An undecodable field, an unknown status or a missing status is `Codec` naming the
/// field.
pub async fn undecodable_fields_are_codec_errors_naming_the_field<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    type RawFields<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: [(&str, RawFields, &str); 5] = [
        (
            "bad-progress",
            vec![("status", b"queued"), ("progress", b"forty")],
            "progress",
        ),
        (
            "bad-envelope",
            vec![
                ("status", b"queued"),
                ("attempts", b"\xa1\x01\x00\xff\xff\xff\xff\xff\xff"),
            ],
            "attempts",
        ),
        ("unknown-status", vec![("status", b"paused")], "status"),
        ("no-status", vec![("progress", b"1")], "status"),
        (
            "bad-time",
            vec![("status", b"queued"), ("heartbeat_at", b"yesterday")],
            "heartbeat_at",
        ),
    ];
    for (id, raw, named) in cases {
        let key = s.key(id).unwrap();
        let fields: FieldMap = raw
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Bytes::copy_from_slice(v)))
            .collect();
        s.backend()
            .run(&crate::op::Create::new(key.clone(), fields.clone(), LONG_TTL, false))
            .await
            .unwrap();
        let e = s.get(id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Codec, "{id}");
        assert!(e.to_string().contains(named), "{id}: {e}");
    }
    // A refusal that finds an unknown status is a codec error too.
    let e = s
        .transition("unknown-status", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
}

// ---- transition ------------------------------------------------------------------------

/// Exactly the four edges are allowed; every other pair is `InvalidInput` before I/O.
pub async fn only_the_lifecycle_edges_are_allowed<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    for from in JobStatus::ALL {
        for to in JobStatus::ALL {
            let id = format!("{from}-{to}");
            s.create(&id, &JobRecord::new(from), LONG_TTL).await.unwrap();
            let r = s.transition(&id, from, to, &Patch::new()).await;
            if from.can_become(to) {
                assert_eq!(r.unwrap().value, Outcome::Applied, "{from} → {to}");
                assert_eq!(get(&s, &id).await.unwrap().status, to);
            } else {
                assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput, "{from} → {to}");
                assert_eq!(
                    get(&s, &id).await.unwrap().status,
                    from,
                    "{from} → {to} changed nothing"
                );
            }
        }
    }
    let allowed = JobStatus::ALL
        .iter()
        .flat_map(|a| JobStatus::ALL.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a.can_become(*b))
        .count();
    assert_eq!(allowed, 4);
}

/// A compare-and-set that does not match refuses with the status found and writes
/// nothing; a matching one writes the patch in the same step.
pub async fn transition_is_a_compare_and_set_with_its_patch<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::new(JobStatus::Running), LONG_TTL)
        .await
        .unwrap();
    let r = s
        .transition(
            "j",
            JobStatus::Queued,
            JobStatus::Running,
            &Patch::new().progress(1).field("x", "y"),
        )
        .await;
    assert_eq!(
        r.unwrap().value,
        Outcome::Refused {
            found: JobStatus::Running
        }
    );
    let got = get(&s, "j").await.unwrap();
    assert_eq!(
        (got.progress, got.field("x")),
        (None, None),
        "a refused transition wrote nothing"
    );
    let done = Patch::new().result("done").progress(100);
    let r = s.transition("j", JobStatus::Running, JobStatus::Completed, &done).await;
    assert_eq!(r.unwrap().value, Outcome::Applied);
    let got = get(&s, "j").await.unwrap();
    assert_eq!((got.status, got.progress), (JobStatus::Completed, Some(100)));
    assert_eq!(got.result.as_deref(), Some(&b"done"[..]));
    assert!(got.finished_at.is_some());
    let missing = s
        .transition("missing", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!(missing.value, Outcome::NotFound);
}

/// A terminal status never changes.
pub async fn a_terminal_status_never_changes<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::new(JobStatus::Running), LONG_TTL)
        .await
        .unwrap();
    assert_eq!(
        s.transition("j", JobStatus::Running, JobStatus::Completed, &Patch::new())
            .await
            .unwrap()
            .value,
        Outcome::Applied
    );
    let refused = s
        .transition("j", JobStatus::Running, JobStatus::Failed, &Patch::new().error("late"))
        .await
        .unwrap();
    assert_eq!(
        refused.value,
        Outcome::Refused {
            found: JobStatus::Completed
        }
    );
    let e = s
        .transition("j", JobStatus::Completed, JobStatus::Running, &Patch::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let got = get(&s, "j").await.unwrap();
    assert_eq!((got.status, got.error), (JobStatus::Completed, None));
}

/// Of concurrent identical transitions exactly one applies.
pub async fn concurrent_transitions_apply_once<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.transition(
                    "j",
                    JobStatus::Queued,
                    JobStatus::Running,
                    &Patch::new().field("winner", i.to_string()),
                )
                .await
                .unwrap()
                .value
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Applied => applied += 1,
            Outcome::Refused { found } => assert_eq!(found, JobStatus::Running),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(applied, 1);
}

/// The enqueue-failure path ends `Failed` with its reason and time.
pub async fn a_failed_enqueue_ends_failed_with_reason_and_time<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert_eq!(
        s.fail_enqueue("j", "queue unreachable").await.unwrap().value,
        Outcome::Applied
    );
    let got = get(&s, "j").await.unwrap();
    assert_eq!(got.status, JobStatus::Failed);
    assert_eq!(got.error.as_deref(), Some("queue unreachable"));
    assert!(got.finished_at.is_some() && got.finished_at >= got.created_at);
    assert_eq!(
        s.fail_enqueue("j", "again").await.unwrap().value,
        Outcome::Refused {
            found: JobStatus::Failed
        }
    );
}

// ---- heartbeat ------------------------------------------------------------------------

/// `heartbeat` stamps a running job; a job that is not running is refused.
pub async fn heartbeat_applies_only_to_running_jobs<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    assert_eq!(s.heartbeat("missing").await.unwrap().value, Outcome::NotFound);
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert_eq!(
        s.heartbeat("j").await.unwrap().value,
        Outcome::Refused {
            found: JobStatus::Queued
        }
    );
    assert_eq!(get(&s, "j").await.unwrap().heartbeat_at, None);
    s.transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!(s.heartbeat("j").await.unwrap().value, Outcome::Applied);
    let got = get(&s, "j").await.unwrap();
    assert!(got.heartbeat_at.is_some() && got.heartbeat_at >= got.created_at);
}

/// A running job without a heartbeat for longer than the timeout reads back presumed
/// dead; a heartbeat revives it; a finished job is never presumed dead.
pub async fn a_silent_running_job_is_presumed_dead<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let timeout = fx.short_ttl();
    let s = store_for(fx).with_config(JobStoreConfig::default().with_heartbeat_timeout(timeout));
    s.create("j", &JobRecord::new(JobStatus::Running), LONG_TTL)
        .await
        .unwrap();
    s.create("done", &JobRecord::new(JobStatus::Completed), LONG_TTL)
        .await
        .unwrap();
    assert!(!get(&s, "j").await.unwrap().presumed_dead);
    fx.advance(timeout * 2).await;
    assert!(get(&s, "j").await.unwrap().presumed_dead);
    assert!(!get(&s, "done").await.unwrap().presumed_dead);
    s.heartbeat("j").await.unwrap();
    assert!(!get(&s, "j").await.unwrap().presumed_dead);
    fx.advance(timeout * 2).await;
    assert!(get(&s, "j").await.unwrap().presumed_dead);
}

// ---- delete / provenance -------------------------------------------------------------------

/// `delete` says whether a record was there.
pub async fn delete_reports_presence<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert!(s.delete("j").await.unwrap().value);
    assert!(!s.delete("j").await.unwrap().value);
    assert!(get(&s, "j").await.is_none());
}

/// Two tenants with the same id never see each other's records (through
/// [`JobStore::for_tenant`], what `Palisade::tenant` hands out), and the stats of
/// both count together.
pub async fn tenants_never_see_each_other<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let a = store_for(fx);
    let b = a.for_tenant("tenant-other").unwrap();
    a.create("j", &JobRecord::queued().with_field("owner", "a"), LONG_TTL)
        .await
        .unwrap();
    assert!(get(&b, "j").await.is_none(), "another tenant sees nothing");
    assert!(!b.update("j", &Patch::new().progress(5)).await.unwrap().value);
    b.create("j", &JobRecord::queued().with_field("owner", "b"), LONG_TTL)
        .await
        .unwrap();
    let owner = |r: Option<JobRecord>| r.and_then(|r| r.fields.get("owner").cloned());
    assert_eq!(owner(get(&a, "j").await).as_deref(), Some(&b"a"[..]));
    assert_eq!(owner(get(&b, "j").await).as_deref(), Some(&b"b"[..]));
    assert!(b.delete("j").await.unwrap().value);
    assert!(get(&a, "j").await.is_some(), "a delete of one tenant leaves the other");
    assert_eq!(a.stats().created, 2, "tenant handles share the counters");
}

/// `stats` counts writes that took effect and errors by kind; clones and namespace
/// siblings share the counters.
pub async fn stats_count_writes_that_took_effect_and_errors<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let sibling = s.namespace("jobs-other").unwrap();
    s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    sibling.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert!(s.update("j", &Patch::new().progress(1)).await.unwrap().value);
    assert!(!s.update("gone", &Patch::new().progress(1)).await.unwrap().value);
    assert!(
        s.update("j", &Patch::new()).await.unwrap().value,
        "an empty patch only says the record exists"
    );
    let applied = s
        .transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!(applied.value, Outcome::Applied);
    let refused = s
        .transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert!(matches!(refused.value, Outcome::Refused { .. }));
    assert!(s.delete("j").await.unwrap().value);
    assert!(!s.delete("j").await.unwrap().value);
    assert_eq!(
        s.create("", &JobRecord::queued(), LONG_TTL).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let st = s.clone().stats();
    assert_eq!(
        (st.created, st.updated, st.transitions, st.deleted),
        (2, 1, 1, 1),
        "only writes that took effect count: {st:?}"
    );
    assert_eq!(
        st.degraded > 0,
        fx.provenance() == Provenance::LocalDegraded,
        "answers from a degraded fallback are counted"
    );
    assert_eq!(st.status.errors_of(ErrorKind::InvalidInput), 1);
    assert_eq!(
        st.status.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::InvalidInput)
    );
    assert_eq!(st.status.mode, fx.backend().status().mode);
    assert_eq!(sibling.stats(), st, "siblings share the counters");
}

/// Every answer carries the backend's provenance.
pub async fn answers_carry_the_backend_provenance<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let p = fx.provenance();
    assert_eq!(
        s.create("j", &JobRecord::queued(), LONG_TTL).await.unwrap().provenance,
        p
    );
    assert_eq!(s.get("j").await.unwrap().provenance, p);
    assert_eq!(s.get("none").await.unwrap().provenance, p);
    assert_eq!(s.update("j", &Patch::new().progress(1)).await.unwrap().provenance, p);
    assert_eq!(
        s.transition("j", JobStatus::Queued, JobStatus::Running, &Patch::new())
            .await
            .unwrap()
            .provenance,
        p
    );
    assert_eq!(s.heartbeat("j").await.unwrap().provenance, p);
    assert_eq!(s.delete("j").await.unwrap().provenance, p);
}

// ---- versions, watch and wait_for ------------------------------------------------------

/// A store whose watches never re-check within a case: a lost wake-up shows as a
/// re-check (Redis returns at its longest block, 5 s) instead of passing unnoticed.
fn watching_store<F: Fixture<Backend: JobBackend>>(fx: &F) -> JobStore<F::Backend> {
    store_for(fx).with_config(JobStoreConfig::default().with_watch_recheck(Duration::from_secs(60)))
}

/// Returns once a watcher waits on the record `id` (at once where the fixture cannot
/// tell), so the write that follows is delivered by a wake-up.
async fn until_watched<F: Fixture<Backend: JobBackend>>(fx: &F, s: &JobStore<F::Backend>, id: &str) {
    let key = s.key(id).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fx.watchers(&key).await.is_some_and(|n| n == 0) {
        assert!(tokio::time::Instant::now() < deadline, "no watcher came to {id}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn record_of(e: Option<Result<JobEvent, palisade_cache_core::Error>>) -> (JobRecord, u64, Vec<String>) {
    match e {
        Some(Ok(JobEvent::Record {
            record,
            missed,
            changed,
            ..
        })) => (record, missed, changed),
        other => panic!("expected a record, got {other:?}"),
    }
}

/// Every write that took effect moves the version by one; nothing else moves it.
pub async fn every_write_moves_the_version_by_one<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = store_for(fx);
    let version = |s: JobStore<F::Backend>| async move { get(&s, "v").await.map(|r| r.version) };
    s.create("v", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert_eq!(version(s.clone()).await, Some(1));
    assert!(s.update("v", &Patch::new().progress(1)).await.unwrap().value);
    assert_eq!(version(s.clone()).await, Some(2));
    s.update("v", &Patch::new()).await.unwrap();
    let refused = s
        .transition("v", JobStatus::Running, JobStatus::Completed, &Patch::new())
        .await;
    assert!(matches!(refused.unwrap().value, Outcome::Refused { .. }));
    assert!(matches!(s.heartbeat("v").await.unwrap().value, Outcome::Refused { .. }));
    assert!(s.create_if_absent("v", &JobRecord::queued(), LONG_TTL).await.is_err());
    assert_eq!(version(s.clone()).await, Some(2), "no write took effect");
    s.transition("v", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    assert_eq!(version(s.clone()).await, Some(3));
    assert_eq!(s.heartbeat("v").await.unwrap().value, Outcome::Applied);
    assert_eq!(version(s.clone()).await, Some(4));
    s.create("v", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert_eq!(version(s.clone()).await, Some(5), "a replacement goes on counting");
    s.delete("v").await.unwrap();
    s.create("v", &JobRecord::queued(), LONG_TTL).await.unwrap();
    assert_eq!(version(s).await, Some(1), "a new record starts at 1");
}

/// `watch` yields the record, then one item per change (the fields that changed
/// named), woken by the writes, and ends after a terminal status.
pub async fn watch_yields_each_change_and_ends_at_a_terminal_status<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = watching_store(fx);
    s.create("w", &JobRecord::queued().with_field("owner", "api"), LONG_TTL)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut w = s.watcher("w");
    let reader = tokio::spawn(async move {
        while let Some(e) = w.next().await {
            tx.send(e).unwrap();
        }
    });
    let (first, missed, changed) = record_of(rx.recv().await);
    assert_eq!((first.status, first.version, missed), (JobStatus::Queued, 1, 0));
    for name in ["status", "created_at", "f:owner"] {
        assert!(changed.iter().any(|c| c == name), "{name} in {changed:?}");
    }
    let steps: [(&str, &[&str]); 4] = [
        ("run", &["status"]),
        ("progress", &["progress"]),
        ("field", &["f:owner"]),
        ("complete", &["finished_at", "result", "status"]),
    ];
    for (n, (step, expected)) in (2..).zip(steps) {
        let (from, to, patch) = match step {
            "run" => (JobStatus::Queued, JobStatus::Running, None),
            "progress" => (JobStatus::Running, JobStatus::Running, Some(Patch::new().progress(50))),
            "field" => (
                JobStatus::Running,
                JobStatus::Running,
                Some(Patch::new().field("owner", "worker")),
            ),
            _ => (
                JobStatus::Running,
                JobStatus::Completed,
                Some(Patch::new().result("done")),
            ),
        };
        until_watched(fx, &s, "w").await;
        if from == to {
            assert!(s.update("w", &patch.unwrap()).await.unwrap().value);
        } else {
            let patch = patch.unwrap_or_default();
            assert_eq!(
                s.transition("w", from, to, &patch).await.unwrap().value,
                Outcome::Applied
            );
        }
        let (r, missed, changed) = record_of(rx.recv().await);
        assert_eq!((r.version, missed), (n, 0), "after {step}");
        assert_eq!(changed, expected, "after {step}");
    }
    assert!(rx.recv().await.is_none(), "the watch ended after `completed`");
    reader.await.unwrap();
    assert_eq!(s.stats().watch_rechecks, 0, "every change woke the watcher");
}

/// `watch` ends with `Gone` when the record is deleted, when it expires (while the
/// watcher waits), and at once for a record that never existed.
pub async fn watch_ends_with_gone_on_delete_expiry_and_absence<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = watching_store(fx);
    let mut never = s.watcher("never");
    assert_eq!(never.next().await.unwrap().unwrap(), JobEvent::Gone);
    assert!(never.next().await.is_none());

    s.create("d", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let mut w = s.watcher("d");
    record_of(w.next().await);
    let (gone, deleted) = tokio::join!(w.next(), async {
        until_watched(fx, &s, "d").await;
        s.delete("d").await.unwrap()
    });
    assert!(deleted.value);
    assert_eq!(gone.unwrap().unwrap(), JobEvent::Gone);
    assert!(w.next().await.is_none());

    let ttl = fx.short_ttl();
    s.create("e", &JobRecord::queued(), ttl).await.unwrap();
    let mut w = s.watcher("e");
    record_of(w.next().await);
    let gone = if fx.controls_time() {
        fx.advance(ttl + ttl / 2).await;
        w.next().await
    } else {
        // Real time: the watcher is waiting when the record expires.
        tokio::join!(w.next(), fx.advance(ttl / 2)).0
    };
    assert_eq!(gone.unwrap().unwrap(), JobEvent::Gone);
    assert_eq!(s.stats().watch_rechecks, 0, "the expiry ended the wait, not a re-check");
}

/// A watcher that falls behind is told: its next item is the record as it is, with
/// the number of changes it did not see one by one.
pub async fn a_watcher_that_falls_behind_is_told<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = watching_store(fx);
    s.create("b", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let mut w = s.watcher("b");
    record_of(w.next().await);
    for p in [10, 20, 30] {
        s.update("b", &Patch::new().progress(p)).await.unwrap();
    }
    let (r, missed, changed) = record_of(w.next().await);
    assert_eq!((r.progress, r.version, missed), (Some(30), 4, 2));
    assert_eq!(changed, ["progress"]);
    s.transition("b", JobStatus::Queued, JobStatus::Failed, &Patch::new().error("no"))
        .await
        .unwrap();
    let (r, missed, _) = record_of(w.next().await);
    assert_eq!((r.status, missed), (JobStatus::Failed, 0));
    assert!(w.next().await.is_none());
}

/// No change is lost while a watch starts and runs beside a busy writer: each item's
/// version is the previous one's plus one plus its `missed`, up to the terminal one.
pub async fn no_change_is_lost_beside_a_busy_writer<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = watching_store(fx);
    s.create("n", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for p in 0..30 {
                s.update("n", &Patch::new().progress(p)).await.unwrap();
            }
            s.transition("n", JobStatus::Queued, JobStatus::Completed, &Patch::new())
                .await
                .unwrap_err();
            s.transition("n", JobStatus::Queued, JobStatus::Failed, &Patch::new())
                .await
                .unwrap();
        })
    };
    let mut w = s.watcher("n");
    let (first, _, _) = record_of(w.next().await);
    let mut version = first.version;
    let mut last = first;
    while let Some(e) = w.next().await {
        let (r, missed, _) = record_of(Some(e));
        assert_eq!(r.version, version + 1 + missed, "every change is delivered or counted");
        version = r.version;
        last = r;
    }
    writer.await.unwrap();
    assert_eq!((last.status, last.version), (JobStatus::Failed, 32));
    assert_eq!(last.progress, Some(29));
}

/// `wait_for` answers at once when the status is there, and is woken by the
/// transition that brings it.
pub async fn wait_for_answers_at_once_or_when_the_transition_comes<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = watching_store(fx);
    let wanted = [JobStatus::Completed, JobStatus::Failed];
    s.create("q", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let at_once = s.wait_for("q", &[JobStatus::Queued], Duration::ZERO).await.unwrap();
    assert!(matches!(at_once.value, WaitOutcome::Reached(r) if r.status == JobStatus::Queued));
    assert_eq!(at_once.provenance, fx.provenance());
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for("q", &wanted, Duration::from_secs(30)).await })
    };
    until_watched(fx, &s, "q").await;
    s.transition("q", JobStatus::Queued, JobStatus::Running, &Patch::new())
        .await
        .unwrap();
    until_watched(fx, &s, "q").await;
    s.update("q", &Patch::new().progress(99)).await.unwrap();
    until_watched(fx, &s, "q").await;
    s.transition(
        "q",
        JobStatus::Running,
        JobStatus::Completed,
        &Patch::new().result("ok"),
    )
    .await
    .unwrap();
    match waiter.await.unwrap().unwrap().value {
        WaitOutcome::Reached(r) => {
            assert_eq!((r.status, r.progress), (JobStatus::Completed, Some(99)));
            assert_eq!(r.result.as_deref(), Some(&b"ok"[..]));
        }
        other => panic!("expected Reached, got {other:?}"),
    }
    assert_eq!(s.stats().watch_rechecks, 0, "woken by the writes");
}

/// `wait_for` says `Never` for another terminal status, `Gone` without a record (or
/// when it goes away), `TimedOut` with the record after the timeout; bad arguments are
/// `InvalidInput`.
pub async fn wait_for_tells_never_gone_and_timed_out<F: Fixture<Backend: JobBackend>>(fx: &F) {
    let s = watching_store(fx);
    let done = [JobStatus::Completed];
    s.create("f", &JobRecord::queued(), LONG_TTL).await.unwrap();
    s.transition("f", JobStatus::Queued, JobStatus::Failed, &Patch::new())
        .await
        .unwrap();
    let never = s.wait_for("f", &done, Duration::from_secs(30)).await.unwrap().value;
    assert!(matches!(never, WaitOutcome::Never(r) if r.status == JobStatus::Failed));
    let gone = s
        .wait_for("absent", &done, Duration::from_secs(30))
        .await
        .unwrap()
        .value;
    assert_eq!(gone, WaitOutcome::Gone);

    s.create("t", &JobRecord::queued(), LONG_TTL).await.unwrap();
    let timed_out = s.wait_for("t", &done, Duration::from_millis(50)).await.unwrap().value;
    assert!(matches!(timed_out, WaitOutcome::TimedOut(r) if r.status == JobStatus::Queued));
    let (gone, _) = tokio::join!(s.wait_for("t", &done, Duration::from_secs(30)), async {
        until_watched(fx, &s, "t").await;
        s.delete("t").await.unwrap()
    });
    assert_eq!(gone.unwrap().value, WaitOutcome::Gone);

    for bad in [
        s.wait_for("f", &[], Duration::from_secs(1)).await,
        s.wait_for("f", &done, Duration::from_secs(86_401)).await,
        s.wait_for("f", &done, Duration::MAX).await,
        s.wait_for("", &done, Duration::from_secs(1)).await,
    ] {
        assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let mut bad = s.watcher("");
    assert_eq!(bad.next().await.unwrap().unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(bad.next().await.is_none());
}

// ---- the model ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum JobOp {
    Create(u8, u8, bool),
    Update(u8, u8, u8),
    EmptyUpdate(u8),
    Transition(u8, u8, u8),
    Heartbeat(u8),
    Delete(u8),
    Get(u8),
    Advance(u16),
}

fn op_strategy(time: bool) -> BoxedStrategy<JobOp> {
    let id = 0u8..4;
    let base = prop_oneof![
        2 => (id.clone(), 0u8..4, any::<bool>()).prop_map(|(i, s, a)| JobOp::Create(i, s, a)),
        4 => (id.clone(), 0u8..4, any::<u8>()).prop_map(|(i, f, v)| JobOp::Update(i, f, v)),
        1 => id.clone().prop_map(JobOp::EmptyUpdate),
        4 => (id.clone(), 0u8..4, 0u8..4).prop_map(|(i, a, b)| JobOp::Transition(i, a, b)),
        1 => id.clone().prop_map(JobOp::Heartbeat),
        1 => id.clone().prop_map(JobOp::Delete),
        4 => id.prop_map(JobOp::Get),
    ];
    if time {
        prop_oneof![9 => base, 1 => (1u16..200).prop_map(JobOp::Advance)].boxed()
    } else {
        base.boxed()
    }
}

#[derive(Debug, Clone)]
struct ModelRec {
    status: JobStatus,
    fields: BTreeMap<String, u8>,
    expires: u64,
    ttl: u64,
}

/// Random operation sequences against the backend and a `HashMap` model.
pub fn run_model<F: Fixture<Backend: JobBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    palisade_cache_core::testkit::run_op_sequences(op_strategy(fx.controls_time()), cases, |ops| {
        rt.block_on(check_model(fx, ops))
    });
}

async fn check_model<F: Fixture<Backend: JobBackend>>(fx: &F, ops: &[JobOp]) {
    let s = store_for(fx);
    let mut model: HashMap<u8, ModelRec> = HashMap::new();
    let mut now = 0u64; // seconds
    let ttls = if fx.controls_time() {
        [10u64, 60, 600]
    } else {
        [600, 600, 600]
    };
    let st = |i: u8| JobStatus::ALL[usize::from(i) % 4];
    for (step, op) in ops.iter().enumerate() {
        model.retain(|_, r| r.expires > now);
        let ctx = || format!("step {step}: {op:?} in {ops:?}");
        match *op {
            JobOp::Create(i, status, if_absent) => {
                let ttl = ttls[usize::from(i) % 3];
                let rec = JobRecord::new(st(status));
                let r = if if_absent {
                    s.create_if_absent(&i.to_string(), &rec, Duration::from_secs(ttl)).await
                } else {
                    s.create(&i.to_string(), &rec, Duration::from_secs(ttl)).await
                };
                if if_absent && model.contains_key(&i) {
                    assert_eq!(r.unwrap_err().kind(), ErrorKind::Conflict, "{}", ctx());
                } else {
                    r.unwrap();
                    model.insert(
                        i,
                        ModelRec {
                            status: st(status),
                            fields: BTreeMap::new(),
                            expires: now + ttl,
                            ttl,
                        },
                    );
                }
            }
            JobOp::Update(i, f, v) => {
                let applied = s
                    .update(&i.to_string(), &Patch::new().field(format!("f{f}"), vec![v]))
                    .await
                    .unwrap()
                    .value;
                assert_eq!(applied, model.contains_key(&i), "{}", ctx());
                if let Some(r) = model.get_mut(&i) {
                    r.fields.insert(format!("f{f}"), v);
                    r.expires = now + r.ttl;
                }
            }
            JobOp::EmptyUpdate(i) => {
                assert_eq!(
                    s.update(&i.to_string(), &Patch::new()).await.unwrap().value,
                    model.contains_key(&i),
                    "{}",
                    ctx()
                );
            }
            JobOp::Transition(i, a, b) => {
                let (from, to) = (st(a), st(b));
                let r = s.transition(&i.to_string(), from, to, &Patch::new()).await;
                if !from.can_become(to) {
                    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput, "{}", ctx());
                    continue;
                }
                let expect = match model.get_mut(&i) {
                    None => Outcome::NotFound,
                    Some(m) if m.status == from => {
                        m.status = to;
                        m.expires = now + m.ttl;
                        Outcome::Applied
                    }
                    Some(m) => Outcome::Refused { found: m.status },
                };
                assert_eq!(r.unwrap().value, expect, "{}", ctx());
            }
            JobOp::Heartbeat(i) => {
                let expect = match model.get_mut(&i) {
                    None => Outcome::NotFound,
                    Some(m) if m.status == JobStatus::Running => {
                        m.expires = now + m.ttl;
                        Outcome::Applied
                    }
                    Some(m) => Outcome::Refused { found: m.status },
                };
                assert_eq!(s.heartbeat(&i.to_string()).await.unwrap().value, expect, "{}", ctx());
            }
            JobOp::Delete(i) => {
                assert_eq!(
                    s.delete(&i.to_string()).await.unwrap().value,
                    model.remove(&i).is_some(),
                    "{}",
                    ctx()
                );
            }
            JobOp::Get(i) => {
                let got = s.get(&i.to_string()).await.unwrap().value;
                assert_eq!(status_of(&got), model.get(&i).map(|m| m.status), "{}", ctx());
                if let (Some(got), Some(m)) = (got, model.get(&i)) {
                    let fields: BTreeMap<String, u8> = got.fields.iter().map(|(k, v)| (k.clone(), v[0])).collect();
                    assert_eq!(fields, m.fields, "{}", ctx());
                }
            }
            JobOp::Advance(secs) => {
                fx.advance(Duration::from_secs(u64::from(secs))).await;
                now += u64::from(secs);
            }
        }
    }
}

/// Generates one `#[tokio::test]` per case and the model for a fixture constructor.
#[macro_export]
macro_rules! job_suite {
    ($make:path) => {
        $crate::job_suite!(@cases $make;
            create_writes_every_field_and_timestamps,
            create_replaces_the_record_atomically,
            records_expire_after_their_ttl,
            bad_input_is_invalid_input_and_writes_nothing,
            a_write_at_the_field_limit_is_stored_whole,
            create_if_absent_conflicts_and_leaves_the_record,
            update_writes_only_its_fields_and_refreshes_the_ttl,
            update_never_resurrects,
            concurrent_writers_of_disjoint_fields_lose_nothing,
            the_last_writer_of_a_field_wins,
            an_empty_patch_writes_nothing_and_reports_existence,
            get_decodes_text_and_envelope_forms,
            json_fields_are_plain_json_and_read_back_in_either_format,
            undecodable_fields_are_codec_errors_naming_the_field,
            only_the_lifecycle_edges_are_allowed,
            transition_is_a_compare_and_set_with_its_patch,
            a_terminal_status_never_changes,
            concurrent_transitions_apply_once,
            a_failed_enqueue_ends_failed_with_reason_and_time,
            heartbeat_applies_only_to_running_jobs,
            a_silent_running_job_is_presumed_dead,
            delete_reports_presence,
            tenants_never_see_each_other,
            stats_count_writes_that_took_effect_and_errors,
            answers_carry_the_backend_provenance,
            every_write_moves_the_version_by_one,
            watch_yields_each_change_and_ends_at_a_terminal_status,
            watch_ends_with_gone_on_delete_expiry_and_absence,
            a_watcher_that_falls_behind_is_told,
            no_change_is_lost_beside_a_busy_writer,
            wait_for_answers_at_once_or_when_the_transition_comes,
            wait_for_tells_never_gone_and_timed_out
        );

        #[test]
        fn job_model() {
            let rt = ::tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            let Some(fx) = rt.block_on($make("job_model")) else { return };
            $crate::testkit::run_model(&rt, &fx, 48);
        }

        #[test]
        fn job_failed_calls_change_nothing() {
            let rt = ::tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            let Some(fx) = rt.block_on($make("job_failed_calls")) else { return };
            $crate::testkit::run_failed_calls(&rt, &fx, 24);
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fx) = $make(stringify!($case)).await else { return };
                $crate::testkit::$case(&fx).await;
            }
        )*
    };
}

// ---- failed calls change nothing -----------------------------------------------------

/// Durations that are valid and invalid as a TTL, the edges of the limits included.
pub const TTL_EDGES: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_micros(999),
    palisade_cache_core::limits::MIN_DURATION,
    Duration::from_secs(60),
    palisade_cache_core::limits::MAX_TTL,
    Duration::from_nanos(palisade_cache_core::limits::MAX_TTL.as_nanos() as u64 + 1),
    Duration::MAX,
];

/// A patch of one of the shapes the limits know: small (valid), too many fields, a
/// value too large, an empty name, a name too long, a write too large in all.
fn patch_of(shape: u8) -> Patch {
    let c = JobStoreConfig::default();
    match shape % 6 {
        0 => Patch::new().field("a", "1").progress(3),
        1 => (0..=c.max_fields).fold(Patch::new(), |p, i| p.field(format!("f{i}"), "x")),
        2 => Patch::new().field("big", vec![7u8; c.max_field_len + 1]),
        3 => Patch::new().field("", "x"),
        4 => Patch::new().field("n".repeat(c.max_field_name_len + 1), "x"),
        _ => (0..9).fold(Patch::new(), |p, i| {
            p.field(format!("w{i}"), vec![1u8; c.max_field_len])
        }),
    }
}

/// One call with random, often invalid, arguments.
#[derive(Debug, Clone)]
pub enum BadJobOp {
    /// `create` / `create_if_absent` with a TTL edge and a patch shape as the record.
    Create(usize, u8, bool),
    /// `update` with a patch shape.
    Update(u8),
    /// `transition` between two statuses, with a patch shape.
    Transition(u8, u8, u8),
    /// `heartbeat`.
    Heartbeat,
    /// The backend's own `create`, bypassing the store's checks, with a TTL edge.
    BackendCreate(usize),
}

fn bad_op() -> impl Strategy<Value = BadJobOp> {
    prop_oneof![
        (0..TTL_EDGES.len(), any::<u8>(), any::<bool>()).prop_map(|(t, s, a)| BadJobOp::Create(t, s, a)),
        any::<u8>().prop_map(BadJobOp::Update),
        (0u8..4, 0u8..4, any::<u8>()).prop_map(|(f, t, s)| BadJobOp::Transition(f, t, s)),
        Just(BadJobOp::Heartbeat),
        (0..TTL_EDGES.len()).prop_map(BadJobOp::BackendCreate),
    ]
}

/// Random calls, many of them invalid, on an existing record: after any call that
/// returns an error the record is what it was before — every field as read, and byte
/// for byte with its expiry where the fixture can see the store — and a refused
/// argument is `InvalidInput`, never a backend error.
pub fn run_failed_calls<F: Fixture<Backend: JobBackend>>(rt: &tokio::runtime::Runtime, fx: &F, cases: u32) {
    palisade_cache_core::testkit::run_op_sequences(bad_op(), cases, |ops| rt.block_on(check_failed_calls(fx, ops)));
}

async fn check_failed_calls<F: Fixture<Backend: JobBackend>>(fx: &F, ops: &[BadJobOp]) {
    let s = store_for(fx);
    let id = "j";
    let key = s.key(id).unwrap();
    s.create(id, &JobRecord::queued().with_field("keep", "me"), LONG_TTL)
        .await
        .unwrap();
    let st = |i: u8| JobStatus::ALL[usize::from(i) % 4];
    for op in ops {
        // Each call starts from a long-lived record: a valid call with a 1 ms TTL
        // before it would otherwise let it expire under the comparison.
        s.create(id, &JobRecord::queued().with_field("keep", "me"), LONG_TTL)
            .await
            .unwrap();
        let read = |s: &JobStore<F::Backend>| {
            let s = s.clone();
            async move { s.get(id).await.map(|t| t.value).map_err(|e| e.kind()) }
        };
        let before = (read(&s).await, fx.snapshot(&key).await);
        let r: Result<(), palisade_cache_core::Error> = match *op {
            BadJobOp::Create(t, shape, if_absent) => {
                let p = patch_of(shape);
                let mut rec = JobRecord::queued();
                rec.fields = p.fields.clone();
                if if_absent {
                    s.create_if_absent(id, &rec, TTL_EDGES[t]).await.map(drop)
                } else {
                    s.create(id, &rec, TTL_EDGES[t]).await.map(drop)
                }
            }
            BadJobOp::Update(shape) => s.update(id, &patch_of(shape)).await.map(drop),
            BadJobOp::Transition(f, t, shape) => s.transition(id, st(f), st(t), &patch_of(shape)).await.map(drop),
            BadJobOp::Heartbeat => s.heartbeat(id).await.map(drop),
            BadJobOp::BackendCreate(t) => {
                let fields =
                    crate::model::encode_record(&JobRecord::queued(), palisade_cache_core::Format::Postcard).unwrap();
                s.backend()
                    .run(&crate::op::Create::new(
                        key.clone(),
                        fields.clone(),
                        TTL_EDGES[t],
                        false,
                    ))
                    .await
                    .map(drop)
            }
        };
        if let Err(e) = r {
            assert!(
                matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Conflict),
                "{op:?}: refused as {e:?}, not before any I/O"
            );
            let after = (read(&s).await, fx.snapshot(&key).await);
            assert_eq!(after, before, "{op:?} failed with {e:?} but changed the record");
        }
    }
}
