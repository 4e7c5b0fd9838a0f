//! `cache get | set | del | clear | stats`.

use palisade::{Error, Palisade};
use serde_json::{Value, json};

use crate::args::CacheCmd;
use crate::output::{Out, millis, prov, text};

pub(crate) async fn cache(p: &Palisade, c: &CacheCmd) -> Result<Out, Error> {
    let ns = |name: &str| p.cache().namespace(name);
    Ok(match c {
        CacheCmd::Get { ns: n, key } => {
            let t = ns(n)?.get(key).await?;
            let json = json!({"namespace": n, "key": key, "found": t.value.is_some(),
                "value": t.value.as_deref().map(text), "provenance": prov(&t)});
            match &t.value {
                Some(v) => Out::ok(json, format!("{} ({})", text(v), t.provenance)),
                None => Out::negative(json, format!("miss ({})", t.provenance)),
            }
        }
        CacheCmd::Set { ns: n, key, value, ttl } => {
            let t = ns(n)?.set(key, value.as_bytes(), *ttl).await?;
            Out::ok(
                json!({"namespace": n, "key": key, "stored": true, "ttl_ms": ttl.as_millis() as u64, "provenance": prov(&t)}),
                format!("stored for {ttl:?} ({})", t.provenance),
            )
        }
        CacheCmd::Del { ns: n, key } => {
            let t = ns(n)?.delete(key).await?;
            let json = json!({"namespace": n, "key": key, "deleted": t.value, "provenance": prov(&t)});
            if t.value {
                Out::ok(json, format!("deleted ({})", t.provenance))
            } else {
                Out::negative(json, format!("not found ({})", t.provenance))
            }
        }
        CacheCmd::Clear { ns: n } => {
            let t = ns(n)?.clear().await?;
            Out::ok(
                json!({"namespace": n, "removed": t.value, "provenance": prov(&t)}),
                format!("removed {} ({})", t.value, t.provenance),
            )
        }
        CacheCmd::Stats => {
            let s = p.cache().stats();
            let errors: serde_json::Map<String, Value> = s
                .status
                .errors
                .iter()
                .map(|(k, n)| (k.as_str().to_owned(), json!(n)))
                .collect();
            Out::ok(
                json!({"hits": s.hits, "misses": s.misses, "sets": s.sets, "deletes": s.deletes, "errors": errors,
                    "degraded_reads": s.degraded_reads, "degraded_writes": s.degraded_writes, "mode": s.status.mode.as_str(),
                    "state": s.status.health.as_str(), "degraded_since_ms": s.status.since.map(millis),
                    "last_error": s.status.last_error.map(|e| e.message)}),
                format!(
                    "mode {} · state {} · {} hits · {} misses · {} sets · {} deletes",
                    s.status.mode, s.status.health, s.hits, s.misses, s.sets, s.deletes
                ),
            )
        }
    })
}
