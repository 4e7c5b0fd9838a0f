//! Security-relevant events: outages, degradation, recovery.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::{ErrorSummary, Mode};

/// The `tracing` target every event is logged under.
pub const TARGET: &str = "palisade::security";

/// Which contract an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// The cache.
    Cache,
    /// The job store.
    JobStore,
    /// The throttle and rate limiter.
    Throttle,
}

impl Component {
    /// `cache`, `job_store` or `throttle`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Cache => "cache",
            Component::JobStore => "job_store",
            Component::Throttle => "throttle",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The shared store was unreachable when the component started (degraded mode
    /// starts on its local fallback).
    UnavailableAtStartup,
    /// An operation found the shared store unreachable (strict mode: the operation
    /// failed; emitted once per outage, not once per failed call).
    UnavailableAtRuntime {
        /// The first operation that failed.
        op: &'static str,
    },
    /// Degraded mode switched to its local fallback.
    Degraded,
    /// A probe confirmed the shared store is back; service returned to it.
    Recovered {
        /// How long the outage lasted (from the first failure to the successful probe).
        outage: Duration,
        /// Calls served by the local fallback during the outage.
        served_degraded: u64,
        /// Local entries dropped (cache) or records replayed or reported (job store)
        /// on recovery.
        dropped_or_replayed: u64,
    },
}

impl EventKind {
    /// `unavailable_at_startup`, `unavailable_at_runtime`, `degraded` or `recovered`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::UnavailableAtStartup => "unavailable_at_startup",
            EventKind::UnavailableAtRuntime { .. } => "unavailable_at_runtime",
            EventKind::Degraded => "degraded",
            EventKind::Recovered { .. } => "recovered",
        }
    }
}

/// One security-relevant event.
///
/// # Behavior
///
/// - Carries the kind, the component, the configured mode, the tenant whose call found
///   the outage (none for startup and recovery: they are no tenant's call), the
///   wall-clock time and, for outage events, the error that caused it.
/// - Contains no credential: errors identify backends by a redacted
///   [`Endpoint`](crate::Endpoint).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Which contract.
    pub component: Component,
    /// The mode the component runs in.
    pub mode: Mode,
    /// The tenant whose call found the outage; `None` for events no call caused
    /// (startup, a probe's recovery).
    pub tenant: Option<Arc<str>>,
    /// When it happened (from the component's [`Clock`](crate::Clock)).
    pub at: SystemTime,
    /// The error behind an outage event.
    pub error: Option<ErrorSummary>,
}

impl Event {
    /// Builds an event.
    pub fn new(
        kind: EventKind,
        component: Component,
        mode: Mode,
        tenant: Option<Arc<str>>,
        at: SystemTime,
        error: Option<ErrorSummary>,
    ) -> Self {
        Event {
            kind,
            component,
            mode,
            tenant,
            at,
            error,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (mode {}", self.component, self.kind.name(), self.mode)?;
        if let Some(t) = &self.tenant {
            write!(f, ", tenant {t}")?;
        }
        f.write_str(")")?;
        if let EventKind::Recovered {
            outage,
            served_degraded,
            dropped_or_replayed,
        } = &self.kind
        {
            write!(
                f,
                " after {outage:?}, {served_degraded} served degraded, {dropped_or_replayed} dropped or replayed"
            )?;
        }
        if let Some(e) = &self.error {
            write!(f, ": {}", e.message)?;
        }
        Ok(())
    }
}

/// Where events go: a `tracing` event under [`TARGET`] with structured fields, and a
/// bounded broadcast to subscribers.
///
/// # Behavior
///
/// - [`Events::emit`] never blocks and never fails: with no subscriber the event is only
///   logged; a subscriber that falls more than `capacity` events behind misses the
///   oldest ones and is told so by [`broadcast::error::RecvError::Lagged`].
/// - Outage events are logged at WARN, [`EventKind::Recovered`] at INFO.
/// - Clones share one channel.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new(Events::DEFAULT_CAPACITY)
    }
}

impl Events {
    /// The default number of events a subscriber may fall behind.
    pub const DEFAULT_CAPACITY: usize = 256;

    /// A sink whose subscribers may fall `capacity` events behind (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Events { tx }
    }

    /// A new subscription; it sees every event emitted after this call.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Logs the event and sends it to the subscribers.
    pub fn emit(&self, event: Event) {
        match &event.kind {
            EventKind::Recovered { .. } => crate::observe::outage_ended(event.component),
            EventKind::Degraded => crate::observe::outage_began(event.component, true),
            EventKind::UnavailableAtStartup => {
                crate::observe::outage_began(event.component, event.mode == Mode::ExplicitDegraded);
            }
            EventKind::UnavailableAtRuntime { .. } => crate::observe::outage_began(event.component, false),
        }
        let error = event.error.as_ref().map_or("", |e| e.message.as_str());
        match &event.kind {
            EventKind::Recovered {
                outage,
                served_degraded,
                dropped_or_replayed,
            } => tracing::info!(
                target: TARGET,
                kind = event.kind.name(),
                component = event.component.as_str(),
                mode = event.mode.as_str(),
                tenant = event.tenant.as_deref().unwrap_or(""),
                outage_ms = outage.as_millis() as u64,
                served_degraded,
                dropped_or_replayed,
                "{event}"
            ),
            EventKind::UnavailableAtRuntime { op } => tracing::warn!(
                target: TARGET,
                kind = event.kind.name(),
                component = event.component.as_str(),
                mode = event.mode.as_str(),
                tenant = event.tenant.as_deref().unwrap_or(""),
                op,
                error,
                "{event}"
            ),
            _ => tracing::warn!(
                target: TARGET,
                kind = event.kind.name(),
                component = event.component.as_str(),
                mode = event.mode.as_str(),
                tenant = event.tenant.as_deref().unwrap_or(""),
                error,
                "{event}"
            ),
        }
        // No receiver is not an error: the event was logged.
        let _ = self.tx.send(event);
    }
}
