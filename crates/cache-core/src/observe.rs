//! Metrics and traces of every operation, written once for every contract and mode.
//!
//! Every operation of a [`ByMode`](crate::ByMode) backend (what the `palisade` umbrella
//! hands out) runs inside one `tracing` span and, with the `metrics` feature, records
//! through the [`metrics`](https://docs.rs/metrics) facade; the recorder (Prometheus,
//! StatsD, …) is the application's choice.
//!
//! # Metrics
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`OPS_TOTAL`] `palisade_ops_total` | counter | `component`, `op`, `outcome` (`ok` or the [`ErrorKind`] name), `provenance` (`distributed`, `local_degraded`, `local`; `none` for an error) |
//! | [`OP_DURATION`] `palisade_op_duration_seconds` | histogram | `component`, `op` |
//! | [`DEGRADED`] `palisade_degraded` | gauge | `component`: 1 while degraded mode serves it locally, 0 once recovered |
//! | [`OUTAGES_TOTAL`] `palisade_outages_total` | counter | `component`: one per outage (its one down event) |
//! | [`THROTTLE_DECISIONS_TOTAL`] `palisade_throttle_decisions_total` | counter | `namespace`, `outcome` (`acquired`, `denied`), `reason` (`none` or the deny reason) |
//! | [`RATELIMIT_DECISIONS_TOTAL`] `palisade_ratelimit_decisions_total` | counter | `namespace`, `outcome` (`allowed`, `limited`) |
//! | [`JOB_TRANSITIONS_TOTAL`] `palisade_job_transitions_total` | counter | `from`, `to`, `outcome` (`applied`, `rejected`) |
//!
//! `component` is `cache`, `job_store` or `throttle`; `op` the operation's name after the
//! dot (`get`, `acquire`, …). A key is never a label (its cardinality is the caller's
//! traffic); the tenant is a label (`tenant`, on the decision counters) only after
//! [`set_tenant_label`]`(true)`, since a service with many tenants would otherwise
//! multiply every series. Without the `metrics` feature every recording function here
//! is an empty inline function.
//!
//! # Traces
//!
//! One span per operation, name `palisade`, target `palisade`, level `DEBUG`, with the
//! fields an OpenTelemetry exporter (`tracing-opentelemetry`) maps: `otel.name`
//! (`palisade.cache.get`, …), `db.system` (`redis`, or `memory` in local mode),
//! `palisade.mode`, and, once the operation ends, `palisade.provenance`,
//! `palisade.outcome` and `otel.status_code` (`ERROR` on an error). The span opens when
//! the call starts (a child of the caller's current span) and closes when it ends; it is
//! not entered while the call is polled. With no subscriber or the level filtered out,
//! a span costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{Component, ErrorKind, Provenance};

/// `palisade_ops_total`.
pub const OPS_TOTAL: &str = "palisade_ops_total";
/// `palisade_op_duration_seconds`.
pub const OP_DURATION: &str = "palisade_op_duration_seconds";
/// `palisade_degraded`.
pub const DEGRADED: &str = "palisade_degraded";
/// `palisade_outages_total`.
pub const OUTAGES_TOTAL: &str = "palisade_outages_total";
/// `palisade_throttle_decisions_total`.
pub const THROTTLE_DECISIONS_TOTAL: &str = "palisade_throttle_decisions_total";
/// `palisade_ratelimit_decisions_total`.
pub const RATELIMIT_DECISIONS_TOTAL: &str = "palisade_ratelimit_decisions_total";
/// `palisade_job_transitions_total`.
pub const JOB_TRANSITIONS_TOTAL: &str = "palisade_job_transitions_total";

static TENANT_LABEL: AtomicBool = AtomicBool::new(false);

/// Adds a `tenant` label to the decision counters (default: off; see the module docs).
pub fn set_tenant_label(on: bool) {
    TENANT_LABEL.store(on, Ordering::Relaxed);
}

/// `cache.get` → (`cache`, `get`); the `jobs` prefix is the `job_store` component.
pub fn split_name(name: &'static str) -> (&'static str, &'static str) {
    let (prefix, op) = name.split_once('.').unwrap_or(("", name));
    let component = match prefix {
        "cache" => Component::Cache.as_str(),
        "jobs" => Component::JobStore.as_str(),
        "throttle" => Component::Throttle.as_str(),
        other => other,
    };
    (component, op)
}

