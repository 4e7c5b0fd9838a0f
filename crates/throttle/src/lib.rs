#![doc = include_str!("../README.md")]

mod model;
pub mod op;
#[cfg(feature = "testkit")]
pub mod testkit;
mod throttle;

pub use model::{
    DenyReason, KeyState, Lease, LeaseOps, MAX_LEASE, MAX_PENALTY, MAX_RATE_WINDOW, MIN_DURATION, Permit, Policy,
    PolicyBuilder, Rate, RateBuilder, RateDecision, RawDecision, ScaledPolicy, Scope, ThrottleBackend, Waiter, Woken,
};
pub use throttle::{Decision, RateLimiter, Throttle, ThrottleStats};
