//! The operations of the throttle contract, and what each becomes in degraded mode.
//!
//! ## Degraded mode
//!
//! While Redis is down each node decides alone, so the local policy is **scaled by
//! [`degraded_share`](palisade_cache_core::FailoverOptions::degraded_share)**: caps are multiplied by it and rounded down, and `min_interval`
//! is divided by it. With N nodes and `degraded_share = 1/N` the fleet-wide totals stay
//! within the configured caps. A cap that scales below 1 admits nothing on that node
//! while degraded: the throttle fails closed rather than open. Rates are scaled the
//! same way.
//!
//! A [`Permit`](crate::Permit) stays bound to the backend that granted it: one taken
//! from the local fallback is released there, also after service returned to Redis;
//! new acquisitions after recovery go to Redis.
//!
//! Redis never learns of the local permits, so after recovery the fleet may hold more
//! than a cap — until they end. To bound that, a permit granted while degraded lives at
//! most `degraded_lease_cap` (default 30 s): its lease TTL is capped, an extension is
//! capped too, and once the outage it was granted in is over it is not extended at
//! all (`extend` answers `None`: the holder re-acquires through Redis). The bound: at
//! most `degraded_lease_cap` after `Recovered`, every slot is Redis's again.
//!
//! Fencing tokens compare only within one backend: a token from the local fallback
//! (the node's clock) and one from Redis (the server's) are not ordered with each
//! other. A resource that checks fencing tokens must see tokens from one backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_cache_core::supervisor::Supervisor;
use palisade_cache_core::{BoxFuture, Error, FallbackCtx, Op};

use crate::model::{KeyState, LeaseOps, Rate, RateDecision, RawDecision, ScaledPolicy, Scope, Waiter, Woken};

/// Defines one throttle operation on a key of a scope: the struct, `new`, and the
/// [`Op`] impl whose degraded form keeps the key (the local backend has its own keys)
/// and, optionally, rewrites the other fields.
macro_rules! throttle_op {
    (
        $(#[$doc:meta])* $name:ident -> $out:ty, $label:literal {
            $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)?
        }
        $(degraded |$op:ident, $ctx:ident| $body:block)?
        $(output |$out_v:ident, $out_ctx:ident| $out_body:block)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub struct $name {
            /// The namespace's scope.
            pub scope: Arc<Scope>,
            /// The user's key.
            pub key: String,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// The operation.
            pub fn new(scope: Arc<Scope>, key: String $(, $field: $ty)*) -> Self {
                $name { scope, key $(, $field)* }
            }
        }

        impl Op for $name {
            type Output = $out;
            const NAME: &'static str = $label;
            fn degraded(&self, ctx: &FallbackCtx<'_>) -> Self {
                #[allow(unused_mut)]
                let mut op = self.clone();
                $({
                    let $op = &mut op;
                    let $ctx = ctx;
                    $body
                })?
                let _ = ctx;
                op
            }
            $(
                fn degraded_output($out_v: Self::Output, $out_ctx: &FallbackCtx<'_>) -> Self::Output $out_body
            )?
        }
    };
}

throttle_op! {
    /// One atomic multi-gate acquisition; also answers the expired leases reclaimed.
    Acquire -> (RawDecision, u64), "throttle.acquire" {
        /// The gates.
        policy: ScaledPolicy,
        /// The caller's queue entry, when it waits (see the contract's `# Behavior`).
        waiter: Option<Waiter>,
    }
    degraded |op, ctx| {
        op.policy = op.policy.scaled(ctx.options.degraded_share);
        op.policy.lease_ttl = op.policy.lease_ttl.min(ctx.options.degraded_lease_cap);
    }
    output |out, ctx| {
        let (decision, reclaimed) = out;
        let decision = match decision {
            RawDecision::Acquired(lease, ops) => RawDecision::Acquired(lease, degraded_ops(ops, ctx)),
            other => other,
        };
        (decision, reclaimed)
    }
}
throttle_op! {
    /// Blocks the key for `duration` (a longer running penalty wins).
    Penalize -> SystemTime, "throttle.penalize" {
        /// How long.
        duration: Duration,
    }
}
throttle_op! {
    /// Ends the key's penalty.
    ClearPenalty -> bool, "throttle.clear_penalty" {}
}
throttle_op! {
    /// The key's leases, the namespace's, the penalty and the last acquisition.
    Inspect -> KeyState, "throttle.inspect" {}
}
throttle_op! {
    /// Waits until a wake-up or a handed lease is pushed for `ticket`, or `within` has
    /// passed.
    Wake -> Woken, "throttle.wake" {
        /// The waiter's ticket.
        ticket: u64,
        /// The longest wait.
        within: Duration,
    }
    output |out, ctx| {
        match out {
            Woken::Granted(lease, ops) => Woken::Granted(lease, degraded_ops(ops, ctx)),
            other => other,
        }
    }
}
throttle_op! {
    /// Takes a waiter out of the key's queues (it gave up or went away) and wakes the
    /// next; says whether it was queued.
    Dequeue -> bool, "throttle.dequeue" {
        /// The waiter's ticket.
        ticket: u64,
    }
}
throttle_op! {
    /// One GCRA step for the key.
    Limit -> RateDecision, "throttle.limit" {
        /// The rate.
        rate: Rate,
        /// How many requests this one counts as (at least 1).
        cost: u32,
        /// Whether an allowed request consumes its cost (`false`: a peek).
        consume: bool,
    }
    degraded |op, ctx| { op.rate = op.rate.scaled(ctx.options.degraded_share); }
}
throttle_op! {
    /// Forgets the key's GCRA state: a full allowance again.
    ResetRate -> bool, "throttle.reset_rate" {}
}

/// The lease operations of a lease granted while degraded (by an acquisition or a
/// handoff): see [`DegradedLeases`].
fn degraded_ops(inner: Arc<dyn LeaseOps>, ctx: &FallbackCtx<'_>) -> Arc<dyn LeaseOps> {
    Arc::new(DegradedLeases {
        inner,
        supervisor: Arc::clone(ctx.supervisor),
        outage: ctx.outage,
        cap: ctx.options.degraded_lease_cap,
    })
}

/// The lease operations of a permit granted while degraded: extensions capped, and
/// refused once the outage it was granted in is over.
struct DegradedLeases {
    inner: Arc<dyn LeaseOps>,
    supervisor: Arc<Supervisor>,
    outage: u64,
    cap: Duration,
}

impl LeaseOps for DegradedLeases {
    fn release(&self, key: &str, lease: u64) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        self.inner.release(key, lease)
    }

    fn extend(&self, key: &str, lease: u64, by: Duration) -> BoxFuture<'_, Result<Option<SystemTime>, Error>> {
        if self.supervisor.is_healthy() || self.supervisor.outage_number() != self.outage {
            return Box::pin(std::future::ready(Ok(None)));
        }
        self.inner.extend(key, lease, by.min(self.cap))
    }
}
