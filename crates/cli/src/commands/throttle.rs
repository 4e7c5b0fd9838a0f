//! `throttle acquire | penalize | inspect` and `limit`.

use palisade::{Decision, Error, Palisade, Policy, RateDecision};
use serde_json::json;

use crate::args::{ThrottleCmd, parse_rate};
use crate::output::{Out, micros, millis, prov};

pub(crate) async fn limit(p: &Palisade, key: &str, rate: &str, burst: u32) -> Result<Out, Error> {
    let rate = parse_rate(rate, burst)?;
    let t = p.rate_limiter().limit(key, &rate).await?;
    Ok(match t.value {
        RateDecision::Allowed { remaining, .. } => Out::ok(
            json!({"key": key, "allowed": true, "remaining": remaining, "provenance": prov(&t)}),
            format!("allowed, {remaining} remaining ({})", t.provenance),
        ),
        RateDecision::Limited { retry_after, .. } => Out::negative(
            json!({"key": key, "allowed": false, "retry_after_ms": retry_after.as_millis() as u64, "provenance": prov(&t)}),
            format!("limited, retry after {retry_after:?} ({})", t.provenance),
        ),
    })
}

pub(crate) async fn throttle(p: &Palisade, c: &ThrottleCmd) -> Result<Out, Error> {
    let t = p.throttle();
    Ok(match c {
        ThrottleCmd::Acquire {
            key,
            global_cap,
            key_cap,
            min_interval,
            lease,
            hold,
        } => {
            let policy = Policy::builder()
                .global_cap(*global_cap)
                .key_cap(*key_cap)
                .min_interval(*min_interval)
                .lease_ttl(*lease)
                .build()?;
            let d = t.acquire(key, &policy).await?;
            let provenance = d.provenance;
            match d.value {
                Decision::Acquired(permit) => {
                    tokio::time::sleep(*hold).await;
                    let lease = permit.lease().clone();
                    let released = permit.release().await?;
                    Out::ok(
                        json!({"key": key, "acquired": true, "lease_id": lease.id,
                            "acquired_at_us": micros(lease.acquired_at), "expires_at_us": micros(lease.expires_at),
                            "released_at_us": released.map(micros), "provenance": provenance.as_str()}),
                        format!(
                            "acquired lease {} at {} µs, released at {} ({provenance})",
                            lease.id,
                            micros(lease.acquired_at),
                            released.map_or("expiry".to_owned(), |r| format!("{} µs", micros(r)))
                        ),
                    )
                }
                Decision::Denied { reason, retry_after } => Out::negative(
                    json!({"key": key, "acquired": false, "reason": reason.as_str(), "retry_after_ms": retry_after.as_secs_f64() * 1000.0, "provenance": provenance.as_str()}),
                    format!("denied: {reason}, retry after {retry_after:?} ({provenance})"),
                ),
            }
        }
        ThrottleCmd::Penalize { key, duration } => {
            let until = t.penalize(key, *duration).await?;
            Out::ok(
                json!({"key": key, "penalty_until_ms": millis(until.value), "provenance": prov(&until)}),
                format!("penalized until {} ms ({})", millis(until.value), until.provenance),
            )
        }
        ThrottleCmd::Inspect { key } => {
            let s = t.inspect(key).await?;
            let v = &s.value;
            Out::ok(
                json!({"key": key, "key_leases": v.key_leases, "global_leases": v.global_leases,
                    "penalty_until_ms": v.penalty_until.map(millis), "last_acquired_ms": v.last_acquired.map(millis),
                    "provenance": prov(&s)}),
                format!(
                    "{} leases on {key}, {} in the namespace, penalty until {:?}, last acquisition {:?} ({})",
                    v.key_leases,
                    v.global_leases,
                    v.penalty_until.map(millis),
                    v.last_acquired.map(millis),
                    s.provenance
                ),
            )
        }
    })
}
