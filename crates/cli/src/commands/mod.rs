//! One module per command family; each takes a built `Palisade` (or, for `doctor`, the
//! arguments) and answers an [`Out`](crate::output::Out).

pub(crate) mod cache;
pub(crate) mod doctor;
pub(crate) mod jobs;
pub(crate) mod throttle;
