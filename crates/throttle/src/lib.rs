#![doc = include_str!("../README.md")]

pub mod failover;
mod model;
#[cfg(feature = "testkit")]
pub mod testkit;
mod throttle;

pub use failover::{StrictThrottle, ThrottleFailover, ThrottleFailoverOptions};
pub use model::{
    DenyReason, KeyState, Lease, LeaseOps, MAX_LEASE, MAX_PENALTY, MAX_RATE_WINDOW, MIN_DURATION, Permit, Policy, Rate,
    RateDecision, RawDecision, ScaledPolicy, Scope, ThrottleBackend,
};
pub use throttle::{Decision, RateLimiter, Throttle, ThrottleStats};
