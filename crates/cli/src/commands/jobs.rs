//! `jobs create | get | update | transition | heartbeat | delete | wait | watch`.

use futures_util::StreamExt;
use palisade::{
    Error, ErrorKind, JobEvent, JobRecord, JobStatus, Outcome, Palisade, Patch, Provenance, Tagged, WaitOutcome,
};
use serde_json::{Value, json};

use crate::args::{Fields, JobsCmd};
use crate::output::{Out, millis, prov, text};

pub(crate) fn patch(fields: &Fields) -> Patch {
    fields
        .fields
        .iter()
        .fold(Patch::new(), |p, (k, v)| p.field(k.clone(), v.clone()))
}

pub(crate) fn status(s: &str) -> Result<JobStatus, Error> {
    s.parse()
}

pub(crate) fn record_json(id: &str, r: &JobRecord, p: Provenance) -> Value {
    let fields: serde_json::Map<String, Value> = r.fields.iter().map(|(k, v)| (k.clone(), json!(text(v)))).collect();
    json!({"id": id, "found": true, "status": r.status.as_str(), "progress": r.progress, "attempts": r.attempts,
        "error": r.error, "result": r.result.as_deref().map(text), "created_at_ms": r.created_at.map(millis),
        "updated_at_ms": r.updated_at.map(millis), "heartbeat_at_ms": r.heartbeat_at.map(millis),
        "finished_at_ms": r.finished_at.map(millis), "presumed_dead": r.presumed_dead, "fields": fields,
        "provenance": p.as_str()})
}

pub(crate) fn outcome(id: &str, what: &str, t: Tagged<Outcome>) -> Out {
    let p = t.provenance;
    match t.value {
        Outcome::Applied => Out::ok(
            json!({"id": id, what: "applied", "provenance": p.as_str()}),
            format!("{what}: applied ({p})"),
        ),
        Outcome::Refused { found } => Out::negative(
            json!({"id": id, what: "refused", "found": found.as_str(), "provenance": p.as_str()}),
            format!("{what}: refused, the job is {found} ({p})"),
        ),
        Outcome::NotFound => Out::negative(
            json!({"id": id, what: "not_found", "provenance": p.as_str()}),
            format!("{what}: no such job ({p})"),
        ),
        _ => Out::negative(json!({"id": id, what: "unknown"}), format!("{what}: unknown outcome")),
    }
}

/// `jobs wait`: the record and how the wait ended.
async fn wait(p: &Palisade, id: &str, statuses: &[String], timeout: std::time::Duration) -> Result<Out, Error> {
    let statuses = statuses.iter().map(|s| status(s)).collect::<Result<Vec<_>, _>>()?;
    let t = p.jobs().wait_for(id, &statuses, timeout).await?;
    let pv = t.provenance;
    let (ended, record) = match t.value {
        WaitOutcome::Reached(r) => ("reached", Some(r)),
        WaitOutcome::Never(r) => ("never", Some(r)),
        WaitOutcome::TimedOut(r) => ("timed_out", Some(r)),
        _ => ("gone", None),
    };
    let mut json = match &record {
        Some(r) => record_json(id, r, pv),
        None => json!({"id": id, "found": false, "provenance": pv.as_str()}),
    };
    json["wait"] = json!(ended);
    let text = match &record {
        Some(r) => format!("{id}: {ended}, the job is {} ({pv})", r.status),
        None => format!("{id}: gone ({pv})"),
    };
    Ok(if ended == "reached" {
        Out::ok(json, text)
    } else {
        Out::negative(json, text)
    })
}

/// `jobs watch`: prints each item as it comes (one JSON object per line with
/// `--json`); the answer is the end.
async fn watch(p: &Palisade, id: &str, as_json: bool) -> Result<Out, Error> {
    let mut items = std::pin::pin!(p.jobs().watch(id));
    let mut last = None;
    while let Some(item) = items.next().await {
        match item? {
            JobEvent::Record {
                record,
                missed,
                changed,
                provenance,
            } => {
                if as_json {
                    let mut line = record_json(id, &record, provenance);
                    line["version"] = json!(record.version);
                    line["missed"] = json!(missed);
                    line["changed"] = json!(changed);
                    println!("{line}");
                } else {
                    let behind = if missed > 0 {
                        format!(" ({missed} missed)")
                    } else {
                        String::new()
                    };
                    println!(
                        "{id}: {} v{} changed {changed:?}{behind} ({provenance})",
                        record.status, record.version
                    );
                }
                last = Some(record.status);
            }
            _ => {
                last = None;
                break;
            }
        }
    }
    let end = last.map_or("gone", JobStatus::as_str);
    Ok(Out::ok(
        json!({"id": id, "end": end}),
        format!("{id}: watch ended ({end})"),
    ))
}

pub(crate) async fn jobs(p: &Palisade, c: &JobsCmd, as_json: bool) -> Result<Out, Error> {
    let j = p.jobs();
    Ok(match c {
        JobsCmd::Create {
            id,
            fields,
            ttl,
            if_absent,
        } => {
            let record = fields
                .fields
                .iter()
                .fold(JobRecord::queued(), |r, (k, v)| r.with_field(k.clone(), v.clone()));
            let t = if *if_absent {
                j.create_if_absent(id, &record, *ttl).await
            } else {
                j.create(id, &record, *ttl).await
            };
            match t {
                Ok(t) => Out::ok(
                    json!({"id": id, "created": true, "provenance": prov(&t)}),
                    format!("created {id} ({})", t.provenance),
                ),
                Err(e) if e.kind() == ErrorKind::Conflict => Out::negative(
                    json!({"id": id, "created": false, "reason": "exists"}),
                    format!("{id} already exists"),
                ),
                Err(e) => return Err(e),
            }
        }
        JobsCmd::Get { id } => {
            let t = j.get(id).await?;
            match &t.value {
                Some(r) => Out::ok(
                    record_json(id, r, t.provenance),
                    format!(
                        "{id}: {} progress {:?} fields {:?} ({})",
                        r.status,
                        r.progress,
                        r.fields.keys().collect::<Vec<_>>(),
                        t.provenance
                    ),
                ),
                None => Out::negative(
                    json!({"id": id, "found": false, "provenance": prov(&t)}),
                    format!("{id}: not found ({})", t.provenance),
                ),
            }
        }
        JobsCmd::Update { id, fields } => {
            let t = j.update(id, &patch(fields)).await?;
            let json = json!({"id": id, "applied": t.value, "provenance": prov(&t)});
            if t.value {
                Out::ok(json, format!("updated ({})", t.provenance))
            } else {
                Out::negative(json, format!("not found ({})", t.provenance))
            }
        }
        JobsCmd::Transition { id, from, to, fields } => outcome(
            id,
            "transition",
            j.transition(id, status(from)?, status(to)?, &patch(fields)).await?,
        ),
        JobsCmd::Heartbeat { id } => outcome(id, "heartbeat", j.heartbeat(id).await?),
        JobsCmd::Wait { id, statuses, timeout } => wait(p, id, statuses, *timeout).await?,
        JobsCmd::Watch { id } => watch(p, id, as_json).await?,
        JobsCmd::Delete { id } => {
            let t = j.delete(id).await?;
            let json = json!({"id": id, "deleted": t.value, "provenance": prov(&t)});
            if t.value {
                Out::ok(json, format!("deleted ({})", t.provenance))
            } else {
                Out::negative(json, format!("not found ({})", t.provenance))
            }
        }
    })
}