/// The span of one operation `name` in `mode` (`local`, `strict`, `degraded`).
pub(crate) fn span(name: &'static str, mode: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: "palisade",
        "palisade",
        otel.name = %format_args!("palisade.{name}"),
        db.system = if mode == "local" { "memory" } else { "redis" },
        palisade.mode = mode,
        palisade.provenance = tracing::field::Empty,
        palisade.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records how operation `name` ended, on its span and (with `metrics`) as metrics.
pub(crate) fn finish(
    name: &'static str,
    span: &tracing::Span,
    took: Option<Duration>,
    end: Result<Provenance, ErrorKind>,
) {
    let outcome = match end {
        Ok(_) => "ok",
        Err(kind) => kind.as_str(),
    };
    let provenance = match end {
        Ok(p) => p.as_str(),
        Err(_) => "none",
    };
    if !span.is_disabled() {
        span.record("palisade.provenance", provenance);
        span.record("palisade.outcome", outcome);
        if end.is_err() {
            span.record("otel.status_code", "ERROR");
        }
    }
    #[cfg(feature = "metrics")]
    {
        let (component, op) = split_name(name);
        metrics::counter!(OPS_TOTAL, "component" => component, "op" => op, "outcome" => outcome, "provenance" => provenance)
            .increment(1);
        if let Some(took) = took {
            metrics::histogram!(OP_DURATION, "component" => component, "op" => op).record(took.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (name, took);
}

/// Whether operations are timed (only with the `metrics` feature).
#[inline]
pub(crate) fn timed() -> bool {
    cfg!(feature = "metrics")
}

/// An outage began for `component` (its one down event); `degraded`: served locally.
pub(crate) fn outage_began(component: Component, degraded: bool) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(OUTAGES_TOTAL, "component" => component.as_str()).increment(1);
        if degraded {
            metrics::gauge!(DEGRADED, "component" => component.as_str()).set(1.0);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (component, degraded);
}

/// The outage of `component` ended (its one `Recovered` event).
pub(crate) fn outage_ended(component: Component) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(DEGRADED, "component" => component.as_str()).set(0.0);
    #[cfg(not(feature = "metrics"))]
    let _ = component;
}

/// One throttle decision in namespace `name` of `tenant`.
#[inline]
pub fn throttle_decision(tenant: &str, name: &str, acquired: bool, reason: &'static str) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if acquired { "acquired" } else { "denied" };
        let mut labels = vec![
            metrics::Label::new("namespace", name.to_owned()),
            metrics::Label::from_static_parts("outcome", outcome),
            metrics::Label::from_static_parts("reason", reason),
        ];
        if TENANT_LABEL.load(Ordering::Relaxed) {
            labels.push(metrics::Label::new("tenant", tenant.to_owned()));
        }
        metrics::counter!(THROTTLE_DECISIONS_TOTAL, labels).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (tenant, name, acquired, reason);
}

/// One rate-limit decision in namespace `name` of `tenant`.
#[inline]
pub fn ratelimit_decision(tenant: &str, name: &str, allowed: bool) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if allowed { "allowed" } else { "limited" };
        let mut labels = vec![
            metrics::Label::new("namespace", name.to_owned()),
            metrics::Label::from_static_parts("outcome", outcome),
        ];
        if TENANT_LABEL.load(Ordering::Relaxed) {
            labels.push(metrics::Label::new("tenant", tenant.to_owned()));
        }
        metrics::counter!(RATELIMIT_DECISIONS_TOTAL, labels).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (tenant, name, allowed);
}

/// One guarded job transition `from` → `to`; `applied`: the guard held.
#[inline]
pub fn job_transition(from: &'static str, to: &'static str, applied: bool) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if applied { "applied" } else { "rejected" };
        metrics::counter!(JOB_TRANSITIONS_TOTAL, "from" => from, "to" => to, "outcome" => outcome).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (from, to, applied);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_component_and_op() {
        assert_eq!(split_name("cache.get"), ("cache", "get"));
        assert_eq!(split_name("jobs.transition"), ("job_store", "transition"));
        assert_eq!(split_name("throttle.limit"), ("throttle", "limit"));
    }
}
