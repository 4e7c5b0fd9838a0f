#![doc = include_str!("../README.md")]

pub mod failover;
mod model;
#[cfg(feature = "testkit")]
pub mod testkit;
mod throttle;

pub use failover::{StrictThrottle, ThrottleFailover, ThrottleFailoverOptions};
pub use model::{
    DenyReason, KeyState, Lease, LeaseOps, Permit, Policy, Rate, RateDecision, RawDecision, ScaledPolicy, Scope,
    ThrottleBackend,
};
pub use throttle::{Decision, RateLimiter, Throttle, ThrottleStats};
